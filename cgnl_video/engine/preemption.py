"""Stopping a training run on a signal without losing work (docs/TRAINING.md, section 6).

SIGTERM and SIGUSR1 (``STOP_SIGNALS``: SLURM's preemption and time-limit warning,
torchrun's stop) only set a flag (``StopRequest``) while training runs
(``catch_stop_signals``). The training loop reads it once per iteration, all ranks
agree on it in the all-reduce they do anyway (``stop_votes`` / ``agreed_signal``), finish
that iteration, write a mid-epoch checkpoint and raise ``RunInterrupted`` on every rank;
``tools/run_net.py`` then exits with ``EXIT_INTERRUPTED`` (75) and rerunning the same
command resumes from that checkpoint. Loader workers ignore them (``shield_workers``).
"""

import contextlib
import functools
import signal
import threading
from typing import Callable, Iterator, Optional, Sequence, Tuple

import torch

from cgnl_video.utils import distributed as du

#: the signals that stop a run at the next iteration, checkpointed
STOP_SIGNALS: Tuple[signal.Signals, ...] = (signal.SIGTERM, signal.SIGUSR1)
#: exit status of a run stopped by one of them (sysexits EX_TEMPFAIL: resumable, run the same command again)
EXIT_INTERRUPTED = 75


class RunInterrupted(RuntimeError):
    """A stop signal ended the run after ``checkpoint`` was written; raised on every rank."""

    def __init__(self, signum: int, checkpoint: str) -> None:
        super().__init__(f"stopped by {signal.Signals(signum).name}; the run is saved in {checkpoint}: "
                         "run the same command again to resume from it")
        self.signum = int(signum)
        self.checkpoint = checkpoint


class StopRequested(Exception):
    """Internal: every rank agreed to stop (``signum``); the trainer checkpoints, then raises
    ``RunInterrupted``."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


class StopRequest:
    """The flag the stop signals set: ``signum`` of the last one received, 0 for none."""

    def __init__(self) -> None:
        self.signum = 0

    def __call__(self, signum: int, _frame=None) -> None:  # the signal handler: only sets the flag
        self.signum = signum


def stop_votes(request: Optional[StopRequest]) -> Sequence[float]:
    """This rank's vote, one entry per ``STOP_SIGNALS`` (1.0 for the signal received), to be
    summed over the ranks and read back with ``agreed_signal``."""
    signum = request.signum if request is not None else 0
    return [float(signum == stop) for stop in STOP_SIGNALS]


def agreed_signal(summed_votes: Sequence[float]) -> int:
    """The stop signal the ranks agree on from their summed ``stop_votes`` (the first of
    ``STOP_SIGNALS`` that any rank received), 0 when no rank got one."""
    return next((int(stop) for stop, votes in zip(STOP_SIGNALS, summed_votes) if votes > 0), 0)


def agreed_stop(request: Optional[StopRequest]) -> int:
    """``agreed_signal`` of every rank's vote: collective in a distributed run (one small
    all-reduce; the training loop sends its votes with the loss instead)."""
    votes = stop_votes(request)
    if du.is_distributed():
        votes = du.all_reduce_sum(torch.tensor(votes, dtype=torch.float64)).tolist()
    return agreed_signal(votes)


@contextlib.contextmanager
def catch_stop_signals() -> Iterator[StopRequest]:
    """While the block runs, ``STOP_SIGNALS`` set the returned request instead of ending the
    process; the previous handlers come back afterwards (also on an exception). Outside
    the main thread (where Python cannot install handlers) nothing is installed."""
    request = StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield request
        return
    previous = {stop: signal.signal(stop, request) for stop in STOP_SIGNALS}
    try:
        yield request
    finally:
        for stop, handler in previous.items():
            signal.signal(stop, handler if handler is not None else signal.SIG_DFL)


def _ignore_stop_signals(init: Optional[Callable[[int], None]], worker_id: int) -> None:
    for stop in STOP_SIGNALS:
        signal.signal(stop, signal.SIG_IGN)
    if init is not None:
        init(worker_id)


def shield_workers(loader) -> None:
    """Make ``loader``'s worker processes ignore ``STOP_SIGNALS`` (before its own
    ``worker_init_fn``): SLURM signals every process of a job, and a worker killed by it
    would end the run before the checkpoint. Workers still end with the training process."""
    loader.worker_init_fn = functools.partial(_ignore_stop_signals, loader.worker_init_fn)
