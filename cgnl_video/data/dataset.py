"""VideoDataset: labelled videos mapped through a sampling policy.

A dataset is built from three things, kept apart (as PyTorchVideo separates its
labelled video paths, clip sampler and transform): ``entries`` (``ManifestEntry``)
and ``classes``; a sampling policy (``policies``: ``RandomClip`` train, ``CentreClip``
val, ``MultiView`` test); and how to read the videos (root, decoders).
``from_config(cfg, split)`` reads the split's manifest; a tool passes its own entries.
Items are ``(tensor, label, index)``, or with DATA.DECODE_ON device
``(EncodedSample, label, index)``, decoded later on the model's device
(``gpu_augment``; ``redo_on_worker_path`` for a sample the device rejects). An
unreadable sample is replaced (train / val) or returned with 0 views (test), logged
and counted (``failure_count``, ``read_counts``). Each item has its own generator
seeded from (seed, epoch, index); ``set_epoch`` reaches persistent workers. Item
shapes, bad input, reproducibility: docs/DATA_PIPELINE.md.
"""

import logging
import multiprocessing
import os
from dataclasses import replace
from typing import Dict, List, Optional, Sequence, Set, Tuple, Union

import torch
from fvcore.common.config import CfgNode
from torch.utils.data import Dataset

from cgnl_video.config.choices import DECODE_ON
from cgnl_video.data import sampling
from cgnl_video.data.decode import (
    JPEG_DECODERS,
    VIDEO_BACKENDS,
    DecodeError,
    FrameReader,
    check_choice,
    open_reader,
)
from cgnl_video.data.gpu_augment import DeviceRejects, EncodedSample, NotForDevice, Resume, encode_sample
from cgnl_video.data.manifest import ManifestEntry, read_classes, read_manifest
from cgnl_video.data.policies import POLICIES, SamplingPolicy, policy_from_config

logger = logging.getLogger(__name__)

SPLITS = tuple(POLICIES)
#: a dataset item's first element: the tensor, or in device mode an encoded sample
Item = Union[torch.Tensor, EncodedSample]
CLASSES_FILE = "classes.txt"


def manifest_path(cfg: CfgNode, split: str) -> str:
    """DATA.PATH_TO_DATA_DIR/{split}.txt"""
    return os.path.join(cfg.DATA.PATH_TO_DATA_DIR, f"{split}.txt")


def classes_path(cfg: CfgNode) -> str:
    """DATA.PATH_TO_DATA_DIR/classes.txt"""
    return os.path.join(cfg.DATA.PATH_TO_DATA_DIR, CLASSES_FILE)


