"""Model weights in files: the one reader of every checkpoint layout, and the one
loader of a state dict into a model (strict, or with a new classifier).

Layouts ``model_state`` understands (``tests/models/test_state_dict.py`` has one case each):

* ours: ``{"model": state_dict, "optimizer": ..., "epoch": ..., ...}`` (``engine.resume``);
* PyTorchVideo / PySlowFast: ``{"model_state": state_dict, ...}``;
* ``{"state_dict": state_dict, ...}`` (PyTorch Lightning and many training scripts);
* a bare state dict (``torch.save(model.state_dict(), path)``);
* the official non-local Kinetics-400 pickles (Caffe2 blobs, ``models.caffe2``);

and keys saved from a wrapped model: the ``module.`` prefix of DataParallel /
DistributedDataParallel and the ``_orig_mod.`` prefix of torch.compile are removed.
Files are read with torch's weights-only unpickler, onto the CPU; a pickle that is
no torch file with ``models.caffe2``'s restricted unpickler (numpy arrays only).
"""

import re
import zipfile
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Union

import torch
from torch import nn

from cgnl_video.utils.remote import local_path

StateDict = Mapping[str, torch.Tensor]
WRAPPERS = ("model", "model_state", "state_dict")
PREFIXES = ("module.", "_orig_mod.")
_SHOWN = 5  # keys named per kind of mismatch
_INSERTED_BLOCK = re.compile(r"^(.*\.inserted\.\d+)\.")  # an inserted block's keys (models/c2d.py)


class CheckpointError(ValueError):
    """A file holds no model state dict, or one that does not fit the model; the
    message names the file (when known) and the offending keys."""


