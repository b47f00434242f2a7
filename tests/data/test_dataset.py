"""Black-box checks of VideoDataset: from intensity-coded frames, recover which frames,
which crop and which flip each item used (see data_fixtures)."""

import os

import pytest
import torch

from cgnl_video.data import ManifestEntry, ManifestError, build_dataset, decode, transforms
from data_fixtures import (
    HEIGHT,
    WIDTH,
    cfg_for,
    column_range,
    folder_entries,
    frame_ids,
    make_dataset,
    row_range,
    small_cfg,
    write_frame_folder,
    write_video,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # torch on one thread in every test


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Frame folders of 40 and 5 frames, a 40-frame FFV1 video and a 40-frame H.264 mp4."""
    root = str(tmp_path_factory.mktemp("videos"))
    entries = folder_entries(root, [40, 5])
    write_video(os.path.join(root, "v.mkv"), 40)
    write_video(os.path.join(root, "v.mp4"), 40, codec="libx264")
    entries += [ManifestEntry("v.mkv", 2), ManifestEntry("v.mp4", 0)]
    lists = make_dataset(root, {"train": entries, "val": entries, "test": entries})
    return root, lists


# ----------------------------------------------------------------------------- train


@pytest.mark.parametrize("index", [0, 2])  # frame folder, video file
def test_train_window_stride_and_uniform_start(data, index):
    dataset = build_dataset(cfg_for(data), "train")
    starts = []
    for epoch in range(60):
        dataset.set_epoch(epoch)
        clip, label, returned = dataset[index]
        assert clip.shape == (3, 4, 32, 32) and clip.dtype == torch.float32
        assert (label, returned) == (dataset.entries[index].label, index)
        ids = frame_ids(clip)
        assert ids == [ids[0] + 2 * k for k in range(4)]  # every 2nd frame of a window of 8
        starts.append(ids[0])
    assert min(starts) >= 0 and max(starts) <= 40 - 8
    assert len(set(starts)) > 15  # spread over the 33 possible starts


def test_train_short_video_wraps_around(data):
    dataset = build_dataset(cfg_for(data), "train")
    seen = set()
    for epoch in range(30):
        dataset.set_epoch(epoch)
        ids = frame_ids(dataset[1][0])  # 5 frames, window 8
        assert ids == [(ids[0] + 2 * k) % 5 for k in range(4)]
        seen.add(ids[0])
    assert seen == set(range(5))


def test_train_mp4_frames(data):
    dataset = build_dataset(cfg_for(data), "train")
    ids = frame_ids(dataset[3][0])  # lossy codec: the green code survives within rounding
    assert ids == [ids[0] + 2 * k for k in range(4)]


def test_train_crop_flip_and_jitter(data):
    dataset = build_dataset(cfg_for(data, **{"DATA.TRAIN_JITTER_SCALES_RELATIVE": [1.25, 1.25],
                                             "DATA.TRAIN_JITTER_ASPECT_RELATIVE": [1.0, 1.0]}), "train")
    flips = set()
    for epoch in range(20):
        dataset.set_epoch(epoch)
        clip = dataset[0][0]
        # Area 1.25 of 48 x 64 as a square: side 62 > 48 -> clipped to the full height.
        top, bottom = row_range(clip)
        assert top < 1.5 and bottom > HEIGHT - 2.5
        first, last = column_range(clip)
        flipped = first > last
        flips.add(flipped)
        left, right = (last, first) if flipped else (first, last)
        assert -0.5 < left < 3.5 and WIDTH - 4.5 < right < WIDTH + 0.5  # width 62 of 64
    assert flips == {True, False}


def test_train_no_flip_when_disabled(data):
    dataset = build_dataset(cfg_for(data, **{"DATA.RANDOM_FLIP": False}), "train")
    for epoch in range(10):
        dataset.set_epoch(epoch)
        first, last = column_range(dataset[0][0])
        assert first < last


def test_train_crops_vary_in_scale_and_position(data):
    dataset = build_dataset(cfg_for(data), "train")
    widths, lefts = [], []
    for epoch in range(40):
        dataset.set_epoch(epoch)
        first, last = sorted(column_range(dataset[0][0]))
        assert -0.5 < first and last < WIDTH + 0.5
        widths.append(last - first)
        lefts.append(first)
    assert min(widths) < 0.5 * WIDTH and max(widths) > 0.8 * WIDTH
    assert max(lefts) - min(lefts) > 10


def test_normalisation_uses_mean_and_std(data):
    plain = build_dataset(cfg_for(data, **{"DATA.RANDOM_FLIP": False}), "val")[0][0]
    mean, std = [0.5, 0.25, 0.125], [0.5, 2.0, 0.25]
    normed = build_dataset(cfg_for(data, **{"DATA.MEAN": mean, "DATA.STD": std}), "val")[0][0]
    expected = (plain - torch.tensor(mean).view(3, 1, 1, 1)) / torch.tensor(std).view(3, 1, 1, 1)
    assert torch.allclose(normed, expected, atol=1e-5)


def test_test_views_are_uint8_pixels_normalised_like_clips(data):
    """Test views are raw 0-255 pixels whatever DATA.MEAN / STD; ``normalize_uint8`` (the
    engine's step) turns them into what the worker-side normalisation gives."""
    mean, std = [0.5, 0.25, 0.125], [0.5, 2.0, 0.25]
    raw = build_dataset(cfg_for(data), "test")[0][0]
    views = build_dataset(cfg_for(data, **{"DATA.MEAN": mean, "DATA.STD": std}), "test")[0][0]
    assert views.dtype == torch.uint8 and torch.equal(views, raw)
    normed = transforms.normalize_uint8(views, mean, std)
    assert normed.dtype == torch.float32 and normed.shape == views.shape
    expected = (views / 255.0 - torch.tensor(mean).view(3, 1, 1, 1)) / torch.tensor(std).view(3, 1, 1, 1)
    assert torch.allclose(normed, expected, atol=1e-5)
    for view in range(views.shape[0]):  # the same maths as the train / val clips
        frames = views[view].permute(1, 0, 2, 3)  # T x C x H x W
        assert torch.equal(normed[view], transforms.normalize_clip(frames, mean, std))


# ----------------------------------------------------------------------------- val


def test_val_centre_clip_and_centre_crop(data):
    dataset = build_dataset(cfg_for(data), "val")
    clip, label, index = dataset[0]
    assert clip.shape == (3, 4, 32, 32) and (label, index) == (0, 0)
    assert frame_ids(clip) == [16, 18, 20, 22]  # centre window of 8 in 40 frames
    assert column_range(clip) == pytest.approx((16, 47), abs=0.1)  # centre 32 of 64 columns
    assert row_range(clip) == pytest.approx((8, 39), abs=0.1)
    assert frame_ids(dataset[2][0]) == [16, 18, 20, 22]  # the video file
    assert frame_ids(dataset[1][0]) == [0, 2, 4, 1]  # 5 frames: wraps


def test_val_resizes_short_side(data):
    clip = build_dataset(cfg_for(data, **{"DATA.VAL_SHORT_SIDE": 24, "DATA.VAL_CROP_SIZE": 24}), "val")[0][0]
    assert clip.shape == (3, 4, 24, 24)
    # Half-size frame (24 x 32): the centre 24 columns are source columns 8..56.
    first, last = column_range(clip)
    assert 7 < first < 10 and 54 < last < 57


# ----------------------------------------------------------------------------- test


def test_test_views_clip_starts_and_crops(data):
    dataset = build_dataset(cfg_for(data), "test")
    for index in (0, 2):  # frame folder and video file
        views, label, video_index = dataset[index]
        assert views.shape == (9, 3, 4, 48, 48) and views.dtype == torch.uint8  # normalised by the engine
        assert (label, video_index) == (dataset.entries[index].label, index)
        for view in range(9):
            clip, crop = divmod(view, 3)
            start = [0, 16, 32][clip]  # 3 starts spread over 40 frames, window 8
            assert frame_ids(views[view]) == [start + 2 * k for k in range(4)]
            left = [0, 8, 16][crop]  # left / centre / right squares of 48 in 64 columns
            assert column_range(views[view]) == pytest.approx((left, left + 47), abs=0.1)
            assert row_range(views[view]) == pytest.approx((0, 47), abs=0.1)


def test_test_views_portrait_crops_top_centre_bottom(tmp_path):
    root = str(tmp_path)
    write_frame_folder(os.path.join(root, "p"), 12, height=64, width=48)
    lists = make_dataset(root, {"test": [ManifestEntry("p", 1, 12)]})
    views = build_dataset(small_cfg(lists, root, **{"TEST.NUM_ENSEMBLE_VIEWS": 1}), "test")[0][0]
    assert views.shape == (3, 3, 4, 48, 48)
    assert [round(row_range(v)[0]) for v in views] == [0, 8, 16]
    assert all(frame_ids(v) == [2, 4, 6, 8] for v in views)  # centre window of 8 in 12


def test_test_full_frame_and_resize(data):
    views = build_dataset(cfg_for(data, **{"TEST.FULL_FRAME": True}), "test")[0][0]
    assert views.shape == (3, 3, 4, 48, 64)  # one view per temporal clip, whole frame
    assert column_range(views[0]) == pytest.approx((0, 63), abs=0.1)
    small = build_dataset(cfg_for(data, **{"DATA.TEST_CROP_SIZE": 24}), "test")[0][0]
    assert small.shape == (9, 3, 4, 24, 24)  # short side resized to 24, then 3 squares


def test_test_decodes_each_frame_once(data, monkeypatch):
    decoded = []
    original = decode.FrameFolderReader._decode

    def counting(self, file):
        decoded.append(file)
        return original(self, file)

    monkeypatch.setattr(decode.FrameFolderReader, "_decode", counting)
    cfg = cfg_for(data, **{"TEST.NUM_ENSEMBLE_VIEWS": 10})
    views = build_dataset(cfg, "test")[0][0]
    assert views.shape[0] == 30
    assert len(decoded) == len(set(decoded))  # no frame twice
    starts = [0, 4, 7, 11, 14, 18, 21, 25, 28, 32]  # 10 starts over 40 frames, window 8
    needed = {s + 2 * k for s in starts for k in range(4)}
    assert len(decoded) == len(needed) < 10 * 4


# ----------------------------------------------------------------------------- determinism


def test_same_seed_and_epoch_same_clip_new_epoch_new_clip(data):
    first = build_dataset(cfg_for(data), "train")
    second = build_dataset(cfg_for(data), "train")
    for epoch in (0, 3):
        first.set_epoch(epoch)
        second.set_epoch(epoch)
        assert all(torch.equal(first[i][0], second[i][0]) for i in range(len(first)))
    first.set_epoch(0)
    second.set_epoch(1)
    assert not torch.equal(first[0][0], second[0][0])
    other_seed = build_dataset(cfg_for(data, RNG_SEED=5), "train")
    assert not torch.equal(first[0][0], other_seed[0][0])


# ----------------------------------------------------------------------------- video decoding


def test_pyav_fallback_when_decord_fails(data, monkeypatch):
    decord = pytest.importorskip("decord")  # installed where it has wheels (setup.py)

    root, _ = data

    def broken(*args, **kwargs):
        raise RuntimeError("decord is broken")

    monkeypatch.setattr(decord, "VideoReader", broken)
    reader = decode.VideoFileReader(os.path.join(root, "v.mkv"))
    assert reader.backend == "pyav" and reader.num_frames == 40  # counted from packets
    frames = reader.read([5, 1, 5, 39])
    assert frames.shape == (4, 3, HEIGHT, WIDTH) and frames.dtype == torch.uint8
    assert [int(f[1].float().mean()) // 4 for f in frames] == [5, 1, 5, 39]
    assert reader.frames_decoded == 40  # sequential decoding up to the last frame needed
    views = build_dataset(cfg_for(data), "test")[2][0]
    assert frame_ids(views[3]) == [16, 18, 20, 22]


def test_pyav_fallback_when_decord_fails_to_decode(data, monkeypatch):
    pytest.importorskip("decord")
    root, _ = data

    def broken(self, indices):
        raise decode.DecodeError("decord cannot decode this")

    monkeypatch.setattr(decode.DecordReader, "read", broken)
    reader = decode.VideoFileReader(os.path.join(root, "v.mkv"))
    assert reader.backend == "decord"
    frames = reader.read([3, 4])
    assert reader.backend == "pyav"
    assert [int(f[1].float().mean()) // 4 for f in frames] == [3, 4]


def test_pyav_stream_shorter_than_expected_is_a_decode_error(data):
    root, _ = data
    reader = decode.PyAVReader(os.path.join(root, "v.mkv"))
    reader.num_frames = 45  # as if the container claimed more frames than it holds
    with pytest.raises(decode.DecodeError, match="ends before frame 44"):
        reader.read([2, 44])


@pytest.mark.parametrize("name", ["v.mkv", "v.mp4"])
def test_pyav_reads_in_order_decode_each_frame_once_and_equal_fresh_reads(data, name):
    """Sliding windows (predict --timeline, extract_features --window-stride) read a long
    video in order: PyAV goes on from where it stopped instead of decoding from frame 0
    for every window (quadratic in the video's length); a read told where the next one
    starts (keep_from) keeps the frames they share. A read that goes back to a frame not
    kept starts over; every read equals the same read by a fresh reader."""
    root, _ = data
    path = os.path.join(root, name)
    requests = [([0, 3, 9], 9), ([9, 10, 15], 16), ([16, 18, 18, 24], 30), ([30, 39], None),
                ([5, 8], 8), ([8, 12], None), ([11, 12], None), ([39, 2], None)]
    with decode.PyAVReader(path) as reader:
        for number, (indices, next_start) in enumerate(requests):
            reader.keep_from(next_start)
            with decode.PyAVReader(path) as fresh:
                assert torch.equal(reader.read(indices), fresh.read(indices))
            if number == 3:  # in order so far, overlapping at frame 9: frames 0..39, each decoded once
                assert reader.frames_decoded == 40
    # [5, 8] went back: 0..8 again; [8, 12] goes on (8 kept): 9..12; [11, 12] went back to a
    # frame not kept (no keep_from): 0..12 again; [39, 2]: 0..39 again
    assert reader.frames_decoded == 40 + 9 + 4 + 13 + 40
    with pytest.raises(decode.DecodeError, match="ends before frame 44"):
        short = decode.PyAVReader(path)
        short.read([1])
        short.num_frames = 45  # as if the container claimed more frames than it holds
        short.read([2, 44])
    assert short.read([0, 39]).shape[0] == 2  # after the error it decodes from the start again


def test_backends_agree(data):
    pytest.importorskip("decord")
    root, _ = data
    for name in ("v.mkv", "v.mp4"):
        path = os.path.join(root, name)
        indices = [0, 7, 7, 20, 39]
        with decode.VideoFileReader(path, "decord") as a, decode.VideoFileReader(path, "pyav") as b:
            assert a.backend == "decord" and b.backend == "pyav" and a.num_frames == b.num_frames == 40
            assert (a.read(indices).int() - b.read(indices).int()).abs().max() <= 3


@pytest.mark.parametrize("decoder", ["torchvision", "pil"])
def test_jpeg_decoders_agree(data, decoder):
    root, _ = data
    auto = decode.FrameFolderReader(os.path.join(root, "v0"), 40).read([3, 1, 3])
    other = decode.FrameFolderReader(os.path.join(root, "v0"), 40, decoder).read([3, 1, 3])
    assert other.shape == auto.shape == (3, 3, HEIGHT, WIDTH)
    assert (auto.int() - other.int()).abs().max() <= 1


# ----------------------------------------------------------------------------- manifests


def test_manifest_errors_name_file_and_line(tmp_path):
    root = str(tmp_path)
    lists = make_dataset(root, {"val": [ManifestEntry("v0", 1, 4)]})
    cfg = small_cfg(lists, root)
    with pytest.raises(FileNotFoundError, match=r"train\.txt"):
        build_dataset(cfg, "train")
    with open(os.path.join(lists, "train.txt"), "w") as handle:
        handle.write("v0 4 1\nv1 4 7\n")  # 3 classes
    with pytest.raises(ManifestError, match=r"train\.txt:2.*label 7"):
        build_dataset(cfg, "train")
    with open(os.path.join(lists, "train.txt"), "w") as handle:
        handle.write("v0 4 1\nnot-a-line\n")
    with pytest.raises(ManifestError, match=r"train\.txt:2"):
        build_dataset(cfg, "train")
    with pytest.raises(ValueError, match="split"):
        build_dataset(cfg, "training")
    with pytest.raises(ValueError, match="DATA.DECODING_BACKEND"):
        build_dataset(small_cfg(lists, root, **{"DATA.DECODING_BACKEND": "opencv"}), "val")
    with pytest.raises(ValueError, match="DATA.JPEG_DECODER"):
        build_dataset(small_cfg(lists, root, **{"DATA.JPEG_DECODER": "turbo"}), "val")
