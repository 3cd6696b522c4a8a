"""Training on accelerate: configs, the loop, checkpoints and saved models."""
from softdiff.training.config import TrainConfig, load_train_config


def train(cfg: TrainConfig, resume: str | None = None, quiet: bool = False, stop_after: int = 0):
    """Train ``cfg`` into ``cfg.output_dir`` (see ``softdiff.training.trainer.train``)."""
    from softdiff.training.trainer import train as _train

    return _train(cfg, resume=resume, quiet=quiet, stop_after=stop_after)


__all__ = ["TrainConfig", "load_train_config", "train"]
