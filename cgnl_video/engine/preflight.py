"""Checks that run before any work starts: the launch suits the config
(``check_run``, ``run_warnings``), the manifests the run needs exist and
MODEL.NUM_CLASSES matches classes.txt, the weight files the run reads exist."""

import os
from typing import List

import torch
from fvcore.common.config import CfgNode

from cgnl_video.config import ConfigError
from cgnl_video.config.registry import backbone_entry
from cgnl_video.data.loader import per_process_batch_size
from cgnl_video.data.manifest import read_classes
from cgnl_video.engine.checkpoint import checkpoint_dir, list_checkpoints
from cgnl_video.utils.remote import is_url, local_path


class DataMissingError(FileNotFoundError):
    """A manifest or class list the run needs is missing; the message says how to make it."""


def needed_files(cfg: CfgNode) -> List[str]:
    """classes.txt plus the manifests of the splits this run reads."""
    splits = []
    if cfg.TRAIN.ENABLE:
        splits.append("train")
        if cfg.TRAIN.EVAL_PERIOD > 0:
            splits.append("val")
    if cfg.TEST.ENABLE:
        splits.append("test")
    return ["classes.txt"] + [f"{split}.txt" for split in splits]


def prep_hint(data_dir: str, path_prefix: str) -> str:
    """The data_prep commands (docs/DATA_PREP.md) that write the manifests into ``data_dir``."""
    name = data_dir.lower()
    if "ucf" in name:
        frames = path_prefix or "data/ucf101/frames"
        steps = [f"python data_prep/extract_frames.py --src data/ucf101/UCF-101 --dst {frames}",
                 "python data_prep/build_manifests.py ucf101 --annotations data/ucf101/ucfTrainTestlist "
                 f"--split 1 --root {frames} --out {data_dir}"]
    elif "kinetics" in name:
        frames = path_prefix or "data/kinetics/frames"
        steps = [f"python data_prep/extract_frames.py --src data/kinetics/videos --dst {frames}",
                 "python data_prep/build_manifests.py minikinetics --k400-annotations "
                 "data/kinetics/annotations/train.csv data/kinetics/annotations/validate.csv "
                 f"--ytid-lists data/minikinetics200 --root {frames} --out {data_dir}"]
    else:
        frames = path_prefix or "FRAMES"
        steps = [f"python data_prep/extract_frames.py --src VIDEOS --dst {frames}",
                 f"python data_prep/build_manifests.py generic --list-dir LISTS --root {frames} --out {data_dir}"]
    prefix = "" if path_prefix else f" and set DATA.PATH_PREFIX {frames}"
    return "  " + "\n  ".join(steps) + f"\n(see docs/DATA_PREP.md{prefix})"


def check_data(cfg: CfgNode) -> None:
    """Raise DataMissingError naming the first missing file and the data_prep command
    that creates it, or ConfigError when MODEL.NUM_CLASSES disagrees with classes.txt."""
    data_dir = cfg.DATA.PATH_TO_DATA_DIR
    if not data_dir:
        raise ConfigError("DATA.PATH_TO_DATA_DIR: empty; set it to the folder with train.txt, "
                          "val.txt, test.txt and classes.txt")
    for name in needed_files(cfg):
        path = os.path.join(data_dir, name)
        if not os.path.isfile(path):
            raise DataMissingError(
                f"missing {path} (DATA.PATH_TO_DATA_DIR = {data_dir}). Create it with:\n"
                f"{prep_hint(data_dir, cfg.DATA.PATH_PREFIX)}"
            )
    classes = read_classes(os.path.join(data_dir, "classes.txt"))
    if len(classes) != cfg.MODEL.NUM_CLASSES:
        raise ConfigError(
            f"MODEL.NUM_CLASSES: {cfg.MODEL.NUM_CLASSES}, but {os.path.join(data_dir, 'classes.txt')} "
            f"lists {len(classes)} classes"
        )


