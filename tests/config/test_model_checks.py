"""validate() rejects, naming the key, every config value that a model constructor
(or its first forward) would reject: one case per check in cgnl_video/models/*.py,
each shown to be rejected by the model when validation is skipped."""

import ast
import glob
import os
import re
from collections import Counter

import pytest
import torch

from cgnl_video.config import ConfigError, load_config, validate
from cgnl_video.models import build_model
from tools_fixtures import ROOT

NARROW = ["RESNET.WIDTH_PER_GROUP", "8"]  # res4: 128 channels, 64 inner
AT_RES4 = ["NONLOCAL.LOCATION", "[[], [], [4], []]"]
CGNL = ["NONLOCAL.TYPE", "cgnl", *AT_RES4]
RESIDUAL = ["NONLOCAL.TYPE", "residual", *AT_RES4]
NL = ["NONLOCAL.TYPE", "nl", *AT_RES4]

#: id -> (overrides, key named by validate, what the model raises without validation)
CASES = {
    "arch": (["MODEL.ARCH", "x3d"], "MODEL.ARCH", ValueError),
    "type": (["NONLOCAL.TYPE", "attention", *AT_RES4], "NONLOCAL.TYPE", ValueError),
    "depth": (["RESNET.DEPTH", "34"], "RESNET.DEPTH", ValueError),
    "location-lists": (["NONLOCAL.TYPE", "cgnl", "NONLOCAL.LOCATION", "[[], [], [4]]"], "NONLOCAL.LOCATION",
                       ValueError),
    "location-index": (["NONLOCAL.TYPE", "cgnl", "NONLOCAL.LOCATION", "[[], [], [6], []]"],
                       "NONLOCAL.LOCATION[2]", IndexError),
    "kernel": ([*CGNL, "CGNL.KERNEL", "cosine"], "CGNL.KERNEL", ValueError),
    "order-low": ([*CGNL, "CGNL.KERNEL", "embedded_gaussian", "CGNL.ORDER", "0"], "CGNL.ORDER", ValueError),
    "order-high": ([*CGNL, "CGNL.KERNEL", "embedded_gaussian", "CGNL.ORDER", "171"], "CGNL.ORDER", OverflowError),
    "rbf-overflow": ([*CGNL, "CGNL.KERNEL", "rbf", "CGNL.GAMMA", "300.0", "CGNL.ORDER", "120"], "CGNL.GAMMA",
                     OverflowError),
    "rbf-vanishes": ([*CGNL, "CGNL.KERNEL", "rbf", "CGNL.GAMMA", "1000.0"], "CGNL.GAMMA", ValueError),
    "norm-cgnl": ([*CGNL, "CGNL.NORM", "ln"], "CGNL.NORM", ValueError),
    "norm-residual": ([*RESIDUAL, "CGNL.NORM", "ln"], "CGNL.NORM", ValueError),
    "groups-cgnl": ([*CGNL, "CGNL.GROUPS", "3"], "CGNL.GROUPS", ValueError),
    "groups-residual": ([*RESIDUAL, "CGNL.GROUPS", "3"], "CGNL.GROUPS", ValueError),
    # 0.75 x 128 = 96 inner channels: 3 groups divide them, not the 128 channels of res4.
    "groups-channels": ([*CGNL, "NONLOCAL.DIM_INNER_RATIO", "0.75", "CGNL.GROUPS", "3"], "CGNL.GROUPS", ValueError),
    "groups-zero": ([*RESIDUAL, "CGNL.GROUPS", "0"], "CGNL.GROUPS", ValueError),
    "nl-instantiation": ([*NL, "NL.INSTANTIATION", "gaussian"], "NL.INSTANTIATION", ValueError),
    # 4 -> conv1 2 -> unpadded pool1 (3x3, stride 2): nothing left
    "train-crop": (["DATA.TRAIN_CROP_SIZE", "4", "RESNET.STEM_POOL_PADDING", "[0, 0, 0]"], "DATA.TRAIN_CROP_SIZE",
                   ValueError),
    "nl-pool": ([*NL, "NL.POOL", "[1, 2]"], "NL.POOL", RuntimeError),
}

