"""Data: the manifest format, video datasets and their loaders.

``build_dataset(cfg, split)`` and ``build_loader(cfg, split)`` are the entry points;
``set_loader_epoch(loader, epoch)`` starts each epoch. See docs/DATA_PIPELINE.md.
"""

from cgnl_video.data.dataset import SPLITS, VideoDataset, build_dataset, manifest_path
from cgnl_video.data.decode import DecodeError, open_reader
from cgnl_video.data.loader import (
    ShardSampler,
    build_loader,
    collate_test_batch,
    per_process_batch_size,
    set_loader_epoch,
    world_and_rank,
)
from cgnl_video.data.manifest import (
    ManifestEntry,
    ManifestError,
    parse_manifest_line,
    read_classes,
    read_manifest,
    write_classes,
    write_manifest,
)

__all__ = [
    "SPLITS",
    "DecodeError",
    "ManifestEntry",
    "ManifestError",
    "ShardSampler",
    "VideoDataset",
    "build_dataset",
    "build_loader",
    "collate_test_batch",
    "manifest_path",
    "open_reader",
    "parse_manifest_line",
    "per_process_batch_size",
    "read_classes",
    "read_manifest",
    "set_loader_epoch",
    "world_and_rank",
    "write_classes",
    "write_manifest",
]
