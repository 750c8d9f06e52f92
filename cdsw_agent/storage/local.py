"""The master's own disk: project files are data_dir/projects, engines bind-mount them."""

from __future__ import annotations

import os
from typing import Optional

from .base import ProjectStorage
from .config import StorageError


class LocalStorage(ProjectStorage):
    name = "local"

    def ensure(self) -> None:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise StorageError("cannot create %s: %s" % (self.root, e.strerror or e)) from None

    def check(self) -> Optional[str]:
        if not self.root.is_dir():
            return "%s is not a directory" % self.root
        if not os.access(self.root, os.W_OK | os.X_OK):
            return "%s is not writable" % self.root
        return None
