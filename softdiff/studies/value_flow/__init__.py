"""Gradient flow on the value-softmax model (docs/theory.md 3): normalisations, losses, the two models, GD and
ODE integration, the history, the E1..E5 presets with their references, summaries, plots and the command."""
