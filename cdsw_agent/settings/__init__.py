"""One typed settings object for the whole workbench. See loader.py for the sources."""

from .fields import Setting, SettingError
from .loader import ConfigError, Settings, Source, load_settings, masked
from .schema import BY_NAME, SETTINGS

__all__ = ["Setting", "SettingError", "ConfigError", "Settings", "Source", "load_settings",
           "masked", "SETTINGS", "BY_NAME"]
