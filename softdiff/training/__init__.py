"""Training on accelerate: configs, the loop, callbacks, checkpoints and saved models."""
from softdiff.lazy_exports import lazy_exports
from softdiff.training.config import TrainConfig, load_train_config

# The loop needs accelerate and diffusers, the callback types torch: loaded on first use, so that reading a
# config does not load them.
__getattr__, _lazy_names = lazy_exports(__name__, {"softdiff.training.callbacks": ("TrainState", "TrainerCallback"),
                                                   "softdiff.training.trainer": ("train",)})

__all__ = ["TrainConfig", "load_train_config", *_lazy_names]