#: every raise statement in cgnl_video/models/*.py, by (file, function), and the cases
#: above that show validate() rejects the value first (or why no config rule can)
RAISES = {
    ("build.py", "insert_blocks"): ["location-lists"],
    ("c2d.py", "C2DStage.insert_after"): ["location-index"],
    ("c2d.py", "create_c2d"): ["depth"],
    ("c2d.py", "feature_size"): ["train-crop"],
    ("cgnl.py", "taylor_coefficients"): ["order-low", "kernel"],
    ("cgnl.py", "_scaled"): ["rbf-vanishes"],
    ("cgnl.py", "make_zero_norm"): ["norm-cgnl", "norm-residual"],
    ("cgnl.py", "check_groups"): ["groups-cgnl", "groups-residual", "groups-channels", "groups-zero"],
    ("nonlocal_block.py", "NonLocalBlock.__init__"): ["nl-instantiation"],
    ("cgnl.py", "Layers.check_input"): "the shape of an input tensor, not a config value "
                                       "(tests/models/test_blocks_2d.py)",
    ("blocks_2d.py", "NonLocalBlock2d.__init__"): "an argument of a 2D block built by user code, not from a config "
                                                  "(tests/models/test_blocks_2d.py)",
    ("weights.py", "load_imagenet_weights"): "the content of a weight file, not a config value",
    ("weights.py", "load_pytorchvideo_state_dict"): "the content of a state dict, not a config value",
    ("weights.py", "torchvision_weights"): "an unknown RESNET.IMAGENET_WEIGHTS name, which validate() rejects "
                                           "(tests/models/test_weights_by_name.py); build_model reads no weights",
    ("weights.py", "torchvision_state_dict"): "whether named weights are cached or can be downloaded is known "
                                              "only when the engine reads them (the error names the cache path)",
    ("weights.py", "imagenet_state_dict"): "RESNET.IMAGENET_WEIGHTS is a file on the machine that runs: "
                                           "engine/preflight.check_files names the key before the run",
    ("state_dict.py", "read_checkpoint"): "a checkpoint file on the machine that runs: engine/preflight.check_files "
                                          "names the key before the run",
    ("state_dict.py", "model_state"): "the content of a checkpoint file, not a config value",
    ("state_dict.py", "_first_pickled"): "the content of a pickle (a global the restricted unpickler refuses), "
                                         "not a config value (tests/models/test_caffe2_checkpoint.py)",
    ("caffe2.py", "_RestrictedUnpickler.find_class"): "the content of a pickle, not a config value "
                                                      "(tests/models/test_caffe2_checkpoint.py)",
    ("caffe2.py", "_RestrictedUnpickler.persistent_load"): "the content of a pickle, not a config value",
    ("caffe2.py", "caffe2_state_dict"): "the blobs of a Caffe2 checkpoint, not a config value "
                                        "(tests/models/test_caffe2_checkpoint.py)",
    ("state_dict.py", "load_state"): "whether a checkpoint fits the model; the engine names the key "
                                     "(TRAIN.CHECKPOINT_FILE_PATH, TEST.CHECKPOINT_FILE_PATH, OUTPUT_DIR)",
}


def _model_raises(cfg) -> None:
    model = build_model(cfg).eval()
    with torch.no_grad():
        model(torch.zeros(1, 3, 8, 32, 32))


@pytest.mark.parametrize("case", sorted(CASES))
def test_validate_rejects_first_what_the_model_rejects(case):
    opts, key, model_error = CASES[case]
    cfg = load_config(None, NARROW + opts, check=False)
    with pytest.raises(ConfigError, match="^" + re.escape(key) + ":"):
        validate(cfg.clone())
    with pytest.raises(model_error):
        _model_raises(cfg)


def test_inner_width_below_one_channel_is_refused_not_silently_changed():
    """int(128 x 0.005) = 0 inner channels: the block constructors read 0 as "default
    C / 2" and would build a block with 64 inner channels instead."""
    cfg = load_config(None, NARROW + CGNL + ["NONLOCAL.DIM_INNER_RATIO", "0.005", "CGNL.GROUPS", "1"], check=False)
    assert build_model(cfg).stages[2].inserted["4"].theta.out_channels == 64
    with pytest.raises(ConfigError, match=r"^NONLOCAL\.DIM_INNER_RATIO: 0\.005 x 128 channels leaves no inner"):
        validate(cfg)


def _raise_sites():
    """Counter of (file, Class.function) for every raise statement in cgnl_video/models/*.py."""
    sites = Counter()
    for path in sorted(glob.glob(os.path.join(ROOT, "cgnl_video", "models", "*.py"))):
        tree = ast.parse(open(path, encoding="utf-8").read())

        def visit(node, scope):
            for child in ast.iter_child_nodes(node):
                if isinstance(child, (ast.FunctionDef, ast.ClassDef)):
                    visit(child, scope + [child.name])
                elif isinstance(child, ast.Raise):
                    sites[(os.path.basename(path), ".".join(scope))] += 1
                else:
                    visit(child, scope)

        visit(tree, [])
    return sites


def test_every_raise_in_the_models_has_a_validate_rule_or_a_reason():
    sites = _raise_sites()
    missing = sorted(set(sites) - set(RAISES))
    assert not missing, f"new raise statements in cgnl_video/models: {missing}; add a validate() rule and a case"
    assert not sorted(set(RAISES) - set(sites)), "RAISES lists a check that is gone"
    for site, cases in RAISES.items():
        if isinstance(cases, list):  # at least one case per raise statement
            assert set(cases) <= set(CASES) and sites[site] <= len(cases), site
