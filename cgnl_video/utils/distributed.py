"""Distributed helpers: process-group setup from torchrun's variables, rank and
world queries, collectives, and seeding.

``python tools/run_net.py`` is a single process (no process group); under
``torchrun`` the variables RANK, WORLD_SIZE and LOCAL_RANK (with MASTER_ADDR and
MASTER_PORT) describe the launch, and ``init_distributed`` joins the group.

NCCL serves CUDA tensors only, yet some collectives are naturally on the CPU (epoch
meters; pickled objects: RNG states, test scores, the checkpoint path; the barrier).
On a GPU ``init_distributed`` creates one group with two backends,
``"cpu:gloo,cuda:nccl"``, so every tensor is served where it lives, with no copies
to the GPU and back. For a group made elsewhere that serves CUDA only (plain
``"nccl"``), the helpers route CPU tensors and objects through a gloo group over the
same ranks, made on first use (``group_for``). docs/TRAINING.md, "Multi-GPU checklist".
"""

import os
import random
from datetime import timedelta
from typing import Any, Dict, List, Optional, Set, Tuple

import numpy as np
import torch
import torch.distributed as dist

from cgnl_video.utils.logging import get_logger


def is_distributed() -> bool:
    """True inside an initialised process group."""
    return dist.is_available() and dist.is_initialized()


def get_rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def get_world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def is_main_process() -> bool:
    """Rank 0, the only process that writes logs, checkpoints and metrics."""
    return get_rank() == 0


def launched_by_torchrun() -> bool:
    """True when torchrun (or another launcher) set WORLD_SIZE and RANK."""
    return "WORLD_SIZE" in os.environ and "RANK" in os.environ


def resolve_backend(backend: str) -> str:
    """DIST.BACKEND as ``init_process_group`` takes it: with CUDA, "auto" and "nccl" are
    ``"cpu:gloo,cuda:nccl"`` (NCCL for CUDA tensors, gloo for CPU ones); without CUDA,
    "auto" is gloo (which serves both)."""
    cuda = torch.cuda.is_available()
    if backend == "nccl" or (backend == "auto" and cuda):
        return "cpu:gloo,cuda:nccl"
    return "gloo"


def select_device() -> torch.device:
    """This process's device: the CUDA device LOCAL_RANK % visible GPUs (made current),
    else the CPU. The modulo keeps one visible GPU per process working (a launcher that
    sets CUDA_VISIBLE_DEVICES per process) as well as all GPUs visible to each process.
    Every job and tool picks its device here, so ``check_gpu_supported`` runs before
    any CUDA work."""
    if not torch.cuda.is_available():
        return torch.device("cpu")
    index = int(os.environ.get("LOCAL_RANK", 0)) % torch.cuda.device_count()
    check_gpu_supported(index)
    torch.cuda.set_device(index)
    return torch.device("cuda", index)


class UnsupportedGPUError(RuntimeError):
    """The installed torch has no kernels for the GPU; the message names the fix."""


#: the torch build for GPUs older than the default wheels' (docs/TRAINING.md, "GPUs and torch builds");
#: the installed build goes first (pip would keep it: it satisfies "torch" already)
LEGACY_GPU_INSTALL = ("pip uninstall -y torch torchvision && "
                      "pip install torch torchvision --index-url https://download.pytorch.org/whl/cu126")
LEGACY_GPU_RANGE = ((5, 0), (9, 0))  # compute capabilities of that build's kernels (x86-64)


def _parse_arch(arch: str) -> Optional[Tuple[str, int, int, str]]:
    """("sm" or "compute", major, minor, suffix) of an entry of ``torch.cuda.get_arch_list()``
    ("sm_86", "sm_90a", "compute_120"); None for another format (e.g. ROCm's gfx names)."""
    kind, _, rest = arch.partition("_")
    digits = rest.rstrip("abcdefghijklmnopqrstuvwxyz")
    if kind not in ("sm", "compute") or len(digits) < 2 or not digits.isdigit():
        return None
    return kind, int(digits[:-1]), int(digits[-1]), rest[len(digits):]


