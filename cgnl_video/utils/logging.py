"""Logging: a human-readable log (console + OUTPUT_DIR/log.txt on rank 0), a
JSON-lines stats file written with simplejson, and a tqdm progress bar.

Other ranks log warnings and errors to the console only, so a failure on any
process is still visible.
"""

import contextlib
import logging
import os
import sys
from typing import Any, Callable, Dict, Iterable, Iterator, Optional

import simplejson
import tqdm

from cgnl_video.utils.io import atomic_write_text

LOGGER_NAME = "cgnl_video"
LOG_FILE = "log.txt"
JSON_STATS_FILE = "json_stats.log"
_FORMAT = "[%(asctime)s %(levelname)s %(filename)s:%(lineno)d] %(message)s"


def setup_logging(output_dir: Optional[str], rank: int = 0) -> logging.Logger:
    """The package logger; rank 0 logs INFO to the console and ``output_dir/log.txt``."""
    logger = logging.getLogger(LOGGER_NAME)
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()
    logger.propagate = False
    logger.setLevel(logging.INFO if rank == 0 else logging.WARNING)
    formatter = logging.Formatter(_FORMAT, datefmt="%m/%d %H:%M:%S")
    console = logging.StreamHandler(sys.stdout)
    console.setFormatter(formatter)
    logger.addHandler(console)
    if rank == 0 and output_dir:
        os.makedirs(output_dir, exist_ok=True)
        # A log is a stream: appended (across resumes), not written atomically.
        file_handler = logging.FileHandler(os.path.join(output_dir, LOG_FILE), mode="a")
        file_handler.setFormatter(formatter)
        logger.addHandler(file_handler)
    return logger


@contextlib.contextmanager
def package_logging_restored() -> Iterator[None]:
    """Put the package logger back as it was (handlers, level, propagation) and close
    the handlers added meanwhile: a run called from Python leaves no log file open and
    its caller's logging (pytest's caplog, an application's handlers) as it found it."""
    logger = logging.getLogger(LOGGER_NAME)
    handlers, propagate, level = list(logger.handlers), logger.propagate, logger.level
    try:
        yield
    finally:
        for handler in logger.handlers:
            if handler not in handlers:
                handler.close()
        logger.handlers[:] = handlers
        logger.propagate, logger.level = propagate, level


def get_logger() -> logging.Logger:
    return logging.getLogger(LOGGER_NAME)


def _rounded(value: Any) -> Any:
    if isinstance(value, float):
        return round(value, 6)
    return value


class JsonStatsWriter:
    """Appends one JSON record per line to ``output_dir/json_stats.log``.

    The file is rewritten atomically on each record (records are few: one per
    epoch and split), so a killed run never leaves a half line behind. ``mirror``,
    if given, also gets every record written (the run's TensorBoard scalars).
    """

    def __init__(self, output_dir: str, enabled: bool = True,
                 mirror: Optional[Callable[[Dict[str, Any]], None]] = None) -> None:
        self.path = os.path.join(output_dir, JSON_STATS_FILE)
        self.enabled = enabled
        self.mirror = mirror

    def write(self, record: Dict[str, Any]) -> None:
        if not self.enabled:
            return
        line = simplejson.dumps({k: _rounded(v) for k, v in record.items()}, sort_keys=False)
        previous = ""
        if os.path.isfile(self.path):
            with open(self.path, encoding="utf-8") as handle:
                previous = handle.read()
        atomic_write_text(self.path, previous + line + "\n")
        get_logger().info("json_stats: %s", line)
        if self.mirror is not None:
            self.mirror(record)

    def drop_after(self, epoch: int) -> int:
        """Remove the records of epochs after ``epoch`` (1-based): what a killed run logged
        after the checkpoint a resumed run starts from, which the resumed run logs again.
        Returns how many were removed."""
        if not self.enabled or not os.path.isfile(self.path):
            return 0
        with open(self.path, encoding="utf-8") as handle:
            lines = [line for line in handle if line.strip()]
        kept = [line for line in lines if simplejson.loads(line).get("epoch", 0) <= epoch]
        if len(kept) < len(lines):
            atomic_write_text(self.path, "".join(kept))
            get_logger().info("json_stats: %d records after epoch %d removed (logged after the checkpoint "
                              "this run resumes from)", len(lines) - len(kept), epoch)
        return len(lines) - len(kept)


def read_json_stats(path: str) -> list:
    """All records of a json_stats.log file."""
    with open(path, encoding="utf-8") as handle:
        return [simplejson.loads(line) for line in handle if line.strip()]


def progress(iterable: Iterable, total: int, desc: str, enabled: bool) -> Iterable:
    """A tqdm bar with ETA on an interactive terminal of rank 0; the plain iterable otherwise."""
    if not enabled:
        return iterable
    # disable=None: tqdm hides itself when stderr is not a terminal (CI, log files).
    return tqdm.tqdm(iterable, total=total, desc=desc, dynamic_ncols=True, leave=False, disable=None)


def format_seconds(seconds: float) -> str:
    """``3725`` -> ``"1:02:05"``."""
    seconds = max(0, int(round(seconds)))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}"
