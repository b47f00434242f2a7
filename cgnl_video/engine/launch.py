"""The job behind ``tools/run_net.py`` (``run(cfg)``): checks, then train
(TRAIN.ENABLE, ``engine.trainer.fit``), then the multi-view test (TEST.ENABLE,
``engine.multiview.multi_view_test``), in one process or in each process of a
torchrun launch. Command-line parsing and exit statuses are ``tools/run_net.py``'s.
"""

import contextlib
import os
from typing import Dict, Iterator, Optional

import torch
from fvcore.common.config import CfgNode
from torch import nn

from cgnl_video.engine.multiview import multi_view_test
from cgnl_video.engine.precision import log_precision
from cgnl_video.engine.preflight import check_data, check_files, check_run, run_warnings
from cgnl_video.engine.trainer import fit
from cgnl_video.models import build_model, prepare_for_speed
from cgnl_video.utils import distributed as du
from cgnl_video.utils.io import atomic_write_text
from cgnl_video.utils.logging import package_logging_restored, setup_logging
from cgnl_video.utils.tensorboard import check_tensorboard
from cgnl_video.utils.torchcodec_support import check_decoding_backend

CONFIG_DUMP = "config.yaml"


def build_model_on(cfg: CfgNode, device: torch.device) -> nn.Module:
    """The model of ``cfg`` on ``device``, with MODEL.CHANNELS_LAST / MODEL.COMPILE applied."""
    return prepare_for_speed(build_model(cfg).to(device), cfg)


@contextlib.contextmanager
def _torch_settings_restored() -> Iterator[None]:
    """Put back the process-wide torch settings a run changes (threads, and the kernel
    switches of ``seed_everything``: determinism, cuDNN autotuning, TF32 for matmuls and
    convolutions), so that a run called from Python leaves none behind."""
    kernels_before, threads_before = du.kernel_settings(), torch.get_num_threads()
    try:
        yield
    finally:
        du.restore_kernel_settings(kernels_before)
        torch.set_num_threads(threads_before)


def _prepare(cfg: CfgNode, rank: int, world_size: int) -> None:
    """Check the run, make the demo data if asked, then log to OUTPUT_DIR and write its config."""
    setup_logging(None, rank)  # console only until the checks pass
    check_run(cfg, world_size)
    check_tensorboard(cfg)
    check_decoding_backend(cfg.DATA.DECODING_BACKEND)
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


def run(cfg: CfgNode) -> Optional[Dict]:
    """Train and/or test as ``cfg`` says. Returns the test metrics on rank 0 (else None).

    Raises ``ConfigError`` / ``DataMissingError`` before any work for a bad run,
    ``UnsupportedGPUError`` (also before any work) for a GPU the installed torch has no
    kernels for, ``NonFiniteLossError`` when training diverges, and, on every rank,
    ``RunInterrupted`` when SIGTERM / SIGUSR1 stopped training (its checkpoint written:
    the same call again resumes; ``engine.preemption``).
    """
    rank, world_size = du.init_distributed(cfg.DIST.BACKEND)
    try:
        with _torch_settings_restored(), package_logging_restored():
            device = du.select_device()  # first: a GPU this torch cannot run fails before any work
            _prepare(cfg, rank, world_size)
            if cfg.NUM_THREADS > 0:
                torch.set_num_threads(cfg.NUM_THREADS)
            du.seed_everything(cfg.RNG_SEED + rank, cfg.DETERMINISTIC)
            log_precision(cfg, device)
            model = build_model_on(cfg, device)
            if cfg.TRAIN.ENABLE:
                fit(cfg, model, device)
            return multi_view_test(cfg, model, device, trained=cfg.TRAIN.ENABLE) if cfg.TEST.ENABLE else None
    finally:
        du.cleanup_distributed()
