"""Pooled features of a trained model: the pre-classifier features of the
multi-view test views of a video, or of sliding windows over it.

The features are the classifier head's input (res5) averaged over (T, H, W), as
``C2DHead`` pools before its fc in training; with ``layer`` a named module's output
(e.g. ``blocks.4`` for res4), averaged the same way. A forward hook captures the
tensor during the model's eval forward pass and stops the pass there.
``video_features``: the mean over the config's test views (``MultiView``).
``window_features``: one row per window of DATA.NUM_FRAMES x DATA.SAMPLING_RATE
frames every ``stride`` frames from frame 0, read as the validation clip
(``CentreClip``), frame range ``[start, end)``; a video shorter than one window
gives one row, looped as in training. Windows are decoded and forwarded ``chunk`` at
a time, so a long video is never held in memory whole. Details: docs/TOOLS.md,
"Features for other models".
"""

import contextlib
from typing import Callable, ContextManager, List, Optional, Tuple

import torch
from fvcore.common.config import CfgNode
from torch import nn

from cgnl_video.data.decode import FrameReader
from cgnl_video.data.policies import CentreClip
from cgnl_video.data.windows import FrameRange, chunked_window_clips, window_range, window_starts
from cgnl_video.engine.multiview import forward_views
from cgnl_video.engine.precision import native_bf16

#: name of the default feature layer in messages and outputs
HEAD_INPUT = "head input"
#: --precision choices: "auto" is bf16 autocast on a GPU with native bf16, fp32 elsewhere
PRECISIONS = ("auto", "fp32", "bf16")


class _Captured(Exception):
    """Raised by the hook to end the forward pass once the features are taken."""


class PooledFeatures:
    """``features(clips)``: (N, C) float32, the pooled output of one layer of ``model``.

    ``layer`` None: the input of ``model.head`` (the classifier), i.e. the last
    stage's feature map. Otherwise a module name of ``model.named_modules()``;
    its output must be a ``N x C x T x H x W`` tensor. Use as a context manager
    (or call ``close``) to remove the hook.
    """

    def __init__(self, model: nn.Module, layer: Optional[str] = None) -> None:
        self.model, self.layer = model, layer or HEAD_INPUT
        self._taken: Optional[torch.Tensor] = None
        if layer is None:
            head = getattr(model, "head", None)
            if not isinstance(head, nn.Module):
                raise ValueError(f"{type(model).__name__} has no classifier module `head`: pass a layer name")
            self._handle = head.register_forward_pre_hook(lambda _m, args: self._take(args[0]))
        else:
            modules = dict(model.named_modules())
            if layer not in modules or not layer:
                stages = [n for n in modules if n.count(".") == 1][:12]
                raise ValueError(f"layer {layer!r} is not a module of the model; names look like {stages}")
            self._handle = modules[layer].register_forward_hook(lambda _m, _args, out: self._take(out))

    def _take(self, tensor: torch.Tensor) -> None:
        if not isinstance(tensor, torch.Tensor) or tensor.ndim != 5:
            shape = tuple(tensor.shape) if isinstance(tensor, torch.Tensor) else type(tensor).__name__
            raise ValueError(f"layer {self.layer!r}: expected an N x C x T x H x W output, got {shape}")
        self._taken = tensor.float().mean(dim=(2, 3, 4))
        raise _Captured

    @torch.no_grad()
    def __call__(self, clips: torch.Tensor) -> torch.Tensor:
        self._taken = None
        try:
            self.model(clips)
        except _Captured:
            pass
        if self._taken is None:
            raise RuntimeError(f"the forward pass never reached layer {self.layer!r}")
        return self._taken

    def close(self) -> None:
        self._handle.remove()

    def __enter__(self) -> "PooledFeatures":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def resolve_precision(precision: str, device: torch.device) -> str:
    """"fp32" or "bf16": ``precision`` with "auto" resolved: bf16 on a GPU with native
    bf16 (the check training uses, ``engine.precision.native_bf16``), else fp32 (a GPU
    that only emulates bf16 runs its bf16 3D convolutions on slow kernels)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {list(PRECISIONS)}, got {precision!r}")
    if precision == "auto":
        return "bf16" if device.type == "cuda" and native_bf16(device) else "fp32"
    return precision


def precision_context(precision: str, device: torch.device) -> ContextManager:
    """bf16 autocast on ``device`` (GPU or CPU) for "bf16"; nothing for "fp32"."""
    if resolve_precision(precision, device) == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def video_features(features: Callable[[torch.Tensor], torch.Tensor], views: torch.Tensor, cfg: CfgNode,
                   device: torch.device, precision: str) -> torch.Tensor:
    """The mean over a video's test views (V x C x T x S x S, uint8) of their features: (D,)."""
    rows = forward_views(features, views, cfg.TEST.VIEWS_PER_FORWARD, device, cfg,
                         lambda: precision_context(precision, device))
    return rows.double().mean(dim=0).float()


def window_features(features: Callable[[torch.Tensor], torch.Tensor], reader: FrameReader, cfg: CfgNode,
                    stride: int, device: torch.device, precision: str) -> Tuple[torch.Tensor, List[FrameRange]]:
    """One feature row per sliding window of the video ``reader`` reads: (W, D) and the
    windows' frame ranges. TEST.VIEWS_PER_FORWARD windows are decoded and forwarded at a time."""
    policy = CentreClip.from_config(cfg)
    starts = window_starts(reader.num_frames, policy.window, stride)
    chunk = cfg.TEST.VIEWS_PER_FORWARD
    rows = [forward_views(features, clips, chunk, device, cfg, lambda: precision_context(precision, device))
            for clips in chunked_window_clips(reader, policy, starts, chunk)]
    return torch.cat(rows), [window_range(s, policy.window, reader.num_frames) for s in starts]
