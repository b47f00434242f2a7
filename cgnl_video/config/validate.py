"""One function that checks a config for consistency before any work starts.

Every failure is a ConfigError whose message starts with the offending key. The
registered backbone (MODEL.ARCH) and blocks check their own keys (see
``config/registry.py``); everything a model constructor would reject is
rejected here first.
"""

from typing import Sequence

from fvcore.common.config import CfgNode

from cgnl_video.config.choices import (
    AMP_DTYPES,
    DECODE_ON,
    DECODING_BACKENDS,
    DIST_BACKENDS,
    JPEG_DECODERS,
    LR_POLICIES,
    TEST_SPATIAL_CROPS,
)
from cgnl_video.config.registry import Stage, backbone_entries, backbone_entry, block_entries
from cgnl_video.config.rules import one_of, positive, require


def _range(value: Sequence[float], key: str, low: float = 0.0) -> None:
    require(
        len(value) == 2 and low < value[0] <= value[1],
        key,
        f"must be [min, max] with {low} < min <= max, got {list(value)}",
    )


def _validate_model(cfg: CfgNode) -> None:
    one_of(cfg.MODEL.ARCH, [entry.name for entry in backbone_entries()], "MODEL.ARCH")
    require(0.0 <= cfg.MODEL.DROPOUT_RATE < 1.0, "MODEL.DROPOUT_RATE", "must be in [0, 1)")
    positive(cfg, "MODEL.NUM_CLASSES")
    backbone = backbone_entry(cfg.MODEL.ARCH)
    backbone.validate(cfg)
    _validate_inserted_blocks(cfg, backbone.stages(cfg), backbone.describe(cfg).label)


def _validate_inserted_blocks(cfg: CfgNode, stages: Sequence[Stage], backbone: str) -> None:
    """NONLOCAL.* against the stages of the ``backbone`` (its name in messages), then
    every registered block's own check, with the channels of the stages it goes
    into (none unless it is NONLOCAL.TYPE)."""
    nl = cfg.NONLOCAL
    blocks = block_entries()
    one_of(nl.TYPE, ["none"] + [entry.name for entry in blocks], "NONLOCAL.TYPE")
    names = ", ".join(stage.name for stage in stages)
    require(len(nl.LOCATION) == len(stages), "NONLOCAL.LOCATION", f"needs one list per stage {names}")
    require(0.0 < nl.DIM_INNER_RATIO <= 1.0, "NONLOCAL.DIM_INNER_RATIO", "must be in (0, 1]")
    for i, (indices, stage) in enumerate(zip(nl.LOCATION, stages)):
        key = f"NONLOCAL.LOCATION[{i}]"
        for index in indices:
            require(
                isinstance(index, int) and 0 <= index < stage.depth,
                key,
                f"{stage.name} of {backbone} has blocks 0..{stage.depth - 1}, got {index}",
            )
        require(len(set(indices)) == len(indices), key, f"repeated index in {list(indices)}")
    channels = tuple(stage.channels for indices, stage in zip(nl.LOCATION, stages) if indices)
    for entry in blocks:
        entry.validate(cfg, channels if entry.name == nl.TYPE else ())


def _validate_data(cfg: CfgNode) -> None:
    d = cfg.DATA
    positive(cfg, "DATA.NUM_FRAMES", "DATA.SAMPLING_RATE", "DATA.TRAIN_CROP_SIZE",
             "DATA.TEST_CROP_SIZE", "DATA.VAL_SHORT_SIDE", "DATA.VAL_CROP_SIZE",
             "DATA.MAX_CONSECUTIVE_FAILURES")
    for key in ("TRAIN_CROP_SIZE", "VAL_CROP_SIZE", "TEST_CROP_SIZE"):
        require(d[key] >= 32, f"DATA.{key}", f"must be at least 32 (the network stride), got {d[key]}")
    require(d.VAL_CROP_SIZE <= d.VAL_SHORT_SIDE, "DATA.VAL_CROP_SIZE",
            f"{d.VAL_CROP_SIZE} is larger than DATA.VAL_SHORT_SIDE {d.VAL_SHORT_SIDE}")
    _range(d.TRAIN_JITTER_SCALES_RELATIVE, "DATA.TRAIN_JITTER_SCALES_RELATIVE")
    _range(d.TRAIN_JITTER_ASPECT_RELATIVE, "DATA.TRAIN_JITTER_ASPECT_RELATIVE")
    require(len(d.MEAN) == 3, "DATA.MEAN", "needs 3 values (RGB)")
    require(len(d.STD) == 3 and all(s > 0 for s in d.STD), "DATA.STD", "needs 3 positive values (RGB)")
    one_of(d.DECODING_BACKEND, DECODING_BACKENDS, "DATA.DECODING_BACKEND")
    one_of(d.JPEG_DECODER, JPEG_DECODERS, "DATA.JPEG_DECODER")
    one_of(d.DECODE_ON, DECODE_ON, "DATA.DECODE_ON")
    require(cfg.DATA_LOADER.NUM_WORKERS >= 0, "DATA_LOADER.NUM_WORKERS", "must be >= 0")


