"""DATA.DECODE_ON device: the loader workers read JPEG bytes, the model's device decodes.

With the default ``worker`` every DataLoader worker decodes, crops, resizes and
normalises its clips; on a GPU machine those CPU workers can set the speed. With
``device`` the worker (``encode_sample``, called by ``VideoDataset``) runs the
policy's ``plan`` and reads the bytes of the distinct frames it needs, no decoding
(``collate_encoded`` packs a batch into one tensor); the training process
(``decode_batch``, called by ``engine.inputs``) decodes every frame of the batch in
one ``torchvision.io.decode_jpeg`` call on the device and runs the policy's
``pixels`` there. On the CPU the batches equal the worker path's bit for bit.
Only baseline JPEGs of one size go to the device (``jpeg_frame_size``); other
samples, and frames the device rejects (``DeviceRejects``), are made on the worker
path with the same random choices. An out of memory or CUDA error is raised, naming
DATA.DECODE_ON. Details: docs/DATA_PIPELINE.md, "Decoding on the device".
"""

import logging
import os
import re
import time
import warnings
from dataclasses import dataclass, replace
from typing import Callable, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from cgnl_video.data.decode import DecodeError
from cgnl_video.data.manifest import frame_file_name
from cgnl_video.data.policies import ClipPlan, SamplingPolicy, worker_shared_empty
from cgnl_video.data.sampling import frame_union

logger = logging.getLogger(__name__)

#: start-of-frame marker of the JPEGs the device path takes: baseline, the process
#: nvJPEG's hardware decoder is documented for (docs/DATA_PIPELINE.md)
DEVICE_SOF_MARKERS = (0xC0,)
#: every other start-of-frame marker (extended sequential, progressive, lossless,
#: arithmetic coding, hierarchical): the worker path decodes those
OTHER_SOF_MARKERS = tuple(m for m in range(0xC1, 0xD0) if m not in (0xC4, 0xC8, 0xCC))
#: at most one warning about rejected frames per this many seconds (all are counted)
REJECT_WARNING_PERIOD_S = 60.0
#: a RuntimeError's text that says the device ran out of memory: torch's "CUDA out of
#: memory" (torchvision's nvJPEG decoder re-raises it as a plain RuntimeError, "Error
#: while decoding JPEG images: ...") and nvJPEG's status 5 in torchvision's messages
#: ("Failed to decode batch: 5"; NVJPEG_STATUS_ALLOCATOR_FAILURE, its own allocations)
OUT_OF_MEMORY_TEXT = re.compile(r"out of memory|Failed to (?![^:\n]*CUDA)[^:\n]*: 5\b")
#: a RuntimeError's text of another failure of the device, not of a frame: torch's
#: "CUDA error: ...", torchvision's "Failed to synchronize CUDA stream: <cudaError_t>",
#: a torchvision built without nvJPEG
DEVICE_FAILURE_TEXT = re.compile(r"CUDA|not compiled with nvJPEG")


@dataclass(frozen=True)
class Resume:
    """Where a dataset item's read loop stood when it tried this sample, enough to
    redo it on the worker path with the same draws (``VideoDataset.redo_on_worker_path``)."""

    index: int  # the item asked for
    current: int  # the sample tried (another one after replacements)
    state: bytes  # the item generator's state before the try
    attempts: int  # tries left, this one included (DATA.MAX_CONSECUTIVE_FAILURES)

    def generator(self) -> torch.Generator:
        """A generator in the recorded state."""
        generator = torch.Generator()
        return generator.set_state(torch.frombuffer(bytearray(self.state), dtype=torch.uint8))


@dataclass(frozen=True)
class EncodedSample:
    """A planned sample, not decoded: the JPEG bytes of the plan's distinct frames
    (in index order), ``positions`` (plan frame ``k`` is encoded frame ``positions[k]``),
    the frame size the plan was made for (from the headers)."""

    frames: List[bytes]
    positions: List[int]
    plan: ClipPlan
    size: Tuple[int, int]
    resume: Optional[Resume] = None


@dataclass
class EncodedBatch:
    """A collated batch of device mode: ``items`` (an ``EncodedSample`` whose bytes are
    in ``jpegs``, or a tensor of pixels the worker path made), ``jpegs`` (every frame's
    bytes, one uint8 tensor), ``lengths`` (per item, the byte count of each frame)."""

    items: List[Union[EncodedSample, torch.Tensor]]
    jpegs: torch.Tensor
    lengths: List[List[int]]

    def __len__(self) -> int:
        return len(self.items)


