"""The epoch loop of a training run (``fit``): loaders, optimizer, LR schedule
and loss scaler; resume or initialise; then per epoch train
(``engine.train_loop``), validate every TRAIN.EVAL_PERIOD epochs
(``engine.validation``) and checkpoint every TRAIN.CHECKPOINT_PERIOD epochs
(``engine.resume``), both after the last epoch as well.

Only rank 0 writes checkpoints, OUTPUT_DIR/json_stats.log and, with
TENSORBOARD.ENABLE, the same records as TensorBoard scalars (``utils.tensorboard``).
"""

import torch
from fvcore.common.config import CfgNode
from torch import nn

from cgnl_video.data import build_loader, set_loader_epoch
from cgnl_video.engine.optim import EpochLRScheduler, build_optimizer
from cgnl_video.engine.precision import build_grad_scaler
from cgnl_video.engine.resume import restore_rng, resume_or_initialise, save_training_state
from cgnl_video.engine.train_loop import train_epoch
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
              stats_writer: JsonStatsWriter) -> None:
    """Validate after ``epoch``; write and log the stats."""
    set_loader_epoch(loader, epoch)
    val_stats = run_validation(model, loader, cfg, device)
    stats_writer.write({"split": "val", "epoch": epoch + 1, **val_stats})
    get_logger().info("epoch %d val: top1_err %.2f top5_err %.2f loss %.4f", epoch + 1,
                      val_stats["top1_err"], val_stats["top5_err"], val_stats["loss"])


def fit(cfg: CfgNode, model: nn.Module, device: torch.device) -> nn.Module:
    """Train for SOLVER.MAX_EPOCH epochs (resuming if possible); returns the trained model.

    ``model`` is already on ``device``.
    """
    train_loader = build_loader(cfg, "train")
    val_loader = build_loader(cfg, "val") if cfg.TRAIN.EVAL_PERIOD > 0 else None
    optimizer = build_optimizer(model, cfg)
    scheduler = EpochLRScheduler(optimizer, cfg)
    scaler = build_grad_scaler(cfg, device)
    resumed = resume_or_initialise(cfg, model, optimizer, scheduler, scaler)
    start_epoch, last_checkpoint = (resumed["epoch"], resumed["path"]) if resumed else (0, None)
    train_model = wrap_distributed(model, device)
    if resumed:
        restore_rng(resumed)  # right before the next epoch starts
    if start_epoch >= cfg.SOLVER.MAX_EPOCH:
        get_logger().info("training already complete (%d epochs)", start_epoch)
    # TensorBoard: hide what an interrupted run logged after the checkpoint this one starts from
    with open_scalar_writer(cfg, purge_step=start_epoch * len(train_loader) + 1) as scalars:
        stats_writer = JsonStatsWriter(cfg.OUTPUT_DIR, enabled=du.is_main_process(), mirror=scalars.add_record)
        for epoch in range(start_epoch, cfg.SOLVER.MAX_EPOCH):
            set_loader_epoch(train_loader, epoch)
            stats = train_epoch(train_model, train_loader, optimizer, scheduler, scaler, cfg, epoch,
                                device, last_checkpoint, scalars)
            stats_writer.write({"split": "train", "epoch": epoch + 1, **stats, **train_loader.dataset.read_counts()})
            if val_loader is not None and _due(epoch, cfg.TRAIN.EVAL_PERIOD, cfg):
                _validate(model, val_loader, cfg, device, epoch, stats_writer)
            if _due(epoch, cfg.TRAIN.CHECKPOINT_PERIOD, cfg):
                last_checkpoint = save_training_state(cfg, model, optimizer, scheduler, scaler, epoch + 1)
    return model