def arch_runs_on(arch: str, capability: Tuple[int, int]) -> bool:
    """Whether code built for ``arch`` (an entry of ``torch.cuda.get_arch_list()``) runs
    on a GPU of compute ``capability``: a cubin ``sm_XY`` on X.Y and later minors of the
    same major (X.Z, Z >= Y), one with arch-specific features (``sm_90a``) on X.Y only;
    PTX (``compute_XY``) on any capability from X.Y on (the driver compiles it)."""
    parsed = _parse_arch(arch)
    if parsed is None:
        return False
    kind, major, minor, suffix = parsed
    if kind == "compute":
        return tuple(capability) >= (major, minor)
    if suffix == "a":
        return tuple(capability) == (major, minor)
    return capability[0] == major and capability[1] >= minor


def check_gpu_supported(index: int) -> None:
    """UnsupportedGPUError naming the torch build to install when the installed torch
    has no kernel that runs on CUDA device ``index`` (its first kernel would fail with
    "no kernel image is available"); nothing when it has one, or when the build's
    architecture list cannot tell (ROCm, an unknown format)."""
    archs = [arch for arch in torch.cuda.get_arch_list() if _parse_arch(arch)]
    if torch.version.hip or not archs:
        return
    capability = tuple(torch.cuda.get_device_capability(index))
    if any(arch_runs_on(arch, capability) for arch in archs):
        return
    major, minor = capability
    low, high = LEGACY_GPU_RANGE
    if low <= capability <= high:
        fix = (f"replace it with the CUDA 12.6 build, which has kernels for compute capability {low[0]}.{low[1]} "
               f"to {high[0]}.{high[1]}: {LEGACY_GPU_INSTALL}")
    else:
        fix = f"install a torch build with kernels for sm_{major}{minor} (or a PTX entry compute_XY at or below it)"
    raise UnsupportedGPUError(
        f"cuda:{index} ({torch.cuda.get_device_name(index)}, compute capability {major}.{minor}) cannot run the "
        f"installed torch {torch.__version__} (CUDA {torch.version.cuda}; kernels for {', '.join(archs)}): "
        f"{fix} (docs/TRAINING.md, \"GPUs and torch builds\"), or run on the CPU with CUDA_VISIBLE_DEVICES=\"\"")


def init_distributed(backend: str = "auto", timeout_minutes: float = 30.0) -> Tuple[int, int]:
    """Join the process group that torchrun describes; a no-op for one plain process.

    On CUDA the group is bound to this process's device (``device_id``). Returns
    ``(rank, world_size)``.
    """
    if is_distributed():
        return get_rank(), get_world_size()
    if not launched_by_torchrun() or int(os.environ["WORLD_SIZE"]) == 1:
        return 0, 1
    device = select_device()
    dist.init_process_group(backend=resolve_backend(backend), init_method="env://",
                            timeout=timedelta(minutes=timeout_minutes),
                            device_id=device if device.type == "cuda" else None)
    return get_rank(), get_world_size()


_SIDE_GROUPS: Dict[int, dist.ProcessGroup] = {}  # id(default group) -> gloo group over the same ranks


def served_device_types(group: Optional[dist.ProcessGroup] = None) -> Set[str]:
    """Device types that ``group`` (default: the default group) has a backend for.

    From its backend configuration, e.g. ``"cpu:gloo,cuda:nccl"`` -> {"cpu", "cuda"}.
    """
    config = dist.get_backend_config(group)
    return {entry.split(":")[0] for entry in config.split(",") if ":" in entry}


