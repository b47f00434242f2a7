"""ConfigError and the small rules every validator uses (the package's, and those of
blocks and backbones registered from user code).

Each rule raises ConfigError with a message that starts with the offending key.
"""

from typing import Any, Iterable, Sequence


class ConfigError(ValueError):
    """A configuration problem; the message names the offending key."""


def require(ok: bool, key: str, message: str) -> None:
    """ConfigError "``key``: ``message``" unless ``ok``."""
    if not ok:
        raise ConfigError(f"{key}: {message}")


def one_of(value: Any, choices: Iterable[Any], key: str) -> None:
    """``value`` is one of ``choices``."""
    choices = tuple(choices)
    require(value in choices, key, f"must be one of {list(choices)}, got {value!r}")


def triple(value: Sequence[int], key: str) -> None:
    """Three positive integers (T, H, W)."""
    require(
        len(value) == 3 and all(isinstance(v, int) and v >= 1 for v in value),
        key,
        f"must be 3 positive integers (T, H, W), got {list(value)}",
    )


def positive(cfg: Any, *keys: str) -> None:
    """Every dotted key of ``cfg`` in ``keys`` (e.g. "SOLVER.BASE_LR") holds a value > 0."""
    for key in keys:
        value = cfg
        for part in key.split("."):
            value = value[part]
        require(value > 0, key, f"must be positive, got {value!r}")
