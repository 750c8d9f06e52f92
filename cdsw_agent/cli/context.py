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
        self.instance_properties: Optional[str] = None  # set when read from a running instance
        self.discover_instance = True  # `cdsw standalone` starts one: it must not read another's

    @property
    def settings(self) -> Settings:
        """The configuration given to this command, else the running standalone instance's
        (cli/instance.py), else the built-in defaults."""
        if self._settings is None:
            from .instance import discovered_properties

            if self.discover_instance:
                self.instance_properties = discovered_properties(self.conf, self.properties)
            self._settings = load_settings(self.conf, self.properties or self.instance_properties,
                                           overrides=self.overrides)
        return self._settings

    def override(self, **values: Any) -> None:
        self.overrides.update({k: v for k, v in values.items() if v is not None})
        self._settings = None

    def database(self) -> Database:
        return Database(self.settings.database_url)


pass_ctx = click.make_pass_decorator(CliContext)