class NotForDevice(Exception):
    """A frame the device path does not take: the worker path makes the sample."""


# ----------------------------------------------------------------------------- worker side


def jpeg_frame_size(data: bytes) -> Optional[Tuple[int, int]]:
    """(height, width) of a JPEG the device path takes, from its frame header; None
    unless the bytes start with SOI, end with EOI and the first frame header (before
    any scan) is baseline (SOF0, so not progressive) with 1 or 3 components and a
    non-zero size."""
    if not (data[:2] == b"\xff\xd8" and data[-2:] == b"\xff\xd9"):
        return None
    position, end = 2, len(data)
    while position + 4 <= end:
        if data[position] != 0xFF:
            return None
        marker = data[position + 1]
        if marker == 0xFF:  # fill byte
            position += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD7:  # markers without a length
            position += 2
            continue
        if marker in OTHER_SOF_MARKERS or marker == 0xDA:  # another process, or a scan before the frame
            return None
        if marker in DEVICE_SOF_MARKERS:
            if position + 10 > end:
                return None
            height = int.from_bytes(data[position + 5:position + 7], "big")
            width = int.from_bytes(data[position + 7:position + 9], "big")
            components = data[position + 9]
            return (height, width) if height and width and components in (1, 3) else None
        position += 2 + int.from_bytes(data[position + 2:position + 4], "big")
    return None


def read_encoded_clip(folder: str, indices: Sequence[int]) -> List[bytes]:
    """The JPEG bytes of frames ``indices`` of a frame folder; a missing file is a
    DecodeError naming it (as the worker path's reader says it)."""
    encoded = []
    for index in indices:
        path = os.path.join(folder, frame_file_name(index))
        try:
            with open(path, "rb") as handle:
                encoded.append(handle.read())
        except OSError as error:
            raise DecodeError(f"cannot decode frame {path}: {error}") from error
    return encoded


def encode_sample(policy: SamplingPolicy, folder: str, video_frames: int,
                  generator: torch.Generator) -> EncodedSample:
    """The plan of one sample from ``generator`` and the bytes of its frames.

    The frames are read where the worker path decodes them (for a training clip:
    between the window start and the box), so a missing frame file is a DecodeError
    after the same draws. Raises NotForDevice when a frame fails ``jpeg_frame_size``
    or the frames differ in size.
    """
    if not os.path.isdir(folder):
        raise DecodeError(f"frame folder not found: {folder}")
    read: List[Tuple[List[bytes], List[int], Tuple[int, int]]] = []

    def frame_size(frames: List[int]) -> Tuple[int, int]:
        union, (positions,) = frame_union([frames])
        encoded = read_encoded_clip(folder, union)
        sizes = {jpeg_frame_size(data) for data in encoded}
        size = sizes.pop()
        if sizes or size is None:
            raise NotForDevice(folder)
        read.append((encoded, positions, size))
        return size

    plan = policy.plan(video_frames, generator, frame_size)
    if not read:
        frame_size(plan.frames)
    encoded, positions, size = read[0]
    return EncodedSample(encoded, positions, plan, size)


def collate_encoded(batch: Sequence[Tuple[Union[EncodedSample, torch.Tensor], int, int]]
                    ) -> Tuple[EncodedBatch, torch.Tensor, torch.Tensor]:
    """Device-mode items -> (EncodedBatch, labels B, indices B). The bytes go into one
    uint8 tensor (in shared memory inside a worker)."""
    items, lengths, chunks = [], [], []
    for sample, _label, _index in batch:
        if isinstance(sample, EncodedSample):
            lengths.append([len(data) for data in sample.frames])
            chunks.extend(sample.frames)
            sample = replace(sample, frames=[])
        else:
            lengths.append([])
        items.append(sample)
    jpegs = worker_shared_empty((sum(len(c) for c in chunks),), torch.uint8)
    out, offset = jpegs.numpy(), 0
    for data in chunks:
        out[offset:offset + len(data)] = np.frombuffer(data, dtype=np.uint8)
        offset += len(data)
    labels = torch.tensor([item[1] for item in batch], dtype=torch.long)
    indices = torch.tensor([item[2] for item in batch], dtype=torch.long)
    return EncodedBatch(items, jpegs, lengths), labels, indices


