"""``softdiff flow``: run a docs/theory.md 3.2 protocol (E1..E5) on the value-softmax model, report, plot.

Writes ``results.json`` (config, per-case histories, summary rows), ``shares.png``, ``entropy.png``,
``projections.png`` and ``gradients.png`` into the output directory, and prints the measured outcome next to
the reference outcome (references.py).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

from softdiff.command_line import add_overrides, command_parser, load_with_output, parse, run_work
from softdiff.errors import ConfigError, check_at_most, check_choice, check_device, check_finite, check_positive
from softdiff.studies.value_flow.presets import PROTOCOLS, RNGS, SPECTRA

DEFAULT_PRESET = "E1"
MAX_STEPS = 100_000_000  # ten times E5's, the longest protocol


@dataclass
class FlowConfig:
    protocol: str = "E1"            # docs/theory.md 3.2: E1 .. E5
    seeds: int = 1                  # initialisations run together as one batch
    seed: Optional[int] = None      # first seed (None: 0 for rng=torch, the authors' 123 / 42 for rng=numpy)
    rng: str = "torch"              # torch generators, or numpy = the authors' notebook draws exactly
    spectrum: str = "linear"        # E4's singular values: linear (the authors') or geometric
    steps: Optional[int] = None     # GD steps (None: the protocol's); with method=flow, t_max = steps * lr
    lr: Optional[float] = None      # step size (None: the protocol's)
    method: str = "gd"              # gd (the protocols) or flow (torchdiffeq ODE)
    device: str = "cpu"
    output_dir: Optional[str] = None  # default runs/flow/<protocol>

    def validate(self) -> None:
        check_choice("protocol", self.protocol, list(PROTOCOLS))
        check_choice("rng", self.rng, RNGS)
        check_choice("spectrum", self.spectrum, SPECTRA)
        check_choice("method", self.method, ["gd", "flow"])
        check_positive("seeds", self.seeds)
        if self.seeds > 100_000:
            raise ConfigError(f"seeds={self.seeds} must be at most 100000 (they run as one batch).")
        if self.steps is not None:
            check_positive("steps", self.steps)
            check_at_most("steps", self.steps, MAX_STEPS, " (ten times the longest protocol, E5)")
        if self.lr is not None:
            check_positive("lr", self.lr)
            check_finite("lr", self.lr)
        if self.seed is not None and not 0 <= self.seed < 2**32 - 1000 * 6 - self.seeds:
            raise ConfigError(f"seed={self.seed} must be in [0, 2**32 - 6000 - seeds).")
        check_device("device", self.device)


def parser():
    p = command_parser(
        "softdiff flow", __doc__.splitlines()[0].split(": ", 1)[1],
        ["softdiff flow --preset E1 steps=200 --output-dir runs/flow/E1_short",
         "softdiff flow --preset E1 rng=numpy seed=123 seeds=1      # the authors' notebook draw",
         "softdiff flow --preset E2 seeds=8 --quiet",
         "softdiff flow --preset E4_geometric seeds=8",
         "softdiff flow --preset E1 seeds=8 method=flow              # the gradient-flow ODE to t = steps * lr"],
        presets="flow", default_preset=DEFAULT_PRESET, output_help="where results.json and the PNGs go")
    add_overrides(p, "seeds=8")
    return p


def prepare(argv: Sequence[str]):
    """The parsed arguments, the checked config and its output folder (checked, not created)."""
    args = parse(parser(), argv)
    return (args, *load_with_output(args, FlowConfig, "flow", DEFAULT_PRESET, "runs/flow/{protocol}"))


def main(argv: Sequence[str]) -> int:
    return run_work("flow", *prepare(argv))
