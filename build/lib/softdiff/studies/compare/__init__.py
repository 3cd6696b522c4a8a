"""The comparison runner: many runs (activations x seeds) -> one report."""
