"""The multi-view test (non-local paper, Sec. 4.1 "Inference"; CGNL paper, Sec. 4): the video score is the mean of the
softmax of all its views; top-1 / top-5 and per-class accuracy over videos.

The aggregation is pure (``ViewAggregator``, ``video_metrics``) and merges
across batches and processes, so a video whose views land in several batches or
on several ranks is still scored once, on the mean of all its views.
``run_test`` scores a loader's views (also used by ``cgnl_video.inference``);
``multi_view_test`` is the test phase of a run (TEST.ENABLE): the weights to
test, the test split, OUTPUT_DIR/test_metrics.json, test_predictions.jsonl and
the json_stats line (also TensorBoard scalars with TENSORBOARD.ENABLE).
"""

import itertools
import math
import os
import time
from typing import Callable, ContextManager, Dict, Iterable, List, Optional, Sequence, Tuple

import simplejson
import torch
from fvcore.common.config import CfgNode
from torch import nn

from cgnl_video.config import ConfigError
from cgnl_video.data import build_loader
from cgnl_video.engine import checkpoint as cu
from cgnl_video.engine.inputs import decode_on_device, to_device
from cgnl_video.engine.metrics import memory_mb
from cgnl_video.engine.precision import autocast_context
from cgnl_video.models.state_dict import CheckpointError
from cgnl_video.utils import distributed as du
from cgnl_video.utils.io import atomic_write_text
from cgnl_video.utils.logging import JsonStatsWriter, get_logger, progress
from cgnl_video.utils.tensorboard import open_scalar_writer

TEST_METRICS_FILE = "test_metrics.json"
PREDICTIONS_FILE = "test_predictions.jsonl"


class ViewAggregator:
    """Per video: the sum of its views' class probabilities and the number of views."""

    def __init__(self) -> None:
        self.sums: Dict[int, torch.Tensor] = {}
        self.counts: Dict[int, int] = {}
        self.unreadable: set = set()

    def add(self, video_index: int, probs: torch.Tensor) -> None:
        """Add views ``probs`` (V x K, each row a probability vector) of one video."""
        video_index = int(video_index)
        if probs.ndim != 2:
            raise ValueError(f"expected V x K probabilities, got shape {tuple(probs.shape)}")
        if probs.shape[0] == 0:
            self.mark_unreadable(video_index)
            return
        self._accumulate(video_index, probs.detach().double().sum(dim=0).cpu(), probs.shape[0])

    def mark_unreadable(self, video_index: int) -> None:
        self.unreadable.add(int(video_index))

    def merge(self, other: "ViewAggregator") -> None:
        """Add another aggregator's views (another batch or another rank)."""
        for index, total in other.sums.items():
            self._accumulate(index, total, other.counts[index])
        self.unreadable |= other.unreadable

    def _accumulate(self, index: int, total: torch.Tensor, count: int) -> None:
        """Add a probability sum over ``count`` views to video ``index`` (never aliasing ``total``)."""
        self.sums[index] = self.sums[index] + total if index in self.sums else total.clone()
        self.counts[index] = self.counts.get(index, 0) + count

    def scores(self) -> Dict[int, torch.Tensor]:
        """Video index -> mean probability over its views (K, float64)."""
        return {index: total / self.counts[index] for index, total in self.sums.items()}

    def failed(self) -> List[int]:
        """Videos that no process could read a single view of."""
        return sorted(self.unreadable - set(self.sums))


def gather_aggregators(local: ViewAggregator) -> ViewAggregator:
    """The merge of every rank's aggregator (on every rank)."""
    merged = ViewAggregator()
    for part in du.all_gather_object(local):
        merged.merge(part)
    return merged


