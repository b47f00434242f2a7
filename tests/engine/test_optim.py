"""Optimizer groups and the learning-rate schedule at chosen iterations."""

import math

import pytest
import torch
from torch import nn

from cgnl_video.config import load_config
from cgnl_video.engine.optim import EpochLRScheduler, build_optimizer, lr_at, param_groups


def _cfg(*opts):
    return load_config(None, list(opts))


def test_steps_schedule_with_linear_warmup_at_chosen_iterations():
    cfg = _cfg("SOLVER.BASE_LR", "0.01", "SOLVER.WARMUP_EPOCHS", "10.0", "SOLVER.WARMUP_START_LR", "0.001",
               "SOLVER.STEPS", "[0, 40, 70]", "SOLVER.LRS", "[1.0, 0.1, 0.01]", "SOLVER.MAX_EPOCH", "80")
    assert lr_at(cfg, 0.0) == pytest.approx(0.001)
    assert lr_at(cfg, 5.0) == pytest.approx(0.0055)  # halfway through the warmup
    # iteration 25 of 100 in epoch 2 (0-based): epoch 2.25
    assert lr_at(cfg, 2.25) == pytest.approx(0.001 + 0.009 * 2.25 / 10)
    assert lr_at(cfg, 10.0) == pytest.approx(0.01)
    assert lr_at(cfg, 39.99) == pytest.approx(0.01)
    assert lr_at(cfg, 40.0) == pytest.approx(0.001)
    assert lr_at(cfg, 69.5) == pytest.approx(0.001)
    assert lr_at(cfg, 70.0) == pytest.approx(0.0001)
    assert lr_at(cfg, 79.99) == pytest.approx(0.0001)


def test_cosine_schedule_and_warmup_ends_on_the_curve():
    cfg = _cfg("SOLVER.LR_POLICY", "cosine", "SOLVER.BASE_LR", "0.1", "SOLVER.COSINE_END_LR", "0.0",
               "SOLVER.MAX_EPOCH", "20", "SOLVER.WARMUP_EPOCHS", "2.0", "SOLVER.WARMUP_START_LR", "0.0")
    at_warmup_end = 0.05 * (1 + math.cos(math.pi * 2 / 20))
    assert lr_at(cfg, 1.0) == pytest.approx(at_warmup_end / 2)
    assert lr_at(cfg, 2.0) == pytest.approx(at_warmup_end)
    assert lr_at(cfg, 10.0) == pytest.approx(0.05)
    assert lr_at(cfg, 20.0) == pytest.approx(0.0)


def test_no_warmup_starts_at_base_lr():
    cfg = _cfg("SOLVER.WARMUP_EPOCHS", "0.0", "SOLVER.BASE_LR", "0.3")
    assert lr_at(cfg, 0.0) == pytest.approx(0.3)


def _toy_model():
    return nn.Sequential(nn.Conv3d(3, 4, 1), nn.BatchNorm3d(4), nn.Flatten(), nn.Linear(4, 2))


def test_param_groups_exclude_norm_and_bias_from_weight_decay():
    cfg = _cfg("SOLVER.WEIGHT_DECAY", "1e-4", "BN.WEIGHT_DECAY", "0.0")
    groups = param_groups(_toy_model(), cfg)
    assert [len(g["params"]) for g in groups] == [2, 4]  # conv + fc weights | conv/fc bias, BN w/b
    assert [g["weight_decay"] for g in groups] == [1e-4, 0.0]
    all_decay = param_groups(_toy_model(), _cfg("SOLVER.ZERO_WD_1D_PARAM", "False"))
    assert len(all_decay) == 1 and len(all_decay[0]["params"]) == 6


def test_sgd_settings_and_scheduler_state_round_trip():
    cfg = _cfg("SOLVER.WARMUP_EPOCHS", "2.0")
    optimizer = build_optimizer(_toy_model(), cfg)
    assert optimizer.defaults["momentum"] == 0.9
    scheduler = EpochLRScheduler(optimizer, cfg)
    scheduler.step(1.5)
    other = EpochLRScheduler(build_optimizer(_toy_model(), cfg), cfg)
    other.load_state_dict(scheduler.state_dict())
    assert all(g["lr"] == pytest.approx(lr_at(cfg, 1.5)) for g in other.optimizer.param_groups)
    assert isinstance(optimizer, torch.optim.SGD)
