"""The synthetic demo set: deterministic, decodable, and the path a real dataset takes."""

import hashlib
import os

import numpy as np
import pytest

from cgnl_video.data.manifest import read_classes, read_manifest
from cgnl_video.prep import index as idx
from cgnl_video.prep.demo import prepare_synthetic_demo
from cgnl_video.prep.synthetic import CLASS_NAMES, SyntheticSpec, make_synthetic, render_video
from cgnl_video.prep.video_io import frames_with_pyav, probe

SMALL = SyntheticSpec(num_classes=3, train_per_class=2, test_per_class=1, num_frames=12, width=64, height=48)


def digests(folder):
    out = {}
    for base, _, files in os.walk(folder):
        for name in files:
            path = os.path.join(base, name)
            out[os.path.relpath(path, folder)] = hashlib.sha256(open(path, "rb").read()).hexdigest()
    return out


def test_deterministic_and_decodable(tmp_path):
    counts = make_synthetic(str(tmp_path / "a"), SMALL)
    make_synthetic(str(tmp_path / "b"), SMALL)
    assert counts == {"train": 6, "test": 3}
    assert digests(tmp_path / "a") == digests(tmp_path / "b")
    make_synthetic(str(tmp_path / "c"), SyntheticSpec(**{**SMALL.__dict__, "seed": 1}))
    assert digests(tmp_path / "a") != digests(tmp_path / "c")
    video = tmp_path / "a" / "videos" / "train" / "disc" / "disc_001.mp4"
    info = probe(str(video))
    assert (info.width, info.height, info.num_frames, info.fps) == (64, 48, 12, 12.0)
    assert sum(len(c) for c in frames_with_pyav(str(video), (64, 48), None, info.fps)) == 12
    lines = (tmp_path / "a" / "annotations" / "train.txt").read_text().splitlines()
    assert lines[0] == "train/slide_horizontal/slide_horizontal_000.mp4 slide_horizontal" and len(lines) == 6


def object_extent(frames):
    """Height and width of the region the object covers over the whole video."""
    background = np.median(frames, axis=0).astype(int)
    moved = (np.abs(frames.astype(int) - background).max(axis=3) > 60).any(axis=0)
    ys, xs = np.nonzero(moved)
    return ys.max() - ys.min(), xs.max() - xs.min()


@pytest.mark.parametrize("seed", range(4))
def test_sliders_differ_only_over_time(seed):
    """One frame of each slider is a square; the frames together span a line along its axis."""
    spec = SyntheticSpec(seed=seed)
    h_frames = render_video("slide_horizontal", spec, np.random.default_rng(seed))
    v_frames = render_video("slide_vertical", spec, np.random.default_rng(seed))
    h_dy, h_dx = object_extent(h_frames)
    v_dy, v_dx = object_extent(v_frames)
    assert h_dx > 1.5 * h_dy and v_dy > 1.5 * v_dx


def test_class_list():
    assert len(set(CLASS_NAMES)) == len(CLASS_NAMES) >= 6
    with pytest.raises(ValueError, match="--classes"):
        make_synthetic("/nonexistent", SyntheticSpec(num_classes=1))


def test_demo_path_videos_to_manifests(tmp_path):
    """make_synthetic -> extract_frames -> build_manifests generic, as the demo runs it."""
    manifests, frames = prepare_synthetic_demo(str(tmp_path / "syn"), SMALL, short_side=32, workers=2)
    assert (manifests, frames) == (str(tmp_path / "syn" / "manifests"), str(tmp_path / "syn" / "frames"))
    assert read_classes(os.path.join(manifests, "classes.txt")) == list(CLASS_NAMES[:3])
    train = read_manifest(os.path.join(manifests, "train.txt"), num_classes=3)
    assert [e.label for e in train] == [0, 0, 1, 1, 2, 2] and {e.num_frames for e in train} == {12}
    assert train[0].path == "train/slide_horizontal/slide_horizontal_000"
    assert read_manifest(os.path.join(manifests, "val.txt")) == read_manifest(os.path.join(manifests, "test.txt"))
    assert len(read_manifest(os.path.join(manifests, "test.txt"))) == 3
    entry = idx.read_index(frames)[train[0].path]
    assert (entry.width, entry.height) == (43, 32)
    stamp = os.path.getmtime(tmp_path / "syn" / "videos" / "train" / "disc" / "disc_000.mp4")
    prepare_synthetic_demo(str(tmp_path / "syn"), SMALL, short_side=32, workers=1)  # all skipped
    assert os.path.getmtime(tmp_path / "syn" / "videos" / "train" / "disc" / "disc_000.mp4") == stamp
    assert read_manifest(os.path.join(manifests, "train.txt")) == train
