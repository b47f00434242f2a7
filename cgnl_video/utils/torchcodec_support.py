"""torchcodec, PyTorch's video decoder: the optional backend ``DATA.DECODING_BACKEND torchcodec``.

torchcodec is an optional extra (``pip install -e ".[torchcodec]"``). Its wheels do
not bundle FFmpeg: it loads the system's FFmpeg shared libraries (major versions 4
to 8; 9 too from torchcodec 0.16), which ``apt-get install ffmpeg``,
``conda install -c conda-forge ffmpeg`` or ``brew install ffmpeg`` provide.
``load_torchcodec`` is the one place that imports it; when the package or FFmpeg is
missing it raises ``TorchCodecUnavailable`` saying which and how to install it.
``check_decoding_backend`` turns that into a ConfigError naming
DATA.DECODING_BACKEND (the data readers, and the jobs before they start).
"""

import functools
from types import ModuleType
from typing import Optional, Tuple

INSTALL = 'pip install -e ".[torchcodec]"'
FFMPEG_INSTALL = ("apt-get install ffmpeg (Debian, Ubuntu), conda install -c conda-forge ffmpeg, "
                  "or brew install ffmpeg (macOS)")


class TorchCodecUnavailable(ImportError):
    """torchcodec cannot decode videos here; the message says what is missing and how to get it."""


def _first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0] if lines else ''}".rstrip(": ")


@functools.lru_cache(maxsize=None)
def _probe() -> Tuple[Optional[ModuleType], str]:
    """(torchcodec, "") when it can decode videos, else (None, why not); tried once per process."""
    try:
        import torchcodec
        import torchcodec.decoders  # noqa: F401
    except ImportError as error:
        return None, (f"torchcodec is not installed ({_first_line(error)}); install it with {INSTALL} "
                      f"and FFmpeg's shared libraries with {FFMPEG_INSTALL}")
    except Exception as error:  # noqa: BLE001 - torchcodec < 0.16 raises RuntimeError without FFmpeg
        return None, (f"torchcodec cannot be loaded ({_first_line(error)}); it needs FFmpeg's shared "
                      f"libraries (FFmpeg 4 to 8): install them with {FFMPEG_INSTALL}")
    if getattr(torchcodec, "ffmpeg_major_version", 0) is None:  # torchcodec >= 0.16 imports without FFmpeg
        return None, (f"torchcodec {getattr(torchcodec, '__version__', '')} finds no FFmpeg shared libraries "
                      f"(FFmpeg 4 to 9): install them with {FFMPEG_INSTALL}")
    return torchcodec, ""


def load_torchcodec() -> ModuleType:
    """The torchcodec module, ready to decode videos; TorchCodecUnavailable otherwise."""
    module, reason = _probe()
    if module is None:
        raise TorchCodecUnavailable(reason)
    return module


def check_decoding_backend(backend: str) -> None:
    """ConfigError naming DATA.DECODING_BACKEND when ``backend`` (its value) is torchcodec
    and torchcodec cannot decode here. Jobs call it at the start, before any output
    is written, and every torchcodec video reader calls it when opened."""
    if backend != "torchcodec":
        return
    from cgnl_video.config import ConfigError  # here: extraction workers import this module without config

    try:
        load_torchcodec()
    except TorchCodecUnavailable as error:
        raise ConfigError(f"DATA.DECODING_BACKEND: torchcodec, but {error}; "
                          f"or set DATA.DECODING_BACKEND decord or pyav") from error
