"""The training loop (one epoch), validation, and the epoch loop with
checkpoints and auto-resume.

In train mode the model returns logits; in eval mode it returns class
probabilities (softmax per location, averaged), so the validation loss is the
NLL of their log.
"""

import math
import time
from typing import Dict, Optional

import torch
import torch.nn.functional as F
from fvcore.common.config import CfgNode
from torch import nn

from cgnl_video.data import build_loader, set_loader_epoch
from cgnl_video.engine import checkpoint as cu
from cgnl_video.engine.inputs import to_device
from cgnl_video.engine.metrics import EpochMeter, memory_mb, topk_errors
from cgnl_video.engine.optim import EpochLRScheduler, build_optimizer
from cgnl_video.engine.precision import autocast_context, build_grad_scaler
from cgnl_video.engine.resume import checkpoint_state, restore_rng, resume_from_last
from cgnl_video.engine.validation import run_validation
from cgnl_video.utils import distributed as du
from cgnl_video.utils.logging import JsonStatsWriter, format_seconds, get_logger, progress


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite; the run stops, checkpoints are kept."""


def _check_finite(loss: torch.Tensor, local_value: float, epoch: int, iteration: int, global_iter: int,
                  last_checkpoint: Optional[str]) -> None:
    """Raise NonFiniteLossError on every rank when any rank's loss is not finite
    (``local_value`` is ``loss.item()``, read once by the caller)."""
    value = du.all_reduce_sum(loss.detach().float().reshape(1)).item() if du.is_distributed() else local_value
    if not math.isfinite(value):
        kept = last_checkpoint or "none written yet"
        raise NonFiniteLossError(
            f"non-finite training loss ({value}) at epoch {epoch + 1}, iteration {iteration + 1} "
            f"(global iteration {global_iter + 1}); stopping. Last good checkpoint: {kept}"
        )


# ----------------------------------------------------------------------------- one epoch
def train_epoch(model: nn.Module, loader, optimizer: torch.optim.Optimizer,
                scheduler: EpochLRScheduler, scaler: torch.amp.GradScaler, cfg: CfgNode,
                epoch: int, device: torch.device, last_checkpoint: Optional[str] = None) -> Dict:
    """Train one epoch; returns the epoch's stats reduced over processes."""
    logger = get_logger()
    model.train()
    meter = EpochMeter()
    n_iters = len(loader)
    total_iters = cfg.SOLVER.MAX_EPOCH * n_iters
    data_time = iter_time = 0.0
    start = tic = time.perf_counter()
    bar = progress(loader, total=n_iters, desc=f"epoch {epoch + 1}/{cfg.SOLVER.MAX_EPOCH}",
                   enabled=du.is_main_process())
    for it, (clips, labels, _indices) in enumerate(bar):
        data_time += time.perf_counter() - tic
        lr = scheduler.step(epoch + it / n_iters)
        clips, labels = to_device(clips, device, cfg), labels.to(device, non_blocking=True)
        with autocast_context(cfg, device):
            logits = model(clips)
        loss = F.cross_entropy(logits.float(), labels)
        loss_value = loss.item()  # one device sync per iteration
        _check_finite(loss, loss_value, epoch, it, epoch * n_iters + it, last_checkpoint)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        meter.add(loss_value, topk_errors(logits.detach(), labels), labels.numel())
        tic = time.perf_counter()
        iter_time = (tic - start) / (it + 1)
        if hasattr(bar, "set_postfix"):
            bar.set_postfix(loss=f"{loss_value:.3f}", lr=f"{lr:.3g}")
        if (it + 1) % cfg.LOG_PERIOD == 0 or it + 1 == n_iters:
            eta = (total_iters - epoch * n_iters - it - 1) * iter_time
            logger.info("epoch %d/%d iter %d/%d loss %.4f lr %.6g data %.3fs iter %.3fs eta %s",
                        epoch + 1, cfg.SOLVER.MAX_EPOCH, it + 1, n_iters, loss_value, lr,
                        data_time / (it + 1), iter_time, format_seconds(eta))
    stats = meter.reduced()
    remaining = (cfg.SOLVER.MAX_EPOCH - epoch - 1) * (time.perf_counter() - start)
    stats.update(lr=scheduler.last_lr, iters=n_iters, data_time=data_time / max(n_iters, 1),
                 iter_time=iter_time, epoch_time=time.perf_counter() - start,
                 eta=format_seconds(remaining), mem_mb=memory_mb(device))
    return stats