def video_metrics(
    scores: Dict[int, torch.Tensor],
    labels: Sequence[int],
    class_names: Sequence[str],
    failed: Iterable[int] = (),
) -> Dict:
    """Accuracy over the scored videos (percent).

    ``labels[i]`` is the true label of listed video ``i``; every listed video
    without a score counts as listed but not scored.
    """
    num_classes = len(class_names)
    k = min(5, num_classes)
    per_class_total = [0] * num_classes
    per_class_correct = [0] * num_classes
    top1 = topk = 0
    nll = 0.0
    for index, score in scores.items():
        label = int(labels[index])
        nll -= math.log(max(float(score[label]), 1e-12))
        ranked = torch.topk(score, k).indices.tolist()
        per_class_total[label] += 1
        if ranked[0] == label:
            top1 += 1
            per_class_correct[label] += 1
        topk += int(label in ranked)
    scored = len(scores)
    per_class = {
        name: {"correct": c, "videos": n, "top1": 100.0 * c / n if n else None}
        for name, c, n in zip(class_names, per_class_correct, per_class_total)
    }
    present = [v["top1"] for v in per_class.values() if v["top1"] is not None]
    return {
        "top1_acc": 100.0 * top1 / scored if scored else 0.0,
        "top5_acc": 100.0 * topk / scored if scored else 0.0,  # top-k with k = min(5, classes)
        "mean_class_acc": sum(present) / len(present) if present else 0.0,
        "loss": nll / scored if scored else 0.0,  # NLL of the true class's video score
        "videos_scored": scored,
        "videos_listed": len(labels),
        "videos_failed": sorted(int(i) for i in failed),
        "per_class": per_class,
    }


def prediction_records(
    scores: Dict[int, torch.Tensor], paths: Sequence[str], labels: Sequence[int],
    class_names: Sequence[str],
) -> List[Dict]:
    """One record per scored video: path, true label, top-5 labels and scores."""
    k = min(5, len(class_names))
    records = []
    for index in sorted(scores):
        values, classes = torch.topk(scores[index], k)
        records.append({
            "path": paths[index],
            "label": class_names[labels[index]],
            "label_index": int(labels[index]),
            "top5_labels": [class_names[c] for c in classes.tolist()],
            "top5_scores": [round(float(v), 6) for v in values],
        })
    return records


def forward_views(model: Callable[[torch.Tensor], torch.Tensor], views: torch.Tensor, chunk: int,
                  device: torch.device, cfg: CfgNode,
                  autocast: Optional[Callable[[], ContextManager]] = None) -> torch.Tensor:
    """Eval-mode outputs (float32, on the CPU) of ``views`` (N x C x T x H x W), ``chunk``
    views per forward, under ``autocast()`` (default the run's, ``autocast_context``).

    Test views come as uint8 pixels; each chunk is normalised on ``device`` by
    ``to_device`` (float views are taken as already normalised).
    """
    outputs = []
    for start in range(0, views.shape[0], chunk):
        clips = to_device(views[start:start + chunk], device, cfg)
        with autocast() if autocast else autocast_context(cfg, device):
            outputs.append(model(clips).float().cpu())
    return torch.cat(outputs) if outputs else torch.zeros(0)


@torch.no_grad()
def run_test(model: nn.Module, loader, cfg: CfgNode, device: torch.device) -> Tuple[Optional[Dict], ViewAggregator]:
    """Score every view of the test split; rank 0 returns the metrics (others None).

    The loader yields ``(views_list, labels, video_indices)``, views uint8 (normalised
    per chunk on the device by ``forward_views``; with DATA.DECODE_ON device the
    batch is decoded on the device first, ``decode_on_device``); a video with zero
    views could not be read and counts as listed but not scored.
    """
    model.eval()
    start = time.perf_counter()
    local = ViewAggregator()
    chunk = cfg.TEST.VIEWS_PER_FORWARD
    bar = progress(loader, total=len(loader), desc="test", enabled=du.is_main_process())
    for batch in bar:
        views_list, _labels, video_indices = decode_on_device(batch, loader.dataset, device)
        readable = []
        for index, views in zip(video_indices.tolist(), views_list):
            if views.shape[0] == 0:
                local.mark_unreadable(index)
            else:
                readable.append((index, views))
        # Full-frame views of different videos may differ in size: forward each run of equal shapes together.
        for _shape, run in itertools.groupby(readable, key=lambda item: item[1].shape[1:]):
            run = list(run)
            probs = forward_views(model, torch.cat([views for _, views in run]), chunk, device, cfg)
            offset = 0
            for index, views in run:
                local.add(index, probs[offset:offset + views.shape[0]])
                offset += views.shape[0]
    merged = gather_aggregators(local)
    if not du.is_main_process():
        return None, merged
    dataset = loader.dataset
    labels = [entry.label for entry in dataset.entries]
    metrics = video_metrics(merged.scores(), labels, dataset.classes, merged.failed())
    expected = cfg.TEST.NUM_ENSEMBLE_VIEWS * cfg.TEST.NUM_SPATIAL_CROPS
    odd = {i: n for i, n in merged.counts.items() if n != expected}
    if odd:
        get_logger().warning("%d videos have a view count other than %d: %s", len(odd), expected,
                             dict(list(odd.items())[:10]))
    metrics.update(views_per_video=expected, test_time=time.perf_counter() - start)
    return metrics, merged


