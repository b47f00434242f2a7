"""Model weights in files: the one reader of every checkpoint layout, and the one
loader of a state dict into a model (strict, or with a new classifier).

Layouts ``model_state`` understands (``tests/test_state_dict.py`` has one case each):

* ours: ``{"model": state_dict, "optimizer": ..., "epoch": ..., ...}`` (``engine.resume``);
* PyTorchVideo / PySlowFast: ``{"model_state": state_dict, ...}``;
* ``{"state_dict": state_dict, ...}`` (PyTorch Lightning and many training scripts);
* a bare state dict (``torch.save(model.state_dict(), path)``);

and keys saved from a wrapped model: the ``module.`` prefix of DataParallel /
DistributedDataParallel and the ``_orig_mod.`` prefix of torch.compile are removed.
Files are read with torch's weights-only unpickler, onto the CPU.
"""

from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Union

import torch
from torch import nn

StateDict = Mapping[str, torch.Tensor]
WRAPPERS = ("model", "model_state", "state_dict")
PREFIXES = ("module.", "_orig_mod.")
_SHOWN = 5  # keys named per kind of mismatch


class CheckpointError(ValueError):
    """A file holds no model state dict, or one that does not fit the model; the
    message names the file (when known) and the offending keys."""


@dataclass
class LoadReport:
    """What a loader did: keys of the model it set, source keys it left unused, and
    where the weights came from (for the log)."""

    loaded: List[str] = field(default_factory=list)
    skipped: List[str] = field(default_factory=list)
    source: str = ""


def read_checkpoint(path: str) -> Dict[str, Any]:
    """The object saved in ``path``, read onto the CPU with torch's weights-only unpickler."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise FileNotFoundError(f"checkpoint not found: {path}") from None


def _strip(key: str) -> str:
    stripped = True
    while stripped:
        stripped = False
        for prefix in PREFIXES:
            if key.startswith(prefix):
                key, stripped = key[len(prefix):], True
    return key


def model_state(checkpoint: Mapping[str, Any], source: str = "checkpoint") -> Dict[str, torch.Tensor]:
    """The model state dict inside ``checkpoint`` (any layout of the module docstring).

    Raises CheckpointError naming ``source`` if what is left after unwrapping is not
    a mapping of names to tensors.
    """
    state: Any = checkpoint
    while isinstance(state, Mapping):
        inner = [key for key in WRAPPERS if isinstance(state.get(key), Mapping)]
        if not inner:
            break
        state = state[inner[0]]
    if not isinstance(state, Mapping) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        top = list(checkpoint)[:8] if isinstance(checkpoint, Mapping) else type(checkpoint).__name__
        raise CheckpointError(f"{source} holds no model state dict (expected a bare state dict or one under "
                              f"{' / '.join(repr(w) for w in WRAPPERS)}; found {top})")
    return {_strip(key): value for key, value in state.items()}


def read_state_dict(path_or_state: Union[str, Mapping[str, Any]]) -> Dict[str, torch.Tensor]:
    """The model state dict of a checkpoint file or of an object already loaded."""
    if isinstance(path_or_state, str):
        return model_state(read_checkpoint(path_or_state), path_or_state)
    return model_state(path_or_state)


def classifier_keys(model: nn.Module, state: StateDict) -> List[str]:
    """The keys of ``state`` under the module that holds ``model.classifier_key``
    (its weight and bias); empty if the model names no classifier."""
    key = getattr(model, "classifier_key", None)
    if not key:
        return []
    prefix = key.rsplit(".", 1)[0] + "."
    return [k for k in state if k.startswith(prefix)]


def _describe(missing: List[str], unexpected: List[str], shapes: List[str]) -> str:
    parts = []
    for what, keys in (("missing from the file", missing), ("not in the model", unexpected),
                       ("of another shape", shapes)):
        if keys:
            more = f" and {len(keys) - _SHOWN} more" if len(keys) > _SHOWN else ""
            parts.append(f"{len(keys)} {what}: {', '.join(keys[:_SHOWN])}{more}")
    return "; ".join(parts)


def load_state(model: nn.Module, state: StateDict, new_classifier: bool = False,
               source: str = "the state dict") -> LoadReport:
    """Copy ``state`` into ``model``: every key of the model, with its shape.

    ``new_classifier``: the classifier (the module of ``model.classifier_key``) may
    have another number of classes in ``state``; it then keeps the model's own
    initialisation (as ``build_model`` made it) and its keys are reported as skipped.
    Any other difference raises CheckpointError naming ``source`` and the keys; the
    model is left untouched then.
    """
    target = model.state_dict()
    skipped = []
    if new_classifier:
        weight = getattr(model, "classifier_key", "")
        if weight in state and weight in target and state[weight].shape[0] != target[weight].shape[0] \
                and state[weight].shape[1:] == target[weight].shape[1:]:
            skipped = classifier_keys(model, state)
    missing = [k for k in target if k not in state and k not in skipped]
    unexpected = [k for k in state if k not in target]
    shapes = [f"{k} {tuple(state[k].shape)} in the file, {tuple(target[k].shape)} in the model"
              for k in state if k in target and k not in skipped and state[k].shape != target[k].shape]
    if missing or unexpected or shapes:
        raise CheckpointError(f"{source} does not fit the model: {_describe(missing, unexpected, shapes)}")
    loaded = {k: v for k, v in state.items() if k not in skipped}
    model.load_state_dict(loaded, strict=not skipped)
    return LoadReport(loaded=sorted(loaded), skipped=skipped, source=source)
