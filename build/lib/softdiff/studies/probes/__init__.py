"""Attention-sink and massive-activation probes of trained score networks."""