def group_for(device: torch.device) -> Optional[dist.ProcessGroup]:
    """The group for collectives on tensors of ``device`` (None: the default group).

    CPU tensors (and pickled objects) go through the default group when it serves the
    CPU, else through a gloo group over the same ranks, created on the first call.
    Collective: every rank must call it at the same point (the helpers below do).
    """
    if not is_distributed() or device.type != "cpu" or "cpu" in served_device_types():
        return None
    key = id(dist.group.WORLD)
    if key not in _SIDE_GROUPS:
        _SIDE_GROUPS[key] = dist.new_group(backend="gloo")
    return _SIDE_GROUPS[key]


def cpu_group() -> Optional[dist.ProcessGroup]:
    """The group for CPU tensors, pickled objects and barriers."""
    return group_for(torch.device("cpu"))


def cleanup_distributed() -> None:
    """Leave the process group (if any)."""
    if is_distributed():
        _SIDE_GROUPS.clear()
        dist.destroy_process_group()


def barrier() -> None:
    if is_distributed():
        dist.barrier(group=cpu_group())


def all_gather_object(obj: Any) -> List[Any]:
    """``[obj of rank 0, obj of rank 1, ...]``; ``[obj]`` in a single process."""
    if not is_distributed():
        return [obj]
    gathered: List[Any] = [None] * get_world_size()
    dist.all_gather_object(gathered, obj, group=cpu_group())
    return gathered


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum of ``tensor`` over all processes (a new tensor on the same device; the input
    is unchanged). CPU and CUDA tensors both work (``group_for``)."""
    out = tensor.detach().clone()
    if is_distributed():
        dist.all_reduce(out, op=dist.ReduceOp.SUM, group=group_for(out.device))
    return out


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Rank ``src``'s ``obj`` on every process."""
    if not is_distributed():
        return obj
    holder = [obj]
    dist.broadcast_object_list(holder, src=src, group=cpu_group())
    return holder[0]


def seed_everything(seed: int, deterministic: bool = False) -> None:
    """Seed python, numpy and torch, and choose the kernels.

    ``deterministic``: torch's deterministic algorithms (cuDNN included), full fp32
    matmuls and full fp32 cuDNN convolutions (no TensorFloat-32 anywhere), so a run
    repeats bit for bit. Otherwise cuDNN autotuning on CUDA and TensorFloat-32 for fp32
    matmuls and convolutions on CUDA (``set_float32_matmul_precision("high")``, cuDNN's
    conv precision "tf32": Ampere and newer GPUs). CPU matmuls stay full fp32 either way:
    since torch 2.9 the global setting also reaches oneDNN, which would round them on
    CPUs with TF32 support and change CPU results (the demo's among them).
    ``kernel_settings`` / ``restore_kernel_settings`` save and put back what this sets.
    """
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    torch.set_float32_matmul_precision("highest" if deterministic else "high")
    if hasattr(torch.backends.mkldnn, "matmul"):  # torch >= 2.9: per-backend precision
        torch.backends.mkldnn.matmul.fp32_precision = "ieee"
    _set_cudnn_tf32(not deterministic)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
    else:
        torch.backends.cudnn.benchmark = torch.cuda.is_available()


def _new_tf32_api() -> bool:
    """torch >= 2.9 sets TF32 per backend and operation (``fp32_precision``); mixing it
    with the older ``allow_tf32`` flags is an error there."""
    return hasattr(torch.backends.cudnn, "conv")


def _set_cudnn_tf32(allowed: bool) -> None:
    """TF32 in cuDNN's fp32 convolutions (and RNNs, so that both flags agree) on or off."""
    if _new_tf32_api():
        precision = "tf32" if allowed else "ieee"
        torch.backends.cudnn.conv.fp32_precision = precision
        torch.backends.cudnn.rnn.fp32_precision = precision
    else:
        torch.backends.cudnn.allow_tf32 = allowed


