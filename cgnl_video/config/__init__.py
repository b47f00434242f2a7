"""Configuration: defaults, loading with ``_BASE_`` inheritance and overrides,
validation, and the registries of blocks and backbones. Imports no torch.

Modules (no import cycles; each imports only those above it):

    rules.py      ConfigError and the rule helpers every check uses
    choices.py    allowed values of the enumerated keys
    defaults.py   the package's keys (base_cfg)
    registry.py   register_block / register_backbone, get_cfg (defaults + registered keys)
    backbones.py  the C2D backbone's keys, checks and stages (registered here)
    blocks.py     the cgnl, nl and residual blocks' keys and checks (registered here)
    validate.py   validate(cfg)
    imports.py    the user modules IMPORTS names, imported before the config is read
    load.py       load_config(file, opts)
"""

from cgnl_video.config import backbones, blocks  # noqa: F401 (registers the shipped backbone and blocks)
from cgnl_video.config.load import load_config
from cgnl_video.config.registry import (
                                        BackboneDescription,
                                        BlockDescription,
                                        Stage,
                                        get_cfg,
                                        register_backbone,
                                        register_block,
)
from cgnl_video.config.rules import ConfigError
from cgnl_video.config.validate import validate

__all__ = ["BackboneDescription", "BlockDescription", "ConfigError", "Stage", "get_cfg", "load_config",
           "register_backbone", "register_block", "validate"]
