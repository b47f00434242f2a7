"""build_loader: batch formats, per-process batch sizes, sharding, epochs and seeding."""

import os

import pytest
import torch
import torch.distributed as dist

from cgnl_video.data import ManifestEntry, ShardSampler, build_loader, set_loader_epoch
from cgnl_video.data import loader as loader_module
from data_fixtures import (
    cfg_for,
    folder_entries,
    frame_ids,
    make_dataset,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # torch on one thread in every test


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Seven 16-frame folders (train/val/test) plus a missing video in test."""
    root = str(tmp_path_factory.mktemp("loader"))
    entries = folder_entries(root, [16] * 7)
    lists = make_dataset(root, {
        "train": entries, "val": entries, "test": entries + [ManifestEntry("gone.mp4", 2)],
    })
    return root, lists


def test_batch_formats_of_every_split(data):
    cfg = cfg_for(data, **{"TRAIN.BATCH_SIZE": 2, "TEST.BATCH_SIZE": 3})
    train = list(build_loader(cfg, "train"))
    assert len(train) == 3  # 7 clips, batches of 2, last one dropped
    clips, labels, indices = train[0]
    assert clips.shape == (2, 3, 4, 32, 32) and clips.dtype == torch.float32
    assert labels.dtype == indices.dtype == torch.long and labels.shape == indices.shape == (2,)
    val = list(build_loader(cfg, "val"))
    assert [len(b[1]) for b in val] == [2, 2, 2, 1]  # every clip, in manifest order
    assert torch.cat([b[2] for b in val]).tolist() == list(range(7))
    test = list(build_loader(cfg, "test"))
    assert [len(b[0]) for b in test] == [3, 3, 2]
    views, labels, indices = test[-1]
    assert isinstance(views, list) and labels.dtype == indices.dtype == torch.long
    assert views[0].shape == (9, 3, 4, 48, 48) and views[0].dtype == torch.uint8
    assert views[1].shape == (0, 3, 4, 48, 48) and indices.tolist() == [6, 7]  # unreadable: no views
    assert views[1].dtype == torch.uint8


def test_global_train_batch_must_divide_over_processes_the_test_batch_need_not(data, monkeypatch):
    monkeypatch.setattr(loader_module, "world_and_rank", lambda: (2, 0))
    with pytest.raises(ValueError, match="TRAIN.BATCH_SIZE"):
        build_loader(cfg_for(data, **{"TRAIN.BATCH_SIZE": 3}), "train")
    assert build_loader(cfg_for(data, **{"TEST.BATCH_SIZE": 3}), "test").batch_size == 1
    assert build_loader(cfg_for(data, **{"TRAIN.BATCH_SIZE": 4}), "train").batch_size == 2


def test_train_split_smaller_than_a_batch_is_an_error(data):
    with pytest.raises(ValueError, match="fewer than one batch"):
        build_loader(cfg_for(data, **{"TRAIN.BATCH_SIZE": 8}), "train")


def test_test_videos_on_exactly_one_rank(data, monkeypatch):
    seen = []
    for rank in range(3):
        monkeypatch.setattr(loader_module, "world_and_rank", lambda rank=rank: (3, rank))
        loader = build_loader(cfg_for(data, **{"TEST.BATCH_SIZE": 3}), "test")
        seen += [int(i) for _, _, indices in loader for i in indices]
    assert sorted(seen) == list(range(8))
    assert sorted(i for r in range(3) for i in ShardSampler(8, 3, r)) == list(range(8))


def test_train_ranks_get_different_samples(data, monkeypatch):
    shards = []
    for rank in range(2):
        monkeypatch.setattr(loader_module, "world_and_rank", lambda rank=rank: (2, rank))
        loader = build_loader(cfg_for(data, **{"TRAIN.BATCH_SIZE": 2}), "train")
        set_loader_epoch(loader, 0)
        shards.append(list(loader.sampler))
    assert len(shards[0]) == len(shards[1]) == 4  # 7 padded to 8
    assert set(shards[0]) | set(shards[1]) == set(range(7))


def _epoch_batches(loader, epochs):
    out = []
    for epoch in epochs:
        set_loader_epoch(loader, epoch)
        out.append([(clips, indices) for clips, _, indices in loader])
    return out


def test_same_clips_whatever_the_worker_count(data):
    reference = _epoch_batches(build_loader(cfg_for(data), "train"), [0, 1])
    workers = _epoch_batches(build_loader(cfg_for(data, **{"DATA_LOADER.NUM_WORKERS": 2}), "train"), [0, 1])
    for ref_epoch, worker_epoch in zip(reference, workers):
        for (a, ia), (b, ib) in zip(ref_epoch, worker_epoch):
            assert torch.equal(ia, ib) and torch.equal(a, b)
    # A new epoch reshuffles and redraws the clips (seen by the persistent workers).
    first = {int(i): frame_ids(c) for clips, idx in workers[0] for c, i in zip(clips, idx)}
    second = {int(i): frame_ids(c) for clips, idx in workers[1] for c, i in zip(clips, idx)}
    assert [b[1].tolist() for b in workers[0]] != [b[1].tolist() for b in workers[1]]
    common = set(first) & set(second)
    assert any(first[i] != second[i] for i in common)


def test_test_views_from_worker_processes(data):
    """Views are built in shared memory in the workers; the same values arrive."""
    batches = []
    for workers in (0, 1):
        loader = build_loader(cfg_for(data, **{"DATA_LOADER.NUM_WORKERS": workers, "TEST.BATCH_SIZE": 4}), "test")
        batches.append([views for views_list, _, _ in loader for views in views_list])
    assert len(batches[0]) == len(batches[1]) == 8
    assert all(torch.equal(a, b) for a, b in zip(*batches))
    assert all(views.is_shared() for views in batches[1] if views.numel())
    assert all(views.dtype == torch.uint8 for views in batches[1])


def test_loader_settings(data):
    loader = build_loader(cfg_for(data, **{"DATA_LOADER.NUM_WORKERS": 1}), "train")
    assert loader.drop_last and loader.persistent_workers
    assert loader.pin_memory == torch.cuda.is_available()
    assert not build_loader(cfg_for(data), "val").drop_last
    assert build_loader(cfg_for(data, **{"DATA_LOADER.NUM_WORKERS": 1}), "test").prefetch_factor == 1


def test_test_views_are_not_pinned(data, monkeypatch):
    """Pinning copies each 189 MB uint8 test video into page-locked memory, and the
    engine then concatenates the views of a batch into ordinary memory anyway: only the
    train / val loaders pin (DATA_LOADER.PIN_MEMORY, with CUDA)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    cfg = cfg_for(data, **{"DATA_LOADER.PIN_MEMORY": True})
    assert build_loader(cfg, "train").pin_memory and build_loader(cfg, "val").pin_memory
    assert not build_loader(cfg, "test").pin_memory
    cfg = cfg_for(data, **{"DATA_LOADER.PIN_MEMORY": False})
    assert not build_loader(cfg, "train").pin_memory and not build_loader(cfg, "val").pin_memory

def test_with_an_initialised_process_group(data, tmp_path):
    dist.init_process_group("gloo", init_method=f"file://{os.path.join(tmp_path, 'store')}", rank=0, world_size=1)
    try:
        assert loader_module.world_and_rank() == (1, 0)
        loader = build_loader(cfg_for(data), "train")
        assert isinstance(loader.sampler, torch.utils.data.DistributedSampler)
        assert len(list(loader)) == 3
    finally:
        dist.destroy_process_group()
