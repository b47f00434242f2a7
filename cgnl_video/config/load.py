"""Load a YAML experiment file (with ``_BASE_``) plus ``KEY VALUE`` overrides."""

import os
import re
from typing import Optional, Sequence

from fvcore.common.config import CfgNode

from cgnl_video.config.imports import KEY as IMPORTS_KEY
from cgnl_video.config.imports import find_imports, import_modules
from cgnl_video.config.registry import get_cfg
from cgnl_video.config.rules import ConfigError
from cgnl_video.config.validate import validate

# fvcore (merging a file) says "Non-existent config key: K"; yacs (merging a list) "Non-existent key: K".
_UNKNOWN_KEY = re.compile(r"Non-existent (?:config )?key: (\S+)")


def _unknown_key_error(exc: Exception, source: str) -> ConfigError:
    text = str(exc.args[0]) if exc.args else str(exc)
    match = _UNKNOWN_KEY.search(text)
    key = match.group(1) if match else text
    return ConfigError(f"unknown config key {key} (in {source})")


def load_config(cfg_file: Optional[str] = None, opts: Sequence[str] = (), check: bool = True) -> CfgNode:
    """The config of ``cfg_file`` with the ``opts`` overrides (validated with ``check``).

    First the modules IMPORTS names (in ``opts``, else in ``cfg_file`` and its
    ``_BASE_`` files; see ``config/imports.py``), which may register blocks and
    backbones; then the defaults (``get_cfg``: with the keys of registered blocks and
    backbones), ``cfg_file`` (following ``_BASE_``) and ``opts`` pairs. The config
    holds IMPORTS with its ``.py`` paths absolute.

    Args:
        cfg_file: an experiment YAML file; None for the defaults only.
        opts: overrides as a flat ``KEY VALUE`` list, e.g. ``["TRAIN.BATCH_SIZE", "8"]``.
        check: run ``validate`` on the result.
    Returns:
        The merged config, frozen (``cfg.defrost()`` to change it).
    Raises:
        ConfigError naming the key for an unknown key, a malformed override list, a
        module IMPORTS cannot import, or (with ``check``) a value ``validate`` rejects.
    """
    if cfg_file and not os.path.isfile(cfg_file):
        raise ConfigError(f"config file not found: {cfg_file}")
    opts = list(opts)
    imports = find_imports(cfg_file, opts)
    import_modules(imports)
    cfg = get_cfg()
    if cfg_file:
        try:
            cfg.merge_from_file(cfg_file)
        except KeyError as exc:
            raise _unknown_key_error(exc, cfg_file) from None
    if len(opts) % 2:
        raise ConfigError(f"overrides must be KEY VALUE pairs; {opts[-1]!r} has no value")
    for key, value in zip(opts[0::2], opts[1::2]):
        try:
            cfg.merge_from_list([key, value])
        except (KeyError, ValueError, AssertionError) as exc:
            if _UNKNOWN_KEY.search(str(exc)):
                raise _unknown_key_error(exc, "command line") from None
            raise ConfigError(f"bad value {value!r} for {key}: {exc}") from None
    cfg[IMPORTS_KEY] = imports
    if check:
        validate(cfg)
    cfg.freeze()
    return cfg
