"""VideoDataset: training clips, validation clips and multi-view test samples.

Items (C = 3 channels, T = DATA.NUM_FRAMES; train / val float32 normalised,
``(x / 255 - DATA.MEAN) / DATA.STD``; test uint8 pixels 0-255, see below):

* ``train``: ``(clip C x T x S x S, label, index)``, S = DATA.TRAIN_CROP_SIZE. A window
  of NUM_FRAMES * SAMPLING_RATE frames at a random start (wrapping around short
  videos), every SAMPLING_RATE-th frame; a random box of
  TRAIN_JITTER_SCALES_RELATIVE x the frame area with aspect ratio in
  TRAIN_JITTER_ASPECT_RELATIVE, resized to S; random horizontal flip.
* ``val``: same format; the centre window, short side DATA.VAL_SHORT_SIDE, centre
  crop DATA.VAL_CROP_SIZE.
* ``test``: ``(views V x C x T x S x S, label, video_index)``, S = DATA.TEST_CROP_SIZE,
  views **uint8** (0-255, not normalised: 4x less memory to hold and move than
  float32; the engine normalises each chunk on the device, ``engine.train.to_device``),
  V = TEST.NUM_ENSEMBLE_VIEWS x TEST.NUM_SPATIAL_CROPS, view ``k`` = temporal clip
  ``k // NUM_SPATIAL_CROPS``, spatial crop ``k % NUM_SPATIAL_CROPS``. With
  TEST.FULL_FRAME the whole frame resized to short side S is kept instead:
  V = NUM_ENSEMBLE_VIEWS and the views are S x S' (not square). The video is decoded
  once: the distinct frames of all its clips, each frame once.

Unreadable samples (see ``decode.DecodeError``):

* train / val: logged once per path (per process) as a warning, counted, and
  replaced by another sample drawn from the item's generator; ``index`` in the item
  is the sample actually returned. DATA.MAX_CONSECUTIVE_FAILURES failures in a row
  raise RuntimeError.
* test: logged as a warning with the path, counted, and returned with V = 0 views
  (``views.shape == (0, C, T, S, S)``) so the evaluation can report it unscored.

``failure_count()`` is the number of failed reads since construction, summed over
all DataLoader worker processes (a shared-memory counter).

Randomness: each training item uses its own generator seeded from
(RNG_SEED, epoch, index) (``sampling.item_seed``), so the same seed and epoch give the
same clips whatever the number of workers or ranks, and a new epoch gives new
clips. ``set_epoch`` writes the epoch to shared memory, where the (persistent)
worker processes read it; call it before iterating (``loader.set_loader_epoch``).
"""

import logging
import math
import multiprocessing
import os
from typing import List, Set, Tuple

import torch
from fvcore.common.config import CfgNode
from torch.utils.data import Dataset, get_worker_info

from cgnl_video.data import sampling, transforms
from cgnl_video.data.decode import (
    JPEG_DECODERS,
    VIDEO_BACKENDS,
    DecodeError,
    FrameReader,
    check_choice,
    open_reader,
)
from cgnl_video.data.manifest import ManifestEntry, read_classes, read_manifest

logger = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
CLASSES_FILE = "classes.txt"


