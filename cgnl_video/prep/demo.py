"""The demo's data in one call: synthetic videos -> frame folders -> manifests.

The same path a real dataset takes (``make_synthetic``, ``extract_frames``,
``build_manifests generic``), under one folder::

    ROOT/videos/ ROOT/annotations/   make_synthetic (skipped when ROOT/annotations/test.txt, its
                                     last file, exists)
    ROOT/frames/                     extract_frames (finished videos are skipped)
    ROOT/manifests/                  train.txt, val.txt, test.txt, classes.txt (rebuilt, fast)

Training then reads ``DATA.PATH_TO_DATA_DIR = ROOT/manifests`` with
``DATA.PATH_PREFIX = ROOT/frames``.
"""

import os
from typing import Optional, Tuple

from cgnl_video.prep.extract import ExtractOptions, default_workers, extract_all
from cgnl_video.prep.generic import build_generic
from cgnl_video.prep.synthetic import SyntheticSpec, make_synthetic

DEMO_SHORT_SIDE = 64  # frames of the default 128x96 videos become 85x64


def prepare_synthetic_demo(
    root: str,
    spec: SyntheticSpec = SyntheticSpec(),
    short_side: int = DEMO_SHORT_SIDE,
    workers: Optional[int] = None,
    progress: bool = False,
) -> Tuple[str, str]:
    """Make (or complete) the demo data under ``root``; return (manifest folder, frames root)."""
    videos, annotations = os.path.join(root, "videos"), os.path.join(root, "annotations")
    frames, manifests = os.path.join(root, "frames"), os.path.join(root, "manifests")
    if not os.path.isfile(os.path.join(annotations, "test.txt")):
        make_synthetic(root, spec)
    summary = extract_all(videos, frames, options=ExtractOptions(short_side=short_side),
                          workers=workers or default_workers(), progress=progress)
    if summary.failed:
        raise RuntimeError(f"{summary.failed} synthetic video(s) failed to extract: see {frames}/failures.txt")
    build_generic(annotations, frames, manifests, check_videos=False)
    return manifests, frames