def check_run(cfg: CfgNode, world_size: int) -> None:
    """Settings that depend on the launch (processes, devices); ConfigError naming the key.

    TRAIN.BATCH_SIZE must split evenly over the processes (it sets the optimisation);
    TEST.BATCH_SIZE need not: each process scores its own share of the videos.
    """
    per_process_batch_size(cfg.TRAIN.BATCH_SIZE, world_size, "TRAIN.BATCH_SIZE")
    backbone = backbone_entry(cfg.MODEL.ARCH)
    if backbone.sync_batchnorm(cfg) and world_size > 1 and not torch.cuda.is_available():
        raise ConfigError(f"{backbone.norm_key}: sync_batchnorm needs GPUs (torch's SyncBatchNorm has no CPU "
                          "path); use batchnorm for a multi-process CPU run")


def run_warnings(cfg: CfgNode, world_size: int) -> List[str]:
    """Settings that work but are likely not what the user wants (the run logs them)."""
    warnings = []
    backbone = backbone_entry(cfg.MODEL.ARCH)
    if cfg.MODEL.COMPILE and backbone.sync_batchnorm(cfg) and world_size > 1:
        warnings.append(f"MODEL.COMPILE with {backbone.norm_key} sync_batchnorm: torch.compile breaks the graph "
                        "at every SyncBatchNorm (about 100 in a ResNet-101), so compiling gains little; "
                        f"consider MODEL.COMPILE False (or {backbone.norm_key} batchnorm)")
    return warnings


def starts_fresh(cfg: CfgNode) -> bool:
    """Whether the run will start from the pretrained weights: it trains, fine-tunes from
    no TRAIN.CHECKPOINT_FILE_PATH and has no checkpoint of its own to resume."""
    resumes = cfg.TRAIN.AUTO_RESUME and bool(list_checkpoints(cfg.OUTPUT_DIR))
    return cfg.TRAIN.ENABLE and not cfg.TRAIN.CHECKPOINT_FILE_PATH and not resumes


def check_files(cfg: CfgNode) -> None:
    """Weight and checkpoint files the run will read exist; ConfigError naming the key.

    The backbone's pretrained weights (its ``weights_key``, C2D: RESNET.IMAGENET_WEIGHTS) are
    checked when they are a file path and the run starts fresh; a weights name was checked by
    validate() (whether it is in torch.hub's cache or can be downloaded is known when it is
    read, and the error then says where to put it).
    """
    files = []
    backbone = backbone_entry(cfg.MODEL.ARCH)
    if starts_fresh(cfg) and backbone.weights_file(cfg):
        files.append((backbone.weights_key, backbone.weights_file(cfg),
                      "a local state dict of the backbone's pretrained weights, or a weights name such as "
                      "IMAGENET1K_V1 (see configs/README.md), or \"\" for random weights"))
    if cfg.TRAIN.ENABLE:
        files.append(("TRAIN.CHECKPOINT_FILE_PATH", cfg.TRAIN.CHECKPOINT_FILE_PATH, "a checkpoint to start from"))
        files.append(("TRAIN.CHECKPOINT_CLASSES", cfg.TRAIN.CHECKPOINT_CLASSES, "its classes, one a line"))
    if cfg.TEST.ENABLE:
        files.append(("TEST.CHECKPOINT_FILE_PATH", cfg.TEST.CHECKPOINT_FILE_PATH, "the checkpoint to test"))
    for key, path, what in files:
        if path and is_url(path):  # downloaded into iopath's cache now, so a bad URL stops the run here
            try:
                local_path(path)
            except FileNotFoundError as exc:
                raise ConfigError(f"{key}: {exc} (expected {what})") from None
        elif path and not os.path.isfile(path):
            raise ConfigError(f"{key}: file not found: {path} (expected {what})")
    if cfg.TEST.ENABLE and not cfg.TRAIN.ENABLE and not cfg.TEST.CHECKPOINT_FILE_PATH \
            and not list_checkpoints(cfg.OUTPUT_DIR):
        raise ConfigError(f"TEST.CHECKPOINT_FILE_PATH: no weights to test: set it, or train first "
                          f"(no checkpoint in {checkpoint_dir(cfg.OUTPUT_DIR)})")