class FileState(Dict[str, torch.Tensor]):
    """A state dict (our keys) made from a file that names its tensors otherwise;
    ``name_in_file(key)`` is what messages call a key."""

    def __init__(self, *args: Any, name_in_file: Callable[[str], str], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.name_in_file = name_in_file


@dataclass
class LoadReport:
    """What a loader did: keys of the model it set, source keys it left unused, inserted
    blocks that kept their init, classifier rows taken by class name, and where the
    weights came from (for the log)."""

    loaded: List[str] = field(default_factory=list)
    skipped: List[str] = field(default_factory=list)
    source: str = ""
    new_blocks: List[str] = field(default_factory=list)
    rows_by_name: int = 0


def read_checkpoint(path: str) -> Dict[str, Any]:
    """The object saved in ``path`` (a file, or an http(s) URL downloaded once into iopath's
    cache: ``utils.remote``), read onto the CPU with torch's weights-only unpickler;
    a Caffe2 pickle (``models.caffe2``) as ``{"model": its state dict}``.

    Raises CheckpointError naming the file and the Caffe2 blobs it cannot map, or what
    a plain pickle asked for that the restricted unpickler refuses.
    """
    from cgnl_video.models import caffe2  # it builds on this module

    path = local_path(path)  # an http(s) URL: its cached download
    try:
        if not zipfile.is_zipfile(path):  # torch.save writes zip files; this may be a plain pickle
            first = _first_pickled(path)
            if caffe2.is_caffe2_checkpoint(first):
                return {"model": caffe2.caffe2_state_dict(first, path)}
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise FileNotFoundError(f"checkpoint not found: {path}") from None


def _first_pickled(path: str) -> Any:
    """The first object pickled in ``path`` (restricted unpickler), None if it is no pickle
    (torch.load then says what it is); CheckpointError if it asks for a refused global."""
    from cgnl_video.models import caffe2

    with open(path, "rb") as handle:
        try:
            return caffe2.read_pickle(handle)
        except caffe2.RefusedPickleError as exc:
            raise CheckpointError(f"{path}: {exc}") from None
        except Exception:  # noqa: BLE001 - not a pickle (or a truncated file): torch.load reports it
            return None


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
    if isinstance(state, FileState):  # our keys already
        return state
    return {_strip(key): value for key, value in state.items()}


def read_state_dict(path_or_state: Union[str, Mapping[str, Any]]) -> Dict[str, torch.Tensor]:
    """The model state dict of a checkpoint file or of an object already loaded.

    Args:
        path_or_state: a checkpoint file, or its loaded content, in any layout of the
            module docstring.
    Returns:
        The model's tensors by key, wrapper prefixes (``module.``, ``_orig_mod.``) removed.
    """
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


def classifier_rows(checkpoint_classes: Sequence[str], classes: Sequence[str]) -> Optional[List[int]]:
    """The row of the checkpoint's classifier for each of ``classes`` (the model's, in its
    order) when every one of them is a class of the checkpoint; None otherwise."""
    row = {name: index for index, name in enumerate(checkpoint_classes)}
    if not classes or any(name not in row for name in classes):
        return None
    return [row[name] for name in classes]


def _describe(missing: List[str], unexpected: List[str], shapes: List[str]) -> str:
    parts = []
    for what, keys in (("missing from the file", missing), ("not in the model", unexpected),
                       ("of another shape", shapes)):
        if keys:
            more = f" and {len(keys) - _SHOWN} more" if len(keys) > _SHOWN else ""
            parts.append(f"{len(keys)} {what}: {', '.join(keys[:_SHOWN])}{more}")
    return "; ".join(parts)


def _new_blocks(missing: List[str], state: StateDict) -> List[str]:
    """Inserted blocks (module paths) of which ``state`` holds no key at all."""
    blocks = {match.group(1) for match in map(_INSERTED_BLOCK.match, missing) if match}
    return sorted(b for b in blocks if not any(key.startswith(b + ".") for key in state))


def load_state(model: nn.Module, state: StateDict, new_classifier: bool = False,
               source: str = "the state dict", new_blocks: bool = False,
               class_rows: Optional[Sequence[int]] = None) -> LoadReport:
    """Copy ``state`` into ``model``: every key of the model, with its shape.

    Fine-tuning options:

    * ``class_rows``: the checkpoint's classifier row for each class of the model
      (``classifier_rows``); those rows are loaded (counted in ``rows_by_name``).
    * ``new_classifier``: otherwise the classifier (the module of ``model.classifier_key``)
      may have another number of classes in ``state``; it then keeps the model's own
      initialisation (as ``build_model`` made it) and its keys are reported as skipped.
    * ``new_blocks``: inserted blocks (``<stage>.inserted.<i>``) of which ``state`` has no
      key keep their initialisation (the identity); reported in ``new_blocks``.

    Any other difference raises CheckpointError naming ``source`` and the keys (in the
    file's own names for a ``FileState``); the model is left untouched then.
    """
    target = model.state_dict()
    named = state.name_in_file if isinstance(state, FileState) else str
    report = LoadReport(source=source)
    head = classifier_keys(model, state)
    if class_rows is not None:
        rows = torch.as_tensor(list(class_rows), dtype=torch.long)
        state = {k: (v.index_select(0, rows) if k in head else v) for k, v in state.items()}
        report.rows_by_name = len(rows)
    elif new_classifier:
        weight = getattr(model, "classifier_key", "")
        if weight in state and weight in target and state[weight].shape[0] != target[weight].shape[0] \
                and state[weight].shape[1:] == target[weight].shape[1:]:
            report.skipped = head
    missing = [k for k in target if k not in state and k not in report.skipped]
    if new_blocks:
        report.new_blocks = _new_blocks(missing, state)
        missing = [k for k in missing if not any(k.startswith(b + ".") for b in report.new_blocks)]
    unexpected = [k for k in state if k not in target]
    shapes = [f"{named(k)} {tuple(state[k].shape)} in the file, {tuple(target[k].shape)} in the model"
              for k in state if k in target and k not in report.skipped and state[k].shape != target[k].shape]
    if missing or unexpected or shapes:
        missing, unexpected = (list(dict.fromkeys(map(named, keys))) for keys in (missing, unexpected))
        raise CheckpointError(f"{source} does not fit the model: {_describe(missing, unexpected, shapes)}")
    loaded = {k: v for k, v in state.items() if k not in report.skipped}
    model.load_state_dict(loaded, strict=not (report.skipped or report.new_blocks))
    report.loaded = sorted(loaded)
    return report
