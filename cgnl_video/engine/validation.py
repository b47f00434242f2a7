"""Single-clip validation during training (TRAIN.EVAL_PERIOD): the loss and
top-1 / top-5 errors of one centre clip per video, reduced over processes.

In eval mode the model returns class probabilities (softmax per location,
averaged), so the validation loss is the NLL of their log. The multi-view test
(all views of a video, after training) is ``engine.multiview``. A stop signal ends it
at the next batch (``StopRequested``; the resumed run validates again).
"""

from typing import Dict, Optional

import torch
import torch.nn.functional as F
from fvcore.common.config import CfgNode
from torch import nn

from cgnl_video.engine.inputs import batch_to_device
from cgnl_video.engine.metrics import EpochMeter, topk_errors
from cgnl_video.engine.precision import autocast_context
from cgnl_video.engine.preemption import StopRequest, StopRequested, agreed_stop
from cgnl_video.utils import distributed as du
from cgnl_video.utils.logging import progress


@torch.no_grad()
def run_validation(model: nn.Module, loader, cfg: CfgNode, device: torch.device,
                   stop: Optional[StopRequest] = None) -> Dict:
    """Single-clip validation: loss (NLL of the eval-mode probabilities), top-1/top-5 errors.

    With ``stop``: before each batch the ranks agree whether any got a stop signal (one
    small all-reduce in a distributed run) and raise ``StopRequested`` if so.
    """
    model.eval()
    meter = EpochMeter()
    bar = progress(loader, total=len(loader), desc="val", enabled=du.is_main_process())
    for batch in bar:
        signum = agreed_stop(stop) if stop is not None else 0
        if signum:
            raise StopRequested(signum)
        clips, labels = batch_to_device(batch, loader.dataset, device, cfg)
        with autocast_context(cfg, device):
            probs = model(clips).float()
        loss = F.nll_loss(probs.clamp_min(1e-12).log(), labels)
        meter.add(loss.item(), topk_errors(probs, labels), labels.numel())
    return meter.reduced()