def cudnn_conv_tf32() -> bool:
    """Whether cuDNN's fp32 convolutions may use TF32 (read through the API of this
    torch: on torch >= 2.9 the old ``allow_tf32`` flag raises once the new one is set)."""
    if _new_tf32_api():
        return torch.backends.cudnn.conv.fp32_precision == "tf32"
    return torch.backends.cudnn.allow_tf32


def kernel_settings() -> Dict[str, Any]:
    """The process-wide switches that ``seed_everything`` (and a run) sets, for
    ``restore_kernel_settings``."""
    settings: Dict[str, Any] = {
        "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
        "matmul_precision": torch.get_float32_matmul_precision(),
        "cudnn_deterministic": torch.backends.cudnn.deterministic,
        "cudnn_benchmark": torch.backends.cudnn.benchmark,
    }
    if hasattr(torch.backends.mkldnn, "matmul"):
        settings["mkldnn_matmul"] = torch.backends.mkldnn.matmul.fp32_precision
    if _new_tf32_api():
        settings["cudnn_conv"] = torch.backends.cudnn.conv.fp32_precision
        settings["cudnn_rnn"] = torch.backends.cudnn.rnn.fp32_precision
    else:
        settings["cudnn_allow_tf32"] = torch.backends.cudnn.allow_tf32
    return settings


def restore_kernel_settings(settings: Dict[str, Any]) -> None:
    """Put back what ``kernel_settings`` returned (the global matmul precision first:
    since torch 2.9 it also sets the per-backend ones restored after it)."""
    torch.use_deterministic_algorithms(settings["deterministic_algorithms"])
    torch.set_float32_matmul_precision(settings["matmul_precision"])
    torch.backends.cudnn.deterministic = settings["cudnn_deterministic"]
    torch.backends.cudnn.benchmark = settings["cudnn_benchmark"]
    if "mkldnn_matmul" in settings:
        torch.backends.mkldnn.matmul.fp32_precision = settings["mkldnn_matmul"]
    if "cudnn_conv" in settings:
        torch.backends.cudnn.conv.fp32_precision = settings["cudnn_conv"]
        torch.backends.cudnn.rnn.fp32_precision = settings["cudnn_rnn"]
    else:
        torch.backends.cudnn.allow_tf32 = settings["cudnn_allow_tf32"]


def get_rng_states() -> dict:
    """Every generator's state in types that ``torch.load(weights_only=True)`` accepts."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    states = {
        "python": random.getstate(),
        "numpy": [kind, torch.from_numpy(np.asarray(keys, dtype=np.int64)), int(pos),
                  int(has_gauss), float(cached)],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
        states["cuda_device"] = torch.cuda.current_device()  # the GPU this process used
    return states


def set_rng_states(states: dict) -> None:
    """Restore what ``get_rng_states`` returned."""
    version, internal, gauss = states["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = states["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        _set_cuda_rng_states(states["cuda"], states.get("cuda_device"))


def _set_cuda_rng_states(saved: List[torch.Tensor], saved_device: Optional[int]) -> None:
    """Every CUDA generator when as many GPUs are visible as when ``saved`` was taken.
    Otherwise (one warning, naming both counts) the generator of the GPU the saving
    process used (``saved_device``; unknown in older checkpoints) goes to this process's
    current GPU, the one it computes on; the others keep their seeded state."""
    visible = torch.cuda.device_count()
    if len(saved) == visible:
        torch.cuda.set_rng_state_all(saved)
        return
    current = torch.cuda.current_device()
    if saved_device is not None and 0 <= saved_device < len(saved):
        torch.cuda.set_rng_state(saved[saved_device], current)
        restored = (f"restored the generator of the GPU it used (cuda:{saved_device} there) on this "
                    f"process's GPU (cuda:{current}); the other GPUs' generators keep their seeded state")
    else:
        restored = "the CUDA generators are not restored (the checkpoint does not say which GPU it used)"
    get_logger().warning("the checkpoint's process saw %d GPU(s), this one sees %d: %s", len(saved), visible,
                         restored)
