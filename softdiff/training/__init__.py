"""Training on accelerate: configs, the loop, callbacks, checkpoints and saved models."""
from softdiff.training.config import TrainConfig, load_train_config


def train(cfg: TrainConfig, resume: str | None = None, quiet: bool = False, stop_after: int = 0, callbacks=()):
    """Train ``cfg`` into ``cfg.output_dir`` (see ``softdiff.training.trainer.train``)."""
    from softdiff.training.trainer import train as _train  # accelerate and diffusers only when training

    return _train(cfg, resume=resume, quiet=quiet, stop_after=stop_after, callbacks=callbacks)


def __getattr__(name: str):
    # The callback types need torch; loaded on first use, so that reading a config does not.
    if name in ("TrainState", "TrainerCallback"):
        from softdiff.training import callbacks

        return getattr(callbacks, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["TrainConfig", "TrainState", "TrainerCallback", "load_train_config", "train"]
