"""Load the effective settings from their sources, later wins:

1. built-in defaults
2. a CDSW-style ``cdsw.conf`` (shell ``KEY=VALUE`` with CDSW's own keys)
3. ``cdsw.properties`` (rendered by the Cloudera Manager configWriter or the Ambari scripts)
4. ``CDSW_*`` environment variables

Every value remembers where it came from, so an error names the key, the file
and the line, and ``cdsw config show --sources`` can tell the admin.
"""

from __future__ import annotations

import os
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterator, List, Mapping, Optional, Tuple

from .fields import Setting, SettingError
from .schema import BY_CONF_KEY, BY_ENV, BY_NAME, BY_PROPERTY, LOCATOR_ENV, SETTINGS

DEFAULT_CONF = "/etc/cdsw/config/cdsw.conf"
DEFAULT_PROPERTIES = "/etc/cdsw/config/cdsw.properties"


class ConfigError(Exception):
    """A configuration problem; str() is one line that says what to fix."""


@dataclass(frozen=True)
class Source:
    kind: str  # default, cdsw.conf, cdsw.properties, env, override
    location: str = ""  # "path:line" or the variable name

    def __str__(self) -> str:
        return self.kind if not self.location else "%s (%s)" % (self.kind, self.location)


class Settings:
    """The effective, typed configuration. Attribute access: ``settings.http_port``."""

    def __init__(self, values: Dict[str, Any], sources: Dict[str, Source]):
        object.__setattr__(self, "_values", values)
        object.__setattr__(self, "_sources", sources)

    def __getattr__(self, name: str) -> Any:
        try:
            return self._values[name]
        except KeyError:
            raise AttributeError(name)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("Settings are read-only; use Settings.with_overrides()")

    def source_of(self, name: str) -> Source:
        return self._sources[name]

    def items(self) -> Iterator[Tuple[Setting, Any, Source]]:
        for s in SETTINGS:
            yield s, self._values[s.name], self._sources[s.name]

    def as_dict(self) -> Dict[str, Any]:
        return dict(self._values)

    def with_overrides(self, **overrides: Any) -> "Settings":
        values = dict(self._values)
        sources = dict(self._sources)
        for name, raw in overrides.items():
            setting = BY_NAME.get(name)
            if setting is None:
                raise ConfigError("unknown setting %r" % name)
            try:
                values[name] = setting.parse(raw)
            except SettingError as e:
                raise ConfigError("%s: invalid value %r: %s" % (name, raw, e))
            sources[name] = Source("override")
        return Settings(values, sources)

    # --- derived values, one place for each rule
    @property
    def database_url(self) -> str:
        return self.db_url or "sqlite:///" + str(Path(self.data_dir) / "cdsw.db")

    @property
    def projects_dir(self) -> Path:
        return Path(self.data_dir) / "projects"

    @property
    def backups_dir(self) -> Path:
        return Path(self.data_dir) / "backups"

    @property
    def base_url(self) -> str:
        scheme = "https" if self.tls_enable else "http"
        default = 443 if self.tls_enable else 80
        port = "" if self.http_port == default else ":%d" % self.http_port
        return "%s://%s%s" % (scheme, self.domain, port)

    def secret_values(self) -> List[str]:
        """Values that must never appear in logs."""
        out = []
        for s in SETTINGS:
            v = self._values[s.name]
            if s.secret and isinstance(v, str) and v:
                out.append(v)
        return out


def masked(setting: Setting, value: Any) -> str:
    """The value as shown to an admin: secrets hidden, URLs keep everything but the password."""
    text = setting.render(value)
    if not setting.secret or not text:
        return text
    if "://" in text and "@" in text:
        scheme, rest = text.split("://", 1)
        creds, host = rest.rsplit("@", 1)
        user = creds.split(":", 1)[0]
        return "%s://%s:****@%s" % (scheme, user, host)
    if "://" in text:
        return text
    return "****"


def _read_lines(path: Path) -> List[str]:
    try:
        data = path.read_bytes()
    except OSError as e:
        raise ConfigError("cannot read %s: %s" % (path, e.strerror or e))
    try:
        return data.decode("utf-8").splitlines()
    except UnicodeDecodeError:
        raise ConfigError("%s is not UTF-8 text; save it as UTF-8" % path)


