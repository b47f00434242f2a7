"""A process pool that survives its workers: a crash costs one item, never the run.

``multiprocessing.Pool`` waits forever for the result of a worker that died (a decoder
crashing on a corrupt video, the kernel's OOM killer). Here the parent hands each
worker one item at a time over its own pipe, so it always knows what a dead worker
was doing: that item is reported as a ``WorkerCrash`` and a fresh worker takes over.
"""

import ctypes
import multiprocessing
import signal
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from typing import Any, Callable, Iterable, Iterator, List, Optional, Tuple


@dataclass(frozen=True)
class WorkerCrash:
    """The result of an item whose worker died or raised; ``reason`` says how."""

    reason: str


def _serve(conn: Connection, func: Callable[[Any], Any]) -> None:
    """Worker loop: receive an item, send back ``func(item)``; ``None`` ends the loop.

    Ctrl-C is left to the parent, which stops the workers itself; a worker whose
    parent is killed dies with it (so no orphan writes on behind a rerun's back).
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _die_with_parent()
    while True:
        item = conn.recv()
        if item is None:
            return
        try:
            result = func(item)
        except Exception as error:  # noqa: BLE001 - reported to the parent, the worker goes on
            result = WorkerCrash(f"{type(error).__name__}: {error}")
        conn.send(result)


def _die_with_parent() -> None:
    """Ask Linux to SIGKILL this process when its parent exits (no-op elsewhere)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


class _Slot:
    """One worker process, its pipe and the item it is working on."""

    def __init__(self, context: Any, func: Callable[[Any], Any]) -> None:
        self.conn, child = context.Pipe()
        self.process = context.Process(target=_serve, args=(child, func), daemon=True)
        self.process.start()
        child.close()
        self.item: Any = None
        self.busy = False

    def give(self, item: Any) -> None:
        self.item, self.busy = item, True
        self.conn.send(item)

    def stop(self, wait: bool = True) -> None:
        """End the worker: after its current item when ``wait``, else at once."""
        if wait and self.process.is_alive():
            try:
                self.conn.send(None)
            except OSError:
                pass
            self.process.join(timeout=5)
        if self.process.is_alive():
            self.process.terminate()
            self.process.join()
        self.conn.close()


def parallel_map(
    func: Callable[[Any], Any], items: Iterable[Any], workers: int
) -> Iterator[Tuple[Any, Any]]:
    """Yield ``(item, func(item))`` in completion order, computed in ``workers`` processes.

    ``func`` must be a module-level function (workers are spawned). An item whose
    worker crashed or raised yields a ``WorkerCrash`` as its result.
    """
    context = multiprocessing.get_context("spawn")
    pending = iter(items)
    slots: List[_Slot] = []

    def feed(slot: _Slot) -> None:
        item: Optional[Any] = next(pending, None)
        if item is not None:
            slot.give(item)

    finished = False
    try:
        for _ in range(max(1, workers)):
            item = next(pending, None)
            if item is None:
                break
            slots.append(_Slot(context, func))
            slots[-1].give(item)
        while any(slot.busy for slot in slots):
            busy = [slot for slot in slots if slot.busy]
            wait([s.conn for s in busy] + [s.process.sentinel for s in busy])
            for index, slot in enumerate(slots):
                if not slot.busy:
                    continue
                result = _collect(slot)
                if result is None:
                    continue
                item, slot.busy = slot.item, False
                if isinstance(result, WorkerCrash) and not slot.process.is_alive():
                    slot.stop()
                    slots[index] = slot = _Slot(context, func)
                yield item, result
                feed(slot)
        finished = True
    finally:
        for slot in slots:
            slot.stop(wait=finished)


def _collect(slot: _Slot) -> Optional[Any]:
    """The slot's result if it has one (or a WorkerCrash if it died); ``None`` if still working."""
    if slot.conn.poll():
        try:
            return slot.conn.recv()
        except (EOFError, OSError):
            pass
    elif slot.process.is_alive():
        return None
    slot.process.join()
    return WorkerCrash(f"worker process died (exit code {slot.process.exitcode})")
