"""Cluster membership for CDSW_WORKER hosts: join, heartbeat, leave; and what workers fetch
from the master: storage access, engine images, the CDSW nodes for the engine firewall.

These routes are public at the permission layer because workers have no user account; each
request proves itself with the cluster secret in its body (compared in constant time, never
logged or echoed). What workers report (join, heartbeats, leave) is kept in the database
(`cluster_nodes`), so that any master process sees it and a master restart keeps it.
"""

from __future__ import annotations

import datetime as dt
import hmac
import logging
import threading
import time
from ipaddress import IPv4Address
from typing import Any, Callable, Dict, List, Optional

import docker
from docker.errors import APIError, DockerException
from fastapi import Depends, Request
from pydantic import BaseModel, Field
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from ... import clusters
from ...errors import UserError
from ...images.util import cache_lock
from ...models.builds import model_of_image
from ...roles import engine_firewall
from ...roles import swarm as swarm_mgr
from ...store.models import ClusterNode
from ...store.models_models import Model
from ..deps import get_db, get_state
from ..errors import ApiError
from ..permissions import Access, api_router, require
from ..state import ServerState

log = logging.getLogger(__name__)
router = api_router(prefix="/cluster", tags=["cluster"])
_client_lock = threading.Lock()


class Authenticated(BaseModel):
    secret: str = Field(repr=False)  # never in reprs, hence never in logged models
    hostname: str = Field(min_length=1, max_length=253)


class JoinRequest(Authenticated):
    pass


class HeartbeatRequest(Authenticated):
    node_id: str = ""
    cpus: float = 0
    memory_bytes: int = 0
    healthy: bool = True
    checks: Dict[str, str] = Field(default_factory=dict)
    storage: Dict[str, Any] = Field(default_factory=dict)
    # the worker's workbench_cluster setting: its node is labelled cdsw.cluster=NAME
    cluster: str = Field(default="", pattern=r"^([A-Za-z][A-Za-z0-9_-]{0,31})?$")
    # the worker host's own addresses: each counts as a CDSW node's for the engine firewall
    addresses: List[IPv4Address] = Field(default_factory=list, max_length=64)


class LeaveRequest(Authenticated):
    node_id: str = ""


def _authenticate(state: ServerState, sent: str) -> None:
    expected = state.settings.cluster_secret or ""
    if not expected:
        raise ApiError(503, "the master has no cluster secret yet; restart the master")
    if not hmac.compare_digest(sent.encode("utf-8"), expected.encode("utf-8")):
        raise ApiError(403, "wrong cluster secret")


def _docker(state: ServerState) -> docker.DockerClient:
    with _client_lock:
        client = state.extras.get("docker")
        if client is None:
            try:
                client = docker.DockerClient(base_url=state.settings.docker_host, timeout=30)
            except DockerException as e:
                raise ApiError(503, "the master's Docker is unavailable", str(e).splitlines()[0])
            state.extras["docker"] = client
        return client


def _nodes(db: Session) -> Dict[str, Dict[str, Any]]:
    """hostname -> what that worker last reported."""
    return {n.hostname: dict(n.report or {}) for n in db.scalars(select(ClusterNode))}


def locked_node(db: Session, hostname: str) -> Optional[ClusterNode]:
    """The host's row, read after taking the write lock its update will need, so that no other
    report commits between this read and this transaction's commit: a no-op UPDATE locks the
    row on PostgreSQL (whose READ COMMITTED would otherwise let the later of two reports drop the
    earlier's fields) and takes SQLite's one write lock (its SELECTs run outside a transaction)."""
    db.execute(update(ClusterNode).where(ClusterNode.hostname == hostname)
               .values(hostname=ClusterNode.hostname))
    return db.get(ClusterNode, hostname, populate_existing=True)


def _report(db: Session, hostname: str, **fields: Any) -> None:
    """Adds fields to the host's report and commits. Two reports of a host at once (its join
    and a heartbeat, perhaps in two master processes) keep each other's fields (locked_node);
    two first reports: the second finds the first's row and updates it."""
    for attempt in (1, 2):
        node = locked_node(db, hostname)
        if node is None:
            db.add(ClusterNode(hostname=hostname, report=dict(fields)))
        else:
            node.report = dict(node.report or {}, **fields)  # a new value: the JSON is saved
        try:
            db.commit()
            return
        except IntegrityError:
            db.rollback()
            if attempt == 2:
                raise


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat()


@router.post("/join")
def join(body: JoinRequest, request: Request, access: Access = require("public"),
         state: ServerState = Depends(get_state),
         db: Session = Depends(get_db)) -> Dict[str, Any]:
    """The swarm worker join token and the manager address(es) to join."""
    _authenticate(state, body.secret)
    client = _docker(state)
    try:
        info = swarm_mgr.ensure_manager(client, state.settings)
        tokens = swarm_mgr.join_tokens(client)
    except (APIError, DockerException) as e:
        raise ApiError(503, "the master's swarm is unavailable", str(e).splitlines()[0])
    except UserError as e:  # e.g. this Docker is a swarm worker: an admin's fix, say which
        raise ApiError(503, "the master's swarm is unavailable", str(e)) from None
    _report(db, body.hostname, joined_at=_now())
    log.info("join token handed to %s (%s)", body.hostname,
             request.client.host if request.client else "?")
    return {"join_token": tokens["worker"], "manager_addresses": info.manager_addresses}


