"""Sampling policies and datasets built from entries: the one draw of a training clip's
random choices (pinned to the clips of earlier releases), the worker and device paths
that share it, and datasets over entries that no manifest lists."""

import math
import os

import numpy as np
import pytest
import torch

from cgnl_video.data import (
    CentreClip,
    ManifestEntry,
    MultiView,
    RandomClip,
    VideoDataset,
    build_dataset,
    policy_from_config,
    transforms,
)
from data_fixtures import (
    cfg_for,
    folder_entries,
    frame_ids,
    make_dataset,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # torch on one thread in every test

#: the defaults of DATA: 32 frames x rate 2, scale 0.08-1.25, aspect 3/4-4/3, flip
DEFAULT_TRAIN = RandomClip(32, 2, 224, (0.08, 1.25), (0.75, 1.3333), True,
                           (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))

#: (seed, epoch, index, video frames, height, width) -> (window start, box (top, left, h, w), flip)
#: recorded from the sampler before it moved into RandomClip.draw, and equal to
#: ``independent_draw`` below: clips must not change for a given (seed, epoch, index).
PINNED = {
    (0, 0, 0, 300, 256, 340): (215, (0, 4, 256, 296), True),
    (0, 1, 0, 300, 256, 340): (40, (7, 0, 242, 220), False),
    (0, 0, 1, 300, 256, 340): (83, (0, 30, 256, 258), True),
    (42, 3, 17, 300, 256, 340): (130, (0, 10, 256, 272), False),
    (7, 2, 5, 40, 256, 340): (29, (13, 39, 184, 190), False),  # shorter than the window: wraps
    (1, 0, 3, 64, 240, 320): (0, (162, 43, 76, 93), True),  # exactly one window
    (3, 9, 100, 300, 340, 256): (28, (48, 0, 267, 256), False),  # portrait
}


def independent_draw(seed, epoch, index, video_frames, height, width, policy):
    """The documented sampling (docs/DATA_PIPELINE.md), written out from raw generator
    calls: a generator seeded from SeedSequence([seed, epoch, index]); start uniform in
    [0, n - window] (or [0, n - 1] for a short video); area fraction uniform in scale,
    aspect log-uniform in ratio, sides rounded and clipped to the frame; top, left
    uniform; flip when a uniform draw is below 1/2."""
    state = np.random.SeedSequence([seed, epoch, index]).generate_state(2, dtype=np.uint64)
    generator = torch.Generator().manual_seed(int(state[0]) ^ (int(state[1]) >> 1))

    def uniform():
        return float(torch.rand((), generator=generator))

    def integer(last):
        return int(torch.randint(0, last + 1, (), generator=generator))

    window = policy.num_frames * policy.sampling_rate
    start = integer(video_frames - window if video_frames >= window else video_frames - 1)
    (s0, s1), (r0, r1) = policy.scale, policy.ratio
    area = height * width * (s0 + (s1 - s0) * uniform())
    aspect = math.exp(math.log(r0) + (math.log(r1) - math.log(r0)) * uniform())
    box_w = min(max(1, round(math.sqrt(area * aspect))), width)
    box_h = min(max(1, round(math.sqrt(area / aspect))), height)
    top, left = integer(height - box_h), integer(width - box_w)
    flip = uniform() < 0.5 and policy.random_flip
    return start, (top, left, box_h, box_w), flip


def draw(policy, seed, epoch, index, video_frames, height, width):
    """RandomClip.draw with the item's generator; checks frame_size is asked once, for the clip."""
    from cgnl_video.data import sampling

    asked = []

    def frame_size(frames):
        asked.append(list(frames))
        return height, width

    choice = policy.draw(sampling.item_generator(seed, epoch, index), video_frames, frame_size)
    assert asked == [choice.frames]
    return choice


@pytest.mark.parametrize("key", sorted(PINNED))
def test_draw_gives_the_pinned_clips(key):
    start, box, flip = PINNED[key]
    assert independent_draw(*key, DEFAULT_TRAIN) == (start, box, flip)
    choice = draw(DEFAULT_TRAIN, *key)
    video_frames = key[3]
    assert choice.frames == [(start + 2 * k) % video_frames for k in range(32)]
    assert (choice.box, choice.flip) == (box, flip)


def test_draw_equals_the_documented_sampling():
    rng = np.random.default_rng(12)
    policies = [
        DEFAULT_TRAIN,
        RandomClip(4, 2, 32, (0.5, 1.0), (1.0, 1.0), False, (0.0,) * 3, (1.0,) * 3),
        RandomClip(8, 8, 112, (1.25, 1.25), (0.5, 2.0), True, (0.0,) * 3, (1.0,) * 3),
    ]
    for _ in range(60):
        policy = policies[int(rng.integers(len(policies)))]
        seed, epoch, index = (int(v) for v in rng.integers(0, 10_000, 3))
        frames, height, width = (int(v) for v in rng.integers([1, 16, 16], [400, 400, 400]))
        start, box, flip = independent_draw(seed, epoch, index, frames, height, width, policy)
        choice = draw(policy, seed, epoch, index, frames, height, width)
        assert choice.frames[0] == start and (choice.box, choice.flip) == (box, flip)


def test_turning_flip_off_changes_no_other_choice():
    plain = RandomClip(32, 2, 224, (0.08, 1.25), (0.75, 1.3333), False, (0.0,) * 3, (1.0,) * 3)
    for key, (start, box, _flip) in PINNED.items():
        choice = draw(plain, *key)
        assert (choice.frames[0], choice.box, choice.flip) == (start, box, False)


# ----------------------------------------------------------------------------- both paths, one draw


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Frame folders of 40, 5 and 23 intensity-coded frames (48 x 64)."""
    root = str(tmp_path_factory.mktemp("policies"))
    entries = folder_entries(root, [40, 5, 23])
    lists = make_dataset(root, {"train": entries, "val": entries, "test": entries})
    return root, lists, entries


def test_worker_and_device_paths_use_the_same_draw(data):
    """The worker's clip is the train transform of exactly the drawn frames, box and flip,
    and the device path's plan (DATA.DECODE_ON device) is that same draw."""
    dataset = build_dataset(cfg_for(data), "train")
    encoded = build_dataset(cfg_for(data, **{"DATA.DECODE_ON": "device"}), "train")
    policy = dataset.policy
    for epoch in (0, 1, 4):
        dataset.set_epoch(epoch)
        encoded.set_epoch(epoch)
        for index in range(len(dataset)):
            with dataset.open(index) as reader:
                choice = policy.draw(dataset.generator(index), reader.num_frames, lambda frames: (48, 64))
                frames = reader.read(choice.frames)
            expected = transforms.train_clip(frames, choice.box, policy.crop_size, choice.flip,
                                             policy.mean, policy.std)
            clip, _label, returned = dataset[index]
            assert returned == index and torch.equal(clip, expected)
            assert frame_ids(clip) == choice.frames
            sample, _label, returned = encoded[index]
            assert returned == index and sample.plan == choice


# ----------------------------------------------------------------------------- datasets from entries


def test_dataset_from_entries_equals_the_manifest_dataset(data):
    root, _, entries = data
    cfg = cfg_for(data)
    for split in ("train", "val", "test"):
        from_manifest = build_dataset(cfg, split)
        direct = VideoDataset(entries, ["a", "b", "c"], policy_from_config(cfg, split), root=root)
        assert direct.entries == from_manifest.entries and direct.policy == from_manifest.policy
        for index in range(len(entries)):
            assert torch.equal(direct[index][0], from_manifest[index][0])
            assert direct[index][1:] == from_manifest[index][1:]


def test_policy_from_config_reads_the_split_keys(data):
    cfg = cfg_for(data, **{"DATA.TRAIN_JITTER_SCALES_RELATIVE": [0.3, 0.9], "DATA.RANDOM_FLIP": False,
                           "TEST.NUM_SPATIAL_CROPS": 1, "TEST.FULL_FRAME": True})
    assert policy_from_config(cfg, "train") == RandomClip(4, 2, 32, (0.3, 0.9), (0.75, 1.3333), False,
                                                          (0.0,) * 3, (1.0,) * 3)
    assert policy_from_config(cfg, "val") == CentreClip(4, 2, 48, 32, (0.0,) * 3, (1.0,) * 3)
    assert policy_from_config(cfg, "test") == MultiView(4, 2, 48, 3, 1, True)
    with pytest.raises(ValueError, match="split must be one of"):
        policy_from_config(cfg, "training")


def test_entries_are_checked_against_the_classes(data):
    root, _, entries = data
    policy = CentreClip(4, 2, 48, 32, (0.0,) * 3, (1.0,) * 3)
    with pytest.raises(ValueError, match="v2 has label 2, not one of 2 classes"):
        VideoDataset(entries, ["a", "b"], policy, root=root)
    with pytest.raises(ValueError, match="no samples"):
        VideoDataset([], ["a"], policy, root=root)
    with pytest.raises(ValueError, match="DATA.JPEG_DECODER"):
        VideoDataset(entries, ["a", "b", "c"], policy, root=root, jpeg_decoder="turbo")


def test_scoring_inputs_writes_no_manifest(data, monkeypatch):
    """inference hands its inputs to the dataset directly: no temporary folder or manifest."""
    import tempfile

    from cgnl_video import inference

    root, _, entries = data

    def forbidden(*args, **kwargs):
        raise AssertionError("a temporary folder was created")

    monkeypatch.setattr(tempfile, "TemporaryDirectory", forbidden)
    monkeypatch.setattr(tempfile, "mkdtemp", forbidden)
    cfg = cfg_for(data)
    inputs = [ManifestEntry(os.path.join(root, e.path), 0, e.num_frames) for e in entries]
    dataset = inference.dataset_for(cfg, inputs, "test", ["x", "y", "z"])
    assert dataset.entries == inputs and dataset.classes == ["x", "y", "z"]
    assert torch.equal(dataset[0][0], build_dataset(cfg, "test")[0][0])
