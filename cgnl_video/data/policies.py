"""Sampling policies: what one split makes of one video (docs/DATA_PIPELINE.md).

A policy turns a video into the tensor of a dataset item, in three steps:
``plan`` (the frames to read and every random choice), ``pixels`` (the uint8
pixels from the plan's decoded frames, on any device) and ``item`` (normalised
float32 for train / val). ``sample`` runs them on an open ``FrameReader`` (the
worker path); with DATA.DECODE_ON device the training process runs ``pixels``
(``gpu_augment``). ``RandomClip`` (train: random window, box and flip),
``CentreClip`` (val: centre window and crop), ``MultiView`` (test: ``num_clips`` x
``num_crops`` uint8 views of the video decoded once). ``RandomClip.draw`` is the one
place that draws a training clip's random choices, for both values of
DATA.DECODE_ON. Policies hold numbers only (picklable): ``policy_from_config``
builds a split's from the config, and a tool can build one directly.
"""

import math
from dataclasses import dataclass
from functools import partial
from typing import Callable, ClassVar, Dict, List, Tuple, Type

import torch
from fvcore.common.config import CfgNode
from torch.utils.data import get_worker_info

from cgnl_video.data import sampling, transforms
from cgnl_video.data.decode import FrameReader
from cgnl_video.data.sampling import Box

#: called with a clip's frame indices, returns the frames' (height, width)
FrameSize = Callable[[List[int]], Tuple[int, int]]


