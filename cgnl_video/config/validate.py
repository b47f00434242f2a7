"""One function that checks a config for consistency before any work starts.

Every failure is a ConfigError whose message starts with the offending key.
"""

from typing import Any, Iterable, Sequence

from fvcore.common.config import CfgNode

from cgnl_video.config.load import ConfigError
from cgnl_video.models.spec import STAGE_DEPTHS, STAGE_NAMES, stage_out_channels

BLOCK_TYPES = ("none", "nl", "cgnl", "residual")
CGNL_KERNELS = ("dot", "embedded_gaussian", "rbf")
CGNL_NORMS = ("bn", "gn")
NL_INSTANTIATIONS = ("softmax", "dot_product")
LR_POLICIES = ("steps_with_relative_lrs", "cosine")


def _require(ok: bool, key: str, message: str) -> None:
    if not ok:
        raise ConfigError(f"{key}: {message}")


def _one_of(value: Any, choices: Iterable[Any], key: str) -> None:
    choices = tuple(choices)
    _require(value in choices, key, f"must be one of {list(choices)}, got {value!r}")


def _triple(value: Sequence[int], key: str) -> None:
    _require(
        len(value) == 3 and all(isinstance(v, int) and v >= 1 for v in value),
        key,
        f"must be 3 positive integers (T, H, W), got {list(value)}",
    )


def _range(value: Sequence[float], key: str, low: float = 0.0) -> None:
    _require(
        len(value) == 2 and low < value[0] <= value[1],
        key,
        f"must be [min, max] with {low} < min <= max, got {list(value)}",
    )


def _positive(cfg: CfgNode, *keys: str) -> None:
    for key in keys:
        value = cfg
        for part in key.split("."):
            value = value[part]
        _require(value > 0, key, f"must be positive, got {value!r}")


def _temporal_size_at_res3(cfg: CfgNode) -> float:
    r = cfg.RESNET
    t = cfg.DATA.NUM_FRAMES / r.STEM_CONV_STRIDE[0] / r.STEM_POOL_STRIDE[0]
    return t / r.POOL2_STRIDE[0]


def _validate_model(cfg: CfgNode) -> None:
    r = cfg.RESNET
    _one_of(cfg.MODEL.ARCH, ("c2d",), "MODEL.ARCH")
    _one_of(r.DEPTH, sorted(STAGE_DEPTHS), "RESNET.DEPTH")
    _one_of(r.NORM, ("batchnorm", "sync_batchnorm"), "RESNET.NORM")
    _require(0.0 <= cfg.MODEL.DROPOUT_RATE < 1.0, "MODEL.DROPOUT_RATE", "must be in [0, 1)")
    _positive(cfg, "MODEL.NUM_CLASSES")
    _require(r.WIDTH_PER_GROUP >= 4 and r.WIDTH_PER_GROUP % 4 == 0,
             "RESNET.WIDTH_PER_GROUP", f"must be a positive multiple of 4, got {r.WIDTH_PER_GROUP}")
    for key in ("STEM_CONV_KERNEL", "STEM_CONV_STRIDE", "STEM_POOL_KERNEL", "STEM_POOL_STRIDE",
                "POOL2_KERNEL", "POOL2_STRIDE"):
        _triple(r[key], f"RESNET.{key}")
    for key in ("CONV_A_KERNEL", "CONV_B_KERNEL"):
        _require(len(r[key]) == 4, f"RESNET.{key}", "needs one (T, H, W) kernel per stage res2..res5")
        for i, kernel in enumerate(r[key]):
            _triple(kernel, f"RESNET.{key}[{i}]")
    for key in ("SPATIAL_STRIDES", "TEMPORAL_STRIDES"):
        _require(
            len(r[key]) == 4 and all(isinstance(s, int) and s >= 1 for s in r[key]),
            f"RESNET.{key}",
            f"needs 4 positive integers (res2..res5), got {list(r[key])}",
        )
    _validate_inserted_blocks(cfg)


