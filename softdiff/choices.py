"""The names a config may choose (datasets, networks, activations, schedulers, metrics), without the code behind
them: config validation imports this instead of the registries, so that ``--help`` and a config error answer
before torch, diffusers or scipy load. tests/test_cli_startup.py keeps each tuple equal to its registry's keys.
"""
from __future__ import annotations

# softdiff.data and its modules
TOY2D = ("8gaussians", "gmm", "swissroll", "moons", "checkerboard", "pinwheel", "rings")
TORCHVISION = ("mnist", "fashion_mnist", "cifar10")
IDX_DATASETS = ("mnist", "fashion_mnist")
IDX_SPLITS = ("train", "test")
LAZY_DATASETS = ("folder", "hf")
IMAGE_DATASETS = ("digits", *TORCHVISION, *LAZY_DATASETS)
DATASETS = (*TOY2D, *IMAGE_DATASETS)
NATIVE_SHAPES = {"digits": (1, 8, 8), "mnist": (1, 28, 28), "fashion_mnist": (1, 28, 28), "cifar10": (3, 32, 32)}

# softdiff.nets (the score nets themselves: softdiff.nets.registry, torch-free too)
ACTIVATIONS = ("softmax", "relu", "exp", "gelu", "silu", "sigmoid", "tanh", "relu_norm", "identity")
TWO_LAYER_ACTIVATIONS = ("softmax", "relu", "exp")
ATTENTION_NORMALIZATIONS = ("softmax", "sigmoid", "sigmoid_norm", "relu_norm")
CONDITIONINGS = ("adaln", "token")

# softdiff.diffusion
SCHEDULERS = ("ddpm", "ddim", "dpm++", "dpm++sde", "euler", "heun", "unipc")
FLOW_SCHEDULERS = ("euler", "heun", "dpm++", "dpm++sde", "unipc")
# The one default sampler of softdiff sample, the pipeline and a training config's previews (and so of the
# sampler a run saves): the stochastic DPM-Solver++, cleaner samples than the ODE dpm++ at 20 steps.
DEFAULT_SAMPLER = "dpm++sde"
DIFFUSION_PREDICTION_TYPES = ("epsilon", "sample", "v_prediction")
LOSS_WEIGHTINGS = ("none", "min_snr", "edm")
TIMESTEP_DENSITIES = ("uniform", "lognormal", "logit_normal")

# softdiff.evaluation
FEATURE_DATASETS = ("digits", "fashion_mnist", "mnist")


def example_shape(name: str, image_size: int = 32, channels: int = 3) -> tuple[int, ...]:
    """One example's shape in model space for dataset ``name``, without loading it."""
    if name in TOY2D:
        return (2,)
    if name in LAZY_DATASETS:
        return (channels, image_size, image_size)
    return NATIVE_SHAPES[name]
