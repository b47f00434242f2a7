"""Scoring videos outside a manifest: load a model and a checkpoint, build the
test views of arbitrary video files or frame folders, average the views.

Nothing here re-implements the data or evaluation path: the inputs become
``ManifestEntry`` rows handed to ``VideoDataset.from_config``, which decodes and
crops them exactly as in the multi-view test (or the single validation clip),
``engine.multiview.run_test`` averages the view probabilities and
``engine.checkpoint`` loads the weights (``weights_only``).
"""

import logging
import os
from dataclasses import dataclass, field
from typing import List, Optional, Sequence, Tuple

import torch
from fvcore.common.config import CfgNode
from torch import nn

from cgnl_video.data import (
    DecodeError,
    ManifestEntry,
    VideoDataset,
    build_loader,
    classes_path,
    open_reader,
    read_classes,
)
from cgnl_video.data.decode import frame_file_name
from cgnl_video.engine import checkpoint as cu
from cgnl_video.engine.multiview import run_test
from cgnl_video.models import build_model
from cgnl_video.models.build import standalone_config
from cgnl_video.prep.manifests import count_frames

logger = logging.getLogger(__name__)


class InputError(ValueError):
    """An input path that cannot be scored; the message names it."""


@dataclass
class Prediction:
    """The averaged class probabilities of one input and its top classes."""

    path: str
    views: int
    top: List[Tuple[str, float]]
    probs: torch.Tensor = field(repr=False)

    def to_json(self) -> dict:
        return {
            "path": self.path,
            "views": self.views,
            "top": [{"label": name, "prob": round(prob, 6)} for name, prob in self.top],
        }


# ----------------------------------------------------------------------------- config and model
def inference_config(cfg: CfgNode, **data: object) -> CfgNode:
    """A thawed copy of ``cfg`` for inference: plain BatchNorm, and ``data`` set on cfg.DATA."""
    cfg = standalone_config(cfg)
    for key, value in data.items():
        setattr(cfg.DATA, key, value)
    return cfg


def load_model(cfg: CfgNode, checkpoint: Optional[str] = None,
               device: torch.device = torch.device("cpu")) -> nn.Module:
    """The model of ``cfg`` in eval mode on ``device``, with the weights of ``checkpoint``.

    Args:
        cfg: the model's config (``load_config``); SyncBatchNorm becomes plain BatchNorm.
        checkpoint: a file in any layout ``models.state_dict`` reads, loaded strictly;
            None keeps the fresh initialisation.
        device: where the model goes.
    Returns:
        The model in eval mode: clips (B, 3, T, S, S) give class probabilities (B, classes).
    """
    model = build_model(inference_config(cfg))
    if checkpoint:
        cu.load_model_weights(model, checkpoint)
    return model.to(device).eval()


def class_names(cfg: CfgNode) -> List[str]:
    """DATA.PATH_TO_DATA_DIR/classes.txt, or ``class_<i>`` (with a warning) when
    it is missing or does not list MODEL.NUM_CLASSES names."""
    path = classes_path(cfg)
    count = cfg.MODEL.NUM_CLASSES
    names: List[str] = []
    if os.path.isfile(path):
        names = read_classes(path)
        if len(names) != count:
            logger.warning("%s lists %d classes, the model has %d: using class_<i>", path, len(names), count)
    else:
        logger.warning("no class list at %s: using class_<i>", path)
    return names if len(names) == count else [f"class_{i}" for i in range(count)]


# ----------------------------------------------------------------------------- inputs
def input_entry(path: str) -> ManifestEntry:
    """A manifest entry (label 0) for a video file or a frame folder
    (``000001.jpg``, ...; its frame count is the number of JPEGs in it)."""
    if os.path.isdir(path):
        frames = count_frames(path)
        if frames == 0 or not os.path.isfile(os.path.join(path, frame_file_name(0))):
            raise InputError(f"{path}: not a frame folder (no {frame_file_name(0)}, {frames} JPEG files)")
        return ManifestEntry(os.path.abspath(path), 0, frames)
    if not os.path.exists(path):
        raise InputError(f"{path}: no such file or folder")
    return ManifestEntry(os.path.abspath(path), 0, None)


def check_readable(cfg: CfgNode, entry: ManifestEntry) -> None:
    """Open ``entry`` with the dataset's reader; InputError naming the file if it cannot."""
    try:
        with open_reader(entry.path, entry.num_frames, cfg.DATA.DECODING_BACKEND, cfg.DATA.JPEG_DECODER):
            pass
    except DecodeError as error:
        raise InputError(str(error)) from error


def dataset_for(cfg: CfgNode, entries: Sequence[ManifestEntry], split: str,
                classes: Sequence[str]) -> VideoDataset:
    """A ``VideoDataset`` of ``split`` ("val": one centre clip, "test": the
    multi-view test views) over ``entries`` (absolute paths), with cfg's settings;
    decoded in the loader workers whatever DATA.DECODE_ON says (inputs may be video files)."""
    return VideoDataset.from_config(cfg, split, entries, classes, decode_on="worker")


# ----------------------------------------------------------------------------- scoring
@torch.no_grad()
def predict(cfg: CfgNode, model: nn.Module, paths: Sequence[str], device: torch.device,
            classes: Sequence[str], top_k: int = 5) -> Tuple[List[Prediction], List[Tuple[str, str]]]:
    """Score ``paths`` with the multi-view test protocol of ``cfg``.

    Returns the predictions of the readable inputs (in input order) and
    ``(path, reason)`` for every input that could not be scored. The inputs
    have no labels (0 in their entries), so run_test's accuracy is ignored.
    """
    failures: List[Tuple[str, str]] = []
    entries, kept = [], []
    for path in paths:
        try:
            entry = input_entry(path)
            check_readable(cfg, entry)
        except InputError as error:
            failures.append((path, str(error)))
            continue
        entries.append(entry)
        kept.append(path)
    if not entries:
        return [], failures
    dataset = dataset_for(cfg, entries, "test", classes)
    _metrics, views = run_test(model, build_loader(cfg, "test", dataset), cfg, device)
    scores = views.scores()
    predictions = []
    for index, path in enumerate(kept):
        if index not in scores:
            failures.append((path, f"{path}: no view could be decoded"))
            continue
        probs = scores[index].float()
        values, labels = torch.topk(probs, min(top_k, probs.numel()))
        top = [(classes[c], float(v)) for v, c in zip(values.tolist(), labels.tolist())]
        predictions.append(Prediction(path, views.counts[index], top, probs))
    order = {path: i for i, path in enumerate(paths)}
    failures.sort(key=lambda item: order[item[0]])
    return predictions, failures



def load_clip(cfg: CfgNode, path: str) -> torch.Tensor:
    """The validation clip (3, T, H, W) of one input: the centre window, short
    side DATA.VAL_SHORT_SIDE, centre crop DATA.VAL_CROP_SIZE, normalised."""
    entry = input_entry(path)
    check_readable(cfg, entry)
    classes = [f"class_{i}" for i in range(cfg.MODEL.NUM_CLASSES)]
    clip, _label, _index = dataset_for(cfg, [entry], "val", classes)[0]
    return clip
