"""The pure index math of cgnl_video.data.sampling, checked exhaustively on small sizes."""

import math

import pytest
import torch

from cgnl_video.data import sampling

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # torch on one thread in every test


def test_clip_indices_stride_and_wrap():
    assert sampling.clip_indices(3, 4, 2, 100) == [3, 5, 7, 9]
    assert sampling.clip_indices(0, 32, 2, 64) == list(range(0, 64, 2))
    # A 5-frame video looped for a window of 8.
    assert sampling.clip_indices(3, 4, 2, 5) == [3, 0, 2, 4]
    assert sampling.clip_indices(0, 4, 1, 1) == [0, 0, 0, 0]
    with pytest.raises(ValueError):
        sampling.clip_indices(0, 4, 2, 0)


@pytest.mark.parametrize("frames", [1, 5, 63, 64, 65, 300])
def test_train_start_range_is_exact_and_uniformly_covered(frames):
    window = 64
    last = frames - window if frames >= window else frames - 1
    generator = torch.Generator().manual_seed(0)
    starts = [sampling.train_clip_start(frames, window, generator) for _ in range(4000)]
    assert min(starts) == 0 and max(starts) == last
    assert len(set(starts)) == last + 1
    if last >= 2:  # uniform: mean and spread of a discrete uniform on [0, last]
        values = torch.tensor(starts, dtype=torch.float64)
        assert abs(values.mean() - last / 2) < 0.05 * last
        assert abs(values.var() - last * (last + 2) / 12) < 0.1 * last * (last + 2) / 12


def test_test_starts_spread_uniformly():
    # 10 s at 30 fps, 10 windows of 64: first at 0, last ends at the last frame.
    starts = sampling.test_clip_starts(300, 64, 10)
    assert starts[0] == 0 and starts[-1] == 236 and len(starts) == 10
    gaps = [b - a for a, b in zip(starts, starts[1:])]
    assert max(gaps) - min(gaps) <= 1
    assert sampling.test_clip_starts(100, 8, 1) == [46]  # centre window
    assert sampling.test_clip_starts(40, 8, 3) == [0, 16, 32]
    assert sampling.test_clip_starts(5, 8, 4) == [0, 0, 0, 0]  # shorter than the window
    for frames in range(1, 120):
        for clips in range(1, 12):
            starts = sampling.test_clip_starts(frames, 16, clips)
            assert starts == sorted(starts) and len(starts) == clips
            assert all(0 <= s <= max(frames - 16, 0) for s in starts)


def test_frame_union_decodes_each_frame_once():
    clips = [[0, 2, 4, 6], [4, 6, 8, 10], [1, 0, 1, 0]]
    union, positions = sampling.frame_union(clips)
    assert union == [0, 1, 2, 4, 6, 8, 10]
    for clip, where in zip(clips, positions):
        assert [union[p] for p in where] == clip
    # Default test protocol on a 10 s, 30 fps video: 10 clips of 32 frames out of 64.
    clips = [sampling.clip_indices(s, 32, 2, 300) for s in sampling.test_clip_starts(300, 64, 10)]
    union, _ = sampling.frame_union(clips)
    assert len(union) <= 300 < 10 * 32


def test_short_side_size():
    assert sampling.short_side_size(256, 340, 256) == (256, 340)
    assert sampling.short_side_size(480, 640, 256) == (256, 341)
    assert sampling.short_side_size(640, 480, 256) == (341, 256)
    assert sampling.short_side_size(100, 100, 32) == (32, 32)


@pytest.mark.parametrize("height,width", [(256, 340), (340, 256), (48, 64), (17, 17)])
def test_random_crop_box_within_frame_and_ranges(height, width):
    generator = torch.Generator().manual_seed(1)
    scale, ratio = (0.08, 1.25), (0.75, 4 / 3)
    areas, aspects = [], []
    for _ in range(2000):
        top, left, h, w = sampling.random_crop_box(height, width, scale, ratio, generator)
        assert 0 <= top and top + h <= height and 0 <= left and left + w <= width
        assert h >= 1 and w >= 1
        areas.append(h * w / (height * width))
        if h < height and w < width:  # not clipped: the drawn aspect ratio holds
            aspects.append(w / h)
    assert min(areas) < 0.12 and max(areas) == 1.0
    assert all(a <= 1.0 for a in areas)
    if height > 20:  # rounding dominates on tiny frames
        assert min(aspects) > 0.7 and max(aspects) < 1.4


def test_random_crop_box_larger_than_frame_is_clipped_to_it():
    generator = torch.Generator().manual_seed(0)
    # Area 1.25 with square boxes in a 48 x 64 frame: side 62 > 48 -> full height.
    for _ in range(50):
        top, left, h, w = sampling.random_crop_box(48, 64, (1.25, 1.25), (1.0, 1.0), generator)
        assert (top, h) == (0, 48)
        assert w == round(math.sqrt(1.25 * 48 * 64)) and 0 <= left <= 64 - w
    # Wider than the frame as well: the whole frame.
    box = sampling.random_crop_box(48, 64, (1.25, 1.25), (4 / 3, 4 / 3), generator)
    assert box == (0, 0, 48, 64)


def test_random_crop_box_positions_cover_all_offsets():
    generator = torch.Generator().manual_seed(0)
    # Area 0.5 * 200 = 100 with aspect 2: w = round(sqrt(200)) = 14, h = round(sqrt(50)) = 7.
    boxes = [sampling.random_crop_box(10, 20, (0.5, 0.5), (2.0, 2.0), generator) for _ in range(500)]
    assert {(h, w) for _, _, h, w in boxes} == {(7, 14)}
    assert {left for _, left, _, _ in boxes} == set(range(0, 20 - 14 + 1))
    assert {top for top, _, _, _ in boxes} == set(range(0, 10 - 7 + 1))


def test_center_crop_box():
    assert sampling.center_crop_box(256, 340, 224) == (16, 58, 224, 224)
    assert sampling.center_crop_box(48, 64, 32) == (8, 16, 32, 32)
    assert sampling.center_crop_box(20, 30, 64) == (0, 0, 20, 30)


def test_spatial_crop_boxes():
    assert sampling.spatial_crop_boxes(256, 340, 3) == [(0, 0, 256, 256), (0, 42, 256, 256), (0, 84, 256, 256)]
    assert sampling.spatial_crop_boxes(340, 256, 3) == [(0, 0, 256, 256), (42, 0, 256, 256), (84, 0, 256, 256)]
    assert sampling.spatial_crop_boxes(256, 340, 1) == [(0, 42, 256, 256)]
    assert sampling.spatial_crop_boxes(256, 256, 3) == [(0, 0, 256, 256)] * 3
    assert [b[1] for b in sampling.spatial_crop_boxes(48, 64, 5)] == [0, 4, 8, 12, 16]


def test_item_seed_is_stable_and_distinct():
    assert sampling.item_seed(0, 0, 0) == sampling.item_seed(0, 0, 0)
    seeds = {sampling.item_seed(s, e, i) for s in range(3) for e in range(5) for i in range(50)}
    assert len(seeds) == 3 * 5 * 50
    assert all(0 <= s < 2**64 for s in seeds)
    a = torch.rand(4, generator=sampling.item_generator(7, 1, 3))
    b = torch.rand(4, generator=sampling.item_generator(7, 1, 3))
    assert torch.equal(a, b)
