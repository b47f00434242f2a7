"""SGD with parameter groups and the learning-rate schedule (CGNL paper, Sec. 4.2:
SGD, warmup, step decay; see docs/TRAINING.md).

The schedule is a pure function of the (fractional) epoch, ``lr_at(cfg, epoch)``,
set on the optimizer before every iteration, so a resumed run gets exactly the
learning rates of an uninterrupted one.
"""

import math
from typing import Dict, List

import torch
from fvcore.common.config import CfgNode
from torch import nn


def _policy_lr(cfg: CfgNode, epoch: float) -> float:
    s = cfg.SOLVER
    if s.LR_POLICY == "cosine":
        progress = min(epoch / s.MAX_EPOCH, 1.0)
        return s.COSINE_END_LR + (s.BASE_LR - s.COSINE_END_LR) * 0.5 * (1.0 + math.cos(math.pi * progress))
    if s.LR_POLICY == "steps_with_relative_lrs":
        index = max(i for i, start in enumerate(s.STEPS) if start <= epoch)
        return s.BASE_LR * s.LRS[index]
    raise ValueError(f"SOLVER.LR_POLICY: unknown policy {s.LR_POLICY!r}")


def lr_at(cfg: CfgNode, epoch: float) -> float:
    """Learning rate at fractional ``epoch`` (iteration i of n in epoch e: e + i / n).

    During the first SOLVER.WARMUP_EPOCHS the rate rises linearly from
    SOLVER.WARMUP_START_LR to the policy's value at the end of the warmup.
    """
    warmup = cfg.SOLVER.WARMUP_EPOCHS
    if epoch < warmup:
        start, end = cfg.SOLVER.WARMUP_START_LR, _policy_lr(cfg, warmup)
        return start + (end - start) * epoch / warmup
    return _policy_lr(cfg, epoch)


def _is_no_decay(name: str, param: nn.Parameter) -> bool:
    """Norm weights and biases (every parameter with at most one dimension)."""
    return param.ndim <= 1 or name.endswith(".bias")


def param_groups(model: nn.Module, cfg: CfgNode) -> List[Dict]:
    """Two groups: weights with SOLVER.WEIGHT_DECAY, and (with SOLVER.ZERO_WD_1D_PARAM)
    norm parameters and biases with BN.WEIGHT_DECAY. Frozen parameters are left out."""
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        if cfg.SOLVER.ZERO_WD_1D_PARAM and _is_no_decay(name, param):
            no_decay.append(param)
        else:
            decay.append(param)
    groups = [{"params": decay, "weight_decay": cfg.SOLVER.WEIGHT_DECAY}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": cfg.BN.WEIGHT_DECAY})
    return groups


def build_optimizer(model: nn.Module, cfg: CfgNode) -> torch.optim.SGD:
    """SGD with momentum SOLVER.MOMENTUM over ``param_groups``; LR starts at ``lr_at(cfg, 0)``."""
    return torch.optim.SGD(
        param_groups(model, cfg),
        lr=lr_at(cfg, 0.0),
        momentum=cfg.SOLVER.MOMENTUM,
        nesterov=cfg.SOLVER.NESTEROV,
        dampening=0.0,
    )


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Set the same learning rate on every parameter group."""
    for group in optimizer.param_groups:
        group["lr"] = lr


class EpochLRScheduler:
    """Per-iteration setter over ``lr_at``; its state is the last fractional epoch.

    ``step(epoch_float)`` is called before each iteration.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, cfg: CfgNode) -> None:
        self.optimizer = optimizer
        self.cfg = cfg
        self.last_epoch = 0.0
        self.last_lr = lr_at(cfg, 0.0)

    def step(self, epoch: float) -> float:
        self.last_epoch = float(epoch)
        self.last_lr = lr_at(self.cfg, self.last_epoch)
        set_lr(self.optimizer, self.last_lr)
        return self.last_lr

    def state_dict(self) -> Dict[str, float]:
        return {"last_epoch": self.last_epoch, "last_lr": self.last_lr}

    def load_state_dict(self, state: Dict[str, float]) -> None:
        self.step(state["last_epoch"])
