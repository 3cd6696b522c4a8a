"""Gradient flow on the value-softmax model: the dynamics, the paper presets, plots and the command."""