def worker_shared_empty(shape: Tuple[int, ...], dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """An uninitialised tensor; inside a DataLoader worker it is allocated in shared
    memory, so handing it to the main process does not copy it (a uint8 test sample
    is about 190 MB at the defaults). The same allocation default_collate uses for batches."""
    if get_worker_info() is None:
        return torch.empty(shape, dtype=dtype)
    itemsize = torch.empty((), dtype=dtype).element_size()
    storage = torch.UntypedStorage._new_shared(math.prod(shape) * itemsize)
    return torch.empty(0, dtype=dtype).set_(storage, 0, shape)


@dataclass(frozen=True)
class ClipPlan:
    """What an item reads: ``frames``, the frame indices in the order ``pixels`` wants them."""

    frames: List[int]


@dataclass(frozen=True)
class TrainClipChoice(ClipPlan):
    """A training clip's random choices: frame indices, crop box, flip."""

    box: Box
    flip: bool


@dataclass(frozen=True)
class ViewsPlan(ClipPlan):
    """The multi-view test: ``frames`` are the distinct frames of all clips (sorted), clip
    ``k`` is ``frames[positions[k][t]]`` for its time steps ``t``."""

    positions: List[List[int]]


@dataclass(frozen=True)
class SamplingPolicy:
    """Base of the policies: clips of ``num_frames`` frames, every ``sampling_rate``-th
    one of a window of ``num_frames * sampling_rate`` consecutive frames.

    An item is made in three steps, shared by both values of DATA.DECODE_ON:
    ``plan`` (which frames, and every random choice, from the item's generator),
    ``pixels`` (the uint8 pixels of the item from the plan's decoded frames: in a
    loader worker, or on the model's device) and ``item`` (the loader's tensor:
    normalised float32 for train / val, the uint8 pixels themselves for the test).
    """

    num_frames: int
    sampling_rate: int

    #: True: an unreadable sample is replaced by another one (train / val);
    #: False: it is returned as ``unreadable()`` (test: no views, reported unscored).
    replace_unreadable: ClassVar[bool] = True

    @property
    def window(self) -> int:
        """Frames spanned by one clip: num_frames * sampling_rate."""
        return self.num_frames * self.sampling_rate

    def clip_frames(self, start: int, video_frames: int) -> List[int]:
        """The frame indices of the clip whose window starts at ``start``."""
        return sampling.clip_indices(start, self.num_frames, self.sampling_rate, video_frames)

    @classmethod
    def from_config(cls, cfg: CfgNode) -> "SamplingPolicy":
        """The policy with cfg's DATA / TEST values."""
        raise NotImplementedError

    def plan(self, video_frames: int, generator: torch.Generator, frame_size: FrameSize) -> ClipPlan:
        """The frames to read and the item's choices; randomness only from ``generator``.
        ``frame_size`` is called (at most once, with the plan's frames) by policies whose
        choices depend on the frame size; reading the frames happens there."""
        raise NotImplementedError

    def pixels(self, frames: torch.Tensor, plan: ClipPlan) -> torch.Tensor:
        """The item's uint8 pixels from ``frames`` (uint8 ``len(plan.frames) x 3 x H x W``, in
        the plan's order, on any device): ``C x T x S x S`` (train / val) or ``V x C x T x S x S``."""
        raise NotImplementedError

    def item(self, pixels: torch.Tensor) -> torch.Tensor:
        """The loader's tensor from the pixels (here the pixels themselves)."""
        return pixels

    def sample_pixels(self, reader: FrameReader, generator: torch.Generator) -> torch.Tensor:
        """``pixels`` of the item planned from ``generator``, decoded by ``reader``."""
        decoded: List[torch.Tensor] = []

        def decode(frames: List[int]) -> Tuple[int, int]:
            decoded.append(reader.read(frames))
            return decoded[0].shape[-2], decoded[0].shape[-1]

        plan = self.plan(reader.num_frames, generator, decode)
        return self.pixels(decoded[0] if decoded else reader.read(plan.frames), plan)

    def sample(self, reader: FrameReader, generator: torch.Generator) -> torch.Tensor:
        """The item's tensor from an open reader; randomness only from ``generator``."""
        return self.item(self.sample_pixels(reader, generator))

    def unreadable(self) -> torch.Tensor:
        """The item's tensor for a video that cannot be read (policies that do not replace it)."""
        raise NotImplementedError


class NormalisedItem:
    """Mixin of the train / val policies: the item is the pixels as float32,
    ``(x / 255 - mean) / std`` (``transforms.normalize_uint8``)."""

    mean: Tuple[float, ...]
    std: Tuple[float, ...]

    def item(self, pixels: torch.Tensor) -> torch.Tensor:
        return transforms.normalize_uint8(pixels, self.mean, self.std)


@dataclass(frozen=True)
class RandomClip(NormalisedItem, SamplingPolicy):
    """Training: a random window and box (DATA.TRAIN_*), random flip, normalised."""

    crop_size: int
    scale: Tuple[float, float]
    ratio: Tuple[float, float]
    random_flip: bool
    mean: Tuple[float, ...]
    std: Tuple[float, ...]

    @classmethod
    def from_config(cls, cfg: CfgNode) -> "RandomClip":
        d = cfg.DATA
        return cls(d.NUM_FRAMES, d.SAMPLING_RATE, d.TRAIN_CROP_SIZE, tuple(d.TRAIN_JITTER_SCALES_RELATIVE),
                   tuple(d.TRAIN_JITTER_ASPECT_RELATIVE), d.RANDOM_FLIP, tuple(d.MEAN), tuple(d.STD))

    def draw(self, generator: torch.Generator, video_frames: int, frame_size: FrameSize) -> TrainClipChoice:
        """The random choices of one training clip, always in this order from ``generator``:
        the window start, then (given the frame size) the box, then the flip.

        ``frame_size`` is called once, with the clip's frame indices, between the start
        and the box: the worker path decodes the frames there, the device path
        (DATA.DECODE_ON device) reads their JPEG headers. The flip is drawn even when
        ``random_flip`` is off, so turning it off changes no other draw.
        """
        start = sampling.train_clip_start(video_frames, self.window, generator)
        frames = self.clip_frames(start, video_frames)
        height, width = frame_size(frames)
        box = sampling.random_crop_box(height, width, self.scale, self.ratio, generator)
        flip = bool(torch.rand((), generator=generator) < 0.5) and self.random_flip
        return TrainClipChoice(frames, box, flip)

    def plan(self, video_frames: int, generator: torch.Generator, frame_size: FrameSize) -> TrainClipChoice:
        return self.draw(generator, video_frames, frame_size)

    def pixels(self, frames: torch.Tensor, plan: TrainClipChoice) -> torch.Tensor:  # type: ignore[override]
        return transforms.train_pixels(frames, plan.box, self.crop_size, plan.flip).permute(1, 0, 2, 3)


@dataclass(frozen=True)
class CentreClip(NormalisedItem, SamplingPolicy):
    """Validation: the centre window, short side ``short_side``, centre crop, normalised."""

    short_side: int
    crop_size: int
    mean: Tuple[float, ...]
    std: Tuple[float, ...]

    @classmethod
    def from_config(cls, cfg: CfgNode) -> "CentreClip":
        d = cfg.DATA
        return cls(d.NUM_FRAMES, d.SAMPLING_RATE, d.VAL_SHORT_SIDE, d.VAL_CROP_SIZE, tuple(d.MEAN), tuple(d.STD))

    def plan(self, video_frames: int, generator: torch.Generator, frame_size: FrameSize) -> ClipPlan:
        start = sampling.test_clip_starts(video_frames, self.window, 1)[0]
        return ClipPlan(self.clip_frames(start, video_frames))

    def pixels(self, frames: torch.Tensor, plan: ClipPlan) -> torch.Tensor:
        return transforms.val_pixels(frames, self.short_side, self.crop_size).permute(1, 0, 2, 3)


@dataclass(frozen=True)
class MultiView(SamplingPolicy):
    """The multi-view test: ``num_clips`` windows spread over the video x ``num_crops``
    squares of side ``size`` (or the whole frame, ``full_frame``); uint8 views
    ``V x C x T x S x S``, view ``k`` = clip ``k // num_crops``, crop ``k % num_crops``.
    The video is decoded once: the distinct frames of all clips, each frame once."""

    size: int
    num_clips: int
    num_crops: int
    full_frame: bool

    replace_unreadable: ClassVar[bool] = False

    @classmethod
    def from_config(cls, cfg: CfgNode) -> "MultiView":
        d, t = cfg.DATA, cfg.TEST
        return cls(d.NUM_FRAMES, d.SAMPLING_RATE, d.TEST_CROP_SIZE, t.NUM_ENSEMBLE_VIEWS, t.NUM_SPATIAL_CROPS,
                   t.FULL_FRAME)

    def plan(self, video_frames: int, generator: torch.Generator, frame_size: FrameSize) -> ViewsPlan:
        starts = sampling.test_clip_starts(video_frames, self.window, self.num_clips)
        union, positions = sampling.frame_union([self.clip_frames(s, video_frames) for s in starts])
        return ViewsPlan(union, positions)

    def pixels(self, frames: torch.Tensor, plan: ViewsPlan) -> torch.Tensor:  # type: ignore[override]
        frames = transforms.resize_short_side(frames, self.size)
        boxes = None if self.full_frame else sampling.spatial_crop_boxes(
            frames.shape[-2], frames.shape[-1], self.num_crops)
        clip = frames.permute(1, 0, 2, 3)  # C x U x H x W, uint8: normalised by the engine
        allocate = worker_shared_empty if frames.device.type == "cpu" else partial(torch.empty, device=frames.device)
        return transforms.gather_views(clip, plan.positions, boxes, allocate)

    def unreadable(self) -> torch.Tensor:
        """No views: ``0 x 3 x T x S x S`` uint8."""
        return torch.empty((0, 3, self.num_frames, self.size, self.size), dtype=torch.uint8)


#: split -> its policy class
POLICIES: Dict[str, Type[SamplingPolicy]] = {"train": RandomClip, "val": CentreClip, "test": MultiView}


def policy_from_config(cfg: CfgNode, split: str) -> SamplingPolicy:
    """The sampling policy of ``split`` ("train", "val" or "test") with cfg's values."""
    if split not in POLICIES:
        raise ValueError(f"split must be one of {list(POLICIES)}, got {split!r}")
    return POLICIES[split].from_config(cfg)
