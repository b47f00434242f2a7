"""Distributed helpers: process-group setup from torchrun's variables, rank and
world queries, object gathering, and seeding.

``python tools/run_net.py`` is a single process (no process group); under
``torchrun`` the variables RANK, WORLD_SIZE and LOCAL_RANK (with MASTER_ADDR and
MASTER_PORT) describe the launch, and ``init_distributed`` joins the group.
"""

import os
import random
from datetime import timedelta
from typing import Any, List, Tuple

import numpy as np
import torch
import torch.distributed as dist


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
    """DIST.BACKEND: "auto" is nccl when CUDA is usable, gloo otherwise."""
    if backend != "auto":
        return backend
    return "nccl" if torch.cuda.is_available() else "gloo"


def select_device() -> torch.device:
    """This process's device: cuda:LOCAL_RANK when CUDA is usable, else the CPU."""
    if not torch.cuda.is_available():
        return torch.device("cpu")
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    torch.cuda.set_device(local_rank)
    return torch.device("cuda", local_rank)


def init_distributed(backend: str = "auto", timeout_minutes: float = 30.0) -> Tuple[int, int]:
    """Join the process group that torchrun describes; a no-op for one plain process.

    Returns ``(rank, world_size)``.
    """
    if is_distributed():
        return get_rank(), get_world_size()
    if not launched_by_torchrun() or int(os.environ["WORLD_SIZE"]) == 1:
        return 0, 1
    select_device()
    dist.init_process_group(backend=resolve_backend(backend), init_method="env://",
                            timeout=timedelta(minutes=timeout_minutes))
    return get_rank(), get_world_size()


def cleanup_distributed() -> None:
    """Leave the process group (if any)."""
    if is_distributed():
        dist.destroy_process_group()


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def all_gather_object(obj: Any) -> List[Any]:
    """``[obj of rank 0, obj of rank 1, ...]``; ``[obj]`` in a single process."""
    if not is_distributed():
        return [obj]
    gathered: List[Any] = [None] * get_world_size()
    dist.all_gather_object(gathered, obj)
    return gathered


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum of ``tensor`` over all processes (a new tensor; the input is unchanged)."""
    out = tensor.detach().clone()
    if is_distributed():
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Rank ``src``'s ``obj`` on every process."""
    if not is_distributed():
        return obj
    holder = [obj]
    dist.broadcast_object_list(holder, src=src)
    return holder[0]


def seed_everything(seed: int, deterministic: bool = False) -> None:
    """Seed python, numpy and torch; with ``deterministic`` also ask torch for
    deterministic kernels (cuDNN included) so a CPU run repeats bit for bit."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
    else:
        torch.backends.cudnn.benchmark = torch.cuda.is_available()


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
    return states


def set_rng_states(states: dict) -> None:
    """Restore what ``get_rng_states`` returned."""
    version, internal, gauss = states["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = states["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        cuda_states = states["cuda"]
        if len(cuda_states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda_states)