# ----------------------------------------------------------------------------- device side


class DeviceDecodeError(RuntimeError):
    """The device, not a frame, failed while decoding (not out of memory: that is a
    ``torch.cuda.OutOfMemoryError``)."""


class DeviceRejects:
    """The samples of a dataset that the device decoder rejected and the training
    process made on the worker path: ``count`` (the epoch stats' ``device_rejects``)
    and a warning with the decoder's message, at most one per ``period`` seconds (the
    next one says how many it left out)."""

    def __init__(self, period: float = REJECT_WARNING_PERIOD_S, clock: Callable[[], float] = time.monotonic) -> None:
        self.count = 0
        self.period, self.clock = period, clock
        self._last_warning: Optional[float] = None
        self._not_logged = 0

    def record(self, what: str) -> None:
        """Count one rejected sample; ``what`` says which and why (for the warning)."""
        self.count += 1
        now = self.clock()
        if self._last_warning is not None and now - self._last_warning < self.period:
            self._not_logged += 1
            return
        left_out = f"; {self._not_logged} more since the last such warning" if self._not_logged else ""
        logger.warning("DATA.DECODE_ON device: %s; made on the worker path in the training process "
                       "(%d samples so far%s)", what, self.count, left_out)
        self._last_warning, self._not_logged = now, 0


def _raise_device_failure(error: RuntimeError, frames: Sequence[torch.Tensor], device: torch.device) -> None:
    """Raise ``error`` again, with what to do about it, when it is the device's
    (out of memory, a CUDA error) rather than a frame's; else return."""
    text = str(error)
    out_of_memory = isinstance(error, torch.cuda.OutOfMemoryError) or bool(OUT_OF_MEMORY_TEXT.search(text))
    accelerator = getattr(torch, "AcceleratorError", ())  # torch >= 2.8 raises it for CUDA errors
    if not (out_of_memory or isinstance(error, accelerator) or DEVICE_FAILURE_TEXT.search(text)):
        return
    where = (f"DATA.DECODE_ON device: decoding {len(frames)} JPEG frames "
             f"({sum(frame.numel() for frame in frames) / 2 ** 20:.1f} MB of JPEG) on {device} failed: {text}. ")
    if out_of_memory:
        raise torch.cuda.OutOfMemoryError(
            where + "The device ran out of memory, which is no bad frame: lower TRAIN.BATCH_SIZE (train / val) "
            "or TEST.BATCH_SIZE (test), or DATA.NUM_FRAMES (a batch's frames are decoded at once), or set "
            "DATA.DECODE_ON worker") from error
    raise DeviceDecodeError(
        where + "This is an error of the device or of torchvision's nvJPEG decoder, not of a frame (the CUDA "
        "context may be unusable); set DATA.DECODE_ON worker to decode in the loader workers") from error


def _decode_jpegs(encoded: Sequence[torch.Tensor], device: torch.device) -> List[torch.Tensor]:
    """JPEGs (1-D uint8 CPU tensors) -> uint8 (3, H, W) frames on ``device``, in one call
    (batched nvJPEG on CUDA). A frame that does not decode raises RuntimeError."""
    from torchvision.io import ImageReadMode, decode_jpeg

    if device.type == "cuda":
        # torchvision's CUDA decoder allocates its outputs on the current stream but writes
        # them from a stream of its own that does not wait for the current one
        # (pytorch/vision#9606). The caching allocator hands out a block as soon as it is
        # freed on the current stream, so a block whose readers are still queued there (the
        # frames of the group decoded before, being stacked; the last batch's clips) could
        # be overwritten before they run. Waiting for the current stream makes those reads
        # finish first (torchvision's decoder itself waits for its stream before returning).
        # Keeping the frames alive would not do: the last batch's memory is freed outside.
        # The training and validation loops read each batch's loss on the host before the
        # next batch is decoded, so the stream is idle there and the wait costs nothing.
        torch.cuda.current_stream(device).synchronize()
    with warnings.catch_warnings():
        # torchvision >= 0.29 warns on every decode that its image decoders are deprecated.
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torchvision\.")
        return decode_jpeg(list(encoded), mode=ImageReadMode.RGB, device=device)


