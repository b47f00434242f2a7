"""Exporting a trained model for deployment, checked against PyTorch: ONNX (onnxruntime),
a torch.export ExportedProgram (``.pt2``) or TorchScript (deprecated by torch, kept for
older runtimes). What the file computes (``ExportedClassifier``) for normalised clips
``clip`` (batch, 3, T, S, S), RGB ``(x / 255 - DATA.MEAN) / DATA.STD``:

* by default ``probs`` (batch, classes): the eval-mode model's output (``C2DHead``),
  the score of one view that ``tools/predict.py`` averages over a video's views;
* with ``logits=True`` ``logits`` (batch, T', H', W', classes): the fc of every
  training-size window (``C2DHead.window_logits``); ``probs`` is their softmax over
  classes averaged over (T', H', W'). At the training clip size there is one window.

Only the batch axis is dynamic. The CGNL block's autograd Function is training code:
traced and exported graphs take the plain expression of Eq. 12 (``models/cgnl.py``).
The file is exported to a temporary name, verified there when asked and renamed to
``out`` only if every check passes; ``Metadata`` (JSON) travels in it.
"""

import importlib
import os
from dataclasses import asdict, dataclass
from typing import Callable, List, Optional, Sequence, Tuple

import simplejson
import torch
from fvcore.common.config import CfgNode
from torch import nn

from cgnl_video.data import read_manifest
from cgnl_video.data.dataset import manifest_path
from cgnl_video.inference import InputError, class_names, inference_config, load_clip, load_model
from cgnl_video.models.c2d import C2DHead
from cgnl_video.utils.io import atomic_path

FORMATS = ("onnx", "export", "torchscript")
#: what the ONNX format needs (the ``export`` extra of setup.py)
ONNX_PACKAGES = ("onnx", "onnxruntime", "onnxscript")
EXTRA_COMMAND = 'pip install -e ".[export]"'
DEFAULT_TOLERANCE = 1e-4
METADATA_KEY = "cgnl_video"
#: the metadata's file inside a torch.export or TorchScript archive
METADATA_FILE = "cgnl_video.json"
INPUT_NAME = "clip"

Shape = Tuple[int, ...]


class MissingExtraError(ImportError):
    """The packages of the ``export`` extra are not installed; the message says how to install them."""


class VerificationError(RuntimeError):
    """The exported file's output differs from PyTorch's by more than the tolerance."""

    def __init__(self, checks: Sequence["Check"], tolerance: float) -> None:
        failed = [c for c in checks if not c.passed(tolerance)]
        super().__init__(f"{len(failed)} of {len(checks)} checks differ by more than the tolerance {tolerance:g}: "
                         + ", ".join(c.name for c in failed))
        self.checks = list(checks)


def require_onnx() -> None:
    """MissingExtraError naming the missing packages and the install command, unless all are importable."""
    missing = []
    for name in ONNX_PACKAGES:
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name)
    if missing:
        raise MissingExtraError(f"the ONNX format needs {', '.join(ONNX_PACKAGES)} (missing: {', '.join(missing)}): "
                                f"install the export extra, {EXTRA_COMMAND}")


# ----------------------------------------------------------------------------- what is exported
class ExportedClassifier(nn.Module):
    """A model in eval mode, as exported: probabilities, or with ``logits`` the logits
    of every window of its head (module docstring). ``logits`` needs a model whose
    ``blocks`` end in its ``C2DHead`` (the shipped C2D backbone)."""

    def __init__(self, model: nn.Module, logits: bool = False) -> None:
        super().__init__()
        if logits and not (isinstance(getattr(model, "head", None), C2DHead)
                           and getattr(model, "blocks", [None])[-1] is model.head):
            raise ValueError(f"logits: {type(model).__name__} is not a C2D network ending in its C2DHead")
        self.model = model.eval()
        self.logits = logits

    @property
    def output_name(self) -> str:
        return "logits" if self.logits else "probs"

    def forward(self, clip: torch.Tensor) -> torch.Tensor:
        if not self.logits:
            return self.model(clip)
        features = clip
        for block in self.model.blocks[:-1]:
            features = block(features)
        return self.model.head.window_logits(features)


