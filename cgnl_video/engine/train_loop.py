"""One training epoch (``train_epoch``): per iteration the LR of the schedule,
forward under autocast, fp32 cross-entropy on the logits (the model's train-mode
output), a stop on a non-finite loss, backward and step through the loss
scaler, and the epoch's stats; logged every LOG_PERIOD iterations (also as
TensorBoard scalars with TENSORBOARD.ENABLE, see ``utils.tensorboard``).
An epoch may start part-way (``EpochProgress``), writes a mid-epoch checkpoint every
TRAIN.CHECKPOINT_ITERS iterations, and ends early on a stop signal (``engine.preemption``).

The epoch loop around it (resume, validation, checkpoints) is ``engine.trainer``.
"""

import math
import time
from dataclasses import dataclass, field
from typing import Dict, Optional

import torch
import torch.nn.functional as F
from fvcore.common.config import CfgNode
from torch import nn

from cgnl_video.engine.inputs import batch_to_device, decode_on_device
from cgnl_video.engine.metrics import EpochMeter, memory_mb, topk_errors
from cgnl_video.engine.optim import EpochLRScheduler
from cgnl_video.engine.precision import autocast_context
from cgnl_video.engine.preemption import StopRequest, StopRequested, agreed_signal, stop_votes
from cgnl_video.engine.resume import save_training_state
from cgnl_video.utils import distributed as du
from cgnl_video.utils.logging import format_seconds, get_logger, progress
from cgnl_video.utils.tensorboard import ScalarWriter


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite; the run stops, checkpoints are kept."""


@dataclass
class EpochProgress:
    """Where the epoch being trained stands: ``iteration`` iterations done (more than 0
    when resumed from a mid-epoch checkpoint), their stats sums (``meter``), and the
    newest checkpoint of the run (named when the loss becomes non-finite)."""

    iteration: int = 0
    meter: EpochMeter = field(default_factory=EpochMeter)
    last_checkpoint: Optional[str] = None


def _check_finite_and_stop(loss: torch.Tensor, local_value: float, stop: Optional[StopRequest], epoch: int,
                           iteration: int, global_iter: int, last_checkpoint: Optional[str]) -> int:
    """Raise NonFiniteLossError on every rank when any rank's loss is not finite
    (``local_value`` is ``loss.item()``, read once by the caller); else return the stop
    signal any rank received (0: none), the same on every rank. In a distributed run both
    travel in one all-reduce of [loss, stop votes]."""
    votes = stop_votes(stop)
    if du.is_distributed():
        local = torch.cat([loss.detach().float().reshape(1), torch.tensor(votes, device=loss.device)])
        value, *votes = du.all_reduce_sum(local).tolist()
    else:
        value = local_value
    if not math.isfinite(value):
        kept = last_checkpoint or "none written yet"
        raise NonFiniteLossError(
            f"non-finite training loss ({value}) at epoch {epoch + 1}, iteration {iteration + 1} "
            f"(global iteration {global_iter + 1}); stopping. Last good checkpoint: {kept}"
        )
    return agreed_signal(votes)


def _mid_epoch_checkpoint_due(cfg: CfgNode, global_done: int, done: int, n_iters: int) -> bool:
    """TRAIN.CHECKPOINT_ITERS: after every that many iterations of the run (``global_done``),
    except at an epoch's end (the epoch checkpoint's place)."""
    every = cfg.TRAIN.CHECKPOINT_ITERS
    return every > 0 and global_done % every == 0 and done < n_iters


def train_epoch(model: nn.Module, loader, optimizer: torch.optim.Optimizer,
                scheduler: EpochLRScheduler, scaler: torch.amp.GradScaler, cfg: CfgNode,
                epoch: int, device: torch.device, position: Optional[EpochProgress] = None,
                scalars: Optional[ScalarWriter] = None, stop: Optional[StopRequest] = None) -> Dict:
    """Train one epoch, or its rest from ``position.iteration`` on (the loader set to start
    there, ``data.set_loader_epoch``); returns the epoch's stats reduced over processes.

    ``position`` is updated after every iteration. Every LOG_PERIOD iterations the values
    of the log line also go to ``scalars`` as ``train_iter/*`` at step = the global
    iteration (1-based). When any rank has received a stop signal (``stop``), every rank
    finishes the iteration and raises ``StopRequested`` (the caller checkpoints).
    """
    logger, scalars = get_logger(), scalars or ScalarWriter(None)
    state = position if position is not None else EpochProgress()
    model.train()
    meter, first = state.meter, state.iteration
    n_iters = len(loader)
    total_iters = cfg.SOLVER.MAX_EPOCH * n_iters
    data_time = iter_time = 0.0
    start = tic = time.perf_counter()
    bar = progress(loader, total=n_iters - first, desc=f"epoch {epoch + 1}/{cfg.SOLVER.MAX_EPOCH}",
                   enabled=du.is_main_process())
    for it, batch in enumerate(bar, start=first):
        batch = decode_on_device(batch, loader.dataset, device)  # DATA.DECODE_ON device: counts as data time
        data_time += time.perf_counter() - tic
        lr = scheduler.step(epoch + it / n_iters)
        clips, labels = batch_to_device(batch, loader.dataset, device, cfg)
        with autocast_context(cfg, device):
            logits = model(clips)
        loss = F.cross_entropy(logits.float(), labels)
        loss_value = loss.item()  # one device sync per iteration
        signum = _check_finite_and_stop(loss, loss_value, stop, epoch, it, epoch * n_iters + it,
                                        state.last_checkpoint)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        errors = topk_errors(logits.detach(), labels)
        meter.add(loss_value, errors, labels.numel())
        state.iteration = done = it + 1
        tic = time.perf_counter()
        iter_time = (tic - start) / (done - first)
        if hasattr(bar, "set_postfix"):
            bar.set_postfix(loss=f"{loss_value:.3f}", lr=f"{lr:.3g}")
        if done % cfg.LOG_PERIOD == 0 or done == n_iters:
            eta = (total_iters - epoch * n_iters - done) * iter_time
            logger.info("epoch %d/%d iter %d/%d loss %.4f lr %.6g data %.3fs iter %.3fs eta %s",
                        epoch + 1, cfg.SOLVER.MAX_EPOCH, done, n_iters, loss_value, lr,
                        data_time / (done - first), iter_time, format_seconds(eta))
            if scalars.enabled:  # TENSORBOARD.ENABLE on rank 0
                batch_err = {f"top{k}_err": 100 * errors[k] / labels.numel() for k in (1, 5)}
                scalars.add_scalars("train_iter", {"loss": loss_value, **batch_err, "lr": lr,
                                                   "data_time": data_time / (done - first), "iter_time": iter_time,
                                                   "mem_mb": memory_mb(device)}, step=epoch * n_iters + done)
        if signum:
            raise StopRequested(signum)
        if _mid_epoch_checkpoint_due(cfg, epoch * n_iters + done, done, n_iters):
            state.last_checkpoint = save_training_state(cfg, model, optimizer, scheduler, scaler, epoch, done, meter)
    stats = meter.reduced()
    remaining = (cfg.SOLVER.MAX_EPOCH - epoch - 1) * (time.perf_counter() - start)
    stats.update(lr=scheduler.last_lr, iters=n_iters, data_time=data_time / max(n_iters - first, 1),
                 iter_time=iter_time, epoch_time=time.perf_counter() - start,
                 eta=format_seconds(remaining), mem_mb=memory_mb(device))
    return stats
