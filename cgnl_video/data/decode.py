"""Frame readers: frame folders of JPEGs and video files (decord or torchcodec, PyAV fallback).

Every reader has ``num_frames`` and ``read(indices)``, which returns the requested
frames as a uint8 RGB tensor ``len(indices) x 3 x H x W`` in the requested order.
Each distinct frame is decoded once however often it is requested (clips that wrap
around or overlap). The tensor has channels-last strides, which makes the uint8
resize of torchvision several times faster.

A missing or undecodable file raises ``DecodeError`` naming the path; the datasets
decide what to do with it (replace the sample in training, report it at test time).
Which decoder reads what (DATA.JPEG_DECODER, DATA.DECODING_BACKEND), the fallbacks to
PyAV and the measured speeds: docs/DATA_PIPELINE.md, "Decoding". A missing decord is
said once per process; a missing torchcodec or FFmpeg is a ConfigError naming the
key (``cgnl_video.utils.torchcodec_support``), never a silent fallback.
"""

import logging
import os
import warnings
from typing import Callable, List, Optional, Sequence

import numpy as np
import torch
from PIL import Image

from cgnl_video.config.choices import DECODING_BACKENDS
from cgnl_video.data.manifest import frame_file_name
from cgnl_video.data.readers import DecodeError, first_decoder
from cgnl_video.data.readers.decord_reader import DecordVideo
from cgnl_video.data.readers.pyav_reader import SequentialDecoder
from cgnl_video.data.readers.torchcodec_reader import TorchCodecVideo
from cgnl_video.utils.torchcodec_support import check_decoding_backend

logger = logging.getLogger(__name__)

JPEG_DECODERS = ("auto", "torchvision", "pil")
VIDEO_BACKENDS = DECODING_BACKENDS  # DATA.DECODING_BACKEND


def check_choice(value: str, choices: Sequence[str], key: str) -> None:
    """A ValueError naming the config ``key`` unless ``value`` is one of ``choices``."""
    if value not in choices:
        raise ValueError(f"{key} must be one of {list(choices)}, got {value!r}")


def _distinct_sorted(indices: Sequence[int], num_frames: int, path: str) -> List[int]:
    unique = sorted(set(int(i) for i in indices))
    if not unique:
        raise ValueError("no frame indices requested")
    if unique[0] < 0 or unique[-1] >= num_frames:
        raise ValueError(f"{path}: frame indices {unique[0]}..{unique[-1]} outside 0..{num_frames - 1}")
    return unique


def _in_request_order(frames_thwc: torch.Tensor, unique: List[int], indices: Sequence[int]) -> torch.Tensor:
    """Decoded distinct frames (T x H x W x C) -> requested order, as T x C x H x W."""
    if list(indices) != unique:
        where = {index: position for position, index in enumerate(unique)}
        positions = torch.tensor([where[int(i)] for i in indices], dtype=torch.long)
        frames_thwc = frames_thwc.index_select(0, positions)
    return frames_thwc.permute(0, 3, 1, 2)