@dataclass
class Metadata:
    """The description stored in the exported file (JSON)."""

    output: str
    input_shape: List[object]
    output_shape: List[object]
    sampling_rate: int
    mean: List[float]
    std: List[float]
    classes: List[str]

    @classmethod
    def of(cls, cfg: CfgNode, output: str, clip_shape: Shape, output_shape: Shape,
           classes: Sequence[str]) -> "Metadata":
        return cls(output, ["batch", *clip_shape], ["batch", *output_shape], cfg.DATA.SAMPLING_RATE,
                   list(cfg.DATA.MEAN), list(cfg.DATA.STD), list(classes))

    def to_json(self) -> str:
        return simplejson.dumps(asdict(self))


def clip_shape(cfg: CfgNode, frames: Optional[int] = None, size: Optional[int] = None) -> Shape:
    """(3, T, S, S) of one clip: ``frames`` (default DATA.NUM_FRAMES) and ``size``
    (default DATA.TEST_CROP_SIZE, the side of the test views)."""
    return (3, frames or cfg.DATA.NUM_FRAMES, size or cfg.DATA.TEST_CROP_SIZE, size or cfg.DATA.TEST_CROP_SIZE)


@torch.no_grad()
def output_shape(module: nn.Module, shape: Shape) -> Shape:
    """The shape of ``module``'s output for one clip of ``shape`` (without the batch axis);
    ValueError naming the clip size when the model cannot take such clips (e.g. too
    few frames or pixels for its strides)."""
    try:
        return tuple(module(random_clips(1, shape)).shape[1:])
    except RuntimeError as error:
        raise ValueError(f"the model cannot take clips of {tuple(shape)} (channels, frames, height, width): "
                         f"{error}") from None


def random_clips(batch: int, shape: Shape, seed: int = 0) -> torch.Tensor:
    """Standard normal clips (batch, *shape): the range of normalised pixels."""
    return torch.randn((batch, *shape), generator=torch.Generator().manual_seed(seed))


def verification_video(cfg: CfgNode, video: Optional[str] = None) -> str:
    """``video``, or else the first video of the config's test manifest
    (DATA.PATH_TO_DATA_DIR/test.txt, under DATA.PATH_PREFIX); InputError naming the
    manifest when there is none."""
    if video:
        return video
    path = manifest_path(cfg, "test")
    entries = read_manifest(path) if os.path.isfile(path) else []
    if not entries:
        raise InputError(f"no test manifest with a video at {path} (DATA.PATH_TO_DATA_DIR) to take a real clip from: "
                         "name one with --verify-video")
    return os.path.join(cfg.DATA.PATH_PREFIX, entries[0].path)


def real_clip(cfg: CfgNode, video: str, shape: Shape) -> torch.Tensor:
    """The clip (3, T, S, S) of ``video`` (a file or frame folder) at the exported size: T
    frames every DATA.SAMPLING_RATE-th of the centre window, short side S, centre crop S,
    i.e. the centre view of the test. InputError naming the file when it cannot be read."""
    _channels, frames, size, _ = shape
    return load_clip(inference_config(cfg, NUM_FRAMES=frames, VAL_SHORT_SIDE=size, VAL_CROP_SIZE=size), video)


# ----------------------------------------------------------------------------- writers and readers
def _dynamic_batch() -> dict:
    """torch.export's ``dynamic_shapes``: axis 0 of ExportedClassifier.forward's argument
    INPUT_NAME is the batch, any size from 1 (T, H, W stay those of the example)."""
    return {INPUT_NAME: {0: torch.export.Dim("batch", min=1)}}