def parse_conf(path: Path) -> List[Tuple[str, str, int]]:
    """Parse a shell-style KEY=VALUE file (as CDSW's cdsw.conf). Returns (key, value, line)."""
    out = []
    for number, line in enumerate(_read_lines(path), 1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.startswith("export "):
            stripped = stripped[len("export "):].strip()
        if "=" not in stripped:
            raise ConfigError("%s:%d: expected KEY=VALUE, got %r" % (path, number, line.strip()[:60]))
        key, raw = stripped.split("=", 1)
        try:
            parts = shlex.split(raw, comments=True)
        except ValueError as e:
            raise ConfigError("%s:%d: %s: bad quoting (%s)" % (path, number, key.strip(), e))
        out.append((key.strip(), " ".join(parts), number))
    return out


def parse_properties(path: Path) -> List[Tuple[str, str, int]]:
    """Parse a Java-style properties file as rendered by the managers (key=value, # comments)."""
    out = []
    for number, line in enumerate(_read_lines(path), 1):
        stripped = line.strip()
        if not stripped or stripped[0] in "#!":
            continue
        for sep in ("=", ":"):
            if sep in stripped:
                key, value = stripped.split(sep, 1)
                break
        else:
            raise ConfigError("%s:%d: expected key=value, got %r" % (path, number, stripped[:60]))
        value = value.strip().replace("\\:", ":").replace("\\=", "=").replace("\\\\", "\\")
        out.append((key.strip(), value, number))
    return out


def load_settings(
    conf_path: Optional[str] = None,
    properties_path: Optional[str] = None,
    environ: Optional[Mapping[str, str]] = None,
    overrides: Optional[Dict[str, Any]] = None,
) -> Settings:
    """Build the effective settings. A path given explicitly must exist; default paths may not."""
    env = os.environ if environ is None else environ
    values: Dict[str, Any] = {s.name: s.parse(s.default) if s.kind == "list" else s.default
                              for s in SETTINGS}
    sources: Dict[str, Source] = {s.name: Source("default") for s in SETTINGS}

    def apply(setting: Setting, raw: str, source: Source, key: str) -> None:
        try:
            values[setting.name] = setting.parse(raw)
        except SettingError as e:
            raise ConfigError("%s in %s: invalid value %r: %s" % (key, source.location or source.kind,
                                                                  raw, e))
        sources[setting.name] = source

    conf = conf_path or env.get("CDSW_CONF")
    conf_file = Path(conf or DEFAULT_CONF)
    if conf or conf_file.exists():
        if not conf_file.exists():
            raise ConfigError("configuration file %s does not exist" % conf_file)
        for key, raw, line in parse_conf(conf_file):
            setting = BY_CONF_KEY.get(key)
            if setting is None:
                # cdsw.conf is shared with CDSW tooling; keys we do not use are allowed, but a
                # key of ours in the wrong spelling would be silently ignored, so say so.
                lowered = key.lower()
                if lowered in BY_NAME:
                    setting = BY_NAME[lowered]
                else:
                    continue
            apply(setting, raw, Source("cdsw.conf", "%s:%d" % (conf_file, line)), key)

    props = properties_path or env.get("CDSW_PROPERTIES")
    props_file = Path(props or DEFAULT_PROPERTIES)
    if props or props_file.exists():
        if not props_file.exists():
            raise ConfigError("properties file %s does not exist" % props_file)
        for key, raw, line in parse_properties(props_file):
            setting = BY_PROPERTY.get(key)
            if setting is None:
                raise ConfigError("%s:%d: unknown key %s (see `cdsw config schema`)"
                                  % (props_file, line, key))
            apply(setting, raw, Source("cdsw.properties", "%s:%d" % (props_file, line)), key)

    for var, raw in sorted(env.items()):
        if not var.startswith("CDSW_") or var in LOCATOR_ENV:
            continue
        setting = BY_ENV.get(var)
        if setting is None:
            continue  # CDSW_* is also used inside engines (CDSW_PROJECT, ...)
        apply(setting, raw, Source("env", var), var)

    settings = Settings(values, sources)
    if overrides:
        settings = settings.with_overrides(**overrides)
    check_consistency(settings)
    return settings


def check_consistency(settings: Settings) -> None:
    """Rules that involve more than one setting."""
    if settings.tls_enable and not (settings.tls_cert and settings.tls_key):
        raise ConfigError("tls_enable is true but tls_cert or tls_key is empty (%s); set both "
                          "or turn TLS off" % settings.source_of("tls_enable"))
    if settings.ldap_url and not settings.ldap_user_search_base:
        raise ConfigError("ldap_url is set but ldap_user_search_base is empty (%s); set the "
                          "base DN users are searched under" % settings.source_of("ldap_url"))
    if settings.ldap_url and not settings.ldap_url.startswith(("ldap://", "ldaps://")):
        raise ConfigError("ldap_url %r (%s): expected ldap://HOST:PORT or ldaps://HOST:PORT"
                          % (settings.ldap_url, settings.source_of("ldap_url")))
