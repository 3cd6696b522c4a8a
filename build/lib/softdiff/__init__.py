"""softdiff: diffusion models with softmax score networks, and diagnostics for their theory."""

__version__ = "0.1.0"
