"""Every consistency rule of the config rejects its bad value with an error naming the
key, and accepts the nearest good value (so the rejection is that rule's, not another's)."""

import pytest

from cgnl_video.config import ConfigError, load_config

# (bad overrides, key the error must name, good overrides differing only in that value)
RULES = {
    "repeated block index": (
        ["NONLOCAL.TYPE", "cgnl", "NONLOCAL.LOCATION", "[[], [1, 3, 1], [], []]"],
        r"NONLOCAL\.LOCATION\[1\]",
        ["NONLOCAL.TYPE", "cgnl", "NONLOCAL.LOCATION", "[[], [1, 3], [], []]"],
    ),
    "repeated block index, no block type": (
        ["NONLOCAL.LOCATION", "[[], [], [2, 2], []]"],
        r"NONLOCAL\.LOCATION\[2\]",
        ["NONLOCAL.LOCATION", "[[], [], [2], []]"],
    ),
    "block index past the stage": (
        ["NONLOCAL.LOCATION", "[[3], [], [], []]"],  # res2 of R-50 has blocks 0..2
        r"NONLOCAL\.LOCATION\[0\]",
        ["NONLOCAL.LOCATION", "[[2], [], [], []]"],
    ),
    "full frame with three crops": (
        ["TEST.FULL_FRAME", "True", "TEST.NUM_SPATIAL_CROPS", "3"],
        r"TEST\.FULL_FRAME",
        ["TEST.FULL_FRAME", "True", "TEST.NUM_SPATIAL_CROPS", "1"],
    ),
    "steps decreasing": (
        ["SOLVER.STEPS", "[0, 70, 40]", "SOLVER.LRS", "[1.0, 0.1, 0.01]"],
        r"SOLVER\.STEPS.*increasing",
        ["SOLVER.STEPS", "[0, 40, 70]", "SOLVER.LRS", "[1.0, 0.1, 0.01]"],
    ),
    "steps repeated": (
        ["SOLVER.STEPS", "[0, 40, 40]", "SOLVER.LRS", "[1.0, 0.1, 0.01]"],
        r"SOLVER\.STEPS.*increasing",
        ["SOLVER.STEPS", "[0, 40, 41]", "SOLVER.LRS", "[1.0, 0.1, 0.01]"],
    ),
    "steps not starting at 0": (
        ["SOLVER.STEPS", "[5, 40, 70]", "SOLVER.LRS", "[1.0, 0.1, 0.01]"],
        r"SOLVER\.STEPS.*epoch 0",
        ["SOLVER.STEPS", "[0, 40, 70]", "SOLVER.LRS", "[1.0, 0.1, 0.01]"],
    ),
    "steps and lrs of different length": (
        ["SOLVER.STEPS", "[0, 40]", "SOLVER.LRS", "[1.0, 0.1, 0.01]"],
        r"SOLVER\.STEPS.*SOLVER\.LRS",
        ["SOLVER.STEPS", "[0, 40]", "SOLVER.LRS", "[1.0, 0.1]"],
    ),
    "inner ratio zero": (
        ["NONLOCAL.DIM_INNER_RATIO", "0.0"],
        r"NONLOCAL\.DIM_INNER_RATIO",
        ["NONLOCAL.DIM_INNER_RATIO", "0.125"],
    ),
    "inner ratio above one": (
        ["NONLOCAL.DIM_INNER_RATIO", "1.5"],
        r"NONLOCAL\.DIM_INNER_RATIO",
        ["NONLOCAL.DIM_INNER_RATIO", "1.0"],
    ),
    "std zero": (
        ["DATA.STD", "[0.229, 0.0, 0.225]"],
        r"DATA\.STD",
        ["DATA.STD", "[0.229, 0.001, 0.225]"],
    ),
    "std negative": (
        ["DATA.STD", "[0.229, 0.224, -0.225]"],
        r"DATA\.STD",
        ["DATA.STD", "[0.229, 0.224, 0.225]"],
    ),
    "std of two channels": (
        ["DATA.STD", "[0.229, 0.224]"],
        r"DATA\.STD",
        ["DATA.STD", "[0.229, 0.224, 0.5]"],
    ),
    "cgnl groups not dividing the inner channels": (
        ["NONLOCAL.TYPE", "cgnl", "NONLOCAL.LOCATION", "[[], [], [1], []]", "CGNL.GROUPS", "3"],
        r"CGNL\.GROUPS",
        ["NONLOCAL.TYPE", "cgnl", "NONLOCAL.LOCATION", "[[], [], [1], []]", "CGNL.GROUPS", "4"],
    ),
    "taylor order zero": (
        ["CGNL.ORDER", "0"],
        r"CGNL\.ORDER",
        ["CGNL.ORDER", "1"],
    ),
    "frames that do not survive the temporal strides": (
        ["DATA.NUM_FRAMES", "12"],  # 12 / 2 / 2 / 2 = 1.5 frames at res3
        r"DATA\.NUM_FRAMES",
        ["DATA.NUM_FRAMES", "16"],
    ),
    "cgnl groups dividing the stage but not the inner channels": (
        ["NONLOCAL.TYPE", "cgnl", "NONLOCAL.LOCATION", "[[], [], [1], []]", "NONLOCAL.DIM_INNER_RATIO", "0.375",
         "CGNL.GROUPS", "256"],  # 1024 channels, 384 inner
        r"CGNL\.GROUPS",
        ["NONLOCAL.TYPE", "cgnl", "NONLOCAL.LOCATION", "[[], [], [1], []]", "NONLOCAL.DIM_INNER_RATIO", "0.375",
         "CGNL.GROUPS", "128"],
    ),
    "jitter scales starting at 0": (
        ["DATA.TRAIN_JITTER_SCALES_RELATIVE", "[0.0, 1.0]"],
        r"DATA\.TRAIN_JITTER_SCALES_RELATIVE",
        ["DATA.TRAIN_JITTER_SCALES_RELATIVE", "[0.01, 1.0]"],
    ),
    "dropout rate 1": (
        ["MODEL.DROPOUT_RATE", "1.0"],
        r"MODEL\.DROPOUT_RATE",
        ["MODEL.DROPOUT_RATE", "0.99"],
    ),
    "val crop larger than the resized frame": (
        ["DATA.VAL_SHORT_SIDE", "200", "DATA.VAL_CROP_SIZE", "224"],
        r"DATA\.VAL_CROP_SIZE",
        ["DATA.VAL_SHORT_SIDE", "224", "DATA.VAL_CROP_SIZE", "224"],
    ),
}


@pytest.mark.parametrize("rule", sorted(RULES))
def test_each_rule_rejects_naming_the_key_and_accepts_the_good_value(rule):
    bad, key, good = RULES[rule]
    with pytest.raises(ConfigError, match=key):
        load_config(None, bad)
    load_config(None, good)
