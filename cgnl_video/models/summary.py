"""Model summary: parameters, fvcore multiply-adds and the output shape of every stage."""

import logging
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Sequence, Tuple

import torch
from torch import nn

from cgnl_video.config.registry import backbone_entry, block_entry
from cgnl_video.models.build import Backbone, build_model, standalone_config
from cgnl_video.utils.quiet_imports import no_jit_script_deprecation

with no_jit_script_deprecation():
    from fvcore.nn import FlopCountAnalysis
    from fvcore.nn.jit_handles import get_shape


@dataclass
class ModelSummary:
    """Counts for one input shape. MACs are fvcore's counts (one per multiply-add),
    taken in eval mode; ``uncounted_ops`` lists the operators fvcore has no
    formula for (elementwise ops, pooling, the CGNL kernel's products and sums)."""

    input_shape: Tuple[int, ...]
    params: int
    inserted_params: int
    macs: float
    macs_by_operator: Dict[str, float]
    macs_by_block: Dict[str, float]
    output_shapes: Dict[str, Tuple[int, ...]]
    uncounted_ops: List[str] = field(default_factory=list)


def input_shape_of(cfg: Any, batch: int = 1) -> Tuple[int, int, int, int, int]:
    """(B, 3, DATA.NUM_FRAMES, DATA.TRAIN_CROP_SIZE, DATA.TRAIN_CROP_SIZE): the training input."""
    side = cfg.DATA.TRAIN_CROP_SIZE
    return (batch, 3, cfg.DATA.NUM_FRAMES, side, side)


def count_parameters(model: nn.Module) -> Tuple[int, int]:
    """(all parameters, parameters of inserted blocks)."""
    total = sum(p.numel() for p in model.parameters())
    inserted = sum(p.numel() for name, p in model.named_parameters() if ".inserted." in name)
    return total, inserted


def attention_macs(inputs: List[Any], outputs: List[Any]) -> float:
    """fvcore handle for scaled_dot_product_attention: q k^T plus (weights) v.

    q: (..., L, E), k: (..., S, E), v: (..., S, Ev) -> L*S*E + L*S*Ev per leading index.
    """
    q, k, v = (get_shape(x) for x in inputs[:3])
    lead = 1
    for d in q[:-2]:
        lead *= d
    return float(lead * q[-2] * k[-2] * (q[-1] + v[-1]))


def summarize(model: Backbone, input_shape: Tuple[int, ...]) -> ModelSummary:
    """Run one eval-mode trace of ``model`` on zeros of ``input_shape`` and collect counts
    (per part of ``model.parts()``)."""
    shapes: Dict[str, Tuple[int, ...]] = {}

    def record(name: str) -> Callable[..., None]:
        def hook(_module: nn.Module, _inputs: Any, output: torch.Tensor) -> None:
            shapes[name] = tuple(int(d) for d in output.shape)  # ints, also while tracing

        return hook

    parts = model.parts()
    hooks = [model.get_submodule(path).register_forward_hook(record(name)) for name, path in parts.items()]
    was_training = model.training
    model.eval()
    try:
        analysis = FlopCountAnalysis(model, torch.zeros(input_shape))
        analysis.set_op_handle("aten::scaled_dot_product_attention", attention_macs)
        analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
        logging.getLogger("fvcore").setLevel(logging.ERROR)
        macs = float(analysis.total())
        by_module = analysis.by_module()
        by_operator = {k: float(v) for k, v in analysis.by_operator().items()}
        uncounted = sorted(analysis.unsupported_ops())
    finally:
        for hook in hooks:
            hook.remove()
        model.train(was_training)
    params, inserted = count_parameters(model)
    return ModelSummary(
        input_shape=tuple(input_shape),
        params=params,
        inserted_params=inserted,
        macs=macs,
        macs_by_operator=by_operator,
        macs_by_block={name: float(by_module[path]) for name, path in parts.items()},
        output_shapes=shapes,
        uncounted_ops=uncounted,
    )


def format_summary(summary: ModelSummary) -> str:
    """Readable multi-line report of a ModelSummary."""
    g = 1e9
    lines = [
        f"input: {'x'.join(map(str, summary.input_shape))} (B x C x T x H x W)",
        f"parameters: {summary.params:,} (inserted blocks: {summary.inserted_params:,})",
        f"multiply-adds (fvcore, eval mode): {summary.macs / g:.2f} G "
        f"(convolutions {summary.macs_by_operator.get('conv', 0.0) / g:.2f} G)",
        "  by operator: " + ", ".join(f"{k} {v / g:.2f} G" for k, v in sorted(summary.macs_by_operator.items())),
        "  not counted: " + (", ".join(summary.uncounted_ops) or "-"),
        f"{'block':<7}{'output shape (C x T x H x W)':<32}{'GMACs':>8}",
    ]
    for name in summary.macs_by_block:
        shape = "x".join(map(str, summary.output_shapes[name][1:]))
        lines.append(f"{name:<7}{shape:<32}{summary.macs_by_block[name] / g:>8.2f}")
    return "\n".join(lines)


def inserted_count(cfg: Any) -> int:
    """How many blocks of NONLOCAL.TYPE the model of ``cfg`` has."""
    return 0 if cfg.NONLOCAL.TYPE == "none" else sum(len(indices) for indices in cfg.NONLOCAL.LOCATION)


def describe(cfg: Any) -> str:
    """A short model name from the registered backbone and block, e.g. "R-101 + 1 CGNL (dot, G=8)"."""
    name = backbone_entry(cfg.MODEL.ARCH).describe(cfg).label
    count = inserted_count(cfg)
    if not count:
        return name
    return f"{name} + {count} {block_entry(cfg.NONLOCAL.TYPE).describe(cfg).text}"


def summarize_config(cfg: Any) -> ModelSummary:
    """Summary of the model of ``cfg`` at its training input size; structure only
    (no ImageNet weights are read, plain BatchNorm)."""
    cfg = standalone_config(cfg)
    return summarize(build_model(cfg), input_shape_of(cfg))


def markdown_table(rows: Sequence[Tuple[str, str, ModelSummary]]) -> str:
    """A markdown table from (config name, description, summary) rows."""
    lines = [
        "| config | model | params | of which inserted | conv GMACs | all GMACs (fvcore) | input |",
        "|---|---|---:|---:|---:|---:|---|",
    ]
    for name, description, s in rows:
        conv = s.macs_by_operator.get("conv", 0.0) / 1e9
        clip = "x".join(map(str, s.input_shape[2:]))
        lines.append(
            f"| {name} | {description} | {s.params:,} | {s.inserted_params:,} | {conv:.2f} | {s.macs / 1e9:.2f} "
            f"| {clip} |"
        )
    return "\n".join(lines)
