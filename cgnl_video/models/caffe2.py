"""The Kinetics-400 checkpoints of the official non-local code (video-nonlocal-net,
Caffe2; docs/MODELS.md, "Official non-local models") as a state dict of our C2D.

Such a file is a Python 2 pickle of ``{"blobs": {name: numpy array}, ...}``. Pickles
can run code when read, so ``read_pickle`` reads them with an unpickler that
builds only dicts, lists, strings, numbers and numpy arrays / dtypes, refusing
anything else. ``caffe2_state_dict`` renames the blobs by ``RULES`` (one table, used
both ways: blob -> key for loading, key -> blob for messages). Optimizer blobs
(``*_momentum``, ``lr``, ``model_iter``) are dropped; any other blob without a rule
is an error naming it. The result is a ``models.state_dict.FileState`` that
``load_state`` loads strictly like any checkpoint, naming blobs in its messages.
"""

import functools
import pickle
import re
from typing import Any, BinaryIO, Callable, Dict, Mapping, Optional, Tuple

import numpy as np
import torch

from cgnl_video.config.backbones import STAGE_NAMES
from cgnl_video.models.c2d import C2DResNet
from cgnl_video.models.state_dict import CheckpointError, FileState

#: blobs of the training state, not weights
OPTIMIZER_BLOB = re.compile(r".*_momentum|lr|model_iter")
#: placeholder -> {blob spelling: key spelling}; "i" (a block index) is any number
_VOCABULARY: Dict[str, Dict[str, str]] = {
    "stage": {name[len("res"):]: C2DResNet.part_path(name) for name in STAGE_NAMES},
    "conv": {"a": "a", "b": "b", "c": "c"},
    "bn": {"s": "weight", "b": "bias", "rm": "running_mean", "riv": "running_var"},  # riv: a variance
    "wb": {"w": "weight", "b": "bias"},
    "op": {"theta": "theta", "phi": "phi", "g": "g", "out": "z"},
}
_STEM, _HEAD = C2DResNet.part_path("stem"), C2DResNet.part_path("head")
_BLOCK = "{stage}.res_blocks.{i}"
#: (Caffe2 blob name, our state dict key); non-local blocks are ``<stage>.inserted.<i>`` (models/c2d.py)
RULES: Tuple[Tuple[str, str], ...] = (
    ("conv1_w", f"{_STEM}.conv.weight"),
    ("res_conv1_bn_{bn}", f"{_STEM}.norm.{{bn}}"),
    ("res{stage}_{i}_branch2{conv}_w", f"{_BLOCK}.branch2.conv_{{conv}}.weight"),
    ("res{stage}_{i}_branch2{conv}_bn_{bn}", f"{_BLOCK}.branch2.norm_{{conv}}.{{bn}}"),
    ("res{stage}_{i}_branch1_w", f"{_BLOCK}.branch1_conv.weight"),
    ("res{stage}_{i}_branch1_bn_{bn}", f"{_BLOCK}.branch1_norm.{{bn}}"),
    ("pred_{wb}", f"{_HEAD}.proj.{{wb}}"),
    ("nonlocal_conv{stage}_{i}_{op}_{wb}", "{stage}.inserted.{i}.{op}.{wb}"),
    ("nonlocal_conv{stage}_{i}_bn_{bn}", "{stage}.inserted.{i}.norm.{bn}"),
)
_FIELD = re.compile(r"\{(\w+)\}")
_BN_BLOB = re.compile(r"_bn_(s|b|rm|riv)$")


@functools.lru_cache(maxsize=None)
def _pattern(template: str, side: int) -> Tuple["re.Pattern[str]", Callable[[str, str], str]]:
    """A regex for one side of a rule (0: blob names, 1: keys) and the translation of a field's value."""
    regex = ""
    for index, part in enumerate(_FIELD.split(template)):  # literal, field, literal, ...
        if index % 2 == 0:
            regex += re.escape(part)
        elif part in _VOCABULARY:
            regex += f"(?P<{part}>{'|'.join(re.escape(pair[side]) for pair in _VOCABULARY[part].items())})"
        else:
            regex += rf"(?P<{part}>\d+)"

    def translate(field: str, value: str) -> str:
        pairs = _VOCABULARY.get(field)
        if pairs is None:
            return value
        return pairs[value] if side == 0 else {v: k for k, v in pairs.items()}[value]

    return re.compile(regex), translate


