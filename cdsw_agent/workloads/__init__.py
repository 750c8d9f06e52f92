"""What every kind of engine work shares: the engine container (engine.py)."""

from .engine import (KIND_LABEL, PROJECT_LABEL, PROJECT_MOUNT, USER_LABEL, EngineError,
                     EngineRequest, build_spec, engine_dir, image_name, place, proxies)

__all__ = ["KIND_LABEL", "PROJECT_LABEL", "PROJECT_MOUNT", "USER_LABEL", "EngineError",
           "EngineRequest", "build_spec", "engine_dir", "image_name", "place", "proxies"]
