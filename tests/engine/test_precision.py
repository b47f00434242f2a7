"""TRAIN.MIXED_PRECISION on the CPU (bf16; fp16 with a GradScaler), the bf16 ->
fp16 fallback on GPUs without native bf16, the scaler through a resume, TF32
unless DETERMINISTIC, and the MODEL.COMPILE + sync_batchnorm warning."""

import logging
import math
import os

import pytest
import torch
from torch import nn

from cgnl_video.config import load_config
from cgnl_video.engine import checkpoint as cu
from cgnl_video.engine import launch, resume
from cgnl_video.engine import train_loop as train_module
from cgnl_video.engine.optim import EpochLRScheduler, build_optimizer
from cgnl_video.engine.precision import amp_dtype, build_grad_scaler, log_precision
from cgnl_video.engine.preflight import run_warnings
from cgnl_video.utils import distributed as du
from cgnl_video.utils.logging import get_logger, read_json_stats
from engine_helpers import make_tiny_dataset, one_thread, tiny_opts
from repo_paths import ROOT

REPO = ROOT
DEMO_CFG = os.path.join(REPO, "configs", "demo", "C2D_CGNL_synthetic.yaml")
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("tiny"))
    make_tiny_dataset(root)
    return root


class _Records(logging.Handler):
    def __init__(self):
        super().__init__()
        self.records = []

    def emit(self, record):
        self.records.append(record)


def _demo_opts(data_root, out, **overrides):
    """The demo config on the tiny data set: 3 iterations of 4 clips per epoch."""
    return tiny_opts(data_root, str(out), DATA__PREPARE_SYNTHETIC=False, TRAIN__EVAL_PERIOD=0,
                     TEST__ENABLE=False, SOLVER__LR_POLICY="cosine", **overrides)


@pytest.mark.parametrize("name", ["bf16", "fp16"])
def test_demo_trains_under_cpu_autocast_with_a_finite_decreasing_loss(name, data_root, tmp_path, monkeypatch):
    outputs, losses = [], []
    real_build, real_ce = launch.build_model, train_module.F.cross_entropy

    def build_recording_outputs(cfg):
        model = real_build(cfg)
        model.register_forward_hook(lambda _module, _inputs, out: outputs.append(out.dtype))
        return model

    def recording_ce(logits, labels):
        loss = real_ce(logits, labels)
        losses.append(loss.item())
        return loss

    monkeypatch.setattr(launch, "build_model", build_recording_outputs)
    monkeypatch.setattr(train_module.F, "cross_entropy", recording_ce)
    cfg = load_config(DEMO_CFG, _demo_opts(data_root, tmp_path, SOLVER__MAX_EPOCH=6, TRAIN__MIXED_PRECISION=True,
                                           TRAIN__AMP_DTYPE=name))
    with one_thread():
        launch.run(cfg)
    assert set(outputs) == {DTYPES[name]}  # the model ran under autocast
    assert len(losses) == 18 and all(math.isfinite(loss) for loss in losses)
    epochs = [r["loss"] for r in read_json_stats(str(tmp_path / "json_stats.log"))]
    # batches of 4 clips make single epochs noisy (fp32 itself goes 1.07, 1.20, 0.79, 0.32,
    # 0.21, 0.30); bf16 and fp16 both end near 0.3
    assert sum(epochs[-2:]) / 2 < 0.6 * epochs[0]
    scaler_state = cu.load_checkpoint(cu.list_checkpoints(str(tmp_path))[-1])["grad_scaler"]
    assert bool(scaler_state) == (name == "fp16")  # fp16 trains with a loss scaler, saved


def _amp_cfg(name):
    return load_config(None, ["TRAIN.MIXED_PRECISION", "True", "TRAIN.AMP_DTYPE", name])


