"""A GPU the installed torch has no kernels for (a V100 with the default CUDA 13 wheels):
the first CUDA use (``select_device``, which every job and tool calls) fails with an
error naming the build to install, before any work; the architecture matching rules;
and the bf16 -> fp16 fallback on the GPUs and builds where it applies. torch.cuda is
faked (device, capability, the build's architecture list): no GPU needed."""

import os

import pytest
import torch

from cgnl_video.config import load_config
from cgnl_video.engine import launch
from cgnl_video.engine.precision import amp_dtype, build_grad_scaler
from cgnl_video.utils import distributed as du
from repo_paths import ROOT
from tools_fixtures import make_inputs, run_tool, write_tiny_config

REPO = ROOT
DEMO_CFG = os.path.join(REPO, "configs", "demo", "C2D_CGNL_synthetic.yaml")
#: torch.cuda.get_arch_list() of torch 2.14.1+cu130 (what pip install -e . installs)
CU130 = ["sm_75", "sm_80", "sm_86", "sm_90", "sm_100", "sm_120"]
#: that of a CUDA 12.6 build (compute capability 5.0 to 9.0)
CU126 = ["sm_50", "sm_60", "sm_70", "sm_75", "sm_80", "sm_86", "sm_90"]
V100, T4, A100, H100 = ("Tesla V100-SXM2-32GB", (7, 0)), ("Tesla T4", (7, 5)), ("NVIDIA A100", (8, 0)), \
    ("NVIDIA H100 80GB HBM3", (9, 0))


def fake_gpu(monkeypatch, gpu, archs):
    """torch.cuda as one GPU ``gpu`` (name, capability) and a torch build with kernels
    for ``archs``; bf16 native from compute capability 8.0 on. Returns set_device's calls."""
    name, capability = gpu
    calls = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: name)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    monkeypatch.setattr(torch.cuda, "get_arch_list", lambda: list(archs))
    monkeypatch.setattr(torch.cuda, "set_device", calls.append)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported",
                        lambda including_emulation=True: capability >= (8, 0) or including_emulation)
    monkeypatch.setattr(torch.version, "hip", None)
    return calls


@pytest.mark.parametrize("arch, capability, runs", [
    ("sm_70", (7, 0), True),
    ("sm_75", (7, 0), False),   # no cubin runs on an older GPU
    ("sm_80", (8, 6), True),    # a cubin runs on later minors of its major (A100 code on an RTX 3090)
    ("sm_86", (8, 0), False),
    ("sm_90", (10, 0), False),  # ... but not on another major
    ("sm_120", (12, 1), True),
    ("sm_90a", (9, 0), True),   # arch-specific features: that capability only
    ("sm_90a", (9, 1), False),
    ("compute_70", (8, 6), True),  # PTX: compiled by the driver for any later GPU
    ("compute_70", (12, 0), True),
    ("compute_120", (12, 0), True),
    ("compute_90", (8, 6), False),
    ("gfx90a", (9, 0), False),  # not a CUDA architecture
])
def test_which_architecture_entries_run_on_which_gpu(arch, capability, runs):
    assert du.arch_runs_on(arch, capability) is runs


def test_a_v100_with_the_cuda13_wheels_fails_on_first_use_naming_the_cuda126_build(monkeypatch):
    calls = fake_gpu(monkeypatch, V100, CU130)
    with pytest.raises(du.UnsupportedGPUError) as error:
        du.select_device()
    message = str(error.value)
    assert "V100" in message and "compute capability 7.0" in message and "sm_75" in message
    assert "pip install torch torchvision --index-url https://download.pytorch.org/whl/cu126" in message
    assert calls == []  # nothing done on the GPU


@pytest.mark.parametrize("gpu, archs", [(V100, CU126), (T4, CU130), (T4, CU126), (A100, CU130), (H100, CU130),
                                        (V100, ["sm_80", "compute_60"]),  # a PTX entry below the GPU
                                        (("NVIDIA GB10", (12, 1)), CU130),  # sm_120 cubins run on 12.1
                                        (V100, [])])  # an empty list (a build that does not say): no check
def test_a_gpu_the_build_has_kernels_for_is_selected(gpu, archs, monkeypatch):
    calls = fake_gpu(monkeypatch, gpu, archs)
    assert du.select_device() == torch.device("cuda", 0) and calls == [0]


@pytest.mark.parametrize("gpu, archs", [(V100, CU126), (T4, CU130)])
def test_bf16_falls_back_to_fp16_on_the_builds_where_the_gpu_runs(gpu, archs, monkeypatch):
    """The fallback of engine/precision.py is reachable where the GPU runs at all: a V100
    with the CUDA 12.6 build, a T4 with either build."""
    fake_gpu(monkeypatch, gpu, archs)
    device = du.select_device()
    cfg = load_config(None, ["TRAIN.MIXED_PRECISION", "True", "TRAIN.AMP_DTYPE", "bf16"])
    assert amp_dtype(cfg, device) == torch.float16 and build_grad_scaler(cfg, device).is_enabled()


def test_a_gpu_newer_than_the_build_is_named_without_the_cuda126_advice(monkeypatch):
    fake_gpu(monkeypatch, ("a future GPU", (13, 0)), CU130)
    with pytest.raises(du.UnsupportedGPUError, match="sm_130") as error:
        du.select_device()
    assert "cu126" not in str(error.value)
    fake_gpu(monkeypatch, ("a future GPU", (13, 0)), CU130 + ["compute_120"])  # with PTX it runs
    assert du.select_device() == torch.device("cuda", 0)


def test_the_run_fails_before_any_work(monkeypatch, tmp_path):
    """run(): the GPU check comes before the demo data, the output folder, the model."""
    fake_gpu(monkeypatch, V100, CU130)
    from cgnl_video.engine import demo_data

    def no_work(_cfg):
        raise AssertionError("the demo data was made before the GPU was checked")

    monkeypatch.setattr(demo_data, "prepare_demo_data", no_work)
    out = tmp_path / "out"
    cfg = load_config(DEMO_CFG, ["OUTPUT_DIR", str(out)])
    with pytest.raises(du.UnsupportedGPUError, match="cu126"):
        launch.run(cfg)
    assert not out.exists()


@pytest.fixture(scope="module")
def tool_files(tmp_path_factory):
    folder = str(tmp_path_factory.mktemp("gpu_tools"))
    return {"cfg": write_tiny_config(folder), "checkpoint": os.path.join(folder, "never_read.pyth"),
            "folder": folder, **make_inputs(os.path.join(folder, "inputs"))}


@pytest.mark.parametrize("tool", ["run_net", "predict", "extract_features", "visualize_attention"])
def test_every_tool_reports_the_gpu_with_exit_status_2(tool, tool_files, monkeypatch, capsys, tmp_path):
    fake_gpu(monkeypatch, V100, CU130)
    files = tool_files
    argv = {
        "run_net": ["--cfg", files["cfg"], "OUTPUT_DIR", str(tmp_path / "run")],
        "predict": ["--cfg", files["cfg"], "--checkpoint", files["checkpoint"], files["video"]],
        "extract_features": ["--cfg", files["cfg"], "--checkpoint", files["checkpoint"], "--out",
                             str(tmp_path / "features"), "--root", os.path.dirname(files["video"]), files["video"]],
        "visualize_attention": ["--cfg", files["cfg"], "--checkpoint", files["checkpoint"], files["video"],
                                "--out", str(tmp_path / "maps.png")],
    }[tool]
    assert run_tool(tool, argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: cuda:0 (Tesla V100") and "whl/cu126" in err
    assert not any(tmp_path.iterdir())  # nothing written
