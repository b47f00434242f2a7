"""The epoch loop of a training run (``fit``): loaders, optimizer, LR schedule
and loss scaler; resume (also mid-epoch) or initialise; then per epoch train
(``engine.train_loop``), validate every TRAIN.EVAL_PERIOD epochs
(``engine.validation``) and checkpoint every TRAIN.CHECKPOINT_PERIOD epochs
(``engine.resume``), both after the last epoch as well. The epoch's json_stats
records are written once its validation is done.

While it runs, SIGTERM / SIGUSR1 stop it at the next iteration (or validation batch)
with a mid-epoch checkpoint and ``RunInterrupted`` (``engine.preemption``).

Only rank 0 writes checkpoints, OUTPUT_DIR/json_stats.log and, with
TENSORBOARD.ENABLE, the same records as TensorBoard scalars (``utils.tensorboard``).
"""

from typing import Dict, Optional

import torch
from fvcore.common.config import CfgNode
from torch import nn

from cgnl_video.config import ConfigError
from cgnl_video.data import build_loader, set_loader_epoch
from cgnl_video.engine import preemption
from cgnl_video.engine.optim import EpochLRScheduler, build_optimizer
from cgnl_video.engine.precision import build_grad_scaler
from cgnl_video.engine.preemption import RunInterrupted, StopRequest, StopRequested
from cgnl_video.engine.resume import restore_meter, restore_rng, resume_or_initialise, save_training_state
from cgnl_video.engine.train_loop import EpochProgress, train_epoch
from cgnl_video.engine.validation import run_validation
from cgnl_video.utils import distributed as du
from cgnl_video.utils.logging import JsonStatsWriter, get_logger
from cgnl_video.utils.tensorboard import open_scalar_writer


def wrap_distributed(model: nn.Module, device: torch.device) -> nn.Module:
    """DistributedDataParallel in a multi-process run (over the group that serves
    ``device``, see ``du.group_for``); the model itself otherwise."""
    if du.get_world_size() == 1:
        return model
    device_ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=device_ids,
                                               process_group=du.group_for(device))


def _due(epoch: int, period: int, cfg: CfgNode) -> bool:
    """True after (0-based) ``epoch`` when it ends a ``period`` of epochs or the run."""
    return (epoch + 1) % period == 0 or epoch + 1 == cfg.SOLVER.MAX_EPOCH


def _validate(model: nn.Module, loader, cfg: CfgNode, device: torch.device, epoch: int,
              stop: StopRequest) -> Dict:
    """Validate after ``epoch``; log and return the stats record."""
    set_loader_epoch(loader, epoch)
    val_stats = run_validation(model, loader, cfg, device, stop)
    get_logger().info("epoch %d val: top1_err %.2f top5_err %.2f loss %.4f", epoch + 1,
                      val_stats["top1_err"], val_stats["top5_err"], val_stats["loss"])
    return {"split": "val", "epoch": epoch + 1, **val_stats}


def fit(cfg: CfgNode, model: nn.Module, device: torch.device) -> nn.Module:
    """Train for SOLVER.MAX_EPOCH epochs (resuming if possible); returns the trained model.

    ``model`` is already on ``device``. Raises ``RunInterrupted`` on every rank after a
    stop signal (``engine.preemption``), once the checkpoint to resume from is written.
    """
    with preemption.catch_stop_signals() as stop:
        return _fit(cfg, model, device, stop)


def _fit(cfg: CfgNode, model: nn.Module, device: torch.device, stop: StopRequest) -> nn.Module:
    """``fit`` with the stop signals caught into ``stop``."""
    train_loader = build_loader(cfg, "train")
    val_loader = build_loader(cfg, "val") if cfg.TRAIN.EVAL_PERIOD > 0 else None
    for loader in (train_loader, val_loader):
        if loader is not None:
            preemption.shield_workers(loader)
    optimizer = build_optimizer(model, cfg)
    scheduler = EpochLRScheduler(optimizer, cfg)
    scaler = build_grad_scaler(cfg, device)
    resumed = resume_or_initialise(cfg, model, optimizer, scheduler, scaler)
    start_epoch = resumed["epoch"] if resumed else 0
    position = EpochProgress()  # where the first epoch starts: a mid-epoch checkpoint's iteration and sums
    if resumed:
        position = EpochProgress(resumed["iteration"], restore_meter(resumed), resumed["path"])
    if position.iteration > len(train_loader):
        raise ConfigError(f"OUTPUT_DIR: {position.last_checkpoint} was written {position.iteration} iterations into "
                          f"an epoch, this run's epochs have {len(train_loader)} (another TRAIN.BATCH_SIZE or data "
                          "set?): resume with the config of the run that wrote it, or use another OUTPUT_DIR")
    train_model = wrap_distributed(model, device)
    if resumed:
        restore_rng(resumed)  # right before training goes on
    if start_epoch >= cfg.SOLVER.MAX_EPOCH:
        get_logger().info("training already complete (%d epochs)", start_epoch)
    # TensorBoard: hide what an interrupted run logged after the checkpoint this one starts from
    first_step = start_epoch * len(train_loader) + position.iteration + 1
    with open_scalar_writer(cfg, purge_step=first_step) as scalars:
        stats_writer = JsonStatsWriter(cfg.OUTPUT_DIR, enabled=du.is_main_process(), mirror=scalars.add_record)
        if resumed:
            stats_writer.drop_after(start_epoch)  # as purge_step does for TensorBoard
        for epoch in range(start_epoch, cfg.SOLVER.MAX_EPOCH):
            set_loader_epoch(train_loader, epoch, position.iteration)
            try:
                records = _train_and_validate(train_model, model, train_loader, val_loader, optimizer, scheduler,
                                              scaler, cfg, device, epoch, position, scalars, stop)
            except StopRequested as request:
                path = save_training_state(cfg, model, optimizer, scheduler, scaler, epoch, position.iteration,
                                           position.meter)
                raise RunInterrupted(request.signum, path) from None
            for record in records:
                stats_writer.write(record)
            if _due(epoch, cfg.TRAIN.CHECKPOINT_PERIOD, cfg):
                position.last_checkpoint = save_training_state(cfg, model, optimizer, scheduler, scaler, epoch + 1)
            position = EpochProgress(last_checkpoint=position.last_checkpoint)
    _stop_if_asked(stop, position.last_checkpoint)
    return model


def _train_and_validate(train_model: nn.Module, model: nn.Module, train_loader, val_loader,
                        optimizer: torch.optim.Optimizer, scheduler: EpochLRScheduler,
                        scaler: torch.amp.GradScaler, cfg: CfgNode, device: torch.device, epoch: int,
                        position: EpochProgress, scalars, stop: StopRequest) -> list:
    """Train (the rest of) ``epoch`` and validate after it if due; its json_stats records."""
    stats = train_epoch(train_model, train_loader, optimizer, scheduler, scaler, cfg, epoch, device,
                        position, scalars, stop)
    records = [{"split": "train", "epoch": epoch + 1, **stats, **train_loader.dataset.read_counts()}]
    if val_loader is not None and _due(epoch, cfg.TRAIN.EVAL_PERIOD, cfg):
        records.append(_validate(model, val_loader, cfg, device, epoch, stop))
    return records


def _stop_if_asked(stop: StopRequest, last_checkpoint: Optional[str]) -> None:
    """A stop signal that came after the last check of the run (during its last
    validation batch or checkpoint): training is complete and saved, but the signal is
    honoured (the rerun finds training complete and goes on with the test)."""
    signum = preemption.agreed_stop(stop)
    if signum and last_checkpoint:
        raise RunInterrupted(signum, last_checkpoint)