def _fake_gpu(monkeypatch, name, native_bf16):
    """torch.cuda as one GPU called ``name``; bf16 native or only emulated."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: name)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported",
                        lambda including_emulation=True: native_bf16 or including_emulation)


def _logged(cfg, device):
    handler = _Records()
    get_logger().addHandler(handler)
    try:
        log_precision(cfg, device)
    finally:
        get_logger().removeHandler(handler)
    return [(r.levelno, r.getMessage()) for r in handler.records]


def test_bf16_on_a_gpu_that_only_emulates_it_falls_back_to_fp16_with_a_scaler_and_says_so(monkeypatch):
    _fake_gpu(monkeypatch, "Tesla V100-SXM2-32GB", native_bf16=False)
    cfg, gpu = _amp_cfg("bf16"), torch.device("cuda", 0)
    assert amp_dtype(cfg, gpu) == torch.float16
    assert build_grad_scaler(cfg, gpu).is_enabled()
    ((level, message),) = _logged(cfg, gpu)
    assert level == logging.WARNING and "V100" in message and "fp16" in message


def test_bf16_on_a_gpu_with_native_bf16_stays_bf16_without_a_scaler(monkeypatch):
    _fake_gpu(monkeypatch, "NVIDIA A100-SXM4-80GB", native_bf16=True)
    cfg, gpu = _amp_cfg("bf16"), torch.device("cuda", 0)
    assert amp_dtype(cfg, gpu) == torch.bfloat16 and not build_grad_scaler(cfg, gpu).is_enabled()
    assert _logged(cfg, gpu) == [(logging.INFO, "precision: bfloat16 autocast on cuda")]
    assert amp_dtype(_amp_cfg("fp16"), gpu) == torch.float16


def test_precision_on_the_cpu_follows_the_config():
    cpu = torch.device("cpu")
    assert amp_dtype(load_config(None, []), cpu) is None
    assert amp_dtype(_amp_cfg("bf16"), cpu) == torch.bfloat16
    assert amp_dtype(_amp_cfg("fp16"), cpu) == torch.float16 and build_grad_scaler(_amp_cfg("fp16"), cpu).is_enabled()
    assert _logged(_amp_cfg("fp16"), cpu) == [(logging.INFO, "precision: float16 autocast on cpu with a GradScaler")]


def test_the_fp16_loss_scale_survives_a_resume(tmp_path):
    cfg = load_config(None, ["TRAIN.MIXED_PRECISION", "True", "TRAIN.AMP_DTYPE", "fp16", "OUTPUT_DIR", str(tmp_path)])
    cpu = torch.device("cpu")

    def parts():
        model = nn.Linear(3, 2)
        optimizer = build_optimizer(model, cfg)
        return model, optimizer, EpochLRScheduler(optimizer, cfg), build_grad_scaler(cfg, cpu)

    model, optimizer, scheduler, scaler = parts()
    scaler.scale(model(torch.randn(4, 3)).sum()).backward()
    scaler.step(optimizer)
    scaler.update(new_scale=1024.0)  # as after a few overflows
    cu.save_checkpoint(str(tmp_path), 1, resume.checkpoint_state(model, optimizer, scheduler, scaler, 1, cfg),
                       keep=2)
    model, optimizer, scheduler, resumed = parts()
    assert resume.resume_from_last(cfg, model, optimizer, scheduler, resumed)["epoch"] == 1
    assert resumed.get_scale() == 1024.0 and resumed.state_dict() == scaler.state_dict()


def _cudnn_conv_tf32():
    """cuDNN's fp32 convolution precision: "tf32" or "ieee" (torch >= 2.9), else the legacy flag."""
    if hasattr(torch.backends.cudnn, "conv"):
        return torch.backends.cudnn.conv.fp32_precision
    return "tf32" if torch.backends.cudnn.allow_tf32 else "ieee"


def _set_cudnn_conv_tf32(precision):
    if hasattr(torch.backends.cudnn, "conv"):
        torch.backends.cudnn.conv.fp32_precision = precision
        torch.backends.cudnn.rnn.fp32_precision = precision
    else:
        torch.backends.cudnn.allow_tf32 = precision == "tf32"


@pytest.fixture
def restore_matmul_precision():
    cudnn = torch.backends.cudnn
    before = (torch.get_float32_matmul_precision(), torch.are_deterministic_algorithms_enabled(), _cudnn_conv_tf32(),
              cudnn.deterministic, cudnn.benchmark)
    yield
    torch.set_float32_matmul_precision(before[0])
    torch.use_deterministic_algorithms(before[1])
    _set_cudnn_conv_tf32(before[2])
    cudnn.deterministic, cudnn.benchmark = before[3:]


