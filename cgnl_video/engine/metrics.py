"""Clip-level training metrics: top-k errors of a batch, their sums over an
epoch (reduced over processes), and the memory a run peaked at.

The video-level metrics of the multi-view test (mean of the views' softmax)
are in ``engine.multiview``.
"""

import resource
from typing import Dict, Sequence

import torch

from cgnl_video.utils import distributed as du


def topk_errors(scores: torch.Tensor, labels: torch.Tensor, ks: Sequence[int] = (1, 5)) -> Dict[int, float]:
    """Number of samples whose label is not among the top-k scores, for each k."""
    k_max = min(max(ks), scores.shape[1])
    top = scores.topk(k_max, dim=1).indices
    hits = top.eq(labels.view(-1, 1))
    return {k: float(labels.numel() - hits[:, :min(k, k_max)].any(dim=1).sum().item()) for k in ks}


def memory_mb(device: torch.device) -> float:
    """Peak GPU memory allocated, or the process's peak resident memory on the CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class EpochMeter:
    """Loss and top-1 / top-5 error sums over an epoch, reduced over processes at the end."""

    def __init__(self) -> None:
        self.loss = self.err1 = self.err5 = self.count = 0.0

    def add(self, loss: float, errors: Dict[int, float], n: int) -> None:
        """Add a batch of ``n`` samples: its mean ``loss`` and its ``topk_errors``."""
        self.loss += loss * n
        self.err1 += errors[1]
        self.err5 += errors[5]
        self.count += n

    def state_dict(self) -> Dict[str, float]:
        """This process's sums (a mid-epoch checkpoint holds every rank's)."""
        return {"loss": self.loss, "err1": self.err1, "err5": self.err5, "count": self.count}

    def load_state_dict(self, state: Dict[str, float]) -> None:
        """Continue from ``state_dict``'s sums."""
        self.loss, self.err1, self.err5, self.count = (float(state[key]) for key in ("loss", "err1", "err5", "count"))

    def reduced(self) -> Dict[str, float]:
        """Mean loss and errors (percent) over every process's samples (collective)."""
        totals = du.all_reduce_sum(torch.tensor([self.loss, self.err1, self.err5, self.count],
                                                dtype=torch.float64))
        loss, err1, err5, count = totals.tolist()
        count = max(count, 1.0)
        return {"loss": loss / count, "top1_err": 100 * err1 / count, "top5_err": 100 * err5 / count,
                "samples": int(count)}
