"""Checkpoints: atomic save, keep-K, auto-resume choice, weights-only loading, RNG states."""

import logging
import os
import random

import numpy as np
import pytest
import torch
from torch import nn

from cgnl_video.config import load_config
from cgnl_video.engine import checkpoint as cu
from cgnl_video.engine.optim import EpochLRScheduler, build_optimizer
from cgnl_video.engine.precision import build_grad_scaler
from cgnl_video.engine.resume import checkpoint_state, resume_or_initialise, save_training_state
from cgnl_video.utils import distributed as du
from cgnl_video.utils.logging import get_logger


def _state(model=None):
    cfg = load_config(None, [])
    model = model or nn.Linear(3, 2)
    optimizer = build_optimizer(model, cfg)
    model(torch.randn(4, 3)).sum().backward()
    optimizer.step()  # creates momentum buffers
    scheduler = EpochLRScheduler(optimizer, cfg)
    scheduler.step(1.25)
    return checkpoint_state(model, optimizer, scheduler, build_grad_scaler(cfg, torch.device("cpu")), 2, cfg)


def test_full_state_round_trips_through_the_weights_only_loader(tmp_path):
    state = _state()
    path = cu.save_checkpoint(str(tmp_path), 2, state, keep=3)
    loaded = torch.load(path, weights_only=True)  # would raise on any non-allowlisted object
    assert loaded["epoch"] == 2 and loaded["scheduler"]["last_epoch"] == 1.25
    assert "SOLVER:" in loaded["cfg"]
    assert torch.equal(loaded["model"]["weight"], state["model"]["weight"])
    assert loaded["optimizer"]["state"][0]["momentum_buffer"].shape == (2, 3)


def test_keep_last_k_and_temp_files_are_ignored(tmp_path):
    out = str(tmp_path)
    for epoch in range(1, 6):
        cu.save_checkpoint(out, epoch, {"model": {"w": torch.ones(1) * epoch}}, keep=2)
    # a save killed half-way leaves a hidden temporary file behind
    open(os.path.join(cu.checkpoint_dir(out), ".checkpoint_epoch_00006.pyth.abc.tmp"), "wb").close()
    names = [os.path.basename(p) for p in cu.list_checkpoints(out)]
    assert names == ["checkpoint_epoch_00004.pyth", "checkpoint_epoch_00005.pyth"]
    assert cu.load_last_checkpoint(out)["model"]["w"].item() == 5


def test_interrupted_save_leaves_the_previous_checkpoint(tmp_path):
    out = str(tmp_path)
    cu.save_checkpoint(out, 1, {"model": {"w": torch.zeros(1)}}, keep=3)

    class Boom:
        def __reduce__(self):
            raise RuntimeError("killed while writing")

    with pytest.raises(RuntimeError):
        cu.save_checkpoint(out, 2, {"model": {"w": torch.zeros(1)}, "x": Boom()}, keep=3)
    assert [os.path.basename(p) for p in cu.list_checkpoints(out)] == ["checkpoint_epoch_00001.pyth"]
    assert os.listdir(cu.checkpoint_dir(out)) == ["checkpoint_epoch_00001.pyth"]


def test_unreadable_newest_checkpoint_falls_back_to_the_previous(tmp_path):
    out = str(tmp_path)
    cu.save_checkpoint(out, 1, {"model": {"w": torch.zeros(1)}}, keep=3)
    with open(cu.checkpoint_path(out, 2), "wb") as handle:
        handle.write(b"truncated")
    last = cu.load_last_checkpoint(out)
    assert last["path"] == cu.checkpoint_path(out, 1)
    assert cu.load_last_checkpoint(str(tmp_path / "empty")) is None


def test_rng_states_restore_every_generator(tmp_path):
    du.seed_everything(3)
    states = du.get_rng_states()
    path = cu.save_checkpoint(str(tmp_path), 1, {"rng": states}, keep=1)
    expected = (random.random(), np.random.rand(), torch.rand(1).item())
    du.seed_everything(99)
    du.set_rng_states(cu.load_checkpoint(path)["rng"])
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected


def _fake_gpus(monkeypatch, count, current):
    """torch.cuda as ``count`` visible GPUs (``current`` the current one), each generator
    state a distinct tensor; returns the calls that set generator states."""
    calls = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: current)
    monkeypatch.setattr(torch.cuda, "get_rng_state_all", lambda: [torch.full((4,), i, dtype=torch.uint8)
                                                                   for i in range(count)])
    monkeypatch.setattr(torch.cuda, "set_rng_state_all", lambda states: calls.append(("all", len(states))))
    monkeypatch.setattr(torch.cuda, "set_rng_state", lambda state, device: calls.append((int(state[0]), device)))
    return calls


def _warnings_of(fn):
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    get_logger().addHandler(handler)
    try:
        fn()
    finally:
        get_logger().removeHandler(handler)
    return [r.getMessage() for r in records if r.levelno == logging.WARNING]


