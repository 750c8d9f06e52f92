"""Whether a dockerd's default bridge keeps containers apart: the one rule the swarm backend
(which then runs engines on the bridge) and the engine_isolation health check both read.
Free of the docker package, so the health CLI can import it without the SDK."""

from __future__ import annotations

from typing import Any

ICC_OPTION = "com.docker.network.bridge.enable_icc"


def bridge_icc(api: Any) -> str:
    """The default bridge's enable_icc option through a docker APIClient ("true", Docker's
    default, when unset); raises the SDK's errors."""
    return (api.inspect_network("bridge").get("Options") or {}).get(ICC_OPTION, "true")


def icc_disabled(icc: str) -> bool:
    return icc == "false"