@pytest.mark.usefixtures("restore_matmul_precision")
def test_fp32_matmuls_use_tf32_unless_deterministic():
    du.seed_everything(0)
    assert torch.get_float32_matmul_precision() == "high"
    if hasattr(torch.backends.mkldnn, "matmul"):  # CPU matmuls stay full fp32 (CPU results unchanged)
        assert torch.backends.mkldnn.matmul.fp32_precision == "ieee"
    du.seed_everything(0, deterministic=True)
    assert torch.get_float32_matmul_precision() == "highest"


@pytest.mark.usefixtures("restore_matmul_precision")
def test_deterministic_turns_tf32_off_for_cudnn_convolutions_too():
    """cuDNN's TF32 switch for convolutions is separate from the matmul precision: on
    by default, it must go off with DETERMINISTIC (docs/TRAINING.md promises no TF32)."""
    du.seed_everything(0)
    assert _cudnn_conv_tf32() == "tf32"
    du.seed_everything(0, deterministic=True)
    assert _cudnn_conv_tf32() == "ieee"
    if hasattr(torch.backends.cudnn, "rnn"):  # RNNs too (no TF32 anywhere)
        assert torch.backends.cudnn.rnn.fp32_precision == "ieee"
    du.seed_everything(0)
    assert _cudnn_conv_tf32() == "tf32"


@pytest.mark.usefixtures("restore_matmul_precision")
@pytest.mark.parametrize("deterministic", [False, True])
def test_the_run_trains_with_tf32_unless_deterministic_and_restores_the_setting(deterministic, data_root, tmp_path,
                                                                                monkeypatch):
    seen = []
    real_fit = launch.fit
    cudnn = torch.backends.cudnn

    def recording_fit(*args):
        seen.append((torch.get_float32_matmul_precision(), _cudnn_conv_tf32(), cudnn.deterministic))
        return real_fit(*args)

    monkeypatch.setattr(launch, "fit", recording_fit)
    torch.set_float32_matmul_precision("medium")
    before_conv = "tf32" if deterministic else "ieee"  # the opposite of what the run sets
    _set_cudnn_conv_tf32(before_conv)
    cudnn.deterministic = False
    cfg = load_config(None, tiny_opts(data_root, str(tmp_path), SOLVER__MAX_EPOCH=1, TEST__ENABLE=False,
                                      TRAIN__EVAL_PERIOD=0, DETERMINISTIC=deterministic))
    with one_thread():
        launch.run(cfg)
    assert seen == [("highest", "ieee", True) if deterministic else ("high", "tf32", False)]
    assert torch.get_float32_matmul_precision() == "medium"
    assert _cudnn_conv_tf32() == before_conv and cudnn.deterministic is False


def test_compile_with_sync_batchnorm_on_several_processes_is_warned_about():
    cfg = load_config(None, ["MODEL.COMPILE", "True", "RESNET.NORM", "sync_batchnorm"])
    (warning,) = run_warnings(cfg, 8)
    assert "MODEL.COMPILE" in warning and "SyncBatchNorm" in warning
    assert run_warnings(cfg, 1) == []  # one process: SyncBatchNorm acts as BatchNorm
    assert run_warnings(load_config(None, ["MODEL.COMPILE", "True"]), 8) == []


def test_benchmark_precision_label_reads_cudnn_tf32_through_the_new_api_after_deterministic():
    """torch >= 2.9: once DETERMINISTIC set cuDNN's conv precision to "ieee" through the new
    API, reading the old allow_tf32 flag raises; the benchmarks' label must not."""
    import sys
    sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
    from _common import compute_precision

    from cgnl_video.utils.distributed import kernel_settings, restore_kernel_settings, seed_everything

    saved = kernel_settings()
    try:
        seed_everything(0, deterministic=True)
        cuda = torch.device("cuda")  # only the label's branch: no GPU is touched
        assert compute_precision(None, cuda) == "fp32"
        assert compute_precision(torch.bfloat16, cuda) == "bf16"
        assert compute_precision(None, torch.device("cpu")) == "fp32"
        seed_everything(0, deterministic=False)
    finally:
        restore_kernel_settings(saved)