@router.post("/heartbeat")
def heartbeat(body: HeartbeatRequest, access: Access = require("public"),
              state: ServerState = Depends(get_state),
              db: Session = Depends(get_db)) -> Dict[str, Any]:
    _authenticate(state, body.secret)
    _report(db, body.hostname, node_id=body.node_id, cpus=body.cpus,
            memory_bytes=body.memory_bytes, healthy=body.healthy, checks=dict(body.checks),
            storage=dict(body.storage), cluster=body.cluster,
            addresses=[str(a) for a in body.addresses], last_seen=_now())
    if body.node_id and state.settings.orchestrator == "swarm":
        _label_cluster(state, body)
    return {"ok": True}


@router.post("/engine-nodes")
def engine_nodes_for_worker(body: Authenticated, access: Access = require("public"),
                            state: ServerState = Depends(get_state)) -> Dict[str, Any]:
    """The CDSW nodes' addresses a worker narrows its engine firewall to (roles/worker.py);
    null while the master cannot list them: the worker then keeps what it has."""
    _authenticate(state, body.secret)
    return {"engine_nodes": engine_nodes(state)}


HOST_ADDRESSES_SECONDS = 60.0


def engine_nodes(state: ServerState) -> Optional[List[str]]:
    """The addresses of every CDSW node (the swarm's nodes, the addresses their workers
    reported, this master host's own), where engines must not reach engine ports; None when
    they cannot be known now (no swarm, the master's Docker does not answer)."""
    if state.settings.orchestrator != "swarm":
        return None
    with state.db.session() as db:
        reported = {name: list(record.get("addresses") or [])
                    for name, record in _nodes(db).items()}
    try:
        found = swarm_mgr.engine_node_addresses(_docker(state), reported)
    except (ApiError, APIError, DockerException, OSError) as e:
        log.debug("swarm nodes unavailable for the engine firewall: %s", e)
        return None
    if not found:  # not a swarm (yet): nothing known
        return None
    cached = state.extras.get("host_addresses")
    if cached is None or time.monotonic() - cached[0] > HOST_ADDRESSES_SECONDS:
        cached = state.extras["host_addresses"] = (time.monotonic(),
                                                   engine_firewall.host_addresses())
    return engine_firewall.node_addresses(found + cached[1])


def _label_cluster(state: ServerState, body: HeartbeatRequest) -> None:
    """Put the worker's node in its cluster (swarm node label); a failure waits for the next
    heartbeat."""
    try:
        client = _docker(state)
        node = swarm_mgr.find_node(client, body.node_id, body.hostname)
        if node is not None and node["Spec"].get("Role") != "manager" \
                and swarm_mgr.set_cluster_label(client, node, body.cluster):
            log.info("node %s (%s) now belongs to cluster %s", body.hostname, node["ID"],
                     body.cluster or "default")
    except (ApiError, APIError, DockerException) as e:
        log.warning("cannot label node %s with its cluster %s: %s", body.hostname,
                    body.cluster or "default", str(e).splitlines()[0] if str(e) else e)


@router.post("/leave")
def leave(body: LeaveRequest, access: Access = require("public"),
          state: ServerState = Depends(get_state),
          db: Session = Depends(get_db)) -> Dict[str, Any]:
    """Drain the worker's node so the swarm moves its tasks; the worker then leaves itself."""
    _authenticate(state, body.secret)
    client = _docker(state)
    node: Optional[dict]
    try:
        node = swarm_mgr.find_node(client, body.node_id, body.hostname)
        if node is None:
            raise ApiError(404, "no swarm node %s" % (body.node_id or body.hostname))
        if node["Spec"].get("Role") == "manager":
            raise ApiError(409, "node %s is a manager; the master does not drain itself"
                           % body.hostname)
        swarm_mgr.set_availability(client, node, "drain")
    except (APIError, DockerException) as e:
        raise ApiError(503, "cannot drain node %s" % body.hostname, str(e).splitlines()[0])
    _report(db, body.hostname, left_at=_now())
    log.info("node %s (%s) drained on request of its worker", body.hostname, node["ID"])
    return {"drained": True, "node_id": node["ID"]}


@router.get("/nodes")
def nodes(access: Access = require("site.admin"),
          db: Session = Depends(get_db)) -> Dict[str, Any]:
    """What the workers last reported (admins only)."""
    return {"nodes": [dict(v, hostname=k) for k, v in sorted(_nodes(db).items())]}


