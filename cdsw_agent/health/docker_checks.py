"""Checks that talk to the local Docker daemon through the docker SDK."""

from __future__ import annotations

from typing import Any, Dict, List

from ..orchestrators.bridge import bridge_icc, icc_disabled
from .registry import (NETWORK_TIMEOUT, REGISTRY, HealthContext, Outcome, critical, ok,
                       reason, unknown, warning)

ENGINE_LABEL = "com.cdsw.engine.version"
MODEL_BUILD_LABEL = "io.cdsw.model-build"  # models/builds.py BUILD_LABEL; asserted equal in tests


class DockerUnavailable(Exception):
    """The daemon cannot be reached; str() says why and what to do."""


class DockerSdkMissing(DockerUnavailable):
    """The docker Python package is not installed: nothing can be said about the daemon."""


def docker_client(ctx: HealthContext) -> Any:
    """One docker.DockerClient per health run; raises DockerUnavailable."""

    def make() -> Any:
        try:
            import docker  # imported lazily: the health CLI must work without it
            from docker.errors import DockerException
        except ImportError:
            raise DockerSdkMissing("the docker Python package is not installed "
                                    "(pip install docker)")
        try:
            return docker.DockerClient(base_url=ctx.settings.docker_host, timeout=NETWORK_TIMEOUT)
        except DockerException as e:
            raise DockerUnavailable("cannot reach Docker at %s: %s; start the CDSW_DOCKER role"
                                    % (ctx.settings.docker_host, reason(e)))

    return ctx.cached("docker", make)


def docker_info(ctx: HealthContext) -> Dict[str, Any]:
    client = docker_client(ctx)
    return ctx.cached("docker.info", client.info)


def _not_used(ctx: HealthContext) -> bool:
    return ctx.settings.orchestrator != "swarm"


@REGISTRY.register("docker_daemon", "The Docker daemon answers on settings.docker_host.")
def docker_daemon(ctx: HealthContext) -> Outcome:
    if _not_used(ctx):
        return ok("not used (orchestrator is %s)" % ctx.settings.orchestrator)
    try:
        client = docker_client(ctx)
        client.ping()
        version = client.version()
    except DockerSdkMissing as e:
        return unknown(str(e))
    except DockerUnavailable as e:
        return critical(str(e))
    except Exception as e:
        return critical("Docker at %s does not answer: %s; start the CDSW_DOCKER role"
                        % (ctx.settings.docker_host, reason(e)))
    return ok("Docker %s answers at %s" % (version.get("Version", "?"), ctx.settings.docker_host),
              version=version.get("Version"), api_version=version.get("ApiVersion"))


@REGISTRY.register("swarm_membership", "This host's Docker daemon is an active swarm member.",
                   roles=("master", "worker"))
def swarm_membership(ctx: HealthContext) -> Outcome:
    if _not_used(ctx):
        return ok("not used (orchestrator is %s)" % ctx.settings.orchestrator)
    try:
        swarm = docker_info(ctx).get("Swarm") or {}
    except DockerUnavailable as e:
        return unknown(str(e))
    state = swarm.get("LocalNodeState", "")
    role = "manager" if swarm.get("ControlAvailable") else "worker"
    data = {"state": state, "role": role, "node_id": swarm.get("NodeID", ""),
            "node_addr": swarm.get("NodeAddr", "")}
    if state == "active":
        return ok("active swarm %s (node %s)" % (role, data["node_id"][:12]), **data)
    if state == "pending":
        return warning("joining the swarm (state pending); wait or restart the role", **data)
    if state == "inactive":
        return critical("not part of a swarm; start the CDSW_MASTER role (manager) or the "
                        "CDSW_WORKER role (joins the master)", **data)
    detail = swarm.get("Error") or "no detail"
    return critical("swarm state %s: %s" % (state or "missing", detail), **data)


@REGISTRY.register("swarm_nodes", "Every swarm node is ready (checked on a manager).",
                   roles=("master",))