def worker_shared_empty(shape: Tuple[int, ...], dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """An uninitialised tensor; inside a DataLoader worker it is allocated in shared
    memory, so handing it to the main process does not copy it (a uint8 test sample
    is about 190 MB at the defaults). The same allocation default_collate uses for batches."""
    if get_worker_info() is None:
        return torch.empty(shape, dtype=dtype)
    itemsize = torch.empty((), dtype=dtype).element_size()
    storage = torch.UntypedStorage._new_shared(math.prod(shape) * itemsize)
    return torch.empty(0, dtype=dtype).set_(storage, 0, shape)


def manifest_path(cfg: CfgNode, split: str) -> str:
    """DATA.PATH_TO_DATA_DIR/{split}.txt"""
    return os.path.join(cfg.DATA.PATH_TO_DATA_DIR, f"{split}.txt")


class VideoDataset(Dataset):
    """Samples of one split of the manifest DATA.PATH_TO_DATA_DIR/{split}.txt.

    Attributes: ``entries`` (manifest order; indices and ``video_index`` refer to it),
    ``classes`` (names from classes.txt, label = position), ``split``.
    """

    def __init__(self, cfg: CfgNode, split: str) -> None:
        if split not in SPLITS:
            raise ValueError(f"split must be one of {list(SPLITS)}, got {split!r}")
        path = manifest_path(cfg, split)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"manifest not found: {path}")
        self.split = split
        self.manifest = path
        self.classes: List[str] = read_classes(os.path.join(cfg.DATA.PATH_TO_DATA_DIR, CLASSES_FILE))
        self.entries: List[ManifestEntry] = read_manifest(path, num_classes=len(self.classes))
        if not self.entries:
            raise ValueError(f"{path}: the manifest lists no samples")
        d = cfg.DATA
        self.root = d.PATH_PREFIX
        self.num_frames, self.sampling_rate = d.NUM_FRAMES, d.SAMPLING_RATE
        self.mean, self.std = list(d.MEAN), list(d.STD)
        self.video_backend, self.jpeg_decoder = d.DECODING_BACKEND, d.JPEG_DECODER
        check_choice(self.video_backend, VIDEO_BACKENDS, "DATA.DECODING_BACKEND")
        check_choice(self.jpeg_decoder, JPEG_DECODERS, "DATA.JPEG_DECODER")
        self.train_crop_size, self.random_flip = d.TRAIN_CROP_SIZE, d.RANDOM_FLIP
        self.scale, self.ratio = list(d.TRAIN_JITTER_SCALES_RELATIVE), list(d.TRAIN_JITTER_ASPECT_RELATIVE)
        self.val_short_side, self.val_crop_size = d.VAL_SHORT_SIDE, d.VAL_CROP_SIZE
        self.test_size = d.TEST_CROP_SIZE
        self.num_clips, self.num_crops = cfg.TEST.NUM_ENSEMBLE_VIEWS, cfg.TEST.NUM_SPATIAL_CROPS
        self.full_frame = cfg.TEST.FULL_FRAME
        self.max_failures = d.MAX_CONSECUTIVE_FAILURES
        self.seed = cfg.RNG_SEED
        self._epoch = multiprocessing.RawValue("q", 0)
        self._failures = multiprocessing.Value("q", 0)
        self._logged: Set[str] = set()

    # ------------------------------------------------------------------ bookkeeping

    def __len__(self) -> int:
        return len(self.entries)

    @property
    def window(self) -> int:
        """Frames spanned by one clip: NUM_FRAMES * SAMPLING_RATE."""
        return self.num_frames * self.sampling_rate

    @property
    def epoch(self) -> int:
        return int(self._epoch.value)

    def set_epoch(self, epoch: int) -> None:
        """Epoch used to seed the training clips (visible to running worker processes)."""
        self._epoch.value = int(epoch)

    def failure_count(self) -> int:
        """Failed reads since construction, over all worker processes."""
        return int(self._failures.value)

    def path_of(self, index: int) -> str:
        """The file system path of entry ``index`` (DATA.PATH_PREFIX joined)."""
        return os.path.join(self.root, self.entries[index].path)

    def _open(self, index: int) -> FrameReader:
        entry = self.entries[index]
        return open_reader(self.path_of(index), entry.num_frames, self.video_backend, self.jpeg_decoder)

    def _record_failure(self, error: DecodeError, index: int, what: str) -> None:
        with self._failures.get_lock():
            self._failures.value += 1
        path = self.path_of(index)
        if path not in self._logged:
            self._logged.add(path)
            # The message only: a record holding the exception would keep its frames alive.
            logger.warning("%s sample %d unreadable (%s): %s", self.split, index, what, str(error))

    # ------------------------------------------------------------------ items

    def __getitem__(self, index: int):
        if self.split == "test":
            return self._test_item(index)
        return self._clip_item(index)

    def _clip_item(self, index: int) -> Tuple[torch.Tensor, int, int]:
        generator = sampling.item_generator(self.seed, self.epoch, index)
        current = index
        for _ in range(self.max_failures):
            try:
                return self._load_clip(current, generator), self.entries[current].label, current
            except DecodeError as error:
                last_error = str(error)  # not the exception: its traceback would pin these frames
                self._record_failure(error, current, "replaced by another sample")
                current = int(torch.randint(len(self.entries), (), generator=generator))
        raise RuntimeError(
            f"{self.max_failures} {self.split} samples in a row could not be read "
            f"(DATA.MAX_CONSECUTIVE_FAILURES), starting at index {index} of {self.manifest}; "
            f"last error: {last_error}. Check DATA.PATH_PREFIX ({self.root!r}) and the data."
        )

    def _load_clip(self, index: int, generator: torch.Generator) -> torch.Tensor:
        with self._open(index) as reader:
            total = reader.num_frames
            if self.split == "train":
                start = sampling.train_clip_start(total, self.window, generator)
            else:
                start = sampling.test_clip_starts(total, self.window, 1)[0]
            frames = reader.read(sampling.clip_indices(start, self.num_frames, self.sampling_rate, total))
        if self.split != "train":
            return transforms.val_clip(frames, self.val_short_side, self.val_crop_size, self.mean, self.std)
        box = sampling.random_crop_box(frames.shape[-2], frames.shape[-1], self.scale, self.ratio, generator)
        flip = bool(torch.rand((), generator=generator) < 0.5) and self.random_flip
        return transforms.train_clip(frames, box, self.train_crop_size, flip, self.mean, self.std)

    def _test_item(self, index: int) -> Tuple[torch.Tensor, int, int]:
        label = self.entries[index].label
        try:
            with self._open(index) as reader:
                total = reader.num_frames
                starts = sampling.test_clip_starts(total, self.window, self.num_clips)
                clips = [sampling.clip_indices(s, self.num_frames, self.sampling_rate, total) for s in starts]
                union, positions = sampling.frame_union(clips)
                frames = reader.read(union)
        except DecodeError as error:
            self._record_failure(error, index, "not scored")
            size = self.test_size
            return torch.empty((0, 3, self.num_frames, size, size), dtype=torch.uint8), label, index
        frames = transforms.resize_short_side(frames, self.test_size)
        boxes = None if self.full_frame else sampling.spatial_crop_boxes(
            frames.shape[-2], frames.shape[-1], self.num_crops)
        clip = frames.permute(1, 0, 2, 3)  # C x U x H x W, uint8: normalised by the engine
        return transforms.gather_views(clip, positions, boxes, worker_shared_empty), label, index


def build_dataset(cfg: CfgNode, split: str) -> VideoDataset:
    """The dataset of ``split`` ("train", "val" or "test") described by ``cfg``."""
    return VideoDataset(cfg, split)
