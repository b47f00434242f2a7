"""IMPORTS: the user modules a config needs (blocks and backbones registered on
import), imported by ``load_config`` before the defaults are assembled, so that
every tool and torch.hub take a block registered from user code.

An entry is a dotted module name (imported as Python imports it: an installed
package, or one on PYTHONPATH) or a path ending in ``.py``. A relative path is
taken relative to the YAML file that names it (as ``_BASE_`` is), or to the
current directory when it comes from the command line; the loaded config holds
it absolute, so the config.yaml a run writes works from any directory. A file
is run once per process, under a module name made from its real path, and not
at all if it was imported already under any name: loading a config twice
registers nothing twice. Any failure is a ConfigError naming IMPORTS and the entry.
"""

import hashlib
import importlib
import importlib.util
import os
import re
import sys
from types import ModuleType
from typing import Any, List, Optional, Sequence

import yaml
from fvcore.common.config import BASE_KEY, CfgNode

from cgnl_video.config.rules import ConfigError

KEY = "IMPORTS"


def is_file_entry(entry: str) -> bool:
    """Whether an IMPORTS entry names a ``.py`` file (else a dotted module name)."""
    return entry.endswith(".py")


def _entries(value: Any, source: str, folder: str) -> List[str]:
    """``value`` checked as a list of names / paths; relative ``.py`` paths joined to ``folder``."""
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) and v for v in value):
        raise ConfigError(f"{KEY} (in {source}): must be a list of module names or .py paths, got {value!r}")
    return [os.path.abspath(os.path.join(folder, os.path.expanduser(v))) if is_file_entry(v) else v for v in value]


def _file_imports(cfg_file: str) -> Optional[List[str]]:
    """IMPORTS of a YAML file following its ``_BASE_`` chain as fvcore merges it (a
    file's own value replaces its bases', a later base an earlier one); None if unset."""
    with open(cfg_file, encoding="utf-8") as handle:
        data = yaml.safe_load(handle)
    if not isinstance(data, dict):
        return None  # not a config: merging it says so
    if KEY in data:
        return _entries(data[KEY], cfg_file, os.path.dirname(cfg_file))
    bases = data.get(BASE_KEY, [])
    found = None
    for base in [bases] if isinstance(bases, str) else bases:
        path = os.path.join(os.path.dirname(cfg_file), os.path.expanduser(base))
        if not os.path.isfile(path):
            raise ConfigError(f"config file not found: {path} (the _BASE_ of {cfg_file})")
        in_base = _file_imports(path)
        found = found if in_base is None else in_base
    return found


def find_imports(cfg_file: Optional[str], opts: Sequence[str]) -> List[str]:
    """The IMPORTS the loaded config will hold: the last ``IMPORTS VALUE`` pair of
    ``opts`` (decoded as yacs decodes an override), else the file's, else none.

    Args:
        cfg_file: the experiment YAML file (an existing file) or None.
        opts: the flat KEY VALUE override list.
    Returns:
        dotted names as given, ``.py`` paths absolute.
    """
    values = [value for key, value in zip(opts[0::2], opts[1::2]) if key == KEY]
    if values:
        return _entries(CfgNode._decode_cfg_value(values[-1]), "command line", os.getcwd())
    found = _file_imports(cfg_file) if cfg_file else None
    return found or []


def _module_name(path: str) -> str:
    """The name a ``.py`` file is imported under: its stem and a hash of its real path."""
    stem = re.sub(r"\W", "_", os.path.splitext(os.path.basename(path))[0])
    return f"_cgnl_imports_{stem}_{hashlib.sha1(path.encode()).hexdigest()[:12]}"


def _imported_file(path: str) -> Optional[ModuleType]:
    """A module already imported from the file at real path ``path`` (under any name), or None."""
    name = os.path.basename(path)
    for module in list(sys.modules.values()):
        file = getattr(module, "__file__", None)
        if isinstance(file, str) and os.path.basename(file) == name and os.path.realpath(file) == path:
            return module
    return None


def _import_file(path: str) -> ModuleType:
    real = os.path.realpath(path)
    if not os.path.isfile(real):
        raise ConfigError(f"{KEY}: no such file {path} (a relative path is taken from the YAML file "
                          "that names it, or from the current directory on the command line)")
    name = _module_name(real)
    module = sys.modules.get(name) or _imported_file(real)
    if module is not None:
        return module
    spec = importlib.util.spec_from_file_location(name, real)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # as an import does: the module can find itself while it runs
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]  # a failed file is run again next time (e.g. once it is fixed)
        raise
    return module


def import_modules(entries: Sequence[str]) -> List[ModuleType]:
    """Import every IMPORTS entry (see the module docstring), in order.

    Args:
        entries: dotted module names and absolute ``.py`` paths (``find_imports``).
    Returns:
        the modules.
    Raises:
        ConfigError naming IMPORTS, the entry and the original error for a module or
        file that is missing or raises while it is imported.
    """
    modules = []
    for entry in entries:
        try:
            modules.append(_import_file(entry) if is_file_entry(entry) else importlib.import_module(entry))
        except ConfigError:
            raise
        except Exception as exc:
            hint = ""
            if isinstance(exc, ModuleNotFoundError) and exc.name and entry.startswith(exc.name):
                hint = " (a module name must be importable: installed or on PYTHONPATH; or give its .py path)"
            raise ConfigError(f"{KEY}: importing {entry!r} failed: {type(exc).__name__}: {exc}{hint}") from exc
    return modules
