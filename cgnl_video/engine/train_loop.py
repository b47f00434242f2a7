"""One training epoch (``train_epoch``): per iteration the LR of the schedule,
forward under autocast, fp32 cross-entropy on the logits (the model's train-mode
output), a stop on a non-finite loss, backward and step through the loss
scaler, and the epoch's stats; logged every LOG_PERIOD iterations (also as
TensorBoard scalars with TENSORBOARD.ENABLE, see ``utils.tensorboard``).

The epoch loop around it (resume, validation, checkpoints) is ``engine.trainer``.
"""

import math
import time
from typing import Dict, Optional

import torch
import torch.nn.functional as F
from fvcore.common.config import CfgNode
from torch import nn

from cgnl_video.engine.inputs import batch_to_device, decode_on_device
from cgnl_video.engine.metrics import EpochMeter, memory_mb, topk_errors
from cgnl_video.engine.optim import EpochLRScheduler
from cgnl_video.engine.precision import autocast_context
from cgnl_video.utils import distributed as du
from cgnl_video.utils.logging import format_seconds, get_logger, progress
from cgnl_video.utils.tensorboard import ScalarWriter


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


def train_epoch(model: nn.Module, loader, optimizer: torch.optim.Optimizer,
                scheduler: EpochLRScheduler, scaler: torch.amp.GradScaler, cfg: CfgNode,
                epoch: int, device: torch.device, last_checkpoint: Optional[str] = None,
                scalars: Optional[ScalarWriter] = None) -> Dict:
    """Train one epoch; returns the epoch's stats reduced over processes.

    Every LOG_PERIOD iterations the values of the log line also go to ``scalars``
    as ``train_iter/*`` at step = the global iteration (1-based).
    """
    logger, scalars = get_logger(), scalars or ScalarWriter(None)
    model.train()
    meter = EpochMeter()
    n_iters = len(loader)
    total_iters = cfg.SOLVER.MAX_EPOCH * n_iters
    data_time = iter_time = 0.0
    start = tic = time.perf_counter()
    bar = progress(loader, total=n_iters, desc=f"epoch {epoch + 1}/{cfg.SOLVER.MAX_EPOCH}",
                   enabled=du.is_main_process())
    for it, batch in enumerate(bar):
        batch = decode_on_device(batch, loader.dataset, device)  # DATA.DECODE_ON device: counts as data time
        data_time += time.perf_counter() - tic
        lr = scheduler.step(epoch + it / n_iters)
        clips, labels = batch_to_device(batch, loader.dataset, device, cfg)
        with autocast_context(cfg, device):
            logits = model(clips)
        loss = F.cross_entropy(logits.float(), labels)
        loss_value = loss.item()  # one device sync per iteration
        _check_finite(loss, loss_value, epoch, it, epoch * n_iters + it, last_checkpoint)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        errors = topk_errors(logits.detach(), labels)
        meter.add(loss_value, errors, labels.numel())
        tic = time.perf_counter()
        iter_time = (tic - start) / (it + 1)
        if hasattr(bar, "set_postfix"):
            bar.set_postfix(loss=f"{loss_value:.3f}", lr=f"{lr:.3g}")
        if (it + 1) % cfg.LOG_PERIOD == 0 or it + 1 == n_iters:
            eta = (total_iters - epoch * n_iters - it - 1) * iter_time
            logger.info("epoch %d/%d iter %d/%d loss %.4f lr %.6g data %.3fs iter %.3fs eta %s",
                        epoch + 1, cfg.SOLVER.MAX_EPOCH, it + 1, n_iters, loss_value, lr,
                        data_time / (it + 1), iter_time, format_seconds(eta))
            if scalars.enabled:  # TENSORBOARD.ENABLE on rank 0
                batch_err = {f"top{k}_err": 100 * errors[k] / labels.numel() for k in (1, 5)}
                scalars.add_scalars("train_iter", {"loss": loss_value, **batch_err, "lr": lr,
                                                   "data_time": data_time / (it + 1), "iter_time": iter_time,
                                                   "mem_mb": memory_mb(device)}, step=epoch * n_iters + it + 1)
    stats = meter.reduced()
    remaining = (cfg.SOLVER.MAX_EPOCH - epoch - 1) * (time.perf_counter() - start)
    stats.update(lr=scheduler.last_lr, iters=n_iters, data_time=data_time / max(n_iters, 1),
                 iter_time=iter_time, epoch_time=time.perf_counter() - start,
                 eta=format_seconds(remaining), mem_mb=memory_mb(device))
    return stats
