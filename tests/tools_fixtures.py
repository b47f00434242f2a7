"""Helpers for the user-tool tests (no tests here): a tiny config file, a tiny
checkpoint saved by the engine, tiny inputs, and in-process tool runs."""

import os
import runpy
from typing import Dict, List, Sequence

import torch

from cgnl_video.config import load_config
from cgnl_video.data import write_classes
from cgnl_video.engine.checkpoint import save_checkpoint
from cgnl_video.models import build_model
from data_fixtures import write_frame_folder, write_video
from repo_paths import ROOT

CLASSES = ("walk", "run", "jump")


def tiny_opts(data_dir: str, block: str = "cgnl", **extra: object) -> List[str]:
    """KEY VALUE pairs of a narrow C2D R-50 with one block at res4 on 16 x 64 x 64
    clips (block grid 2 x 4 x 4), 2 x 3 test views, 3 classes, no workers."""
    opts = {
        "DATA.PATH_TO_DATA_DIR": data_dir, "DATA.NUM_FRAMES": 16, "DATA.SAMPLING_RATE": 1,
        "DATA.TRAIN_CROP_SIZE": 64, "DATA.VAL_SHORT_SIDE": 64, "DATA.VAL_CROP_SIZE": 64,
        "DATA.TEST_CROP_SIZE": 64, "DATA_LOADER.NUM_WORKERS": 0,
        "MODEL.NUM_CLASSES": len(CLASSES), "RESNET.WIDTH_PER_GROUP": 4, "RESNET.ZERO_INIT_FINAL_BN": False,
        "NONLOCAL.TYPE": block, "NONLOCAL.LOCATION": "[[], [], [4], []]", "CGNL.GROUPS": 2,
        "TEST.BATCH_SIZE": 2, "TEST.NUM_ENSEMBLE_VIEWS": 2, "TEST.NUM_SPATIAL_CROPS": 3,
        "TEST.VIEWS_PER_FORWARD": 6,
    }
    opts.update({key.replace("__", "."): value for key, value in extra.items()})
    return [str(x) for pair in opts.items() for x in pair]


def write_tiny_config(folder: str, block: str = "cgnl", **extra: object) -> str:
    """``folder/<block>.yaml`` (a full dump of the tiny config) and ``folder/lists/classes.txt``."""
    lists = os.path.join(folder, "lists")
    os.makedirs(lists, exist_ok=True)
    write_classes(os.path.join(lists, "classes.txt"), CLASSES)
    cfg = load_config(None, tiny_opts(lists, block, **extra))
    path = os.path.join(folder, f"{block}.yaml")
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(cfg.dump())
    return path


def save_tiny_checkpoint(cfg_path: str, output_dir: str, seed: int = 0) -> str:
    """Build the model of ``cfg_path`` (seeded; inserted blocks' norms at 1 so they
    matter) and save it with the engine's ``save_checkpoint``; returns the path."""
    cfg = load_config(cfg_path)
    torch.manual_seed(seed)
    model = build_model(cfg)
    for name, module in model.named_modules():
        if ".inserted." in name and name.endswith(".norm"):
            torch.nn.init.ones_(module.weight)
    return save_checkpoint(output_dir, 1, {"model": model.state_dict(), "epoch": 1, "cfg": cfg.dump()}, keep=1)


def make_inputs(folder: str) -> Dict[str, str]:
    """A video file (20 frames), a frame folder (24 frames), a file that is no
    video, and a path that does not exist."""
    os.makedirs(folder, exist_ok=True)
    video = os.path.join(folder, "clip one.mkv")
    write_video(video, 20)
    frames = os.path.join(folder, "frames_two")
    write_frame_folder(frames, 24)
    bad = os.path.join(folder, "broken.mp4")
    with open(bad, "wb") as handle:
        handle.write(b"this is not a video")
    return {"video": video, "frames": frames, "bad": bad, "missing": os.path.join(folder, "nowhere.mp4")}


def run_tool(name: str, argv: Sequence[str]) -> int:
    """``main(argv)`` of tools/<name>.py, in this process."""
    module = runpy.run_path(os.path.join(ROOT, "tools", f"{name}.py"), run_name="tool_under_test")
    return module["main"](list(argv))


def tiny_tool_run(folder: str) -> Dict[str, str]:
    """In ``folder``: a tiny config (``cfg``), a checkpoint of it (``checkpoint``) and the
    inputs of ``make_inputs`` under ``inputs``; the paths, with ``folder`` itself."""
    cfg_path = write_tiny_config(folder)
    checkpoint = save_tiny_checkpoint(cfg_path, os.path.join(folder, "run"))
    inputs = os.path.join(folder, "inputs")
    return {"cfg": cfg_path, "checkpoint": checkpoint, "folder": folder, "inputs": inputs, **make_inputs(inputs)}
