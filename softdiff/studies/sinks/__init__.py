"""Attention sinks in small transformers (the Section 4 experiments of the authors' paper, docs/theory.md 3.3):
the induction-head and token-group classification tasks, trained per attention normalisation and seed."""
