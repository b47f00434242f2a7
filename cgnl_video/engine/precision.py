"""Mixed precision: TRAIN.MIXED_PRECISION with TRAIN.AMP_DTYPE, on CUDA and on the CPU.

* ``bf16``: autocast to bfloat16, no loss scaling (bf16 has fp32's exponent
  range). A CUDA GPU without native bf16 (T4; V100, with the CUDA 12.6 build of
  torch that has its kernels, docs/TRAINING.md "GPUs and torch builds": torch
  reports bf16 as supported there, but emulates it) gets fp16 with a GradScaler
  instead, and the log says so.
* ``fp16``: autocast to float16 with a GradScaler (``torch.amp.GradScaler`` on
  the CPU as well); its state is saved in the checkpoints.

Training, validation and the multi-view test run under the same autocast; the
engine computes the loss and the softmax scores in fp32 (``logits.float()``).
"""

import contextlib
from typing import Optional

import torch
from fvcore.common.config import CfgNode

from cgnl_video.utils.logging import get_logger


def native_bf16(device: torch.device) -> bool:
    """True unless ``device`` is a CUDA GPU that only emulates bf16."""
    if device.type != "cuda":
        return True
    try:
        return torch.cuda.is_bf16_supported(including_emulation=False)
    except TypeError:  # torch < 2.4 has no including_emulation and reports native support only
        return torch.cuda.is_bf16_supported()


def amp_dtype(cfg: CfgNode, device: torch.device) -> Optional[torch.dtype]:
    """The autocast dtype of a run on ``device``, or None for fp32."""
    if not cfg.TRAIN.MIXED_PRECISION:
        return None
    if cfg.TRAIN.AMP_DTYPE == "bf16" and native_bf16(device):
        return torch.bfloat16
    return torch.float16


def autocast_context(cfg: CfgNode, device: torch.device):
    """``torch.autocast`` on ``device`` with ``amp_dtype``; a null context for fp32."""
    dtype = amp_dtype(cfg, device)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def build_grad_scaler(cfg: CfgNode, device: torch.device) -> torch.amp.GradScaler:
    """A loss scaler when the run autocasts to fp16; a pass-through (disabled) one otherwise."""
    return torch.amp.GradScaler(device.type, enabled=amp_dtype(cfg, device) == torch.float16)


def log_precision(cfg: CfgNode, device: torch.device) -> None:
    """One log line saying what the run computes in (a warning for the bf16 -> fp16 fallback)."""
    dtype = amp_dtype(cfg, device)
    logger = get_logger()
    if dtype is None:
        logger.info("precision: fp32 on %s", device.type)
    elif cfg.TRAIN.AMP_DTYPE == "bf16" and dtype == torch.float16:
        logger.warning("TRAIN.AMP_DTYPE bf16: %s has no native bf16 (torch would emulate it); "
                       "using fp16 autocast with a GradScaler instead", torch.cuda.get_device_name(device))
    else:
        scaler = " with a GradScaler" if dtype == torch.float16 else ""
        logger.info("precision: %s autocast on %s%s", str(dtype).replace("torch.", ""), device.type, scaler)