def swarm_nodes(ctx: HealthContext) -> Outcome:
    if _not_used(ctx):
        return ok("not used (orchestrator is %s)" % ctx.settings.orchestrator)
    try:
        swarm = docker_info(ctx).get("Swarm") or {}
        if swarm.get("LocalNodeState") != "active":
            return unknown("this host is not an active swarm member; see swarm_membership")
        if not swarm.get("ControlAvailable"):
            return ok("not a swarm manager; node readiness is checked on the master")
        nodes = docker_client(ctx).nodes.list()
    except DockerUnavailable as e:
        return unknown(str(e))
    rows: List[Dict[str, str]] = []
    for node in nodes:
        attrs = node.attrs
        rows.append({"hostname": attrs.get("Description", {}).get("Hostname", node.id[:12]),
                     "state": attrs.get("Status", {}).get("State", "unknown"),
                     "availability": attrs.get("Spec", {}).get("Availability", "active")})
    ready = [r for r in rows if r["state"] == "ready"]
    not_ready = [r for r in rows if r["state"] != "ready"]
    drained = [r["hostname"] for r in ready if r["availability"] != "active"]
    data = {"total": len(rows), "ready": len(ready), "nodes": rows}
    if not rows or not ready:
        return critical("no swarm node is ready (%d known)" % len(rows), **data)
    if not_ready:
        return warning("%d of %d nodes not ready: %s" % (
            len(not_ready), len(rows),
            ", ".join("%s (%s)" % (r["hostname"], r["state"]) for r in not_ready)), **data)
    suffix = "; not scheduling on %s" % ", ".join(drained) if drained else ""
    return ok("%d of %d nodes ready%s" % (len(ready), len(rows), suffix), **data)


@REGISTRY.register("engine_isolation", "Docker's default bridge keeps engines apart (icc "
                   "disabled, as the CDSW_DOCKER role configures it).", roles=("master", "worker"))
def engine_isolation(ctx: HealthContext) -> Outcome:
    if _not_used(ctx):
        return ok("not used (orchestrator is %s)" % ctx.settings.orchestrator)
    try:
        icc = bridge_icc(docker_client(ctx).api)
    except DockerUnavailable as e:
        return unknown(str(e))
    except Exception as e:  # noqa: BLE001 - the SDK's errors: said, not raised
        return unknown("cannot read Docker's default bridge: %s" % reason(e))
    if icc_disabled(icc):
        return ok("engines on this host cannot reach each other's containers (icc disabled)")
    return warning("Docker's default bridge lets containers reach each other (icc enabled): "
                   "restart the CDSW_DOCKER role so dockerd runs with the daemon.json it renders "
                   "(\"icc\": false); until then the master gives every engine an overlay network "
                   "of its own when its own bridge is open, and engines on this host are only "
                   "kept apart by their servers' tokens", icc=icc)


@REGISTRY.register("engine_image", "An engine image (label %s) is present locally." % ENGINE_LABEL,
                   roles=("master", "worker"))
def engine_image(ctx: HealthContext) -> Outcome:
    if _not_used(ctx):
        return ok("not used (orchestrator is %s)" % ctx.settings.orchestrator)
    try:
        images = docker_client(ctx).images.list(filters={"label": ENGINE_LABEL})
    except DockerUnavailable as e:
        return unknown(str(e))
    found = []
    for image in images:
        if MODEL_BUILD_LABEL in (image.labels or {}):
            continue  # a model build inherits the engine's label from its base: not an engine
        version = (image.labels or {}).get(ENGINE_LABEL, "")
        found.append({"id": image.short_id, "tags": list(image.tags), "version": version})
    if not found:
        return critical("no engine image on this host; run `cdsw images build` on the master "
                        "(workers receive it from the master)", images=[])
    newest = found[0]
    name = newest["tags"][0] if newest["tags"] else newest["id"]
    return ok("%d engine image(s), e.g. %s (engine %s)" % (len(found), name, newest["version"]),
              images=found)

