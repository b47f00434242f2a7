"""Checks that run before any work starts: the manifests the run needs exist,
and MODEL.NUM_CLASSES matches classes.txt."""

import os
from typing import List

import torch
from fvcore.common.config import CfgNode

from cgnl_video.config import ConfigError
from cgnl_video.data.manifest import read_classes


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


def prep_hint(data_dir: str) -> str:
    """The data_prep commands that create the manifests of ``data_dir``."""
    name = os.path.basename(os.path.normpath(data_dir)).lower()
    if "ucf" in name:
        return (
            "python data_prep/extract_frames.py --src UCF101/videos --dst UCF101/frames && "
            f"python data_prep/build_manifests.py ucf101 --frames UCF101/frames "
            f"--splits-dir ucfTrainTestlist --out {data_dir}"
        )
    if "kinetics" in name:
        return (
            "python data_prep/extract_frames.py --src kinetics/videos --dst kinetics/frames && "
            f"python data_prep/build_manifests.py minikinetics --frames kinetics/frames "
            f"--annotations kinetics400/train.csv,kinetics400/validate.csv --out {data_dir}"
        )
    return f"python data_prep/build_manifests.py ... --out {data_dir} (see docs/TRAINING.md)"


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
                f"missing {path} (DATA.PATH_TO_DATA_DIR = {data_dir}). Create it with: {prep_hint(data_dir)}"
            )
    classes = read_classes(os.path.join(data_dir, "classes.txt"))
    if len(classes) != cfg.MODEL.NUM_CLASSES:
        raise ConfigError(
            f"MODEL.NUM_CLASSES: {cfg.MODEL.NUM_CLASSES}, but {os.path.join(data_dir, 'classes.txt')} "
            f"lists {len(classes)} classes"
        )


def check_run(cfg: CfgNode, world_size: int) -> None:
    """Settings that depend on the launch (processes, devices); ConfigError naming the key."""
    for key, value in (("TRAIN.BATCH_SIZE", cfg.TRAIN.BATCH_SIZE), ("TEST.BATCH_SIZE", cfg.TEST.BATCH_SIZE)):
        if value % world_size:
            raise ConfigError(f"{key}: {value} is global and must be a multiple of the {world_size} processes")
    if cfg.RESNET.NORM == "sync_batchnorm" and world_size > 1 and not torch.cuda.is_available():
        raise ConfigError("RESNET.NORM: sync_batchnorm needs GPUs (torch's SyncBatchNorm has no CPU "
                          "path); use batchnorm for a multi-process CPU run")
