"""Data: the manifest format, video datasets and their loaders.

``build_loader(cfg, split)`` (over ``VideoDataset.from_config(cfg, split)``, also
``build_dataset``) is the entry point; ``set_loader_epoch(loader, epoch)`` starts
each epoch. A dataset is entries + classes + a sampling policy (``RandomClip``,
``CentreClip``, ``MultiView``). See docs/DATA_PIPELINE.md.

Names are imported lazily on first use (``utils/lazy.py``) because the import
cost matters here: the data_prep scripts and each of their spawned extraction
workers import ``cgnl_video.data.manifest`` only, without torch; with plain
imports in this file they would import torch, torchvision and the decoders too,
about 300 times the time (benchmarks/bench_imports.py, benchmarks/RESULTS.md).
"""

from typing import Dict

from cgnl_video.utils.lazy import lazy_exports

#: public name -> submodule that defines it
_EXPORTS: Dict[str, str] = {
    "SPLITS": "dataset",
    "VideoDataset": "dataset",
    "build_dataset": "dataset",
    "manifest_path": "dataset",
    "classes_path": "dataset",
    "DecodeError": "decode",
    "open_reader": "decode",
    "ShardSampler": "loader",
    "build_loader": "loader",
    "collate_test_batch": "loader",
    "per_process_batch_size": "loader",
    "set_loader_epoch": "loader",
    "world_and_rank": "loader",
    "CentreClip": "policies",
    "MultiView": "policies",
    "RandomClip": "policies",
    "SamplingPolicy": "policies",
    "TrainClipChoice": "policies",
    "policy_from_config": "policies",
    "ManifestEntry": "manifest",
    "ManifestError": "manifest",
    "parse_manifest_line": "manifest",
    "read_classes": "manifest",
    "read_manifest": "manifest",
    "write_classes": "manifest",
    "write_manifest": "manifest",
}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
