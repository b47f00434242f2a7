"""torchcodec, PyTorch's video decoder (``DATA.DECODING_BACKEND torchcodec``): the one module
that calls it.

``TorchCodecVideo`` opens a video with one FFmpeg thread and "exact" seeking (the file
is scanned once when opened), resized by the decoder when asked (bilinear: the only
resizing torchcodec offers). Its errors are torchcodec's own (RuntimeError, ValueError,
IndexError from FFmpeg); ``TorchCodecUnavailable`` when torchcodec or FFmpeg is missing
(``cgnl_video.utils.torchcodec_support``).
"""

from typing import TYPE_CHECKING, Optional, Sequence, Tuple

from cgnl_video.utils.torchcodec_support import load_torchcodec

if TYPE_CHECKING:  # torch is imported by torchcodec itself, when a video is opened
    import torch


class TorchCodecVideo:
    """One torchcodec ``VideoDecoder`` on the CPU, frames in NHWC order.

    Args:
        path: the video file.
        size: ``(width, height)`` to resize the frames to in the decoder; None: native.
    """

    def __init__(self, path: str, size: Optional[Tuple[int, int]] = None) -> None:
        torchcodec = load_torchcodec()
        transforms = None if size is None else [torchcodec.transforms.Resize((size[1], size[0]))]
        self._decoder = torchcodec.decoders.VideoDecoder(
            path, dimension_order="NHWC", num_ffmpeg_threads=1, seek_mode="exact", device="cpu",
            transforms=transforms,
        )

    @property
    def num_frames(self) -> int:
        """The frame count torchcodec serves (0: unknown)."""
        return int(self._decoder.metadata.num_frames or 0)

    @property
    def frames_in_file(self) -> int:
        """The frames the scan found in the file."""
        return int(self._decoder.metadata.num_frames_from_content or 0)

    @property
    def frames_in_header(self) -> int:
        """The frame count the container header states (0: none)."""
        return int(self._decoder.metadata.num_frames_from_header or 0)

    @property
    def fps(self) -> float:
        """The average frame rate (0.0: unknown)."""
        return float(self._decoder.metadata.average_fps or 0.0)

    def frames(self, indices: Sequence[int]) -> "torch.Tensor":
        """Frames ``indices`` (in that order, repeats allowed) as ``(n, H, W, 3)`` uint8 RGB."""
        return self._decoder.get_frames_at(list(indices)).data

    def close(self) -> None:
        """Release the decoder."""
        self._decoder = None
