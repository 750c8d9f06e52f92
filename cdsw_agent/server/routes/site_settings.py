"""Site settings an administrator changes at run time (stored in the database).

Each has a type and a default; some default to the file/environment setting of the same name.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Dict, Optional

from sqlalchemy.orm import Session

from ...projects.git_clone import allow_list_problem
from ...settings import Settings
from ...store.models import SiteSetting


@dataclass(frozen=True)
class SiteSettingDef:
    kind: type
    description: str
    default: Any = None
    from_setting: Optional[str] = None  # default comes from this file setting
    derive: Optional[Callable[[Settings], Any]] = None  # default computed from the settings
    minimum: Optional[int] = None
    maximum: Optional[int] = None
    check: Optional[Callable[[Any], Optional[str]]] = None  # what is wrong with a value, or None


SITE_SETTINGS: Dict[str, SiteSettingDef] = {
    "signup_enabled": SiteSettingDef(bool, "Anyone may create a local account.",
                                     from_setting="signup_enabled"),
    "announcement": SiteSettingDef(str, "Banner shown to every user.", default="", maximum=2000),
    "session_idle_minutes": SiteSettingDef(int, "Idle sessions stop after this long.",
                                           from_setting="session_idle_minutes", minimum=1,
                                           maximum=10080),
    "session_max_minutes": SiteSettingDef(int, "Sessions stop after this long.",
                                          from_setting="session_max_minutes", minimum=1,
                                          maximum=43200),
    "default_engine_image_id": SiteSettingDef(int, "Engine image new projects use.", default=0,
                                              minimum=0, maximum=2**53),
    "default_engine_profile_id": SiteSettingDef(int, "Profile sessions start with.", default=0,
                                                minimum=0, maximum=2**53),
    "session_sharing_allowed": SiteSettingDef(
        bool, "Session owners may share their sessions (lend their identity) with "
              "collaborators. Off by default when Kerberos is enabled (kerberos_enabled).",
        derive=lambda s: not s.kerberos_enabled),
    "git_allowed_hosts": SiteSettingDef(
        str, "Hosts projects may be cloned from: names, *.domain patterns, IP addresses or "
             "networks, separated by commas. Empty: any public host. Loopback, link-local and "
             "the master's own addresses are always refused.", default="", maximum=4000,
        check=allow_list_problem),
}


def default_of(settings: Settings, key: str) -> Any:
    d = SITE_SETTINGS[key]
    if d.derive is not None:
        return d.derive(settings)
    return getattr(settings, d.from_setting) if d.from_setting else d.default


def effective(db: Session, settings: Settings, key: str) -> Any:
    row = db.get(SiteSetting, key)
    return row.value if row is not None else default_of(settings, key)


def all_effective(db: Session, settings: Settings) -> Dict[str, Any]:
    return {key: effective(db, settings, key) for key in SITE_SETTINGS}


def validate(key: str, value: Any) -> Optional[str]:
    """None when acceptable, else what is wrong."""
    d = SITE_SETTINGS.get(key)
    if d is None:
        return "unknown site setting; known: " + ", ".join(sorted(SITE_SETTINGS))
    if d.kind is int and (isinstance(value, bool) or not isinstance(value, int)):
        return "expected an integer"
    if d.kind is bool and not isinstance(value, bool):
        return "expected true or false"
    if d.kind is str and not isinstance(value, str):
        return "expected a string"
    if d.kind is int:
        if d.minimum is not None and value < d.minimum:
            return "must be at least %d" % d.minimum
        if d.maximum is not None and value > d.maximum:
            return "must be at most %d" % d.maximum
    if d.kind is str and d.maximum is not None and len(value) > d.maximum:
        return "must be at most %d characters" % d.maximum
    if d.kind is str:
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return "must be Unicode text (it holds a lone surrogate)"
    if d.check is not None:
        return d.check(value)
    return None