class FrameReader:
    """Base of the readers: ``path``, ``num_frames``, ``read(indices)``.

    ``frames_decoded`` counts the frames the reader has decoded so far (for a decord
    reader: the frames it was asked for, a lower bound of what the codec decodes).
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self.num_frames = 0
        self.frames_decoded = 0

    def read(self, indices: Sequence[int]) -> torch.Tensor:
        raise NotImplementedError

    def keep_from(self, position: Optional[int]) -> None:
        """Say that the read after the next one starts at frame ``position`` (None: no
        read follows), for a reader that decodes sequentially and can keep what the two
        share (PyAVReader); the others ignore it."""

    def close(self) -> None:
        """Release decoder resources (nothing to do by default)."""

    def __enter__(self) -> "FrameReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# ----------------------------------------------------------------------------- frame folders


def _torchvision_jpeg() -> Optional[Callable]:
    try:
        from torchvision.io import ImageReadMode, decode_jpeg
    except ImportError:
        return None

    def decode(path: str) -> torch.Tensor:
        data = torch.from_numpy(np.fromfile(path, dtype=np.uint8))
        return decode_jpeg(data, mode=ImageReadMode.RGB).permute(1, 2, 0)

    return decode


def _pil_decode(path: str) -> torch.Tensor:
    with Image.open(path) as image:
        if image.mode != "RGB":
            image = image.convert("RGB")
        return torch.from_numpy(np.array(image))


class FrameFolderReader(FrameReader):
    """Frames ``000001.jpg``, ``000002.jpg``, ... of one folder.

    ``num_frames`` comes from the manifest; a file missing from the folder (the
    folder is shorter than the manifest says) is a DecodeError when it is read.
    """

    def __init__(self, path: str, num_frames: int, decoder: str = "auto") -> None:
        super().__init__(path)
        check_choice(decoder, JPEG_DECODERS, "DATA.JPEG_DECODER")
        if not os.path.isdir(path):
            raise DecodeError(f"frame folder not found: {path}")
        self.num_frames = num_frames
        fast = None if decoder == "pil" else _torchvision_jpeg()
        if decoder == "torchvision" and fast is None:
            raise ValueError("DATA.JPEG_DECODER is 'torchvision' but torchvision.io.decode_jpeg is missing")
        self._fast = fast
        self._pil_fallback = decoder != "torchvision"

    def _decode(self, file: str) -> torch.Tensor:
        if self._fast is not None:
            try:
                return self._fast(file)
            except (RuntimeError, OSError) as error:
                if not self._pil_fallback or not os.path.isfile(file):
                    raise DecodeError(f"cannot decode frame {file}: {error}") from error
        try:
            return _pil_decode(file)
        except (OSError, ValueError, SyntaxError) as error:
            raise DecodeError(f"cannot decode frame {file}: {error}") from error

    def read(self, indices: Sequence[int]) -> torch.Tensor:
        unique = _distinct_sorted(indices, self.num_frames, self.path)
        buffer: Optional[torch.Tensor] = None
        with warnings.catch_warnings():
            # torchvision >= 0.29 warns on every decode that its image decoders are deprecated.
            warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torchvision\.")
            for position, index in enumerate(unique):
                frame = self._decode(os.path.join(self.path, frame_file_name(index)))
                if buffer is None:
                    buffer = torch.empty((len(unique),) + tuple(frame.shape), dtype=torch.uint8)
                elif frame.shape != buffer.shape[1:]:
                    raise DecodeError(
                        f"frame {frame_file_name(index)} of {self.path} is {tuple(frame.shape[:2])}, "
                        f"earlier frames are {tuple(buffer.shape[1:3])}"
                    )
                buffer[position] = frame
                self.frames_decoded += 1
        return _in_request_order(buffer, unique, indices)


# ----------------------------------------------------------------------------- video files


class PyAVReader(FrameReader):
    """Sequential single-threaded PyAV decoding up to the last frame needed, which keeps
    its place between reads and honours ``keep_from`` (``readers.pyav_reader.SequentialDecoder``)."""

    def __init__(self, path: str) -> None:
        super().__init__(path)
        self._decoder = SequentialDecoder(path)
        self.num_frames = self._decoder.num_frames

    def keep_from(self, position: Optional[int]) -> None:
        self._decoder.keep_from(position)

    def read(self, indices: Sequence[int]) -> torch.Tensor:
        unique = _distinct_sorted(indices, self.num_frames, self.path)
        self._decoder.num_frames = self.num_frames  # the count the clip was sampled with, for the message
        before = self._decoder.frames_decoded
        try:
            frames = self._decoder.read_sorted(unique)
        finally:
            self.frames_decoded += self._decoder.frames_decoded - before
        return _in_request_order(torch.from_numpy(frames), unique, indices)

    def close(self) -> None:
        self._decoder.close()


class DecordReader(FrameReader):
    """One decord VideoReader per video (single-threaded: one per worker process);
    frames come from one ``get_batch`` on the sorted distinct indices."""

    def __init__(self, path: str) -> None:
        super().__init__(path)
        try:
            self._video: Optional[DecordVideo] = DecordVideo(path)
            self.num_frames = self._video.num_frames
        except ImportError:  # decord is not installed
            raise
        except Exception as error:  # decord raises DECORDError and plain RuntimeErrors
            raise DecodeError(f"cannot open video {path} with decord: {error}") from error
        if self.num_frames <= 0:
            raise DecodeError(f"video {path} has no frames")

    def read(self, indices: Sequence[int]) -> torch.Tensor:
        unique = _distinct_sorted(indices, self.num_frames, self.path)
        try:
            frames = self._video.frames(unique)  # type: ignore[union-attr]
        except Exception as error:  # decord raises DECORDError and plain RuntimeErrors
            raise DecodeError(f"cannot decode video {self.path} with decord: {error}") from error
        self.frames_decoded += len(unique)
        return _in_request_order(torch.from_numpy(frames), unique, indices)

    def close(self) -> None:
        self._video = None


class TorchCodecReader(FrameReader):
    """One torchcodec VideoDecoder per video (one FFmpeg thread: one per worker process);
    frames come from one ``get_frames_at`` on the sorted distinct indices.

    The decoder scans the file once when opened ("exact" seek mode), so ``num_frames``
    is the number of frames in the file, and seeks to the key frame before a clip. A
    file holding fewer frames than its container header says (cut short) is a
    DecodeError, as PyAV reports it, so both backends treat it alike.
    """

    def __init__(self, path: str) -> None:
        super().__init__(path)
        try:
            self._video: Optional[TorchCodecVideo] = TorchCodecVideo(path)
            self.num_frames = self._video.frames_in_file
            header = self._video.frames_in_header
        except ImportError:  # TorchCodecUnavailable: torchcodec or FFmpeg is missing
            raise
        except Exception as error:  # torchcodec raises RuntimeError and ValueError from FFmpeg
            raise DecodeError(f"cannot open video {path} with torchcodec: {error}") from error
        if self.num_frames <= 0:
            raise DecodeError(f"video {path} has no frames")
        if header > self.num_frames:
            raise DecodeError(f"video {path} is cut short: its header says {header} frames, "
                              f"the file holds {self.num_frames}")

    def read(self, indices: Sequence[int]) -> torch.Tensor:
        unique = _distinct_sorted(indices, self.num_frames, self.path)
        try:
            frames = self._video.frames(unique)  # type: ignore[union-attr]
        except Exception as error:  # torchcodec raises RuntimeError and IndexError from FFmpeg
            raise DecodeError(f"cannot decode video {self.path} with torchcodec: {error}") from error
        self.frames_decoded += len(unique)
        return _in_request_order(frames, unique, indices)

    def close(self) -> None:
        self._video = None


_FIRST_CHOICE = {"decord": DecordReader, "torchcodec": TorchCodecReader}  # each falls back to PyAV


class VideoFileReader(FrameReader):
    """A video file read with ``backend`` ("decord" or "torchcodec"), falling back to
    PyAV when that fails to open or decode it; ``backend="pyav"``, or decord not
    installed, uses PyAV only. torchcodec not usable here is a ConfigError naming
    DATA.DECODING_BACKEND (the user asked for it: no silent fallback)."""

    def __init__(self, path: str, backend: str = "decord") -> None:
        super().__init__(path)
        check_choice(backend, VIDEO_BACKENDS, "DATA.DECODING_BACKEND")
        check_decoding_backend(backend)
        if not os.path.isfile(path):
            raise DecodeError(f"video not found: {path}")
        self._reader: FrameReader
        if first_decoder(backend) != "pyav":
            try:
                self._reader = _FIRST_CHOICE[backend](path)
            except DecodeError as error:
                self._reader = self._fall_back(backend, error)
        else:
            self._reader = PyAVReader(path)
        self.num_frames = self._reader.num_frames

    def _fall_back(self, backend: str, error: Exception) -> FrameReader:
        logger.info("%s failed on %s (%s); decoding with PyAV", backend, self.path, str(error))
        return PyAVReader(self.path)

    @property
    def backend(self) -> str:
        """The decoder in use: "decord", "torchcodec" or "pyav"."""
        for name, reader_class in _FIRST_CHOICE.items():
            if isinstance(self._reader, reader_class):
                return name
        return "pyav"

    def _read_counted(self, indices: Sequence[int]) -> torch.Tensor:
        before = self._reader.frames_decoded
        try:
            return self._reader.read(indices)
        finally:
            self.frames_decoded += self._reader.frames_decoded - before

    def keep_from(self, position: Optional[int]) -> None:
        self._reader.keep_from(position)

    def read(self, indices: Sequence[int]) -> torch.Tensor:
        try:
            return self._read_counted(indices)
        except DecodeError as error:
            if isinstance(self._reader, PyAVReader):
                raise
            backend = self.backend
            self._reader.close()
            self._reader = self._fall_back(backend, error)
            # Keep the count the clip was sampled with: a shorter stream is a DecodeError.
            self._reader.num_frames = self.num_frames
            return self._read_counted(indices)

    def close(self) -> None:
        self._reader.close()


def open_reader(
    path: str,
    num_frames: Optional[int],
    video_backend: str = "decord",
    jpeg_decoder: str = "auto",
) -> FrameReader:
    """A frame-folder reader when ``num_frames`` is given (manifest frame count), else
    a video-file reader whose ``num_frames`` comes from the decoder."""
    if num_frames is not None:
        return FrameFolderReader(path, num_frames, jpeg_decoder)
    return VideoFileReader(path, video_backend)
