"""Tiny intensity-coded videos for the data pipeline tests (helpers, no tests).

Frame ``i`` of a synthetic video has, in every pixel of row ``r`` and column ``c``:
green ``4 * i`` (which frame), red ``4 * c`` (which column), blue ``4 * r`` (which
row). JPEGs are written at quality 100 without chroma subsampling and videos with
the lossless FFV1 codec, so the codes survive decoding within a small tolerance and
a returned clip tells which frames, which crop and which flip were used.
"""

import os
from typing import Dict, List, Optional, Sequence, Tuple

import av
import numpy as np
import torch
from PIL import Image

from cgnl_video.config import get_cfg
from cgnl_video.data.decode import frame_file_name
from cgnl_video.data.manifest import ManifestEntry, write_classes, write_manifest

STEP = 4  # intensity step of every code
HEIGHT, WIDTH = 48, 64  # frame size (decord needs widths that are multiples of 32)


def coded_frame(index: int, height: int = HEIGHT, width: int = WIDTH) -> np.ndarray:
    """H x W x 3 uint8: red = 4 * column, green = 4 * index, blue = 4 * row."""
    rows, cols = np.mgrid[0:height, 0:width]
    frame = np.stack([STEP * cols, np.full_like(cols, STEP * index), STEP * rows], axis=-1)
    return frame.clip(0, 255).astype(np.uint8)


def write_frame_folder(folder: str, num_frames: int, height: int = HEIGHT, width: int = WIDTH) -> None:
    os.makedirs(folder, exist_ok=True)
    for index in range(num_frames):
        image = Image.fromarray(coded_frame(index, height, width))
        image.save(os.path.join(folder, frame_file_name(index)), quality=100, subsampling=0)


def write_video(path: str, num_frames: int, height: int = HEIGHT, width: int = WIDTH, codec: str = "ffv1") -> None:
    """A video of coded frames: lossless FFV1 (.mkv) or another codec (e.g. libx264)."""
    with av.open(path, "w") as container:
        stream = container.add_stream(codec, rate=30)
        stream.width, stream.height = width, height
        stream.pix_fmt = "bgr0" if codec == "ffv1" else "yuv420p"
        if codec == "libx264":
            stream.options = {"crf": "0"}
        for index in range(num_frames):
            frame = av.VideoFrame.from_ndarray(coded_frame(index, height, width), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def make_dataset(
    root: str,
    splits: Dict[str, Sequence[ManifestEntry]],
    classes: Sequence[str] = ("a", "b", "c"),
) -> str:
    """Write classes.txt and one manifest per split under root/lists; return that folder."""
    lists = os.path.join(root, "lists")
    os.makedirs(lists, exist_ok=True)
    write_classes(os.path.join(lists, "classes.txt"), classes)
    for split, entries in splits.items():
        write_manifest(os.path.join(lists, f"{split}.txt"), entries)
    return lists


def small_cfg(data_dir: str, root: str, **overrides):
    """Config for tiny clips: 4 frames x rate 2, mean 0 / std 1 (clip = pixel / 255)."""
    cfg = get_cfg()
    cfg.DATA.PATH_TO_DATA_DIR = data_dir
    cfg.DATA.PATH_PREFIX = root
    cfg.DATA.NUM_FRAMES, cfg.DATA.SAMPLING_RATE = 4, 2
    cfg.DATA.TRAIN_CROP_SIZE = 32
    cfg.DATA.VAL_SHORT_SIDE, cfg.DATA.VAL_CROP_SIZE = 48, 32
    cfg.DATA.TEST_CROP_SIZE = 48
    cfg.DATA.MEAN, cfg.DATA.STD = [0.0, 0.0, 0.0], [1.0, 1.0, 1.0]
    cfg.DATA.MAX_CONSECUTIVE_FAILURES = 5
    cfg.DATA_LOADER.NUM_WORKERS = 0
    cfg.TRAIN.BATCH_SIZE, cfg.TEST.BATCH_SIZE = 2, 2
    cfg.TEST.NUM_ENSEMBLE_VIEWS, cfg.TEST.NUM_SPATIAL_CROPS = 3, 3
    for key, value in overrides.items():
        node = cfg
        *parents, leaf = key.split(".")
        for part in parents:
            node = node[part]
        node[leaf] = value
    return cfg


def cfg_for(data: Tuple[str, ...], **overrides):
    """``small_cfg`` for a module fixture returning ``(root, lists, ...)``."""
    return small_cfg(data[1], data[0], **overrides)


def pixels(clip: torch.Tensor) -> torch.Tensor:
    """A clip made with mean 0 / std 1 (or uint8 test views) back to 0-255 values."""
    return clip.float() if clip.dtype == torch.uint8 else clip * 255.0


def frame_ids(clip: torch.Tensor) -> List[int]:
    """Which source frame each time step of a C x T x H x W clip shows (green code)."""
    return [round(float(v)) for v in pixels(clip)[1].mean(dim=(1, 2)) / STEP]


def column_range(clip: torch.Tensor) -> Tuple[float, float]:
    """Source columns (red code) at the left and right edge of a C x T x H x W clip."""
    red = pixels(clip)[0].mean(dim=(0, 1)) / STEP
    return float(red[0]), float(red[-1])


def row_range(clip: torch.Tensor) -> Tuple[float, float]:
    """Source rows (blue code) at the top and bottom edge of a C x T x H x W clip."""
    blue = pixels(clip)[2].mean(dim=(0, 2)) / STEP
    return float(blue[0]), float(blue[-1])


def folder_entries(root: str, lengths: Sequence[int], labels: Optional[Sequence[int]] = None) -> List[ManifestEntry]:
    """Frame folders v0, v1, ... under root with the given frame counts."""
    entries = []
    for number, length in enumerate(lengths):
        write_frame_folder(os.path.join(root, f"v{number}"), length)
        label = labels[number] if labels is not None else number % 3
        entries.append(ManifestEntry(path=f"v{number}", label=label, num_frames=length))
    return entries