def _validate_inserted_blocks(cfg: CfgNode) -> None:
    nl = cfg.NONLOCAL
    _one_of(nl.TYPE, BLOCK_TYPES, "NONLOCAL.TYPE")
    _require(len(nl.LOCATION) == 4, "NONLOCAL.LOCATION", "needs one list per stage res2..res5")
    _require(0.0 < nl.DIM_INNER_RATIO <= 1.0, "NONLOCAL.DIM_INNER_RATIO", "must be in (0, 1]")
    depths = STAGE_DEPTHS[cfg.RESNET.DEPTH]
    for stage, (indices, depth) in enumerate(zip(nl.LOCATION, depths)):
        key = f"NONLOCAL.LOCATION[{stage}]"
        for index in indices:
            _require(
                isinstance(index, int) and 0 <= index < depth,
                key,
                f"{STAGE_NAMES[stage]} of ResNet-{cfg.RESNET.DEPTH} has blocks 0..{depth - 1}, got {index}",
            )
        _require(len(set(indices)) == len(indices), key, f"repeated index in {list(indices)}")
    _one_of(cfg.NL.INSTANTIATION, NL_INSTANTIATIONS, "NL.INSTANTIATION")
    _triple(cfg.NL.POOL, "NL.POOL")
    c = cfg.CGNL
    _one_of(c.KERNEL, CGNL_KERNELS, "CGNL.KERNEL")
    _one_of(c.NORM, CGNL_NORMS, "CGNL.NORM")
    _require(c.ORDER >= 1, "CGNL.ORDER", f"Taylor order must be >= 1, got {c.ORDER}")
    _require(c.GAMMA > 0, "CGNL.GAMMA", f"must be positive, got {c.GAMMA}")
    _require(c.GROUPS >= 1, "CGNL.GROUPS", f"must be >= 1, got {c.GROUPS}")
    if nl.TYPE != "cgnl":
        return
    widths = stage_out_channels(cfg.RESNET.WIDTH_PER_GROUP)
    for stage, indices in enumerate(nl.LOCATION):
        if not indices:
            continue
        channels = widths[stage]
        inner = int(channels * nl.DIM_INNER_RATIO)
        _require(
            inner % c.GROUPS == 0,
            "CGNL.GROUPS",
            f"{c.GROUPS} groups do not divide the {inner} inner channels of {STAGE_NAMES[stage]}",
        )


def _validate_data(cfg: CfgNode) -> None:
    d = cfg.DATA
    _positive(cfg, "DATA.NUM_FRAMES", "DATA.SAMPLING_RATE", "DATA.TRAIN_CROP_SIZE",
              "DATA.TEST_CROP_SIZE", "DATA.VAL_SHORT_SIDE", "DATA.VAL_CROP_SIZE",
              "DATA.MAX_CONSECUTIVE_FAILURES")
    t3 = _temporal_size_at_res3(cfg)
    _require(
        t3 >= 1 and t3 == int(t3),
        "DATA.NUM_FRAMES",
        f"{d.NUM_FRAMES} frames leave {t3:g} at res3 after the temporal strides of "
        "RESNET.STEM_CONV_STRIDE, STEM_POOL_STRIDE and POOL2_STRIDE; use a multiple of "
        f"{int(round(d.NUM_FRAMES / t3)) if t3 else 8}",
    )
    for key in ("TRAIN_CROP_SIZE", "VAL_CROP_SIZE", "TEST_CROP_SIZE"):
        _require(d[key] >= 32, f"DATA.{key}", f"must be at least 32 (the network stride), got {d[key]}")
    _require(d.VAL_CROP_SIZE <= d.VAL_SHORT_SIDE, "DATA.VAL_CROP_SIZE",
             f"{d.VAL_CROP_SIZE} is larger than DATA.VAL_SHORT_SIDE {d.VAL_SHORT_SIDE}")
    _range(d.TRAIN_JITTER_SCALES_RELATIVE, "DATA.TRAIN_JITTER_SCALES_RELATIVE")
    _range(d.TRAIN_JITTER_ASPECT_RELATIVE, "DATA.TRAIN_JITTER_ASPECT_RELATIVE")
    _require(len(d.MEAN) == 3, "DATA.MEAN", "needs 3 values (RGB)")
    _require(len(d.STD) == 3 and all(s > 0 for s in d.STD), "DATA.STD", "needs 3 positive values (RGB)")
    _one_of(d.DECODING_BACKEND, ("decord", "pyav"), "DATA.DECODING_BACKEND")
    _one_of(d.JPEG_DECODER, ("auto", "torchvision", "pil"), "DATA.JPEG_DECODER")
    _require(cfg.DATA_LOADER.NUM_WORKERS >= 0, "DATA_LOADER.NUM_WORKERS", "must be >= 0")


