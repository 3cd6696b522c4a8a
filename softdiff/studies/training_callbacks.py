"""The training callbacks a config may ask for by name (``callbacks.NAME.KEY=VALUE``), each registered by its study.

The core trainer knows no name: the commands that train (``softdiff train``, ``softdiff compare``) build the
callbacks here and pass them to ``softdiff.training.train``. Registering a callback is one line below: its name,
the module that holds it and its class, which has ``from_settings(settings) -> callback`` (checking its keys).
"""
from __future__ import annotations

import importlib

from softdiff.errors import ConfigError

TRAINING_CALLBACKS = {  # name -> (module, class); the module loads only when a config names it
    "ntk_drift": ("softdiff.studies.ntk.drift", "NTKDriftCallback"),
}


def check_callback_names(cfg) -> None:
    """ConfigError (one sentence) for a ``callbacks`` section that names no registered callback."""
    for name in cfg.callbacks:
        if name not in TRAINING_CALLBACKS:
            raise ConfigError(f"callbacks.{name} names no training callback; choose from: "
                              f"{', '.join(TRAINING_CALLBACKS)}.")


def callbacks_from_config(cfg) -> list:
    """One callback per section of ``cfg.callbacks``, built from its settings (their errors are one sentence)."""
    check_callback_names(cfg)
    built = []
    for name, settings in cfg.callbacks.items():
        module, cls = TRAINING_CALLBACKS[name]
        built.append(getattr(importlib.import_module(module), cls).from_settings(dict(settings)))
    return built
