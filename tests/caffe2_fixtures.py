"""Stand-ins for the official non-local Kinetics-400 checkpoints (video-nonlocal-net,
Caffe2; docs/MODELS.md, "Official non-local models"), which our tests cannot download:
the blobs of C2D R-50 (optionally with the 5 NL blocks) built here from the naming rules
of that code, written the way Python 2 wrote them (protocol 2, strings as Python 2
``str``), so reading them needs encoding latin1 like the real files.

Independent of cgnl_video/models/caffe2.py on purpose: names come from the official
rules, not from our table, and ``TORCHVISION`` maps them to torchvision's ResNet keys
for the numerical comparison.
"""

import pickle
import struct
from typing import Dict, Optional

import numpy as np

DEPTHS = {2: 3, 3: 4, 4: 6, 5: 3}  # ResNet-50 blocks per stage res2..res5
NL_BLOCKS = {3: (1, 3), 4: (1, 3, 5)}  # the 5-block model: after odd blocks of res3 and res4
BN = ("s", "b", "rm", "riv")
KINETICS_LIKE_CLASSES = [f"class {i:03d}" for i in range(400)]  # sorted, like the official order


def _bn(blobs: Dict[str, np.ndarray], prefix: str, channels: int, rng: np.random.Generator,
        gamma: float = 1.0) -> None:
    """Trained-like BN: gamma around ``gamma``, running variance of activations (0.2-2)."""
    blobs[f"{prefix}_s"] = (gamma * rng.uniform(0.5, 1.5, channels)).astype(np.float32)
    blobs[f"{prefix}_b"] = rng.normal(0, 0.1, channels).astype(np.float32)
    blobs[f"{prefix}_rm"] = rng.normal(0, 0.3, channels).astype(np.float32)
    blobs[f"{prefix}_riv"] = rng.uniform(0.2, 2.0, channels).astype(np.float32)


def _conv(out: int, inp: int, kernel: int, rng: np.random.Generator) -> np.ndarray:
    """(out, in, 1, k, k) with He-like magnitudes."""
    std = (2.0 / (inp * kernel * kernel)) ** 0.5
    return rng.normal(0, std, (out, inp, 1, kernel, kernel)).astype(np.float32)


def official_blobs(nonlocal_blocks: bool = False, num_classes: int = 400, width: int = 64,
                   seed: int = 0) -> Dict[str, np.ndarray]:
    """Every weight blob of the official C2D R-50 (and its NL blocks), random values."""
    rng = np.random.default_rng(seed)
    blobs = {"conv1_w": _conv(width, 3, 7, rng)}
    _bn(blobs, "res_conv1_bn", width, rng)
    channels = width
    for stage, depth in DEPTHS.items():
        inner = width * 2 ** (stage - 2)
        out = 4 * inner
        for i in range(depth):
            name = f"res{stage}_{i}"
            for branch, (o, c, k) in zip("abc", ((inner, channels if i == 0 else out, 1), (inner, inner, 3),
                                                 (out, inner, 1))):
                blobs[f"{name}_branch2{branch}_w"] = _conv(o, c, k, rng)
                _bn(blobs, f"{name}_branch2{branch}_bn", o, rng, gamma=0.2 if branch == "c" else 1.0)
            if i == 0:
                blobs[f"{name}_branch1_w"] = _conv(out, channels, 1, rng)
                _bn(blobs, f"{name}_branch1_bn", out, rng)
            if nonlocal_blocks and i in NL_BLOCKS.get(stage, ()):
                nl = f"nonlocal_conv{stage}_{i}"
                for op in ("theta", "phi", "g"):
                    blobs[f"{nl}_{op}_w"] = _conv(out // 2, out, 1, rng)
                    blobs[f"{nl}_{op}_b"] = rng.normal(0, 0.1, out // 2).astype(np.float32)
                blobs[f"{nl}_out_w"] = _conv(out, out // 2, 1, rng)
                blobs[f"{nl}_out_b"] = rng.normal(0, 0.1, out).astype(np.float32)
                _bn(blobs, f"{nl}_bn", out, rng, gamma=0.2)
        channels = out
    blobs["pred_w"] = rng.normal(0, 0.01, (num_classes, channels)).astype(np.float32)
    blobs["pred_b"] = rng.normal(0, 0.01, num_classes).astype(np.float32)
    return blobs


def with_training_state(blobs: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
    """``blobs`` plus what the official files also hold: momentum, lr, model_iter."""
    extra = {f"{name}_momentum": np.zeros_like(value) for name, value in blobs.items()}
    return {**blobs, **extra, "lr": np.array([1e-4], np.float32), "model_iter": np.array([400000], np.int64)}


class _Python2Pickler(pickle._Pickler):
    """Writes bytes as Python 2 ``str`` (BINSTRING), as the official pickles hold array data."""

    dispatch = dict(pickle._Pickler.dispatch)

    def save_bytes(self, obj: bytes) -> None:
        self.write(pickle.BINSTRING + struct.pack("<i", len(obj)) + obj)
        self.memoize(obj)

    dispatch[bytes] = save_bytes


def write_official(path: str, blobs: Dict[str, np.ndarray], extra: Optional[Dict] = None) -> None:
    """Pickle ``{"blobs": blobs, **extra}`` with protocol 2, array data as Python 2 strings."""
    with open(path, "wb") as handle:
        _Python2Pickler(handle, protocol=2).dump({"blobs": blobs, **(extra or {})})


def torchvision_key(blob: str) -> Optional[str]:
    """torchvision's ResNet key for an official blob (the test's own table); None for NL blobs."""
    if blob == "conv1_w":
        return "conv1.weight"
    if blob.startswith("pred_"):
        return "fc." + {"w": "weight", "b": "bias"}[blob[-1]]
    if blob.startswith("nonlocal_"):
        return None
    bn = {"s": "weight", "b": "bias", "rm": "running_mean", "riv": "running_var"}
    if blob.startswith("res_conv1_bn_"):
        return "bn1." + bn[blob[len("res_conv1_bn_"):]]
    stage, block, rest = blob[3:].split("_", 2)  # res{s}_{i}_...
    layer = f"layer{int(stage) - 1}.{block}"
    if rest.startswith("branch1"):
        module = "downsample.0" if rest == "branch1_w" else "downsample.1"
    else:
        index = "abc".index(rest[len("branch2")]) + 1
        module = f"conv{index}" if rest.endswith("_w") else f"bn{index}"
    return f"{layer}.{module}." + ("weight" if rest.endswith("_w") else bn[rest.rsplit("_", 1)[1]])
