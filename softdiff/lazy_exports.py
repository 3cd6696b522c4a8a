"""Package names that load from their modules on first use (PEP 562), so that importing a package, or a command
answering ``--help``, does not wait for the heavy modules behind it."""
from __future__ import annotations

from importlib import import_module
from typing import Callable, Mapping, Sequence


def lazy_exports(package: str, exports: Mapping[str, Sequence[str]]) -> tuple[Callable[[str], object], list[str]]:
    """``(__getattr__, __all__)`` for ``package``: each name of ``exports[module]`` is read from ``module`` when
    first asked for."""
    module_of = {name: module for module, names in exports.items() for name in names}

    def __getattr__(name: str):
        if name in module_of:
            return getattr(import_module(module_of[name]), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__, sorted(module_of)
