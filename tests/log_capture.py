"""What the package logs, captured in tests (helpers, no tests here)."""

import contextlib
import logging


class Said(logging.Handler):
    """The messages the package logs (on its own logger: after setup_logging it does not
    propagate to the root, where caplog listens)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.messages = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append((record.levelno, record.getMessage()))

    @classmethod
    @contextlib.contextmanager
    def on_package_logger(cls):
        package_logger, said = logging.getLogger("cgnl_video"), cls()
        level = package_logger.level
        package_logger.setLevel(logging.INFO)
        package_logger.addHandler(said)
        try:
            yield said
        finally:
            package_logger.removeHandler(said)
            package_logger.setLevel(level)