# ----------------------------------------------------------------------------- the epoch loop
def wrap_distributed(model: nn.Module, device: torch.device) -> nn.Module:
    """DistributedDataParallel in a multi-process run (over the group that serves
    ``device``, see ``du.group_for``); the model itself otherwise."""
    if du.get_world_size() == 1:
        return model
    device_ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=device_ids,
                                               process_group=du.group_for(device))


def fit(cfg: CfgNode, model: nn.Module, device: torch.device) -> nn.Module:
    """Train for SOLVER.MAX_EPOCH epochs (resuming if possible); returns the trained model.

    ``model`` is already on ``device``. Only rank 0 writes checkpoints and stats.
    """
    logger = get_logger()
    main = du.is_main_process()
    stats_writer = JsonStatsWriter(cfg.OUTPUT_DIR, enabled=main)
    train_loader = build_loader(cfg, "train")
    val_loader = build_loader(cfg, "val") if cfg.TRAIN.EVAL_PERIOD > 0 else None
    optimizer = build_optimizer(model, cfg)
    scheduler = EpochLRScheduler(optimizer, cfg)
    scaler = build_grad_scaler(cfg, device)
    start_epoch, last_checkpoint = 0, None
    resumed = resume_from_last(cfg, model, optimizer, scheduler, scaler) if cfg.TRAIN.AUTO_RESUME else None
    if resumed:
        start_epoch, last_checkpoint = resumed["epoch"], resumed["path"]
    elif cfg.TRAIN.CHECKPOINT_FILE_PATH:
        cu.load_model_weights(model, cfg.TRAIN.CHECKPOINT_FILE_PATH)
        logger.info("initialised the weights from %s", cfg.TRAIN.CHECKPOINT_FILE_PATH)
    train_model = wrap_distributed(model, device)
    if resumed:
        restore_rng(resumed)
    if start_epoch >= cfg.SOLVER.MAX_EPOCH:
        logger.info("training already complete (%d epochs)", start_epoch)
    for epoch in range(start_epoch, cfg.SOLVER.MAX_EPOCH):
        set_loader_epoch(train_loader, epoch)
        stats = train_epoch(train_model, train_loader, optimizer, scheduler, scaler, cfg, epoch,
                            device, last_checkpoint)
        failures = train_loader.dataset.failure_count()
        stats_writer.write({"split": "train", "epoch": epoch + 1, **stats, "read_failures": failures})
        last_epoch = epoch + 1 == cfg.SOLVER.MAX_EPOCH
        if val_loader is not None and ((epoch + 1) % cfg.TRAIN.EVAL_PERIOD == 0 or last_epoch):
            set_loader_epoch(val_loader, epoch)
            val_stats = run_validation(model, val_loader, cfg, device)
            stats_writer.write({"split": "val", "epoch": epoch + 1, **val_stats})
            logger.info("epoch %d val: top1_err %.2f top5_err %.2f loss %.4f", epoch + 1,
                        val_stats["top1_err"], val_stats["top5_err"], val_stats["loss"])
        if (epoch + 1) % cfg.TRAIN.CHECKPOINT_PERIOD == 0 or last_epoch:
            state = checkpoint_state(model, optimizer, scheduler, scaler, epoch + 1, cfg)
            if main:
                cu.save_checkpoint(cfg.OUTPUT_DIR, epoch + 1, state, cfg.TRAIN.CHECKPOINT_KEEP)
                logger.info("saved %s", cu.checkpoint_path(cfg.OUTPUT_DIR, epoch + 1))
            du.barrier()
            last_checkpoint = cu.checkpoint_path(cfg.OUTPUT_DIR, epoch + 1)
    return model
