"""Typed setting declarations: one `Setting` per knob, with its names in every source.

A setting knows how to parse a raw string from any source and how to describe
what it accepts, so every error can say what is allowed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Sequence

TRUE_WORDS = {"1", "true", "yes", "on", "y"}
FALSE_WORDS = {"0", "false", "no", "off", "n", ""}


class SettingError(ValueError):
    """A value that cannot be used; the message is one line for the user."""


@dataclass(frozen=True)
class Setting:
    name: str  # attribute name on Settings, e.g. "http_port"
    kind: str  # "str", "int", "bool", "path", "choice", "list", "float"
    default: Any
    description: str
    conf_key: Optional[str] = None  # key in a CDSW-style cdsw.conf (e.g. DOMAIN)
    secret: bool = False
    choices: Sequence[str] = ()
    minimum: Optional[float] = None
    maximum: Optional[float] = None
    group: str = "general"
    required_in_cluster: bool = False  # the CSD / mpack must ask for it
    validator: Optional[Callable[[Any], None]] = field(default=None, compare=False)

    @property
    def property_key(self) -> str:
        """Key in cdsw.properties, as rendered by Cloudera Manager or Ambari."""
        return "cdsw." + self.name.replace("_", ".")

    @property
    def env_var(self) -> str:
        return "CDSW_" + self.name.upper()

    def allowed(self) -> str:
        if self.kind == "int" or self.kind == "float":
            lo = "" if self.minimum is None else str(self._num(self.minimum))
            hi = "" if self.maximum is None else str(self._num(self.maximum))
            word = "an integer" if self.kind == "int" else "a number"
            if lo and hi:
                return "%s from %s to %s" % (word, lo, hi)
            if lo:
                return "%s of at least %s" % (word, lo)
            return word
        if self.kind == "bool":
            return "true or false"
        if self.kind == "choice":
            return "one of " + ", ".join(self.choices)
        if self.kind == "list":
            return "a comma-separated list"
        if self.kind == "path":
            return "an absolute path"
        return "a string"

    def _num(self, v: float) -> Any:
        return int(v) if self.kind == "int" else v

    def parse(self, raw: Any) -> Any:
        """Turn a raw value (string from a file or env, or a Python value) into the typed value."""
        if raw is None:
            return self.default
        text = raw.strip() if isinstance(raw, str) else raw
        value: Any
        if self.kind == "int":
            try:
                value = int(text)
            except (TypeError, ValueError):
                raise SettingError("expected " + self.allowed())
            self._check_range(value)
        elif self.kind == "float":
            try:
                value = float(text)
            except (TypeError, ValueError):
                raise SettingError("expected " + self.allowed())
            self._check_range(value)
        elif self.kind == "bool":
            if isinstance(text, bool):
                value = text
            elif str(text).lower() in TRUE_WORDS:
                value = True
            elif str(text).lower() in FALSE_WORDS:
                value = False
            else:
                raise SettingError("expected " + self.allowed())
        elif self.kind == "choice":
            value = str(text).lower()
            if value not in self.choices:
                raise SettingError("expected " + self.allowed())
        elif self.kind == "list":
            if isinstance(text, (list, tuple)):
                value = [str(v).strip() for v in text if str(v).strip()]
            else:
                value = [v.strip() for v in str(text).split(",") if v.strip()]
        elif self.kind == "path":
            value = str(text)
            if value and not value.startswith("/"):
                raise SettingError("expected " + self.allowed())
        else:
            value = str(text)
        if self.validator is not None:
            self.validator(value)
        return value

    def _check_range(self, value: float) -> None:
        if (self.minimum is not None and value < self.minimum) or (
            self.maximum is not None and value > self.maximum
        ):
            raise SettingError("expected " + self.allowed())

    def render(self, value: Any) -> str:
        """The value as text for a properties or conf file."""
        if self.kind == "bool":
            return "true" if value else "false"
        if self.kind == "list":
            return ",".join(value)
        return "" if value is None else str(value)
