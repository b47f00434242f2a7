"""DataLoaders for the three splits: samplers, batch sizes, worker seeding, collate.

Batch sizes in the config are global; each process loads ``global // world_size``:

* train: TRAIN.BATCH_SIZE clips, shuffled by a DistributedSampler (also in a
  single process, so the order depends only on RNG_SEED and the epoch), last
  incomplete batch dropped; an epoch can start at a batch (``ResumableSampler``);
* val: TRAIN.BATCH_SIZE clips in manifest order, DistributedSampler without
  shuffling (it repeats a few samples so every rank gets the same number);
* test: TEST.BATCH_SIZE videos, each on exactly one rank (``ShardSampler``, no
  padding: rank counts may differ by one), batches collated by ``collate_test_batch``.

Call ``set_loader_epoch(loader, epoch[, start])`` before iterating each epoch: it sets
the sampler's epoch (shuffle order), where it starts and the dataset's epoch (clip randomness).
"""

import itertools
import random
from typing import Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.distributed as dist
from fvcore.common.config import CfgNode
from torch.utils.data import DataLoader, DistributedSampler, Sampler

from cgnl_video.config.load import ConfigError
from cgnl_video.data.dataset import VideoDataset, build_dataset
from cgnl_video.data.gpu_augment import collate_encoded


def world_and_rank() -> Tuple[int, int]:
    """(world size, rank) of torch.distributed, or (1, 0) when it is not initialised."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size(), dist.get_rank()
    return 1, 0


def per_process_batch_size(global_batch: int, world_size: int, key: str) -> int:
    """``global_batch // world_size``; a ConfigError (a ValueError) naming ``key`` unless it divides evenly."""
    if global_batch <= 0 or global_batch % world_size:
        raise ConfigError(
            f"{key} = {global_batch} is global and must be a positive multiple of the "
            f"{world_size} processes"
        )
    return global_batch // world_size


class ShardSampler(Sampler[int]):
    """Indices ``rank, rank + world, ...``: every sample on exactly one rank, no padding."""

    def __init__(self, num_samples: int, num_replicas: int = 1, rank: int = 0) -> None:
        self.indices = list(range(rank, num_samples, num_replicas))

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


class ResumableSampler(DistributedSampler):
    """A DistributedSampler whose epoch can start at a batch (a run resumed from a
    mid-epoch checkpoint): the epoch's order is a function of the seed and the epoch
    only, so the rest of it is that order from the ``start``-th sample on. ``len``
    stays the whole epoch's (what the LR schedule and the iteration count go by)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.start = 0

    def set_start(self, start: int) -> None:
        """Skip the epoch's first ``start`` samples (of this rank) when iterating."""
        self.start = start

    def __iter__(self) -> Iterator[int]:
        return itertools.islice(super().__iter__(), self.start, None)


def collate_test_batch(
    batch: Sequence[Tuple[torch.Tensor, int, int]],
) -> Tuple[List[torch.Tensor], torch.Tensor, torch.Tensor]:
    """Test batch -> (views per video, labels B, video indices B).

    The views stay a list: a video that could not be read has 0 views, and
    full-frame views of different videos can differ in size.
    """
    views = [item[0] for item in batch]
    labels = torch.tensor([item[1] for item in batch], dtype=torch.long)
    indices = torch.tensor([item[2] for item in batch], dtype=torch.long)
    return views, labels, indices


def _seed_worker(worker_id: int) -> None:
    """Seed python's and numpy's generators in a worker from its torch seed (which the
    DataLoader derives from its generator and the worker id)."""
    seed = torch.initial_seed() % 2**32
    random.seed(seed)
    np.random.seed(seed)


def build_loader(cfg: CfgNode, split: str, dataset: Optional[VideoDataset] = None) -> DataLoader:
    """The DataLoader of ``split`` ("train", "val" or "test"); builds the dataset unless given.

    Workers: DATA_LOADER.NUM_WORKERS, persistent. Train / val batches are pinned
    when DATA_LOADER.PIN_MEMORY and CUDA is available. Test batches hold every view
    of each video (uint8 pixels, about 190 MB per video at the default 30 views of
    3 x 32 x 256 x 256; normalised by the engine on the device), so the test loader
    prefetches one batch per worker and does not pin: pinning would copy each video
    once more, and the engine concatenates a batch's views into ordinary memory
    before moving them anyway.

    With DATA.DECODE_ON device (``dataset.decode_on``) every split's batches are
    ``(gpu_augment.EncodedBatch, labels, indices)`` (``collate_encoded``), not pinned:
    the engine decodes them on the device (``engine.inputs``).
    """
    dataset = dataset if dataset is not None else build_dataset(cfg, split)
    world, rank = world_and_rank()
    if split == "test":
        # need not divide evenly: ShardSampler gives each video to exactly one rank, shares may differ
        batch = max(1, cfg.TEST.BATCH_SIZE // world)
        sampler: Sampler[int] = ShardSampler(len(dataset), world, rank)
    else:
        batch = per_process_batch_size(cfg.TRAIN.BATCH_SIZE, world, "TRAIN.BATCH_SIZE")
        sampler = ResumableSampler(
            dataset, num_replicas=world, rank=rank, shuffle=split == "train", seed=cfg.RNG_SEED
        )
    if split == "train" and len(sampler) < batch:
        raise ValueError(
            f"the train split has {len(sampler)} samples per process, fewer than one batch of "
            f"{batch} (TRAIN.BATCH_SIZE = {cfg.TRAIN.BATCH_SIZE} over {world} processes)"
        )
    workers = cfg.DATA_LOADER.NUM_WORKERS
    extra = {"prefetch_factor": 1} if split == "test" and workers > 0 else {}
    encoded = getattr(dataset, "decode_on", "worker") == "device"  # any map-style dataset may be given
    return DataLoader(
        dataset,
        batch_size=batch,
        sampler=sampler,
        num_workers=workers,
        collate_fn=collate_encoded if encoded else collate_test_batch if split == "test" else None,
        pin_memory=not encoded and split != "test" and bool(cfg.DATA_LOADER.PIN_MEMORY) and torch.cuda.is_available(),
        drop_last=split == "train",
        persistent_workers=workers > 0,
        worker_init_fn=_seed_worker,
        generator=torch.Generator().manual_seed(cfg.RNG_SEED * 1000 + rank),
        **extra,
    )


def set_loader_epoch(loader: DataLoader, epoch: int, start: int = 0) -> None:
    """Start epoch ``epoch`` at its batch ``start`` (0-based; > 0 when resuming mid-epoch):
    the sampler's shuffle and position, and the dataset's clip randomness.

    The one way to advance a loader; call it before iterating the epoch. ``len(loader)``
    stays the number of batches of the whole epoch; iterating yields the last
    ``len(loader) - start``.
    """
    if start and not hasattr(loader.sampler, "set_start"):
        raise ValueError(f"this loader's sampler ({type(loader.sampler).__name__}) cannot start an epoch part-way")
    if hasattr(loader.sampler, "set_start"):
        loader.sampler.set_start(start * (loader.batch_size or 1))
    if hasattr(loader.sampler, "set_epoch"):
        loader.sampler.set_epoch(epoch)
    if hasattr(loader.dataset, "set_epoch"):
        loader.dataset.set_epoch(epoch)