def _write_onnx(module: ExportedClassifier, example: torch.Tensor, path: str, metadata: Metadata) -> None:
    program = torch.onnx.export(module, (example,), dynamo=True, verbose=False, input_names=[INPUT_NAME],
                                output_names=[module.output_name], dynamic_shapes=_dynamic_batch())
    program.model.metadata_props[METADATA_KEY] = metadata.to_json()
    program.save(path, external_data=False)  # one self-contained file (weights under 2 GB)


def _write_exported_program(module: ExportedClassifier, example: torch.Tensor, path: str,
                            metadata: Metadata) -> None:
    program = torch.export.export(module, (example,), dynamic_shapes=_dynamic_batch())
    # an open file: given a name, torch.export.save warns unless it ends in .pt2 (the temporary one does not)
    with open(path, "wb") as handle:
        torch.export.save(program, handle, extra_files={METADATA_FILE: metadata.to_json()})


def _write_torchscript(module: ExportedClassifier, example: torch.Tensor, path: str, metadata: Metadata) -> None:
    # the trace is rerun on a clip of another batch size: its graph and output must match
    other_batch = random_clips(example.shape[0] + 1, tuple(example.shape[1:]), seed=1)
    traced = torch.jit.trace(module, example, check_inputs=[(other_batch,)])
    torch.jit.save(traced, path, _extra_files={METADATA_FILE: metadata.to_json()})


WRITERS = {"onnx": _write_onnx, "export": _write_exported_program, "torchscript": _write_torchscript}


def _load_program(path: str, extra_files: Optional[dict] = None) -> torch.export.ExportedProgram:
    """``torch.export.load`` of ``path``, filling ``extra_files``' values (from an open file,
    which it reads without warning whatever the name)."""
    with open(path, "rb") as handle:
        return torch.export.load(handle, extra_files=extra_files)


