"""A fresh Debian gateway host as a Docker image, for the Cloudera Manager agent emulation.

The image is a Debian bookworm root file system made by debootstrap (minbase) with only what a
gateway host needs before the CDSW parcel arrives: Python 3 with its venv module and Docker from
Debian (docker.io, iptables). Nothing of the development environment goes in. It reuses the
engine image code (cdsw_agent.images): the same debootstrap step, the same Debian mirror lookup
(the mirror this host's apt uses) and the same cache directory as the engine image of the
integration tests, so a machine pays for debootstrap once; the tarball is keyed by its package
list and `docker import`ed under a tag derived from that key.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, List

from cdsw_agent.images.mirror import resolve_mirror
from cdsw_agent.images.progress import Progress
from cdsw_agent.images.recipe import Recipe
from cdsw_agent.images.rootfs import cached_rootfs, ensure_rootfs
from cdsw_agent.images.util import cache_lock

# What an admin installs on a Debian gateway before adding it to the cluster.
GATEWAY_PACKAGES = ("docker.io", "iptables", "python3", "python3-venv")
REPOSITORY = "cdsw-test/cm-gateway"
IMPORT_CHANGES = [
    "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "ENV LANG=C.UTF-8",
    'CMD ["/bin/sleep", "infinity"]',
]


@dataclass(frozen=True)
class GatewayRecipe(Recipe):
    """Root file system recipe of a gateway host (the engine recipe's suite and architecture)."""

    @property
    def packages(self) -> List[str]:
        return sorted(GATEWAY_PACKAGES)


def gateway_image(client: Any, cache: Path, progress: Progress) -> str:
    """Reference of the gateway image on client's daemon; debootstrap and import when missing."""
    import docker.errors

    recipe = GatewayRecipe()
    with cache_lock(cache, lambda: progress.say("waiting for another build using %s" % cache)):
        mirror = "" if cached_rootfs(recipe, cache) else resolve_mirror(recipe.suite)
        rootfs = ensure_rootfs(recipe, cache, mirror, progress)
    ref = "%s:%s" % (REPOSITORY, rootfs.key[:16])
    try:
        client.images.get(ref)
        return ref
    except docker.errors.ImageNotFound:
        pass
    with progress.step("import", "docker import %s as %s" % (rootfs.tarball.name, ref)):
        repository, tag = ref.rsplit(":", 1)
        client.api.import_image_from_file(str(rootfs.tarball), repository=repository, tag=tag,
                                          changes=IMPORT_CHANGES)
    client.images.get(ref)  # raises when the import did not produce it
    return ref
