"""Reaching Docker and listing the engine images it holds."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any, List, Optional

from ..errors import UserError
from .recipe import LABEL_MARKER, LABEL_PREFIX


def connect(url: str, timeout: int = 120) -> Any:
    """A docker.DockerClient for url that answers, or a UserError that says how to get one."""
    import docker
    import docker.errors

    try:
        client = docker.DockerClient(base_url=url, version="auto", timeout=timeout)
        client.ping()
    except docker.errors.DockerException as e:
        raise UserError("cannot reach Docker at %s (%s); start the CDSW_DOCKER role or point "
                        "cdsw.docker.host / --docker-host at a running dockerd"
                        % (url, str(e).splitlines()[0][:200]))
    return client


@dataclass(frozen=True)
class EngineImage:
    repository: str
    tag: str
    image_id: str
    size: int
    created: str
    version: str
    kernels: List[str]
    editors: List[str]

    @property
    def ref(self) -> str:
        return "%s:%s" % (self.repository, self.tag)

    def as_dict(self) -> dict:
        return {"repository": self.repository, "tag": self.tag, "id": self.image_id,
                "size": self.size, "created": self.created, "version": self.version,
                "kernels": self.kernels, "editors": self.editors}


def list_engine_images(client: Any) -> List[EngineImage]:
    """One entry per repository:tag of every image carrying the engine label, newest first."""
    rows: List[EngineImage] = []
    for image in client.images.list(filters={"label": LABEL_MARKER + "=true"}):
        attrs = image.attrs
        labels = (attrs.get("Config") or {}).get("Labels") or {}
        created = str(attrs.get("Created", ""))
        tags = image.tags or ["<none>:<none>"]
        for t in tags:
            repository, _, tag = t.rpartition(":")
            rows.append(EngineImage(
                repository=repository, tag=tag, image_id=image.id, size=int(attrs.get("Size", 0)),
                created=created, version=labels.get(LABEL_PREFIX + ".version", ""),
                kernels=_split(labels.get(LABEL_PREFIX + ".kernels", "")),
                editors=_split(labels.get(LABEL_PREFIX + ".editors", ""))))
    rows.sort(key=lambda r: (r.created, r.tag), reverse=True)
    return rows


def _split(text: str) -> List[str]:
    return [t for t in text.split(",") if t]


def human_size(n: int) -> str:
    size = float(n)
    for unit in ("B", "kB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return ("%.0f %s" if unit == "B" else "%.1f %s") % (size, unit)
        size /= 1000
    return "%d B" % n  # pragma: no cover


def human_age(created: str, now: Optional[dt.datetime] = None) -> str:
    """'3 minutes ago' for Docker's RFC 3339 Created field (nanoseconds allowed)."""
    try:
        stamp = dt.datetime.fromisoformat(created[:19]).replace(tzinfo=dt.timezone.utc)
    except ValueError:
        return created
    seconds = int(((now or dt.datetime.now(dt.timezone.utc)) - stamp).total_seconds())
    for unit, length in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= length:
            n = seconds // length
            return "%d %s%s ago" % (n, unit, "" if n == 1 else "s")
    return "just now"
