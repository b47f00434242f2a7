"""Configuration: defaults, loading with ``_BASE_`` inheritance and overrides, validation."""

from cgnl_video.config.defaults import get_cfg
from cgnl_video.config.load import ConfigError, load_config
from cgnl_video.config.validate import validate

__all__ = ["ConfigError", "get_cfg", "load_config", "validate"]