def test_cuda_generators_are_restored_all_when_the_gpu_count_matches(monkeypatch):
    _fake_gpus(monkeypatch, count=8, current=3)
    states = du.get_rng_states()
    calls = _fake_gpus(monkeypatch, count=8, current=3)
    assert _warnings_of(lambda: du.set_rng_states(states)) == [] and calls == [("all", 8)]


def test_another_gpu_count_restores_the_used_gpus_generator_and_warns_once(monkeypatch):
    """Saved by a process that saw 8 GPUs and computed on cuda:3, resumed by one that sees
    1 (a launcher setting CUDA_VISIBLE_DEVICES per process): cuda:3's generator goes to cuda:0."""
    _fake_gpus(monkeypatch, count=8, current=3)
    states = du.get_rng_states()
    calls = _fake_gpus(monkeypatch, count=1, current=0)
    (warning,) = _warnings_of(lambda: du.set_rng_states(states))
    assert calls == [(3, 0)]
    assert "8 GPU(s)" in warning and "sees 1" in warning and "cuda:3" in warning
    # an older checkpoint does not say which GPU it used: nothing restored, and it says so
    del states["cuda_device"]
    calls.clear()
    (warning,) = _warnings_of(lambda: du.set_rng_states(states))
    assert calls == [] and "8 GPU(s)" in warning and "not restored" in warning


def test_model_weights_load_into_a_wrapped_model_and_bare_state_dicts(tmp_path):
    source = nn.Linear(3, 2)
    path = str(tmp_path / "bare.pyth")
    torch.save(source.state_dict(), path)
    target = nn.Sequential()
    target.module = nn.Linear(3, 2)  # looks like a DDP wrapper
    cu.load_model_weights(target, path)
    assert torch.equal(target.module.weight, source.weight)


def _training_parts(cfg, seed):
    torch.manual_seed(seed)
    model = nn.Linear(3, 2)
    optimizer = build_optimizer(model, cfg)
    return model, optimizer, EpochLRScheduler(optimizer, cfg), build_grad_scaler(cfg, torch.device("cpu"))


def test_the_last_checkpoint_is_resumed_before_the_weights_file_initialises(tmp_path):
    """TRAIN.CHECKPOINT_FILE_PATH initialises the weights (epoch 0) when there is nothing to
    resume or TRAIN.AUTO_RESUME is off; otherwise the last checkpoint saved by the run wins."""
    torch.manual_seed(1)
    init = nn.Linear(3, 2)
    init_file = str(tmp_path / "init.pyth")
    torch.save({"model": init.state_dict()}, init_file)
    out = str(tmp_path / "run")
    opts = ["OUTPUT_DIR", out, "TRAIN.CHECKPOINT_FILE_PATH", init_file, "TRAIN.CHECKPOINT_KEEP", "1"]
    cfg = load_config(None, opts)

    model, *parts = _training_parts(cfg, seed=2)
    assert resume_or_initialise(cfg, model, *parts) is None
    assert torch.equal(model.weight, init.weight)
    with torch.no_grad():
        model.weight.add_(1.0)  # as if trained
    paths = [save_training_state(cfg, model, *parts, epochs_done) for epochs_done in (1, 2)]
    assert cu.list_checkpoints(out) == paths[1:]  # TRAIN.CHECKPOINT_KEEP 1

    model_resumed, *parts = _training_parts(cfg, seed=3)
    state = resume_or_initialise(cfg, model_resumed, *parts)
    assert (state["epoch"], state["path"]) == (2, paths[1]) and torch.equal(model_resumed.weight, model.weight)

    no_resume = load_config(None, opts + ["TRAIN.AUTO_RESUME", "False"])
    model_fresh, *parts = _training_parts(no_resume, seed=3)
    assert resume_or_initialise(no_resume, model_fresh, *parts) is None
    assert torch.equal(model_fresh.weight, init.weight)


def test_resuming_reads_the_last_checkpoint_once(tmp_path, monkeypatch):
    """One process reads the newest checkpoint once to resume (weights, optimizer,
    scheduler from the same load), not once to choose it and again for the weights."""
    out = str(tmp_path / "run")
    cfg = load_config(None, ["OUTPUT_DIR", out])
    model, *parts = _training_parts(cfg, seed=2)
    path = save_training_state(cfg, model, *parts, 1)
    reads = []
    original = cu.load_checkpoint
    monkeypatch.setattr(cu, "load_checkpoint", lambda p, *a, **k: reads.append(p) or original(p, *a, **k))
    resumed, *parts = _training_parts(cfg, seed=3)
    state = resume_or_initialise(cfg, resumed, *parts)
    assert state["path"] == path and torch.equal(resumed.weight, model.weight)
    assert reads == [path]
