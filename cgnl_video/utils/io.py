"""Atomic file writes: a reader never sees a half-written file.

Each helper writes to a temporary name in the destination folder, flushes it to
disk, then renames it over the destination (``os.replace`` is atomic on POSIX).
"""

import contextlib
import os
import secrets
from typing import IO, Iterator, List, Tuple


def _create_temporary(folder: str, name: str) -> str:
    """Create a new empty file ``.<name>.<random>.tmp`` in ``folder`` with the mode a plain
    open() gives (0666 less the umask, applied by the kernel), and return its path."""
    for _ in range(100):
        path = os.path.join(folder, f".{name}.{secrets.token_hex(4)}.tmp")
        try:
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            return path
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temporary name for {name} in {folder}")


@contextlib.contextmanager
def atomic_path(path: str) -> Iterator[str]:
    """A temporary file name next to ``path`` for a writer that takes a file name
    (e.g. an exporter); on clean exit the file is flushed to disk and renamed to
    ``path``. On an exception the temporary file is removed and ``path`` is untouched."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp = _create_temporary(folder, os.path.basename(path))
    try:
        yield tmp
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        raise


@contextlib.contextmanager
def atomic_open(path: str, mode: str = "w", encoding: str = "utf-8") -> Iterator[IO]:
    """Open a temporary file next to ``path``; on clean exit rename it to ``path``.

    On an exception the temporary file is removed and ``path`` is untouched.
    """
    with atomic_path(path) as tmp:
        with open(tmp, mode, **({} if "b" in mode else {"encoding": encoding})) as handle:
            yield handle


def atomic_write_text(path: str, text: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    with atomic_open(path, "w") as handle:
        handle.write(text)


def read_lines(path: str) -> List[Tuple[str, str]]:
    """``(file:line, text)`` of each non-blank line of a text file, stripped;
    CRLF line ends and a UTF-8 byte-order mark accepted."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"file not found: {path}")
    with open(path, encoding="utf-8-sig", newline="") as handle:
        rows = [(f"{path}:{n}", line.rstrip("\r\n").strip()) for n, line in enumerate(handle, start=1)]
    return [(where, text) for where, text in rows if text]
