"""Engine images: built from scratch (debootstrap + an offline wheelhouse), tagged by content,
listed, and moved between hosts (save/load with a checksum, or a registry's push/pull)."""

from .build import BuildResult, build_image
from .catalog import EngineImage, connect, list_engine_images
from .progress import Progress
from .recipe import REPOSITORY, Recipe
from .transfer import SavedImage, load_image, pull_image, push_image, registry_ref, save_image

__all__ = ["BuildResult", "build_image", "EngineImage", "connect", "list_engine_images", "Progress",
           "REPOSITORY", "Recipe", "SavedImage", "load_image", "pull_image", "push_image",
           "registry_ref", "save_image"]