def _validate_solver(cfg: CfgNode) -> None:
    s = cfg.SOLVER
    one_of(s.LR_POLICY, LR_POLICIES, "SOLVER.LR_POLICY")
    positive(cfg, "SOLVER.BASE_LR", "SOLVER.MAX_EPOCH")
    require(s.WARMUP_EPOCHS >= 0, "SOLVER.WARMUP_EPOCHS", "must be >= 0")
    require(s.WEIGHT_DECAY >= 0, "SOLVER.WEIGHT_DECAY", "must be >= 0")
    require(0 <= s.MOMENTUM < 1, "SOLVER.MOMENTUM", "must be in [0, 1)")
    if s.LR_POLICY == "steps_with_relative_lrs":
        require(len(s.STEPS) == len(s.LRS) and len(s.STEPS) > 0, "SOLVER.STEPS",
                f"needs one entry per SOLVER.LRS value ({len(s.STEPS)} vs {len(s.LRS)})")
        require(s.STEPS[0] == 0, "SOLVER.STEPS", "must start at epoch 0")
        require(list(s.STEPS) == sorted(set(s.STEPS)), "SOLVER.STEPS", "must be strictly increasing")


def _validate_run(cfg: CfgNode) -> None:
    t, e = cfg.TRAIN, cfg.TEST
    positive(cfg, "TRAIN.BATCH_SIZE", "TEST.BATCH_SIZE", "TEST.NUM_ENSEMBLE_VIEWS",
             "TEST.VIEWS_PER_FORWARD", "TRAIN.CHECKPOINT_PERIOD", "TRAIN.CHECKPOINT_KEEP")
    require(t.EVAL_PERIOD >= 0, "TRAIN.EVAL_PERIOD", "must be >= 0")
    require(t.CHECKPOINT_ITERS >= 0, "TRAIN.CHECKPOINT_ITERS",
            f"must be >= 0 (0 = no mid-epoch checkpoints), got {t.CHECKPOINT_ITERS}")
    one_of(t.AMP_DTYPE, AMP_DTYPES, "TRAIN.AMP_DTYPE")
    require(bool(t.CHECKPOINT_FILE_PATH or not t.CHECKPOINT_CLASSES), "TRAIN.CHECKPOINT_CLASSES",
            "names the classes of TRAIN.CHECKPOINT_FILE_PATH's classifier: set that too, or leave it \"\"")
    one_of(e.NUM_SPATIAL_CROPS, TEST_SPATIAL_CROPS, "TEST.NUM_SPATIAL_CROPS")
    require(not (e.FULL_FRAME and e.NUM_SPATIAL_CROPS != 1), "TEST.FULL_FRAME",
            "a full-frame test keeps the whole frame: set TEST.NUM_SPATIAL_CROPS 1")
    one_of(cfg.DIST.BACKEND, DIST_BACKENDS, "DIST.BACKEND")
    positive(cfg, "LOG_PERIOD")
    require(cfg.NUM_THREADS >= 0, "NUM_THREADS", f"must be >= 0 (0 = torch's default), got {cfg.NUM_THREADS}")


def validate(cfg: CfgNode) -> CfgNode:
    """Raise ConfigError naming the key of the first inconsistency; return ``cfg``."""
    _validate_model(cfg)
    _validate_data(cfg)
    _validate_solver(cfg)
    _validate_run(cfg)
    return cfg