class StorageRequest(Authenticated):
    pass


@router.post("/storage")
def storage(body: StorageRequest, request: Request, access: Access = require("public"),
            state: ServerState = Depends(get_state)) -> Dict[str, Any]:
    """How a worker reaches the project files; for sshfs, the SFTP-only key (a secret: use TLS)."""
    from ... import storage as project_storage

    _authenticate(state, body.secret)
    try:
        answer = project_storage.worker_credentials(state.settings)
    except project_storage.StorageError as e:
        raise ApiError(503, "project storage is unavailable", str(e)) from None
    log.info("storage access handed to %s (%s)", body.hostname,
             request.client.host if request.client else "?")
    return answer


# --- engine images for workers (without a registry): list, then `docker save` of one

IMAGE_SHA256_HEADER = "X-Cdsw-Image-Sha256"


class ImageExportRequest(Authenticated):
    image: str = Field(min_length=1, max_length=300)  # repository:tag as listed


def _engine_images(state: ServerState) -> list:
    from ...images.catalog import list_engine_images

    try:
        return list_engine_images(_docker(state))
    except (APIError, DockerException) as e:
        raise ApiError(503, "the master's Docker is unavailable", str(e).splitlines()[0])


def _for_node(db: Session, hostname: str) -> Callable[[str], bool]:
    """Whether an image belongs on this worker's host: every engine image; a model build's
    image only on the hosts of its project's home cluster, the only ones its replicas run on
    (clusters.placement), so a PROD host never holds DEV's builds. The host's cluster is the
    one its heartbeats report (none yet: the default cluster's)."""
    node = db.get(ClusterNode, hostname)
    node_cluster = clusters.of_node(db, str((node.report or {}).get("cluster") or "")
                                    if node is not None else "").id
    homes = clusters.home_ids(db, select(Model.project_id))
    model_homes = {mid: homes.get(pid) for mid, pid in db.execute(select(Model.id,
                                                                          Model.project_id))}

    def wanted(ref: str) -> bool:
        model_id = model_of_image(ref)
        return model_id is None or model_homes.get(model_id) == node_cluster
    return wanted


@router.post("/images")
def images(body: Authenticated, access: Access = require("public"),
           state: ServerState = Depends(get_state),
           db: Session = Depends(get_db)) -> Dict[str, Any]:
    """The images (label com.cdsw.engine=true) this worker's host should hold, with their ids:
    the engine images, and the model builds of its cluster's projects."""
    _authenticate(state, body.secret)
    wanted = _for_node(db, body.hostname)
    return {"images": [{"ref": i.ref, "id": i.image_id, "size": i.size}
                       for i in _engine_images(state) if i.tag != "<none>" and wanted(i.ref)]}


def _archive_name(image: Any) -> str:
    """One archive per image id and tag (`docker save REF` records that tag only)."""
    tag = "".join(c if c.isalnum() or c in "-_." else "_" for c in image.ref)
    return "%s-%s.tar" % (image.image_id.split(":")[-1][:24], tag)


@router.post("/images/export")
def export_image(body: ImageExportRequest, access: Access = require("public"),
                 state: ServerState = Depends(get_state),
                 db: Session = Depends(get_db)) -> Any:
    """`docker save` of one engine image, its sha256 in a header. The archive is made once per
    image id (data_dir/image-exports) and served from there to every worker."""
    from pathlib import Path

    from fastapi.responses import FileResponse

    from ...images import transfer

    _authenticate(state, body.secret)
    for_node = _for_node(db, body.hostname)
    db.rollback()  # nothing more to read: no connection held while the image is saved
    wanted = [i for i in _engine_images(state) if i.ref == body.image and for_node(i.ref)]
    if not wanted:  # only engine images, and models of the host's cluster, leave the master
        raise ApiError(404, "no engine image %s on the master" % body.image)
    image = wanted[0]
    exports = Path(state.settings.data_dir) / "image-exports"
    archive = exports / _archive_name(image)
    with cache_lock(exports):  # a file lock: one export at a time in every HTTP worker
        try:
            digest = transfer.read_sidecar(archive) if archive.is_file() else None
            if digest is None:
                digest = transfer.save_image(_docker(state), image.ref, archive).sha256
                log.info("saved engine image %s for workers (%s)", image.ref, archive.name)
        except UserError as e:
            raise ApiError(503, "cannot export %s" % image.ref, str(e)) from None
        current = {_archive_name(i) for i in _engine_images(state)}
        for old in exports.glob("*.tar"):  # images removed from the master
            if old.name not in current:
                for path in (old, Path(str(old) + transfer.SIDECAR_SUFFIX)):
                    path.unlink() if path.exists() else None
    log.info("engine image %s sent to %s", image.ref, body.hostname)
    return FileResponse(str(archive), media_type="application/x-tar",
                        headers={IMAGE_SHA256_HEADER: digest, "X-Cdsw-Image-Id": image.image_id})
