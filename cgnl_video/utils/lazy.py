"""Lazy package exports: a package lists its public names and the submodule of
each, and a name's submodule is imported on first access (PEP 562).

This keeps light imports light: ``cgnl_video.data.manifest`` for the data_prep
scripts and their workers, without pulling in torch, torchvision and the
decoders (see ``cgnl_video/data/__init__.py`` and benchmarks/bench_imports.py).
"""

import importlib
from typing import Any, Callable, Dict, List, Tuple


def lazy_exports(package: str, exports: Dict[str, str]) -> Tuple[Callable[[str], Any], Callable[[], List[str]]]:
    """``__getattr__`` and ``__dir__`` for ``package`` given {public name: submodule}."""

    def __getattr__(name: str) -> Any:
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(f"{package}.{exports[name]}"), name)

    def __dir__() -> List[str]:
        return sorted(exports)

    return __getattr__, __dir__
