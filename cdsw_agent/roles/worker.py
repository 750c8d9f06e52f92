"""CDSW_WORKER: joins this host's Docker to the master's swarm and reports on it.

Start: wait for the local dockerd, ask the master for a join token (POST /api/v1/cluster/join
with the cluster secret), join unless already a member (a restarted worker keeps its
membership), then heartbeat until SIGTERM; each heartbeat also fetches the engine images the
master holds and this host lacks, and removes the model images the master no longer has
(sync_images). Beside it, at the same interval but never
held up by an image download, keep_engine_firewall narrows this node's engine firewall to the
CDSW nodes the master lists (POST /api/v1/cluster/engine-nodes; engine_firewall.NodeFirewall:
the broad rule stays until then, and comes back when the worker stops). On SIGTERM the master
drains the node
(POST /api/v1/cluster/leave: a worker may not update nodes itself) and the worker leaves.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import signal
import socket
import tempfile
import threading
import time
from typing import Any, Dict, List, Optional, Set

import docker
import requests
from docker.errors import APIError, DockerException, ImageNotFound

from .. import storage  # project files: mount the master's, keep them mounted
from ..errors import UserError
from ..logs import setup_logging
from ..settings import Settings
from . import engine_firewall

log = logging.getLogger(__name__)

# seconds; an environment override lets tests run faster without a public setting
HEARTBEAT_SECONDS = float(os.environ.get("CDSW_WORKER_HEARTBEAT_SECONDS", "10"))
DOCKER_WAIT_SECONDS = 300.0
DRAIN_WAIT_SECONDS = 60.0
PRUNE_MIN_AGE = dt.timedelta(hours=1)  # model images younger than this are never pruned


def _first_line(e: BaseException) -> str:
    text = str(getattr(e, "explanation", None) or e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def master_url(settings: Settings) -> str:
    scheme = "https" if settings.tls_enable else "http"
    return "%s://%s:%d/api/v1/cluster" % (scheme, settings.master_host, settings.http_port)


class MasterClient:
    """Calls the master's cluster API; the secret goes in the body, never in a log line."""

    def __init__(self, settings: Settings, timeout: float = 10.0):
        self.base = master_url(settings)
        self._secret = settings.cluster_secret
        self.timeout = timeout
        # With TLS, verify against the configured certificate when it is on this host too.
        self.verify: Any = settings.tls_cert if settings.tls_enable and settings.tls_cert and \
            os.path.exists(settings.tls_cert) else True

    def post(self, path: str, **fields: Any) -> Dict[str, Any]:
        body = dict(fields, secret=self._secret, hostname=socket.gethostname())
        try:
            r = requests.post(self.base + path, json=body, timeout=self.timeout, verify=self.verify)
        except requests.RequestException as e:
            raise MasterUnavailable("master %s does not answer: %s"
                                    % (self.base, type(e).__name__))
        if r.status_code == 403:
            raise UserError("the master rejected this worker's cluster secret; set the same "
                            "cdsw.cluster.secret on every host")
        if r.status_code != 200:
            try:
                error = r.json().get("error", "")
            except ValueError:
                error = r.text[:200]
            raise MasterUnavailable("master %s%s answered %d: %s" % (self.base, path,
                                                                     r.status_code, error))
        return r.json()

    def download(self, path: str, dest: str, **fields: Any) -> Any:
        """POST path and stream the answer into the file dest; returns the response headers."""
        body = dict(fields, secret=self._secret, hostname=socket.gethostname())
        try:
            # the master may first have to `docker save` the image: wait for it to answer
            with requests.post(self.base + path, json=body, timeout=(self.timeout, 600),
                               verify=self.verify, stream=True) as r:
                if r.status_code == 403:
                    raise UserError("the master rejected this worker's cluster secret")
                if r.status_code != 200:
                    raise MasterUnavailable("master %s%s answered %d" % (self.base, path,
                                                                         r.status_code))
                with open(dest, "wb") as f:
                    for chunk in r.iter_content(1 << 20):
                        f.write(chunk)
                return r.headers  # case-insensitive
        except requests.RequestException as e:
            raise MasterUnavailable("master %s does not answer: %s"
                                    % (self.base, type(e).__name__))


class MasterUnavailable(Exception):
    pass


def connect_docker(settings: Settings, wait: float = DOCKER_WAIT_SECONDS,
                   stop: Optional[threading.Event] = None) -> docker.DockerClient:
    """The local dockerd, waiting for it (the CDSW_DOCKER role may still be starting)."""
    deadline = time.monotonic() + wait
    last = ""
    while True:
        try:
            client = docker.DockerClient(base_url=settings.docker_host, timeout=60)
            client.ping()
            return client
        except (DockerException, OSError) as e:
            last = _first_line(e)
        if time.monotonic() > deadline or (stop is not None and stop.is_set()):
            raise UserError("Docker does not answer on %s (%s); start the CDSW_DOCKER role on "
                            "this host" % (settings.docker_host, last))
        (stop.wait if stop is not None else time.sleep)(2.0)