def _rename(name: str, side: int) -> Optional[str]:
    """``name`` (a blob if ``side`` is 0, a key if 1) in the other naming; None if no rule fits."""
    for rule in RULES:
        regex, translate = _pattern(rule[side], side)
        match = regex.fullmatch(name)
        if match:
            return rule[1 - side].format(**{f: translate(f, v) for f, v in match.groupdict().items()})
    return None


def key_of_blob(blob: str) -> Optional[str]:
    """Our state dict key for Caffe2 blob ``blob``; None if no rule covers it."""
    return _rename(blob, side=0)


def blob_of_key(key: str) -> str:
    """The Caffe2 blob of our ``key`` (for messages; ``key`` itself when no rule covers it)."""
    if key.endswith(".num_batches_tracked"):  # made by caffe2_state_dict with any blob of the norm
        key = key[: -len("num_batches_tracked")] + "running_var"
    return _rename(key, side=1) or key


class RefusedPickleError(pickle.UnpicklingError):
    """A pickle asks for something other than containers, strings, numbers and numpy arrays."""


class _RestrictedUnpickler(pickle.Unpickler):
    """Builds containers, strings, numbers and numpy arrays / dtypes; refuses every other global."""

    ALLOWED: Dict[Tuple[str, str], Any] = {
        **{(module, "_reconstruct"): np.ndarray(0).__reduce__()[0]
           for module in ("numpy.core.multiarray", "numpy._core.multiarray")},
        **{(module, "scalar"): np.float32(0).__reduce__()[0]
           for module in ("numpy.core.multiarray", "numpy._core.multiarray")},
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): __import__("codecs").encode,  # bytes in a protocol-2 pickle written by Python 3
    }

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self.ALLOWED[(module, name)]
        except KeyError:
            raise RefusedPickleError(
                f"refused to load {module}.{name}: a Caffe2 checkpoint holds only dicts, lists, strings, "
                "numbers and numpy arrays, and unpickling anything else can run code") from None

    def persistent_load(self, pid: Any) -> Any:
        raise RefusedPickleError("refused a persistent id: not a Caffe2 checkpoint")


def read_pickle(handle: BinaryIO) -> Any:
    """The first object pickled in the open file ``handle``, read with the restricted
    unpickler (Python 2 strings as latin1). RefusedPickleError names what it refused."""
    return _RestrictedUnpickler(handle, encoding="latin1").load()


def is_caffe2_checkpoint(obj: Any) -> bool:
    """Whether ``obj`` (an unpickled file) has the layout of a video-nonlocal-net checkpoint."""
    return isinstance(obj, Mapping) and isinstance(obj.get("blobs"), Mapping)


def caffe2_state_dict(checkpoint: Mapping[str, Any], source: str = "checkpoint") -> FileState:
    """Our state dict (keys of ``RULES``, float tensors) of a Caffe2 ``{"blobs": ...}`` dict.

    Every BatchNorm with a blob gets ``num_batches_tracked`` 0 (Caffe2 has no such blob)
    so the load can be strict. Raises CheckpointError naming ``source`` and the blobs no rule covers.
    """
    state, unknown = FileState(name_in_file=blob_of_key), []
    for blob, value in checkpoint["blobs"].items():
        if OPTIMIZER_BLOB.fullmatch(blob):
            continue
        key = key_of_blob(blob)
        if key is None or not isinstance(value, np.ndarray):
            unknown.append(blob)
            continue
        state[key] = torch.from_numpy(np.array(value, dtype=np.float32))
        if _BN_BLOB.search(blob):
            state[key.rsplit(".", 1)[0] + ".num_batches_tracked"] = torch.tensor(0)
    if unknown:
        raise CheckpointError(f"{source}: {len(unknown)} Caffe2 blobs that are no weight of our models "
                              f"(no rule in cgnl_video/models/caffe2.py): {', '.join(sorted(unknown))}")
    return state

