"""Shared state of one CLI invocation: where the configuration comes from, loaded lazily."""

from __future__ import annotations

from typing import Any, Dict, Optional

import click

from ..settings import Settings, load_settings
from ..store.db import Database


class CliContext:
    def __init__(self, conf: Optional[str], properties: Optional[str]):
        self.conf = conf
        self.properties = properties
        self.overrides: Dict[str, Any] = {}
        self._settings: Optional[Settings] = None

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            self._settings = load_settings(self.conf, self.properties, overrides=self.overrides)
        return self._settings

    def override(self, **values: Any) -> None:
        self.overrides.update({k: v for k, v in values.items() if v is not None})
        self._settings = None

    def database(self) -> Database:
        return Database(self.settings.database_url)


pass_ctx = click.make_pass_decorator(CliContext)