def _frames_hwc(frames: Sequence[torch.Tensor]) -> torch.Tensor:
    """(3, H, W) frames of one size -> one (N, H, W, 3) tensor: the memory layout of the
    worker path's frames (channels-last, which makes the CPU's uint8 resize fast)."""
    return torch.stack([frame.permute(1, 2, 0) for frame in frames])


def decode_frames(encoded: Sequence[Union[bytes, torch.Tensor]], device: torch.device) -> torch.Tensor:
    """Decode JPEGs (bytes or 1-D uint8 CPU tensors) of one size into a uint8 (N, 3, H, W)
    tensor on ``device`` with channels-last strides; on CUDA in one batched nvJPEG call.
    A frame that does not decode raises RuntimeError."""
    encoded = [torch.frombuffer(bytearray(e), dtype=torch.uint8) if isinstance(e, (bytes, bytearray)) else e
               for e in encoded]
    return _frames_hwc(_decode_jpegs(encoded, device)).permute(0, 3, 1, 2)


def _decode_groups(groups: List[List[torch.Tensor]], device: torch.device) -> List[Union[torch.Tensor, str, None]]:
    """Each non-empty group's frames decoded into one (U, H, W, 3) tensor, all groups in
    one decoder call; when that call fails, group by group, and a group with a frame
    that does not decode is the decoder's message instead (empty groups are None).
    Out of memory and CUDA errors are raised (``_raise_device_failure``)."""
    everything = [frame for group in groups for frame in group]
    try:
        flat = iter(_decode_jpegs(everything, device) if everything else [])
        return [_frames_hwc([next(flat) for _ in group]) if group else None for group in groups]
    except RuntimeError as error:
        _raise_device_failure(error, everything, device)
    out: List[Union[torch.Tensor, str, None]] = []
    for group in groups:
        try:
            out.append(_frames_hwc(_decode_jpegs(group, device)) if group else None)
        except RuntimeError as error:
            _raise_device_failure(error, group, device)
            out.append(str(error))
    return out


def decode_batch(batch: EncodedBatch, labels: torch.Tensor, indices: torch.Tensor, dataset,
                 device: torch.device) -> Tuple[List[torch.Tensor], torch.Tensor, torch.Tensor]:
    """Each item's uint8 pixels on ``device`` (the policy's ``pixels`` of the decoded
    frames), with the labels and indices of the samples returned.

    A sample with a frame the device decoder rejects, or that decodes to another size
    than its headers said, is redone on the worker path (``dataset.redo_on_worker_path``):
    replaced, reported and counted as there, so its label and index may change; it is
    also counted and logged in ``dataset.device_rejects``. Out of memory and CUDA errors
    are raised (``torch.cuda.OutOfMemoryError``, ``DeviceDecodeError``), naming
    DATA.DECODE_ON and what to lower.
    """
    jpegs = iter(batch.jpegs.split([length for lengths in batch.lengths for length in lengths]))
    groups = [[next(jpegs) for _ in lengths] for lengths in batch.lengths]
    decoded = _decode_groups(groups, device)
    labels, indices = labels.clone(), indices.clone()
    pixels: List[torch.Tensor] = []
    for i, (item, frames) in enumerate(zip(batch.items, decoded)):
        if isinstance(item, torch.Tensor):
            pixels.append(item.to(device, non_blocking=True))
        elif not isinstance(frames, torch.Tensor) or tuple(frames.shape[1:3]) != item.size:
            why = (f"the device decoder rejected a frame: {frames}" if not isinstance(frames, torch.Tensor) else
                   f"its frames decoded to {tuple(frames.shape[1:3])}, the headers said {item.size}")
            dataset.device_rejects.record(f"sample {item.resume.current} "
                                          f"({dataset.path_of(item.resume.current)}): {why}")
            redone, labels[i], indices[i] = dataset.redo_on_worker_path(item.resume)
            pixels.append(redone.to(device, non_blocking=True))
        else:
            if item.positions != list(range(frames.shape[0])):
                frames = frames.index_select(0, torch.tensor(item.positions, device=frames.device))
            pixels.append(dataset.policy.pixels(frames.permute(0, 3, 1, 2), item.plan))
    return pixels, labels, indices