def swarm_state(client: docker.DockerClient) -> Dict[str, Any]:
    return client.info().get("Swarm", {})


def ensure_joined(client: docker.DockerClient, master: MasterClient,
                  stop: Optional[threading.Event] = None) -> str:
    """Join the swarm unless this node is already in it; returns the node id."""
    while True:
        swarm = swarm_state(client)
        state = swarm.get("LocalNodeState", "inactive")
        if state == "active":
            return swarm.get("NodeID", "")
        if state == "pending":  # re-connecting after a restart: let it finish
            time.sleep(1.0)
            continue
        if state in ("error", "locked"):
            log.warning("swarm state %s (%s); leaving to join again", state, swarm.get("Error"))
            client.api.leave_swarm(force=True)
        answer = master.post("/join")
        try:
            client.api.join_swarm(remote_addrs=answer["manager_addresses"],
                                  join_token=answer["join_token"],
                                  listen_addr="0.0.0.0:2377")
        except APIError as e:
            if "already part of a swarm" in _first_line(e):
                continue
            raise UserError("cannot join the swarm at %s: %s"
                            % (", ".join(answer["manager_addresses"]), _first_line(e)))
        swarm = swarm_state(client)
        log.info("joined the swarm at %s as node %s", ", ".join(answer["manager_addresses"]),
                 swarm.get("NodeID"))
        return swarm.get("NodeID", "")


def report(client: docker.DockerClient) -> Dict[str, Any]:
    info = client.info()
    swarm = info.get("Swarm", {})
    checks = {"docker": "ok", "swarm": swarm.get("LocalNodeState", "unknown")}
    return dict(node_id=swarm.get("NodeID", ""), cpus=float(info.get("NCPU", 0)),
                memory_bytes=int(info.get("MemTotal", 0)), checks=checks,
                healthy=checks["swarm"] == "active",
                addresses=engine_firewall.host_addresses())  # all count as a CDSW node's


