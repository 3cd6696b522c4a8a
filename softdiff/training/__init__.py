"""Training on accelerate: configs, the loop, callbacks, checkpoints and saved models."""
from softdiff.lazy_exports import lazy_exports
from softdiff.training.config import TrainConfig, load_train_config


def train(cfg: TrainConfig, resume: str | None = None, quiet: bool = False, stop_after: int = 0, callbacks=()):
    """Train ``cfg`` into ``cfg.output_dir`` (see ``softdiff.training.trainer.train``)."""
    from softdiff.training.trainer import train as _train  # accelerate and diffusers only when training

    return _train(cfg, resume=resume, quiet=quiet, stop_after=stop_after, callbacks=callbacks)


# The callback types need torch; loaded on first use, so that reading a config does not.
__getattr__, _ = lazy_exports(__name__, {"softdiff.training.callbacks": ("TrainState", "TrainerCallback")})

__all__ = ["TrainConfig", "TrainState", "TrainerCallback", "load_train_config", "train"]
