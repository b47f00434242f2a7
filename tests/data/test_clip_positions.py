"""The dataset's outputs against hand-computed positions, and the manifest's bounds.

Frames are intensity-coded (see data_fixtures): a returned view tells which
source frame each time step shows and which source columns / rows it covers.
Test views spread their clip starts and crop offsets evenly, rounded half up:
offset k of n over a slack s is round_half_up(k * s / (n - 1)).
"""

import os

import pytest

from cgnl_video.data import ManifestEntry, ManifestError, build_dataset, build_loader, set_loader_epoch
from data_fixtures import column_range, frame_ids, make_dataset, row_range, small_cfg, write_frame_folder

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # torch on one thread in every test


def _views(tmp_path, frames: int, height: int, width: int, clips: int, crops: int):
    root = str(tmp_path)
    write_frame_folder(os.path.join(root, "v"), frames, height=height, width=width)
    lists = make_dataset(root, {"test": [ManifestEntry("v", 0, frames)]})
    cfg = small_cfg(lists, root, **{"TEST.NUM_ENSEMBLE_VIEWS": clips, "TEST.NUM_SPATIAL_CROPS": crops,
                                    "DATA.TEST_CROP_SIZE": min(height, width)})
    views = build_dataset(cfg, "test")[0][0]
    assert views.shape[0] == clips * crops
    return views


def test_clip_starts_and_crop_offsets_round_half_up(tmp_path):
    # 13 frames, windows of 4 frames x rate 2 = 8: slack 5; 3 clips at 0, 2.5 -> 3, 5.
    # 48 x 63 frames, squares of 48: slack 15; 3 crops at 0, 7.5 -> 8, 15.
    views = _views(tmp_path, frames=13, height=48, width=63, clips=3, crops=3)
    starts = [frame_ids(views[3 * clip])[0] for clip in range(3)]
    assert starts == [0, 3, 5]
    lefts = [round(column_range(views[crop])[0]) for crop in range(3)]
    assert lefts == [0, 8, 15]
    for view in range(9):  # every view: its clip's frames and its crop's columns
        clip, crop = divmod(view, 3)
        assert frame_ids(views[view]) == [starts[clip] + 2 * k for k in range(4)]
        assert column_range(views[view]) == pytest.approx((lefts[crop], lefts[crop] + 47), abs=0.1)


def test_ten_clip_starts_one_by_one(tmp_path):
    # 40 frames, window 8: slack 32 over 9 gaps = 3.56 each.
    views = _views(tmp_path, frames=40, height=48, width=48, clips=10, crops=1)
    starts = [frame_ids(view)[0] for view in views]
    assert starts == [0, 4, 7, 11, 14, 18, 21, 25, 28, 32]


def test_portrait_crop_offsets_round_half_up(tmp_path):
    # 40 x 32 frames: squares of 32, slack 8 -> top / centre / bottom at 0, 4, 8.
    views = _views(tmp_path, frames=8, height=40, width=32, clips=1, crops=3)
    assert [round(row_range(view)[0]) for view in views] == [0, 4, 8]
    views = _views(tmp_path / "odd", frames=8, height=37, width=32, clips=1, crops=3)
    assert [round(row_range(view)[0]) for view in views] == [0, 3, 5]  # slack 5: 2.5 -> 3


@pytest.mark.parametrize("height, width, resized", [(33, 50, (36, 55)), (50, 33, (55, 36))])
def test_full_frame_views_round_the_long_side_to_the_nearest_pixel(tmp_path, height, width, resized):
    """Short side 33 -> 36 (DATA.TEST_CROP_SIZE): the long side 50 becomes 50 * 36 / 33 =
    54.55, so 55 pixels (not 54), landscape and portrait alike; the whole frame is kept."""
    root = str(tmp_path)
    write_frame_folder(os.path.join(root, "v"), 8, height=height, width=width)
    lists = make_dataset(root, {"test": [ManifestEntry("v", 0, 8)]})
    cfg = small_cfg(lists, root, **{"TEST.NUM_ENSEMBLE_VIEWS": 1, "TEST.NUM_SPATIAL_CROPS": 1,
                                    "TEST.FULL_FRAME": True, "DATA.TEST_CROP_SIZE": 36})
    views = build_dataset(cfg, "test")[0][0]
    assert tuple(views.shape[-2:]) == resized
    assert column_range(views[0]) == pytest.approx((0, width - 1), abs=1.0)
    assert row_range(views[0]) == pytest.approx((0, height - 1), abs=1.0)


# ----------------------------------------------------------------------------- manifest bounds


def _dataset_from_lines(tmp_path, text: str):
    root = str(tmp_path)
    lists = make_dataset(root, {"val": []})  # classes a, b, c
    with open(os.path.join(lists, "val.txt"), "w", encoding="utf-8") as handle:
        handle.write(text)
    return build_dataset(small_cfg(lists, root), "val")


@pytest.mark.parametrize("line,message", [
    ("v1 4 3", r"val\.txt:2: label 3 is outside the 3 classes"),  # labels are 0..2
    ("v1 4 -1", r"val\.txt:2: label must be >= 0"),
    ("v1.mp4 -1", r"val\.txt:2: label must be >= 0"),
    ("v1 0 1", r"val\.txt:2: frame count must be positive"),
    ("v1 -4 1", r"val\.txt:2: frame count must be positive"),
])
def test_manifest_rejects_out_of_range_values_naming_file_and_line(tmp_path, line, message):
    with pytest.raises(ManifestError, match=message):
        _dataset_from_lines(tmp_path, f"v0 4 0\n{line}\n")


def test_manifest_accepts_the_last_class_and_a_one_frame_video(tmp_path):
    dataset = _dataset_from_lines(tmp_path, "v0 1 2\nv1.mp4 0\n")
    assert [(e.path, e.num_frames, e.label) for e in dataset.entries] == [("v0", 1, 2), ("v1.mp4", None, 0)]


# ----------------------------------------------------------------------------- shuffle order


def test_training_order_depends_on_the_seed_and_the_epoch(tmp_path):
    root = str(tmp_path)
    lists = make_dataset(root, {"train": [ManifestEntry(f"v{i}", i % 3, 8) for i in range(12)]})

    def order(seed: int, epoch: int):
        loader = build_loader(small_cfg(lists, root, RNG_SEED=seed), "train")  # reads the manifest only
        set_loader_epoch(loader, epoch)
        return list(loader.sampler)

    first = order(1, 0)
    assert sorted(first) == list(range(12))
    assert order(1, 0) == first  # reproducible
    assert order(2, 0) != first  # another RNG_SEED, another order
    assert order(1, 1) != first  # another epoch, another order
