"""Helpers for the engine tests: run a function in N gloo processes on 127.0.0.1."""

import os
import socket
from typing import Any, Callable

import torch.multiprocessing as mp


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _entry(rank: int, world_size: int, port: int, fn: Callable, args: tuple) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      LOCAL_RANK=str(rank), WORLD_SIZE=str(world_size), OMP_NUM_THREADS="1")
    import torch

    torch.set_num_threads(1)
    fn(rank, *args)


def run_distributed(fn: Callable[..., Any], world_size: int, *args: Any) -> None:
    """Call ``fn(rank, *args)`` in ``world_size`` processes with torchrun's variables set
    (the process group itself is joined by the code under test)."""
    mp.spawn(_entry, args=(world_size, free_port(), fn, args), nprocs=world_size, join=True)


def make_tiny_dataset(root: str, num_classes: int = 3, per_class: int = 4, frames: int = 8,
                      size: int = 40) -> str:
    """Frame folders whose class is the colour of a square, plus manifests; returns the data dir.

    ``root/frames/<split>/<c>_<i>/000001.jpg ...`` and ``root/manifests/{train,val,test,classes}.txt``;
    val and test list the same videos (per_class // 2 per class).
    """
    import numpy as np
    from PIL import Image

    from cgnl_video.data.manifest import ManifestEntry, frame_file_name, write_classes, write_manifest

    colours = [(230, 40, 40), (40, 230, 40), (40, 40, 230), (230, 230, 40), (40, 230, 230)]
    rng = np.random.default_rng(0)
    manifests = os.path.join(root, "manifests")
    splits = {"train": [], "test": []}
    for split, count in (("train", per_class), ("test", max(1, per_class // 2))):
        for label in range(num_classes):
            for i in range(count):
                rel = f"{split}/{label}_{i}"
                folder = os.path.join(root, "frames", rel)
                os.makedirs(folder, exist_ok=True)
                for t in range(frames):
                    image = rng.integers(0, 60, (size, size, 3), dtype=np.uint8)
                    y, x = rng.integers(0, size // 2, 2)
                    image[y:y + size // 2, x:x + size // 2] = colours[label]
                    Image.fromarray(image).save(os.path.join(folder, frame_file_name(t)))
                splits[split].append(ManifestEntry(rel, label, frames))
    write_classes(os.path.join(manifests, "classes.txt"), [f"class{c}" for c in range(num_classes)])
    write_manifest(os.path.join(manifests, "train.txt"), splits["train"])
    write_manifest(os.path.join(manifests, "val.txt"), splits["test"])
    write_manifest(os.path.join(manifests, "test.txt"), splits["test"])
    return manifests


def tiny_opts(root: str, output_dir: str, **overrides: Any) -> list:
    """KEY VALUE overrides for a tiny C2D + CGNL run on ``make_tiny_dataset(root)``."""
    opts = {
        "DATA.PATH_TO_DATA_DIR": os.path.join(root, "manifests"),
        "DATA.PATH_PREFIX": os.path.join(root, "frames"),
        "DATA.NUM_FRAMES": 8, "DATA.SAMPLING_RATE": 1,
        "DATA.TRAIN_CROP_SIZE": 32, "DATA.VAL_SHORT_SIDE": 32, "DATA.VAL_CROP_SIZE": 32,
        "DATA.TEST_CROP_SIZE": 32, "DATA.TRAIN_JITTER_SCALES_RELATIVE": "[0.5, 1.0]",
        "DATA_LOADER.NUM_WORKERS": 0,
        "MODEL.NUM_CLASSES": 3, "MODEL.DROPOUT_RATE": 0.0,
        "RESNET.WIDTH_PER_GROUP": 4,
        "NONLOCAL.TYPE": "cgnl", "NONLOCAL.LOCATION": "[[], [], [4], []]", "CGNL.GROUPS": 2,
        "SOLVER.BASE_LR": 0.05, "SOLVER.MAX_EPOCH": 2, "SOLVER.WARMUP_EPOCHS": 0.5,
        "SOLVER.LR_POLICY": "steps_with_relative_lrs", "SOLVER.STEPS": "[0, 2]", "SOLVER.LRS": "[1.0, 0.1]",
        "TRAIN.BATCH_SIZE": 4, "TRAIN.EVAL_PERIOD": 1, "TRAIN.CHECKPOINT_KEEP": 5,
        "TEST.BATCH_SIZE": 2, "TEST.NUM_ENSEMBLE_VIEWS": 2, "TEST.NUM_SPATIAL_CROPS": 3,
        "TEST.VIEWS_PER_FORWARD": 4,
        "OUTPUT_DIR": output_dir, "LOG_PERIOD": 1, "RNG_SEED": 1,
    }
    opts.update({key.replace("__", "."): value for key, value in overrides.items()})
    return [str(x) for pair in opts.items() for x in pair]


def one_thread():
    """Context manager: torch on one thread (tiny tensors run fastest so, and a busy
    2-core machine does not stall on thread hand-offs)."""
    import contextlib

    import torch

    @contextlib.contextmanager
    def _ctx():
        previous = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            yield
        finally:
            torch.set_num_threads(previous)

    return _ctx()
