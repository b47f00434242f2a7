"""The main job behind ``tools/run_net.py``: train (TRAIN.ENABLE), then run the
multi-view test (TEST.ENABLE), in one process or under torchrun.

    python tools/run_net.py --cfg configs/minikinetics/R101_CGNL8.yaml [KEY VALUE ...]
    torchrun --nproc_per_node 8 tools/run_net.py --cfg ... [KEY VALUE ...]
"""

import argparse
import os
import sys
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from fvcore.common.config import CfgNode
from torch import nn

from cgnl_video.config import ConfigError, load_config
from cgnl_video.data import build_loader
from cgnl_video.engine import checkpoint as cu
from cgnl_video.engine.evaluate import run_test, write_test_outputs
from cgnl_video.engine.precision import log_precision
from cgnl_video.engine.preflight import DataMissingError, check_data, check_files, check_run, run_warnings
from cgnl_video.engine.metrics import memory_mb
from cgnl_video.engine.train_loop import NonFiniteLossError
from cgnl_video.engine.trainer import fit
from cgnl_video.models import build_model, prepare_for_speed
from cgnl_video.utils import distributed as du
from cgnl_video.utils.io import atomic_write_text
from cgnl_video.utils.logging import JsonStatsWriter, get_logger, setup_logging

CONFIG_DUMP = "config.yaml"


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Train and/or test a C2D (+CGNL/NL) video model.",
        epilog="Example: python tools/run_net.py --cfg configs/demo/C2D_CGNL_synthetic.yaml "
               "SOLVER.MAX_EPOCH 5 OUTPUT_DIR ./output/demo",
    )
    parser.add_argument("--cfg", dest="cfg_file", required=True, help="experiment YAML file")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE pairs overriding the file")
    return parser.parse_args(argv)


def build_model_on(cfg: CfgNode, device: torch.device) -> nn.Module:
    """The model of ``cfg`` on ``device``, with MODEL.CHANNELS_LAST / MODEL.COMPILE applied."""
    return prepare_for_speed(build_model(cfg).to(device), cfg)


def load_test_weights(cfg: CfgNode, model: nn.Module, trained: bool) -> Tuple[str, Optional[int]]:
    """Load the weights to test; returns where they came from and their epoch (if known)."""
    if cfg.TEST.CHECKPOINT_FILE_PATH:
        state = cu.load_model_weights(model, cfg.TEST.CHECKPOINT_FILE_PATH)
        return cfg.TEST.CHECKPOINT_FILE_PATH, state.get("epoch")
    if trained:
        return "the model just trained", cfg.SOLVER.MAX_EPOCH
    checkpoints = cu.list_checkpoints(cfg.OUTPUT_DIR)  # not empty: checked by check_files
    state = cu.load_model_weights(model, checkpoints[-1])
    return checkpoints[-1], state.get("epoch")


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
    JsonStatsWriter(cfg.OUTPUT_DIR).write({
        "split": "test", "epoch": epoch, "loss": metrics["loss"],
        "top1_err": 100 - metrics["top1_acc"], "top5_err": 100 - metrics["top5_acc"],
        "top1_acc": metrics["top1_acc"], "top5_acc": metrics["top5_acc"],
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


def run(cfg: CfgNode) -> Optional[Dict]:
    """Train and/or test as ``cfg`` says. Returns the test metrics on rank 0 (else None)."""
    rank, world_size = du.init_distributed(cfg.DIST.BACKEND)
    deterministic_before, threads_before = torch.are_deterministic_algorithms_enabled(), torch.get_num_threads()
    matmul_precision_before = torch.get_float32_matmul_precision()
    try:
        setup_logging(None, rank)  # console only until the checks pass
        check_run(cfg, world_size)
        if cfg.DATA.PREPARE_SYNTHETIC:
            from cgnl_video.engine.demo_data import prepare_demo_data

            if du.is_main_process():
                prepare_demo_data(cfg)
            du.barrier()
        check_data(cfg)
        check_files(cfg)
        logger = setup_logging(cfg.OUTPUT_DIR, rank)
        if du.is_main_process():
            atomic_write_text(os.path.join(cfg.OUTPUT_DIR, CONFIG_DUMP), cfg.dump())
        logger.info("%d process(es); config written to %s", world_size,
                    os.path.join(cfg.OUTPUT_DIR, CONFIG_DUMP))
        for warning in run_warnings(cfg, world_size):
            logger.warning(warning)
        if cfg.NUM_THREADS > 0:
            torch.set_num_threads(cfg.NUM_THREADS)
        du.seed_everything(cfg.RNG_SEED + rank, cfg.DETERMINISTIC)
        device = du.select_device()
        log_precision(cfg, device)
        model = build_model_on(cfg, device)
        if cfg.TRAIN.ENABLE:
            fit(cfg, model, device)
        return multi_view_test(cfg, model, device, trained=cfg.TRAIN.ENABLE) if cfg.TEST.ENABLE else None
    finally:
        torch.use_deterministic_algorithms(deterministic_before)
        torch.set_num_threads(threads_before)
        torch.set_float32_matmul_precision(matmul_precision_before)
        du.cleanup_distributed()


def main(argv: Optional[List[str]] = None) -> int:
    """Command-line entry: exit status 2 for a bad config or missing data, 1 for a failed run."""
    args = parse_args(argv)
    try:
        cfg = load_config(args.cfg_file, args.opts)
        metrics = run(cfg)
    except (ConfigError, DataMissingError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except NonFiniteLossError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if metrics is not None:
        print(f"Multi-view test top-1: {metrics['top1_acc']:.2f}%  top-5: {metrics['top5_acc']:.2f}%  "
              f"({metrics['videos_scored']}/{metrics['videos_listed']} videos, "
              f"{metrics['views_per_video']} views each)")
    return 0
