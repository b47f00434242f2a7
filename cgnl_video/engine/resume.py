"""The state of a training run in a checkpoint, and resuming from it: what
``fit`` saves after an epoch (model, optimizer, LR schedule, loss scaler, epoch,
every rank's RNG states, config) and how a restarted run picks it up again.

The file I/O (atomic save, keep-K, finding the last complete checkpoint,
weights-only loading) is ``engine.checkpoint``'s.
"""

import os
from typing import Dict, Optional

import torch
from fvcore.common.config import CfgNode
from torch import nn

from cgnl_video.engine import checkpoint as cu
from cgnl_video.engine.optim import EpochLRScheduler
from cgnl_video.utils import distributed as du
from cgnl_video.utils.logging import get_logger


def checkpoint_state(model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: EpochLRScheduler,
                     scaler: torch.amp.GradScaler, epochs_done: int, cfg: CfgNode) -> Dict:
    """Everything a resumed run needs; collective (gathers every rank's RNG states)."""
    return {
        "model": cu.unwrap_model(model).state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "grad_scaler": scaler.state_dict(),
        "epoch": epochs_done,
        "rng_states": du.all_gather_object(du.get_rng_states()),
        "world_size": du.get_world_size(),
        "cfg": cfg.dump(),
    }


def save_training_state(cfg: CfgNode, model: nn.Module, optimizer: torch.optim.Optimizer,
                        scheduler: EpochLRScheduler, scaler: torch.amp.GradScaler, epochs_done: int) -> str:
    """Checkpoint the run after ``epochs_done`` epochs into OUTPUT_DIR (collective: every
    rank calls it, rank 0 writes, keeping TRAIN.CHECKPOINT_KEEP); returns the path."""
    state = checkpoint_state(model, optimizer, scheduler, scaler, epochs_done, cfg)
    path = cu.checkpoint_path(cfg.OUTPUT_DIR, epochs_done)
    if du.is_main_process():
        cu.save_checkpoint(cfg.OUTPUT_DIR, epochs_done, state, cfg.TRAIN.CHECKPOINT_KEEP)
        get_logger().info("saved %s", path)
    du.barrier()
    return path


def resume_or_initialise(cfg: CfgNode, model: nn.Module, optimizer: torch.optim.Optimizer,
                         scheduler: EpochLRScheduler, scaler: torch.amp.GradScaler) -> Optional[Dict]:
    """Where training starts: the last checkpoint of OUTPUT_DIR with TRAIN.AUTO_RESUME
    (returned, as ``resume_from_last``), else the weights of TRAIN.CHECKPOINT_FILE_PATH
    if set (None is returned: the run starts at epoch 0), else the model as built."""
    resumed = resume_from_last(cfg, model, optimizer, scheduler, scaler) if cfg.TRAIN.AUTO_RESUME else None
    if resumed is None and cfg.TRAIN.CHECKPOINT_FILE_PATH:
        cu.load_model_weights(model, cfg.TRAIN.CHECKPOINT_FILE_PATH)
        get_logger().info("initialised the weights from %s", cfg.TRAIN.CHECKPOINT_FILE_PATH)
    return resumed


def resume_from_last(cfg: CfgNode, model: nn.Module, optimizer: torch.optim.Optimizer,
                     scheduler: EpochLRScheduler, scaler: torch.amp.GradScaler) -> Optional[Dict]:
    """Load the last complete checkpoint of OUTPUT_DIR (rank 0 chooses it); None if there is none.

    RNG states are restored later, right before the next epoch starts.
    """
    path = None
    if du.is_main_process():
        last = cu.load_last_checkpoint(cfg.OUTPUT_DIR)
        path = last["path"] if last else None
    path = du.broadcast_object(path)
    if path is None:
        return None
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"rank {du.get_rank()} cannot read checkpoint {path}: with several machines, "
            "OUTPUT_DIR must be on a file system that every machine shares"
        )
    state = cu.load_checkpoint(path)
    cu.unwrap_model(model).load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    if state["grad_scaler"] and scaler.is_enabled():  # empty when saved without fp16
        scaler.load_state_dict(state["grad_scaler"])
    state["path"] = path
    get_logger().info("resumed from %s (%d epochs done)", path, state["epoch"])
    return state


def restore_rng(state: Dict) -> None:
    """Restore this rank's RNG states from a checkpoint written by the same number of processes."""
    states = state["rng_states"]
    if len(states) == du.get_world_size():
        du.set_rng_states(states[du.get_rank()])
    else:
        get_logger().warning("checkpoint was written by %d processes, this run has %d: "
                             "RNG states are not restored", len(states), du.get_world_size())