def load_exported(fmt: str, path: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """A function running the exported file on a clip batch: onnxruntime's CPU
    provider for ONNX, ``torch.export.load(path).module()`` for an ExportedProgram,
    ``torch.jit.load`` for TorchScript."""
    if fmt == "onnx":
        import onnxruntime

        session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
        return lambda clips: torch.from_numpy(session.run(None, {INPUT_NAME: clips.numpy()})[0])
    module = _load_program(path).module() if fmt == "export" else torch.jit.load(path, map_location="cpu")
    return lambda clips: module(clips)


def read_metadata(fmt: str, path: str) -> dict:
    """The ``Metadata`` stored in an exported file, as a dict."""
    if fmt == "onnx":
        import onnx

        props = {p.key: p.value for p in onnx.load(path, load_external_data=False).metadata_props}
        return simplejson.loads(props[METADATA_KEY])
    files = {METADATA_FILE: ""}
    if fmt == "export":
        _load_program(path, files)
    else:
        torch.jit.load(path, map_location="cpu", _extra_files=files)
    return simplejson.loads(files[METADATA_FILE])


# ----------------------------------------------------------------------------- verification
@dataclass
class Check:
    """One comparison of the exported file with PyTorch: its input and the max abs difference."""

    name: str
    batch: int
    max_abs_diff: float

    def passed(self, tolerance: float) -> bool:
        return self.max_abs_diff <= tolerance  # False for NaN

    def describe(self) -> str:
        return f"{self.name} (batch {self.batch}): max abs diff {self.max_abs_diff:.2e}"


def verification_inputs(shape: Shape, video: str, clip: torch.Tensor) -> List[Tuple[str, torch.Tensor]]:
    """(name, clips) of each check: random clips in a batch of 2 and of 1, and ``video``'s ``clip``."""
    return [("random clips", random_clips(2, shape)), ("random clip", random_clips(1, shape, seed=2)),
            (video, clip.unsqueeze(0))]


@torch.no_grad()
def verify_file(fmt: str, path: str, module: nn.Module, inputs: Sequence[Tuple[str, torch.Tensor]]) -> List[Check]:
    """Run the exported file and ``module`` on each input; the max abs difference of each."""
    run = load_exported(fmt, path)
    checks = []
    for name, clips in inputs:
        difference = (run(clips).float() - module(clips).float()).abs().max()
        checks.append(Check(name, clips.shape[0], float(difference)))
    return checks


def export_model(module: ExportedClassifier, fmt: str, out: str, shape: Shape, metadata: Metadata,
                 verify_inputs: Sequence[Tuple[str, torch.Tensor]] = (),
                 tolerance: float = DEFAULT_TOLERANCE) -> List[Check]:
    """Export ``module`` for clips ``shape`` (dynamic batch) to ``out`` in ``fmt``
    and, given ``verify_inputs``, compare the file with ``module`` on them.

    Returns the checks. Raises VerificationError (``out`` untouched) when one
    differs by more than ``tolerance``, MissingExtraError for ONNX without the
    export extra; an exporter's own error leaves ``out`` untouched too.
    """
    if fmt == "onnx":
        require_onnx()
    module.eval()
    with atomic_path(out) as tmp:
        with torch.no_grad():
            WRITERS[fmt](module, random_clips(2, shape), tmp, metadata)
        checks = verify_file(fmt, tmp, module, verify_inputs)
        if not all(check.passed(tolerance) for check in checks):
            raise VerificationError(checks, tolerance)
    return checks


@dataclass
class ExportJob:
    """A loaded model ready to export (``prepare_export``): ``write(out)`` exports and verifies it."""

    module: ExportedClassifier
    fmt: str
    shape: Shape
    metadata: Metadata
    verify_inputs: List[Tuple[str, torch.Tensor]]

    def write(self, out: str, tolerance: float = DEFAULT_TOLERANCE) -> List[Check]:
        """``export_model`` to ``out``; the checks run (none without ``verify``)."""
        return export_model(self.module, self.fmt, out, self.shape, self.metadata, self.verify_inputs, tolerance)


def prepare_export(cfg: CfgNode, checkpoint: Optional[str], fmt: str, frames: Optional[int] = None,
                   size: Optional[int] = None, logits: bool = False, verify: bool = False,
                   video: Optional[str] = None) -> ExportJob:
    """The model of ``cfg`` with ``checkpoint``'s weights, ready to export for clips of
    ``frames`` x ``size`` x ``size`` (``clip_shape``); with ``verify`` the clips to compare
    on, the real one from ``video`` (``verification_video``).

    Args:
        cfg, checkpoint: the model (``inference.load_model``; None: untrained weights).
        fmt: "onnx", "export" (torch.export) or "torchscript".
        frames, size: the clip's T and S (default DATA.NUM_FRAMES, DATA.TEST_CROP_SIZE).
        logits: output the per-window logits instead of the averaged probabilities.
        verify, video: prepare the verification clips; ``video`` defaults to the first
            video of the config's test manifest.
    Returns:
        The ``ExportJob``; ``job.write(out)`` exports (and verifies) the file.
    Raises:
        MissingExtraError (ONNX without the extra), FileNotFoundError / CheckpointError
        (the checkpoint), ValueError (the format, a clip size the model cannot take) or
        InputError (the video), all before any export.
    """
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {list(FORMATS)}, got {fmt!r}")
    if fmt == "onnx":
        require_onnx()
    shape = clip_shape(cfg, frames, size)
    module = ExportedClassifier(load_model(cfg, checkpoint), logits)
    output = output_shape(module, shape)
    inputs: List[Tuple[str, torch.Tensor]] = []
    if verify:
        video = verification_video(cfg, video)
        inputs = verification_inputs(shape, video, real_clip(cfg, video, shape))
    return ExportJob(module, fmt, shape, Metadata.of(cfg, module.output_name, shape, output, class_names(cfg)),
                     inputs)


def file_size(path: str) -> str:
    """``12.4 MB``"""
    return f"{os.path.getsize(path) / 1e6:.1f} MB"
