"""TensorBoard scalars of a run (TENSORBOARD.ENABLE, off by default).

Rank 0 writes into TENSORBOARD.LOG_DIR ("" = OUTPUT_DIR/tensorboard): per epoch every
json_stats.log record as ``<split>/<field>`` at step = its epoch (so both hold the
same numbers); every LOG_PERIOD iterations ``train_iter/<name>`` at step = the global
iteration (loss, top-1 / top-5 error of rank 0's batch, LR, data and iteration
times, peak memory). Other ranks, and runs with TENSORBOARD.ENABLE False, get a
writer that does nothing. A resumed run hides (``purge_step``) the points logged
after the last checkpoint. tensorboard is an optional extra; ``check_tensorboard``
stops a run that enables it without it installed. Steps and tags: docs/TRAINING.md,
"9. TensorBoard".

    python -m cgnl_video.utils.tensorboard OUTPUT_DIR/tensorboard

prints every scalar tag of a log folder (``scalar_lines``).
"""

import os
import sys
from typing import Any, Dict, List, Mapping, Optional, Tuple

from cgnl_video.config import ConfigError
from cgnl_video.utils import distributed as du

LOG_SUBDIR = "tensorboard"
INSTALL = 'pip install -e ".[tensorboard]"'
# json_stats.log fields that are not curves: the step itself and counts fixed by the data
NOT_SCALARS = ("epoch", "iters", "samples", "videos_listed")


def log_dir(cfg: Any) -> str:
    """TENSORBOARD.LOG_DIR, or OUTPUT_DIR/tensorboard when it is empty."""
    return cfg.TENSORBOARD.LOG_DIR or os.path.join(cfg.OUTPUT_DIR, LOG_SUBDIR)


def check_tensorboard(cfg: Any) -> None:
    """ConfigError naming TENSORBOARD.ENABLE and the install command when it is on but
    tensorboard cannot be imported (every rank checks, so every rank stops alike)."""
    if not cfg.TENSORBOARD.ENABLE:
        return
    try:
        import torch.utils.tensorboard  # noqa: F401 (imports tensorboard, checks its version)
    except ImportError as error:
        raise ConfigError(f"TENSORBOARD.ENABLE: True, but tensorboard cannot be imported ({error}); "
                          f"install it with {INSTALL} (or pip install tensorboard), "
                          f"or set TENSORBOARD.ENABLE False") from error


def _is_scalar(key: str, value: Any) -> bool:
    return key not in NOT_SCALARS and isinstance(value, (int, float)) and not isinstance(value, bool)


class ScalarWriter:
    """Scalars into ``directory``; does nothing when ``directory`` is None.

    ``purge_step``: TensorBoard hides the points this folder already holds at that
    step or later (a resumed run passes its first global iteration).
    """

    def __init__(self, directory: Optional[str], purge_step: Optional[int] = None) -> None:
        self._writer = None
        if directory is not None:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(directory, purge_step=purge_step)

    @property
    def enabled(self) -> bool:
        return self._writer is not None

    def add_scalars(self, prefix: str, values: Mapping[str, float], step: int) -> None:
        """``prefix/name`` = value for each entry, at ``step``."""
        if self._writer is None:
            return
        for name, value in values.items():
            self._writer.add_scalar(f"{prefix}/{name}", value, step)

    def add_record(self, record: Mapping[str, Any]) -> None:
        """A json_stats.log record: its numeric fields as ``<split>/<field>`` at step = its epoch."""
        values = {key: value for key, value in record.items() if _is_scalar(key, value)}
        self.add_scalars(record["split"], values, record.get("epoch") or 0)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def __enter__(self) -> "ScalarWriter":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()


def open_scalar_writer(cfg: Any, purge_step: Optional[int] = None) -> ScalarWriter:
    """The run's writer: into ``log_dir(cfg)`` on rank 0 with TENSORBOARD.ENABLE, a no-op otherwise."""
    enabled = cfg.TENSORBOARD.ENABLE and du.is_main_process()
    return ScalarWriter(log_dir(cfg) if enabled else None, purge_step)


def read_scalars(directory: str) -> Dict[str, List[Tuple[int, float]]]:
    """Every scalar of a log folder as tag -> [(step, value), ...], as TensorBoard shows
    them (its own reader, EventAccumulator: all event files, purged points left out)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    if not os.path.isdir(directory):
        raise FileNotFoundError(f"no TensorBoard log folder {directory}")
    accumulator = EventAccumulator(directory, size_guidance={"scalars": 0})  # 0: keep every point
    accumulator.Reload()
    return {tag: [(event.step, event.value) for event in accumulator.Scalars(tag)]
            for tag in sorted(accumulator.Tags()["scalars"])}


def scalar_lines(scalars: Mapping[str, List[Tuple[int, float]]]) -> List[str]:
    """A table: tag, number of points, first and last step, last value."""
    width = max([len("tag")] + [len(tag) for tag in scalars])
    lines = [f"{'tag':<{width}}  points  steps      last value"]
    for tag, points in scalars.items():
        steps = f"{points[0][0]}..{points[-1][0]}"
        lines.append(f"{tag:<{width}}  {len(points):>6}  {steps:<9}  {points[-1][1]:.6g}")
    return lines


def main(argv: List[str]) -> int:
    """``python -m cgnl_video.utils.tensorboard LOG_DIR``: print the scalar table of LOG_DIR."""
    if len(argv) != 1 or argv[0].startswith("-"):
        print("usage: python -m cgnl_video.utils.tensorboard LOG_DIR   (e.g. OUTPUT_DIR/tensorboard)",
              file=sys.stderr)
        return 2
    try:
        scalars = read_scalars(argv[0])
    except FileNotFoundError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print("\n".join(scalar_lines(scalars)) if scalars else f"no scalars in {argv[0]}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
