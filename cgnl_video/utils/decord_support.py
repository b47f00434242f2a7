"""decord where it is installed, PyAV everywhere.

decord publishes wheels for Linux x86_64 and Windows x86_64 only, so ``setup.py``
installs it there and nowhere else (macOS, Linux aarch64, ...). Every video decode
has a PyAV path: without decord, frame extraction and the video datasets use PyAV,
chosen automatically. ``load_decord`` is the one place that imports decord.
"""

import functools
import logging
from types import ModuleType
from typing import Optional

logger = logging.getLogger(__name__)


@functools.lru_cache(maxsize=None)
def load_decord() -> Optional[ModuleType]:
    """The decord module, or None when it cannot be imported.

    The first call of a process without decord logs one INFO line saying that PyAV
    decodes the videos; later calls are silent.
    """
    try:
        import decord
    except (ImportError, OSError) as error:  # OSError: its shared library fails to load
        logger.info("decord is not available (%s): video files are decoded with PyAV", error)
        return None
    return decord
