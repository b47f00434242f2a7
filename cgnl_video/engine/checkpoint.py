"""Checkpoints: atomic save into OUTPUT_DIR/checkpoints, keep the last K,
find the last complete one, load with ``weights_only=True``.

Names tell the two kinds apart: ``checkpoint_epoch_00003.pyth`` after 3 epochs,
``checkpoint_epoch_00003_iter_000120.pyth`` after 3 epochs and 120 iterations of the
4th (mid-epoch: TRAIN.CHECKPOINT_ITERS or a stop signal). Both count for keep-K and
"last", in training order (``checkpoint_position``).

A checkpoint is a dict of plain types and tensors only (the config as a YAML
string, RNG states as tensors and tuples), so torch's safe unpickler reads it.
Reading files and their model weights (ours, PyTorchVideo's, bare state dicts)
is ``cgnl_video.models.state_dict``'s, the one reader the models and hub use too.
"""

import os
import re
from typing import Any, Dict, List, Optional, Tuple

import torch
from torch import nn

from cgnl_video.models.state_dict import LoadReport, load_state, model_state, read_checkpoint
from cgnl_video.utils.io import atomic_open
from cgnl_video.utils.logging import get_logger

CHECKPOINT_SUBDIR = "checkpoints"
_NAME = re.compile(r"^checkpoint_epoch_(\d{5,})(?:_iter_(\d{6,}))?\.pyth$")


def checkpoint_dir(output_dir: str) -> str:
    return os.path.join(output_dir, CHECKPOINT_SUBDIR)


def checkpoint_path(output_dir: str, epoch: int, iteration: int = 0) -> str:
    """Path of the checkpoint written after ``epoch`` epochs and, mid-epoch, ``iteration``
    iterations of the next one (0: an epoch checkpoint)."""
    suffix = f"_iter_{iteration:06d}" if iteration else ""
    return os.path.join(checkpoint_dir(output_dir), f"checkpoint_epoch_{epoch:05d}{suffix}.pyth")


def checkpoint_position(path: str) -> Optional[Tuple[int, int]]:
    """(epochs done, iterations done of the next epoch) that a checkpoint's name says;
    None for a name that is not a checkpoint's."""
    match = _NAME.match(os.path.basename(path))
    return (int(match.group(1)), int(match.group(2) or 0)) if match else None


def list_checkpoints(output_dir: str) -> List[str]:
    """Complete checkpoints in OUTPUT_DIR/checkpoints, oldest first in training order.

    Temporary files of an interrupted save (``.checkpoint_....tmp``) never match.
    """
    folder = checkpoint_dir(output_dir)
    if not os.path.isdir(folder):
        return []
    names = sorted((name for name in os.listdir(folder) if _NAME.match(name)), key=checkpoint_position)
    return [os.path.join(folder, name) for name in names]


def unwrap_model(model: nn.Module) -> nn.Module:
    """The plain module inside DistributedDataParallel and/or torch.compile wrappers."""
    while True:
        if hasattr(model, "module") and isinstance(model.module, nn.Module):
            model = model.module
        elif hasattr(model, "_orig_mod") and isinstance(model._orig_mod, nn.Module):
            model = model._orig_mod
        else:
            return model


def save_checkpoint(output_dir: str, epoch: int, state: Dict[str, Any], keep: int, iteration: int = 0) -> str:
    """Write ``state`` as the checkpoint of ``epoch`` epochs and ``iteration`` iterations
    (``checkpoint_path``; temp file + rename), then delete all but the ``keep`` most
    recent checkpoints. Returns the path."""
    path = checkpoint_path(output_dir, epoch, iteration)
    with atomic_open(path, "wb") as handle:
        torch.save(state, handle)
    for old in list_checkpoints(output_dir)[:-keep]:
        os.remove(old)
    return path


#: read a checkpoint onto the CPU with torch's safe (weights-only) unpickler
load_checkpoint = read_checkpoint


def load_last_checkpoint(output_dir: str) -> Optional[Dict[str, Any]]:
    """The newest checkpoint that loads, or None. An unreadable newest file
    (e.g. a disk that filled up) is reported and the previous one is tried."""
    for path in reversed(list_checkpoints(output_dir)):
        try:
            state = load_checkpoint(path)
        except Exception as exc:  # noqa: BLE001 - any unreadable file: fall back to an older one
            get_logger().warning("skipping unreadable checkpoint %s: %s", path, exc)
            continue
        state["path"] = path
        return state
    return None


def load_model_weights(model: nn.Module, path: str, new_classifier: bool = False,
                       state: Optional[Dict[str, Any]] = None, **fine_tuning: Any) -> Tuple[Dict[str, Any], LoadReport]:
    """Load the model weights of checkpoint ``path`` (any layout) into ``model`` (wrapped or
    not); every key must fit, except, with ``new_classifier``, a classifier with another
    number of classes (it keeps its init) and what the other ``fine_tuning`` options of
    ``load_state`` allow (``new_blocks``, ``class_rows``). ``state``: the file's content
    when the caller has read it already. Returns the checkpoint and the report;
    CheckpointError naming the file and the keys when the weights do not fit."""
    state = load_checkpoint(path) if state is None else state
    report = load_state(unwrap_model(model), model_state(state, path), new_classifier, source=path, **fine_tuning)
    return state, report
