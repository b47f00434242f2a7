"""The built-in demo's data (DATA.PREPARE_SYNTHETIC True): the synthetic action
set, made by the library behind the data_prep scripts a user runs on real data
(make_synthetic -> extract_frames -> build_manifests generic), skipping what exists.

The config names the layout of ``cgnl_video.prep.demo`` under one root folder::

    DATA.PATH_TO_DATA_DIR = ROOT/manifests
    DATA.PATH_PREFIX      = ROOT/frames
"""

import os

from fvcore.common.config import CfgNode

from cgnl_video.config import ConfigError
from cgnl_video.prep.demo import prepare_synthetic_demo
from cgnl_video.prep.synthetic import SyntheticSpec
from cgnl_video.utils.logging import get_logger

#: Size of the demo set: training and test videos per class (MODEL.NUM_CLASSES classes).
DEMO_TRAIN_PER_CLASS = 48
DEMO_TEST_PER_CLASS = 16


def demo_root(cfg: CfgNode) -> str:
    """ROOT, checking that DATA.PATH_TO_DATA_DIR and DATA.PATH_PREFIX follow the layout."""
    manifests = os.path.normpath(cfg.DATA.PATH_TO_DATA_DIR)
    root = os.path.dirname(manifests)
    if os.path.basename(manifests) != "manifests":
        raise ConfigError(f"DATA.PATH_TO_DATA_DIR: with DATA.PREPARE_SYNTHETIC it must be ROOT/manifests, "
                          f"got {cfg.DATA.PATH_TO_DATA_DIR!r}")
    if os.path.normpath(cfg.DATA.PATH_PREFIX or ".") != os.path.join(root, "frames"):
        raise ConfigError(f"DATA.PATH_PREFIX: with DATA.PREPARE_SYNTHETIC it must be "
                          f"{os.path.join(root, 'frames')!r}, got {cfg.DATA.PATH_PREFIX!r}")
    return root


def prepare_demo_data(cfg: CfgNode) -> None:
    """Make (or complete) the synthetic set of MODEL.NUM_CLASSES classes for ``cfg``."""
    root = demo_root(cfg)
    spec = SyntheticSpec(num_classes=cfg.MODEL.NUM_CLASSES, train_per_class=DEMO_TRAIN_PER_CLASS,
                         test_per_class=DEMO_TEST_PER_CLASS)
    get_logger().info("demo data: synthetic videos -> frames -> manifests under %s "
                      "(data_prep/make_synthetic.py, extract_frames.py, build_manifests.py generic)", root)
    prepare_synthetic_demo(root, spec)
