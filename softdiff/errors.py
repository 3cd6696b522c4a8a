"""User-facing errors: one sentence naming the key, file or value and what would be valid."""


class SoftdiffError(ValueError):
    """Base class of the errors the CLI prints without a traceback (exit code 2)."""


class ConfigError(SoftdiffError):
    """A config key, value or file is invalid."""


class DataError(SoftdiffError):
    """A dataset, input file or array is missing or malformed."""


def check_choice(key: str, value, choices) -> None:
    """Raise ConfigError unless ``value`` is one of ``choices``."""
    if value not in choices:
        raise ConfigError(f"{key}={value!r} is not valid; choose one of: {', '.join(map(str, choices))}.")


def check_positive(key: str, value, allow_zero: bool = False) -> None:
    """Raise ConfigError unless ``value`` is a positive (or non-negative) number."""
    ok = value >= 0 if allow_zero else value > 0
    if not ok:
        bound = "non-negative" if allow_zero else "positive"
        raise ConfigError(f"{key}={value!r} must be {bound}.")
