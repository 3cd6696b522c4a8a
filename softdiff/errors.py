"""User-facing errors: one sentence naming the key, file or value and what would be valid."""
from __future__ import annotations

from typing import Mapping, TypeVar

T = TypeVar("T")


class SoftdiffError(ValueError):
    """Base class of the errors the CLI prints without a traceback (exit code 2)."""


class ConfigError(SoftdiffError):
    """A config key, value or file is invalid."""


class DataError(SoftdiffError):
    """A dataset, input file or array is missing or malformed."""


def first_line(err: BaseException) -> str:
    """The first line of an exception's message (its type's name when it has none): a reason inside a sentence."""
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__


def lookup(registry: Mapping[str, T], what: str, name: str) -> T:
    """``registry[name]``; a ValueError naming ``what`` and listing the valid names when it is not there."""
    try:
        return registry[name]
    except KeyError:
        raise ValueError(f"unknown {what} {name!r}; choose one of: {', '.join(registry)}") from None


def check_choice(key: str, value, choices) -> None:
    """Raise ConfigError unless ``value`` is one of ``choices``."""
    if value not in choices:
        raise ConfigError(f"{key}={value!r} is not valid; choose one of: {', '.join(map(str, choices))}.")


def check_positive(key: str, value, allow_zero: bool = False) -> None:
    """Raise ConfigError unless ``value`` is a positive (or non-negative) number."""
    if value != value:  # nan compares false with everything
        raise ConfigError(f"{key}={value!r} must be a finite number.")
    ok = value >= 0 if allow_zero else value > 0
    if not ok:
        bound = "non-negative" if allow_zero else "positive"
        raise ConfigError(f"{key}={value!r} must be {bound}.")


def check_at_most(key: str, value, limit, why: str = "") -> None:
    """Raise ConfigError when ``value`` exceeds ``limit``: sizes a user types are bounded before anything is
    allocated (``why`` follows the limit as written, e.g. " (a month of training)")."""
    if value > limit:
        raise ConfigError(f"{key}={value} is too large; at most {limit}{why}.")


def check_total(what: str, total: int, limit: int, keys: Mapping[str, object]) -> None:
    """Raise ConfigError when a size made of several keys (``what``, e.g. "the drawn data") exceeds ``limit``
    entries, naming the keys and their values."""
    if total > limit:
        named = ", ".join(f"{k}={v}" for k, v in keys.items())
        raise ConfigError(f"{what} would have {total} entries with {named}; at most {limit}: lower one of them.")


def check_finite(key: str, value) -> None:
    """Raise ConfigError unless ``value`` is a finite number (not nan or inf)."""
    import math

    if not math.isfinite(value):
        raise ConfigError(f"{key}={value!r} must be a finite number.")


def check_device(key: str, name: str | None) -> None:
    """Raise ConfigError unless ``name`` is a device that exists here (cpu, cuda, cuda:N, mps)."""
    if name is None:
        return
    import torch

    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise ConfigError(f"{key} {name!r} is not a device name; use cpu, cuda or cuda:N.") from None
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ConfigError(f"{key} {name!r}: no CUDA GPU is available on this machine; use cpu.")
        if device.index is not None and device.index >= count:
            raise ConfigError(f"{key} {name!r}: this machine has {count} GPU(s), cuda:0 to cuda:{count - 1}.")
    elif device.type == "mps":
        if not torch.backends.mps.is_available():
            raise ConfigError(f"{key} {name!r}: MPS is not available on this machine; use cpu.")
    elif device.type != "cpu":
        raise ConfigError(f"{key} {name!r} is not supported; use cpu or cuda.")