def write_test_outputs(output_dir: str, metrics: Dict, merged: ViewAggregator, dataset) -> None:
    """OUTPUT_DIR/test_metrics.json and one JSON line per scored video in test_predictions.jsonl."""
    atomic_write_text(os.path.join(output_dir, TEST_METRICS_FILE),
                      simplejson.dumps(metrics, indent=2) + "\n")
    records = prediction_records(merged.scores(), [e.path for e in dataset.entries],
                                 [e.label for e in dataset.entries], dataset.classes)
    atomic_write_text(os.path.join(output_dir, PREDICTIONS_FILE),
                      "".join(simplejson.dumps(r) + "\n" for r in records))


def load_test_weights(cfg: CfgNode, model: nn.Module, trained: bool) -> Tuple[str, Optional[int]]:
    """Load the weights to test (strictly: every key, every shape); returns where they came
    from and their epoch (if known). ConfigError naming the key and the file when they do
    not fit the model. Pretrained (ImageNet) weights are never read here."""
    if cfg.TEST.CHECKPOINT_FILE_PATH:
        key, path = "TEST.CHECKPOINT_FILE_PATH", cfg.TEST.CHECKPOINT_FILE_PATH
    elif trained:
        return "the model just trained", cfg.SOLVER.MAX_EPOCH
    else:
        key, path = "OUTPUT_DIR", cu.list_checkpoints(cfg.OUTPUT_DIR)[-1]  # not empty: checked by check_files
    try:
        state, _ = cu.load_model_weights(model, path)
    except CheckpointError as exc:
        raise ConfigError(f"{key}: {exc}") from None
    return path, state.get("epoch")


def multi_view_test(cfg: CfgNode, model: nn.Module, device: torch.device, trained: bool) -> Optional[Dict]:
    """Multi-view test of ``model``; rank 0 writes and returns the metrics."""
    logger = get_logger()
    source, epoch = load_test_weights(cfg, model, trained)
    logger.info("multi-view test of %s", source)
    loader = build_loader(cfg, "test")
    metrics, merged = run_test(model, loader, cfg, device)
    if metrics is None:
        return None
    metrics.update(weights=source, epoch=epoch)
    write_test_outputs(cfg.OUTPUT_DIR, metrics, merged, loader.dataset)
    with open_scalar_writer(cfg) as scalars:
        JsonStatsWriter(cfg.OUTPUT_DIR, mirror=scalars.add_record).write({
            "split": "test", "epoch": epoch, "loss": metrics["loss"],
            "top1_err": 100 - metrics["top1_acc"], "top5_err": 100 - metrics["top5_acc"],
            "top1_acc": metrics["top1_acc"], "top5_acc": metrics["top5_acc"],
            "mean_class_acc": metrics["mean_class_acc"],
            "videos_scored": metrics["videos_scored"], "videos_listed": metrics["videos_listed"],
            "test_time": metrics["test_time"], "mem_mb": memory_mb(device),
        })
    if metrics["videos_failed"]:
        logger.warning("%d test videos could not be read: %s", len(metrics["videos_failed"]),
                       [loader.dataset.entries[i].path for i in metrics["videos_failed"][:10]])
    logger.info("multi-view test (%d views per video): top-1 %.2f%%  top-5 %.2f%%  "
                "(%d of %d videos scored)", metrics["views_per_video"], metrics["top1_acc"],
                metrics["top5_acc"], metrics["videos_scored"], metrics["videos_listed"])
    return metrics
