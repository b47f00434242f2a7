"""Import third-party modules that warn at import time, without changing the
process's warning filters.

fvcore.nn and PyTorchVideo's model modules call ``torch.jit.script`` when they
are imported, which torch >= 2.10 reports as deprecated (a FutureWarning) on every
run of every tool; nothing in cgnl_video uses ``torch.jit.script``.
"""

import contextlib
import warnings
from typing import Iterator

_JIT_SCRIPT_DEPRECATED = r"`torch\.jit\.script` is deprecated"


@contextlib.contextmanager
def no_jit_script_deprecation() -> Iterator[None]:
    """Within the block (an import), ignore exactly torch's ``torch.jit.script``
    deprecation message; the filters are restored on exit."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_JIT_SCRIPT_DEPRECATED, category=FutureWarning)
        yield