def sync_images(client: docker.DockerClient, master: MasterClient, settings: Settings) -> int:
    """Make sure every engine image the master lists is here: pulled from the registry when
    one is configured, else downloaded from the master and loaded once its sha256 matches.
    Returns how many it made present; an image that fails is tried again on the next call."""
    from ..images import transfer

    fetched = 0
    listing = master.post("/images").get("images", [])
    for image in listing:
        ref, image_id = image["ref"], image["id"]
        try:
            if client.images.get(ref).id == image_id:
                continue
        except ImageNotFound:
            pass
        try:
            try:  # the same image under another name: tag it, nothing to copy
                repository, _, tag = ref.rpartition(":")
                client.images.get(image_id).tag(repository, tag)
                log.info("engine image %s tagged (already here as %s)", ref, image_id[:19])
                fetched += 1
                continue
            except ImageNotFound:
                pass
            if settings.engine_registry:
                transfer.pull_image(client, ref.rpartition(":")[2], settings.engine_registry)
                log.info("engine image %s pulled from %s", ref, settings.engine_registry)
            else:
                spool = os.path.join(settings.data_dir, "tmp")
                os.makedirs(spool, exist_ok=True)
                fd, path = tempfile.mkstemp(prefix="engine-image-", suffix=".tar", dir=spool)
                os.close(fd)
                try:
                    headers = master.download("/images/export", path, image=ref)
                    sha256 = headers.get("X-Cdsw-Image-Sha256", "")
                    transfer.load_image(client, path, sha256=sha256 or None)
                finally:
                    os.unlink(path)
                log.info("engine image %s loaded from the master (%d MB, sha256 %s)", ref,
                         image.get("size", 0) // 1000000, sha256[:12])
            fetched += 1
        except (UserError, MasterUnavailable, DockerException, OSError) as e:
            log.warning("engine image %s not fetched (%s); trying again at the next heartbeat",
                        ref, _first_line(e))
    prune_model_images(client, {i["ref"] for i in listing})
    return fetched


def prune_model_images(client: docker.DockerClient, listed: Set[str], repository: str = "",
                       min_age: dt.timedelta = PRUNE_MIN_AGE) -> List[str]:
    """Removes the model images (REPOSITORY:m<model>-b<build>) this host holds and the master no
    longer lists: their model was deleted there, and each build is hundreds of MB. One still in
    use (a replica stopping) stays until a later heartbeat; one built less than `min_age` ago
    stays too, so a build that a replica pulled before this listing knew of is never taken from
    under it. Engine images are the administrator's to remove. Returns the refs removed."""
    from ..models.builds import IMAGE_REPOSITORY
    from ..orchestrators.swarm import parse_time

    repository = repository or IMAGE_REPOSITORY
    now = dt.datetime.now(dt.timezone.utc)
    removed = []
    for image in client.images.list(name=repository):
        created = parse_time(image.attrs.get("Created"))
        if created is None or now - created < min_age:
            continue
        for ref in image.tags:
            if ref.rpartition(":")[0] != repository or ref in listed:
                continue
            try:
                client.images.remove(ref, noprune=False)
                removed.append(ref)
                log.info("model image %s removed: the master no longer has it", ref)
            except ImageNotFound:
                pass
            except APIError as e:  # 409: a container still uses it
                log.info("model image %s kept for now: %s", ref, _first_line(e))
    return removed


def run(settings: Settings, stop: threading.Event) -> None:
    """The worker's life: join, heartbeat (re-joining when the membership is lost), leave."""
    master = MasterClient(settings)
    client = connect_docker(settings, stop=stop)
    mount_watchdog = storage.start_worker(settings, master.post)  # storage: background mount
    firewall = threading.Thread(target=keep_engine_firewall, args=(master, stop),
                                name="engine-firewall", daemon=True)
    firewall.start()
    node_id = ""
    while not stop.is_set():
        try:
            node_id = ensure_joined(client, master, stop)
            break
        except MasterUnavailable as e:
            log.warning("%s; retrying", e)
            stop.wait(5.0)
    while not stop.is_set():
        try:
            if swarm_state(client).get("LocalNodeState") == "inactive":
                log.warning("this node is no longer in the swarm; joining again")
                node_id = ensure_joined(client, master, stop)
            master.post("/heartbeat", cluster=settings.workbench_cluster,
                        **storage.heartbeat_fields(report(client), mount_watchdog))
            sync_images(client, master, settings)
        except MasterUnavailable as e:
            log.warning("heartbeat failed: %s", e)
        except (DockerException, OSError) as e:
            log.warning("heartbeat: Docker unavailable: %s", _first_line(e))
        stop.wait(HEARTBEAT_SECONDS)
    firewall.join(30)  # it put the broad rule back: the list would go stale
    if node_id:
        leave(client, master, node_id)
    mount_watchdog.stop(release=True)  # storage: unmount once the node is drained


def keep_engine_firewall(master: MasterClient, stop: threading.Event,
                         firewall: Optional[engine_firewall.NodeFirewall] = None) -> None:
    """Until stop: every HEARTBEAT_SECONDS, narrow this node's engine-port rule to the CDSW
    nodes the master lists (the broad rule stays while none was learnt); then the broad rule
    again. A master that does not answer leaves the rules as they are (the heartbeat says so)."""
    firewall = firewall or engine_firewall.NodeFirewall()
    while not stop.is_set():
        try:
            firewall.update(master.post("/engine-nodes").get("engine_nodes"))
        except (MasterUnavailable, UserError):
            pass
        stop.wait(HEARTBEAT_SECONDS)
    firewall.reset()


LEAVE_ATTEMPTS = 4


def leave(client: docker.DockerClient, master: MasterClient, node_id: str) -> None:
    """Drain through the master, wait for this node's containers to stop, then leave."""
    try:
        for attempt in range(1, LEAVE_ATTEMPTS + 1):
            try:
                master.post("/leave", node_id=node_id)
                break
            except MasterUnavailable as e:  # a busy or restarting master: try again, briefly
                if attempt == LEAVE_ATTEMPTS:
                    raise
                log.info("drain request failed (%s); retrying", e)
                time.sleep(2.0 * attempt)
        deadline = time.monotonic() + DRAIN_WAIT_SECONDS
        while time.monotonic() < deadline and client.api.containers(
                filters={"label": "com.docker.swarm.service.id"}):
            time.sleep(1.0)
    except (MasterUnavailable, DockerException, OSError) as e:
        log.warning("could not drain through the master (%s); leaving anyway", e)
    try:
        client.api.leave_swarm(force=False)
        log.info("left the swarm")
    except APIError as e:
        log.warning("could not leave the swarm: %s", _first_line(e))


def start(settings: Settings) -> None:
    setup_logging(settings.log_level, settings.secret_values())
    problems = prepare(settings)
    if problems:
        raise UserError("; ".join(problems))
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    run(settings, stop)


def prepare(settings: Settings) -> List[str]:
    problems = []
    if not settings.cluster_secret:
        problems.append("cluster_secret is empty; copy the master's cdsw.cluster.secret to "
                        "every worker")
    try:
        socket.gethostbyname(settings.master_host)
    except OSError:
        problems.append("cannot resolve master_host %s; set cdsw.master.host (MASTER_IP)"
                        % settings.master_host)
    problems += storage.worker_prepare(settings)  # storage: sshfs, fusermount, /dev/fuse
    return problems


def status(settings: Settings) -> bool:
    """True when the local Docker is an active member of a swarm."""
    try:
        client = docker.DockerClient(base_url=settings.docker_host, timeout=5)
        try:
            return swarm_state(client).get("LocalNodeState") == "active"
        finally:
            client.close()
    except (DockerException, OSError):
        return False
