"""Missing and corrupt frames or videos: replaced and counted in training, reported at test."""

import logging
import os

import pytest

from cgnl_video.data import ManifestEntry, build_dataset, build_loader, set_loader_epoch
from data_fixtures import (
    cfg_for,
    folder_entries,
    frame_ids,
    make_dataset,
    small_cfg,
    write_frame_folder,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # torch on one thread in every test


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """good0, good1 (40 frames); missing (no folder); corrupt (frame 3 is garbage);
    short (manifest says 40, folder has 10); broken.mp4 (random bytes)."""
    root = str(tmp_path_factory.mktemp("bad"))
    good = folder_entries(root, [40, 40])
    write_frame_folder(os.path.join(root, "corrupt"), 8)
    with open(os.path.join(root, "corrupt", "000003.jpg"), "wb") as handle:
        handle.write(b"not a jpeg" * 20)
    write_frame_folder(os.path.join(root, "short"), 10)
    with open(os.path.join(root, "broken.mp4"), "wb") as handle:
        handle.write(os.urandom(4096))
    bad = [
        ManifestEntry("missing", 1, 40),
        ManifestEntry("corrupt", 2, 8),
        ManifestEntry("short", 0, 40),
        ManifestEntry("broken.mp4", 1),
    ]
    entries = good + bad
    lists = make_dataset(root, {"train": entries, "val": entries, "test": entries})
    all_bad = make_dataset(os.path.join(root, "all_bad"), {"train": bad})
    return root, lists, all_bad


def bad_cfg(data, **overrides):
    """4 of the 6 samples are bad: allow long chains of replacements."""
    return cfg_for(data, **{"DATA.MAX_CONSECUTIVE_FAILURES": 40, **overrides})


@pytest.mark.parametrize("index", [2, 3, 5])
def test_train_replaces_unreadable_sample_and_counts_it(data, index, caplog):
    dataset = build_dataset(bad_cfg(data), "train")
    path = dataset.path_of(index)
    with caplog.at_level(logging.WARNING, logger="cgnl_video.data.dataset"):
        clip, label, returned = dataset[index]
        dataset[index]  # the same path again: counted, not logged again
    assert clip.shape == (3, 4, 32, 32)
    assert dataset.failure_count() >= 2
    assert label == dataset.entries[returned].label
    assert returned != index
    messages = [r.getMessage() for r in caplog.records if path in r.getMessage()]
    assert len(messages) == 1 and "replaced" in messages[0]


def test_short_folder_fails_when_a_missing_frame_is_needed(data):
    dataset = build_dataset(bad_cfg(data), "val")  # centre window 16..22 of the claimed 40
    clip, _, returned = dataset[4]
    assert returned in (0, 1) and dataset.failure_count() >= 1
    assert len(set(frame_ids(clip))) == 4


def test_many_failures_in_a_row_stop_with_a_clear_error(data):
    cfg = bad_cfg(data, **{"DATA.MAX_CONSECUTIVE_FAILURES": 5})
    cfg.DATA.PATH_PREFIX = "/nonexistent/root"
    dataset = build_dataset(cfg, "train")
    with pytest.raises(RuntimeError, match="MAX_CONSECUTIVE_FAILURES.*nonexistent"):
        dataset[0]
    assert dataset.failure_count() == cfg.DATA.MAX_CONSECUTIVE_FAILURES


def test_test_split_reports_unreadable_videos_with_zero_views(data, caplog):
    dataset = build_dataset(bad_cfg(data), "test")
    with caplog.at_level(logging.WARNING, logger="cgnl_video.data.dataset"):
        results = [dataset[i] for i in range(len(dataset))]
    assert [views.shape[0] for views, _, _ in results] == [9, 9, 0, 0, 0, 0]
    assert all(views.shape[1:] == (3, 4, 48, 48) for views, _, _ in results)
    assert [index for _, _, index in results] == list(range(6))  # never replaced
    assert dataset.failure_count() == 4
    logged = " ".join(r.getMessage() for r in caplog.records)
    for index in range(2, 6):
        assert dataset.path_of(index) in logged


def test_failures_counted_across_worker_processes(data):
    counts = []
    for workers in (0, 2):
        cfg = bad_cfg(data, **{"DATA_LOADER.NUM_WORKERS": workers, "TRAIN.BATCH_SIZE": 1})
        loader = build_loader(cfg, "train")
        labels = []
        for epoch in range(2):
            set_loader_epoch(loader, epoch)
            labels += [int(label) for _, label, _ in loader]
        counts.append((loader.dataset.failure_count(), labels))
    assert counts[0][0] > 0
    assert counts[0] == counts[1]  # same failures and the same replacements in worker processes


def test_every_sample_bad_stops_loader(data):
    root, _, all_bad = data
    loader = build_loader(small_cfg(all_bad, root), "train")
    with pytest.raises(RuntimeError, match="in a row could not be read"):
        next(iter(loader))