class VideoDataset(Dataset):
    """``entries`` read from ``root`` and mapped through ``policy``.

    Args:
        entries: the videos (``ManifestEntry``: path, label, frame count of a frame folder).
        classes: class names; a label is a position in it.
        policy: what an item is (``RandomClip``, ``CentreClip``, ``MultiView``).
        root: the folder ``entries``' relative paths are under (DATA.PATH_PREFIX).
        video_backend, jpeg_decoder, decode_on: DATA.DECODING_BACKEND,
            DATA.JPEG_DECODER and DATA.DECODE_ON.
        seed: seeds every item's generator, with the epoch and the index.
        max_failures: unreadable samples in a row that stop training
            (DATA.MAX_CONSECUTIVE_FAILURES).
        source: where the entries came from, for messages (the manifest's path).

    Attributes: ``entries`` (indices and ``video_index`` refer to them), ``classes``
    (label = position), ``policy``, ``seed``; ``source`` names where the entries came
    from in messages (the manifest's path).
    """

    def __init__(
        self,
        entries: Sequence[ManifestEntry],
        classes: Sequence[str],
        policy: SamplingPolicy,
        *,
        root: str = "",
        video_backend: str = "decord",
        jpeg_decoder: str = "auto",
        decode_on: str = "worker",
        seed: int = 0,
        max_failures: int = 20,
        source: str = "the given entries",
    ) -> None:
        check_choice(video_backend, VIDEO_BACKENDS, "DATA.DECODING_BACKEND")
        check_choice(jpeg_decoder, JPEG_DECODERS, "DATA.JPEG_DECODER")
        check_choice(decode_on, DECODE_ON, "DATA.DECODE_ON")
        if not entries:
            raise ValueError(f"{source}: no samples")
        for entry in entries:
            if not 0 <= entry.label < len(classes):
                raise ValueError(f"{source}: {entry.path} has label {entry.label}, not one of {len(classes)} classes")
            if decode_on == "device" and entry.num_frames is None:
                raise ValueError(
                    f"DATA.DECODE_ON is 'device', which reads JPEG frame folders only, but {source} lists the "
                    f"video file {entry.path}: set DATA.DECODE_ON worker for video files"
                )
        self.entries: List[ManifestEntry] = list(entries)
        self.classes: List[str] = list(classes)
        self.policy = policy
        self.root, self.video_backend, self.jpeg_decoder = root, video_backend, jpeg_decoder
        self.decode_on = decode_on
        self.seed, self.max_failures, self.source = seed, max_failures, source
        self._epoch = multiprocessing.RawValue("q", 0)
        self._failures = multiprocessing.Value("q", 0)
        self._logged: Set[str] = set()
        self.device_rejects = DeviceRejects()  # counted in the training process (gpu_augment.decode_batch)

    @classmethod
    def from_config(
        cls,
        cfg: CfgNode,
        split: str,
        entries: Optional[Sequence[ManifestEntry]] = None,
        classes: Optional[Sequence[str]] = None,
        decode_on: Optional[str] = None,
    ) -> "VideoDataset":
        """The dataset of ``split`` ("train", "val" or "test") as cfg describes it.

        ``classes`` default to DATA.PATH_TO_DATA_DIR/classes.txt and ``entries`` to the
        split's manifest DATA.PATH_TO_DATA_DIR/{split}.txt; given entries are relative
        to DATA.PATH_PREFIX (absolute paths stay as they are). ``decode_on`` defaults
        to DATA.DECODE_ON.
        """
        policy = policy_from_config(cfg, split)
        source = "the given entries" if entries is not None else manifest_path(cfg, split)
        if entries is None and not os.path.isfile(source):
            raise FileNotFoundError(f"manifest not found: {source}")
        if classes is None:
            classes = read_classes(classes_path(cfg))
        if entries is None:
            entries = read_manifest(source, num_classes=len(classes))
        d = cfg.DATA
        return cls(entries, classes, policy, root=d.PATH_PREFIX, video_backend=d.DECODING_BACKEND,
                   jpeg_decoder=d.JPEG_DECODER, decode_on=decode_on or d.DECODE_ON, seed=cfg.RNG_SEED,
                   max_failures=d.MAX_CONSECUTIVE_FAILURES, source=source)

    # ------------------------------------------------------------------ bookkeeping

    def __len__(self) -> int:
        return len(self.entries)

    @property
    def epoch(self) -> int:
        return int(self._epoch.value)

    def set_epoch(self, epoch: int) -> None:
        """Epoch used to seed the training clips (visible to running worker processes)."""
        self._epoch.value = int(epoch)

    def generator(self, index: int) -> torch.Generator:
        """The generator of item ``index`` in the current epoch: every random choice of
        the item (its clip, its replacements) comes from it."""
        return sampling.item_generator(self.seed, self.epoch, index)

    def failure_count(self) -> int:
        """Failed reads since construction, over all worker processes."""
        return int(self._failures.value)

    def read_counts(self) -> Dict[str, int]:
        """The epoch stats' counts since construction: ``read_failures`` (``failure_count``)
        and, with DATA.DECODE_ON device, ``device_rejects`` (samples the device decoder
        rejected, made on the worker path in the training process)."""
        counts = {"read_failures": self.failure_count()}
        if self.decode_on == "device":
            counts["device_rejects"] = self.device_rejects.count
        return counts

    def path_of(self, index: int) -> str:
        """The file system path of entry ``index`` (``root`` joined)."""
        return os.path.join(self.root, self.entries[index].path)

    def open(self, index: int) -> FrameReader:
        """A reader of entry ``index`` (a DecodeError naming the path if it cannot be opened)."""
        return open_reader(self.path_of(index), self.entries[index].num_frames, self.video_backend,
                           self.jpeg_decoder)

    def _record_failure(self, error: DecodeError, index: int, what: str) -> None:
        with self._failures.get_lock():
            self._failures.value += 1
        path = self.path_of(index)
        if path not in self._logged:
            self._logged.add(path)
            # The message only: a record holding the exception would keep its frames alive.
            logger.warning("sample %d of %s unreadable (%s): %s", index, self.source, what, str(error))

    # ------------------------------------------------------------------ items

    def __getitem__(self, index: int) -> Tuple[Item, int, int]:
        generator = self.generator(index)
        if not self.policy.replace_unreadable:
            return self._item_or_unreadable(index, generator, encode=True)
        return self._first_readable(index, index, generator, self.max_failures, encode=True)

    def redo_on_worker_path(self, resume: Resume) -> Tuple[torch.Tensor, int, int]:
        """Device mode: the item that ``resume`` was planned for, made on the worker path
        from the sample it stood at, with the generator state it had there: the same
        decoder, replacements, failure counts and messages as DATA.DECODE_ON worker.
        Returns (uint8 pixels, label, index) — for a sample whose frames the device
        decoder rejected (``gpu_augment.decode_batch``)."""
        generator = resume.generator()
        if not self.policy.replace_unreadable:
            return self._item_or_unreadable(resume.index, generator, encode=False)
        return self._first_readable(resume.index, resume.current, generator, resume.attempts, encode=False)

    def _first_readable(self, index: int, current: int, generator: torch.Generator, attempts: int,
                        encode: bool) -> Tuple[Item, int, int]:
        """Try ``current``, then replacements drawn from ``generator``, ``attempts`` times in all."""
        for attempt in range(attempts):
            try:
                resume = self._resume_point(index, current, generator, attempts - attempt, encode)
                return self._sample(current, generator, resume), self.entries[current].label, current
            except DecodeError as error:
                last_error = str(error)  # not the exception: its traceback would pin these frames
                self._record_failure(error, current, "replaced by another sample")
                current = int(torch.randint(len(self.entries), (), generator=generator))
        raise RuntimeError(
            f"{self.max_failures} samples in a row could not be read "
            f"(DATA.MAX_CONSECUTIVE_FAILURES), starting at index {index} of {self.source}; "
            f"last error: {last_error}. Check the root DATA.PATH_PREFIX ({self.root!r}) and the data."
        )

    def _item_or_unreadable(self, index: int, generator: torch.Generator, encode: bool) -> Tuple[Item, int, int]:
        label = self.entries[index].label
        resume = self._resume_point(index, index, generator, 1, encode)
        try:
            return self._sample(index, generator, resume), label, index
        except DecodeError as error:
            self._record_failure(error, index, "not scored")
            return self.policy.unreadable(), label, index

    def _resume_point(self, index: int, current: int, generator: torch.Generator, attempts: int,
                      encode: bool) -> Optional[Resume]:
        """Device mode, a sample to encode: where the read loop stands (else None)."""
        if not encode or self.decode_on != "device":
            return None
        return Resume(index, current, generator.get_state().numpy().tobytes(), attempts)

    def _sample(self, index: int, generator: torch.Generator, resume: Optional[Resume]) -> Item:
        """Worker mode: the item's tensor. Device mode: the encoded sample when ``resume``
        is given and its frames suit the device decoder (``gpu_augment.encode_sample``),
        else the uint8 pixels made here, on the worker path."""
        if resume is not None:
            try:
                encoded = encode_sample(self.policy, self.path_of(index), self.entries[index].num_frames, generator)
                return replace(encoded, resume=resume)
            except NotForDevice:
                generator.set_state(resume.generator().get_state())
        with self.open(index) as reader:
            if self.decode_on == "device":
                return self.policy.sample_pixels(reader, generator)
            return self.policy.sample(reader, generator)


def build_dataset(cfg: CfgNode, split: str) -> VideoDataset:
    """The dataset of ``split`` ("train", "val" or "test") described by ``cfg``
    (``VideoDataset.from_config``)."""
    return VideoDataset.from_config(cfg, split)