def _validate_solver(cfg: CfgNode) -> None:
    s = cfg.SOLVER
    _one_of(s.LR_POLICY, LR_POLICIES, "SOLVER.LR_POLICY")
    _positive(cfg, "SOLVER.BASE_LR", "SOLVER.MAX_EPOCH")
    _require(s.WARMUP_EPOCHS >= 0, "SOLVER.WARMUP_EPOCHS", "must be >= 0")
    _require(s.WEIGHT_DECAY >= 0, "SOLVER.WEIGHT_DECAY", "must be >= 0")
    _require(0 <= s.MOMENTUM < 1, "SOLVER.MOMENTUM", "must be in [0, 1)")
    if s.LR_POLICY == "steps_with_relative_lrs":
        _require(len(s.STEPS) == len(s.LRS) and len(s.STEPS) > 0, "SOLVER.STEPS",
                 f"needs one entry per SOLVER.LRS value ({len(s.STEPS)} vs {len(s.LRS)})")
        _require(s.STEPS[0] == 0, "SOLVER.STEPS", "must start at epoch 0")
        _require(list(s.STEPS) == sorted(set(s.STEPS)), "SOLVER.STEPS", "must be strictly increasing")


def _validate_run(cfg: CfgNode) -> None:
    t, e = cfg.TRAIN, cfg.TEST
    _positive(cfg, "TRAIN.BATCH_SIZE", "TEST.BATCH_SIZE", "TEST.NUM_ENSEMBLE_VIEWS",
              "TEST.VIEWS_PER_FORWARD", "TRAIN.CHECKPOINT_PERIOD", "TRAIN.CHECKPOINT_KEEP")
    _require(t.EVAL_PERIOD >= 0, "TRAIN.EVAL_PERIOD", "must be >= 0")
    _one_of(t.AMP_DTYPE, ("bf16", "fp16"), "TRAIN.AMP_DTYPE")
    _one_of(e.NUM_SPATIAL_CROPS, (1, 3), "TEST.NUM_SPATIAL_CROPS")
    _require(not (e.FULL_FRAME and e.NUM_SPATIAL_CROPS != 1), "TEST.FULL_FRAME",
             "a full-frame test keeps the whole frame: set TEST.NUM_SPATIAL_CROPS 1")
    _one_of(cfg.DIST.BACKEND, ("auto", "nccl", "gloo"), "DIST.BACKEND")
    _positive(cfg, "LOG_PERIOD")
    _require(cfg.NUM_THREADS >= 0, "NUM_THREADS", f"must be >= 0 (0 = torch's default), got {cfg.NUM_THREADS}")


def validate(cfg: CfgNode) -> CfgNode:
    """Raise ConfigError naming the key of the first inconsistency; return ``cfg``."""
    _validate_model(cfg)
    _validate_data(cfg)
    _validate_solver(cfg)
    _validate_run(cfg)
    return cfg
