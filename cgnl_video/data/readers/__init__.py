"""The reading layer: one module per video decoder library, shared by training and extraction.

``decord_reader``, ``pyav_reader`` and ``torchcodec_reader`` are the only modules that
call decord, PyAV and torchcodec (the ``utils/*_support.py`` modules only check that
decord and torchcodec load). Each gives frames as ``(n, H, W, 3)`` uint8 RGB; the
sampling, ordering and torch tensors are the callers' (``data.decode`` for training,
``prep.video_io`` for frame extraction). ``first_decoder`` is the fallback policy both
use: the decoder asked for first (decord only where it is installed), PyAV after it.
"""

from cgnl_video.utils.decord_support import load_decord


class DecodeError(RuntimeError):
    """A frame or video that cannot be read; the message names the path."""


def first_decoder(backend: str) -> str:
    """The decoder to try first for ``backend`` ("decord", "torchcodec" or "pyav"):
    "pyav" for "decord" when decord is not installed (said once by ``load_decord``).
    Whatever it is, PyAV decodes a video that it cannot read.

    Args:
        backend: the decoder asked for (DATA.DECODING_BACKEND, ``--decoder``).
    Returns:
        "decord", "torchcodec" or "pyav".
    """
    if backend == "decord" and load_decord() is None:
        return "pyav"
    return backend
