"""Helpers for the engine tests: run a function in N gloo processes on 127.0.0.1."""

import os
import socket
from typing import Any, Callable

import torch.multiprocessing as mp


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _entry(rank: int, world_size: int, port: int, fn: Callable, args: tuple) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      LOCAL_RANK=str(rank), WORLD_SIZE=str(world_size), OMP_NUM_THREADS="1")
    import torch

    torch.set_num_threads(1)
    fn(rank, *args)


def run_distributed(fn: Callable[..., Any], world_size: int, *args: Any) -> None:
    """Call ``fn(rank, *args)`` in ``world_size`` processes with torchrun's variables set
    (the process group itself is joined by the code under test)."""
    mp.spawn(_entry, args=(world_size, free_port(), fn, args), nprocs=world_size, join=True)
