"""The built-in demo's data: the synthetic action set, prepared with the very
data_prep scripts a user runs on real data (DATA.PREPARE_SYNTHETIC True).

Layout, from the config (``demo_data`` in configs/demo)::

    <parent of DATA.PATH_TO_DATA_DIR>/synthetic   make_synthetic.py --out (videos + lists)
    DATA.PATH_PREFIX                              extract_frames.py --dst (frame folders)
    DATA.PATH_TO_DATA_DIR                         build_manifests.py generic --out

Each step is skipped when its output exists, so rerunning the demo goes straight
to training.
"""

import os
import subprocess
import sys
from typing import List

from fvcore.common.config import CfgNode

from cgnl_video.config import ConfigError
from cgnl_video.utils.logging import get_logger

MANIFEST_FILES = ("classes.txt", "train.txt", "val.txt", "test.txt")


def data_prep_dir() -> str:
    """The repository's data_prep/ folder (next to the cgnl_video package)."""
    return os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                        "data_prep")


def synthetic_dir(cfg: CfgNode) -> str:
    return os.path.join(os.path.dirname(os.path.normpath(cfg.DATA.PATH_TO_DATA_DIR)), "synthetic")


def demo_commands(cfg: CfgNode, videos_per_class: int = 0, test_videos_per_class: int = 0) -> List[List[str]]:
    """The three data_prep command lines (without the interpreter) that make the demo data.

    ``videos_per_class`` / ``test_videos_per_class``: 0 keeps make_synthetic's defaults.
    """
    synth = synthetic_dir(cfg)
    make = ["make_synthetic.py", "--out", synth, "--classes", str(cfg.MODEL.NUM_CLASSES)]
    if videos_per_class:
        make += ["--videos-per-class", str(videos_per_class)]
    if test_videos_per_class:
        make += ["--test-videos-per-class", str(test_videos_per_class)]
    extract = ["extract_frames.py", "--src", os.path.join(synth, "videos"), "--dst", cfg.DATA.PATH_PREFIX,
               "--short-side", "0", "--workers", "2", "--no-progress"]
    manifests = ["build_manifests.py", "generic", "--root", cfg.DATA.PATH_PREFIX,
                 "--out", cfg.DATA.PATH_TO_DATA_DIR, "--list-dir", os.path.join(synth, "annotations")]
    return [make, extract, manifests]


def _run_script(args: List[str]) -> None:
    script = os.path.join(data_prep_dir(), args[0])
    if not os.path.isfile(script):
        raise FileNotFoundError(f"{script} not found: the demo runs from a checkout of the repository")
    get_logger().info("demo data: python data_prep/%s", " ".join(args))
    subprocess.run([sys.executable, script] + args[1:], check=True)


def demo_data_ready(cfg: CfgNode) -> bool:
    return all(os.path.isfile(os.path.join(cfg.DATA.PATH_TO_DATA_DIR, name)) for name in MANIFEST_FILES)


def prepare_demo_data(cfg: CfgNode, videos_per_class: int = 0, test_videos_per_class: int = 0) -> None:
    """make_synthetic -> extract_frames -> build_manifests, skipping what exists."""
    if not cfg.DATA.PATH_PREFIX:
        raise ConfigError("DATA.PATH_PREFIX: the demo extracts its frames there; set a folder")
    if demo_data_ready(cfg):
        get_logger().info("demo data: manifests in %s exist, nothing to prepare", cfg.DATA.PATH_TO_DATA_DIR)
        return
    make, extract, manifests = demo_commands(cfg, videos_per_class, test_videos_per_class)
    if os.path.isfile(os.path.join(synthetic_dir(cfg), "annotations", "test.txt")):
        get_logger().info("demo data: synthetic videos in %s exist", synthetic_dir(cfg))
    else:
        _run_script(make)
    _run_script(extract)  # skips the videos it already extracted
    _run_script(manifests)
