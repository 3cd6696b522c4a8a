"""``softdiff compare``: does softmax beat ReLU (and GELU, exp) as a score-net activation on this data at this
budget? Trains every (activation, seed) alike, evaluates them identically, and writes one report folder."""
from __future__ import annotations

from typing import Sequence

from softdiff.command_line import add_overrides, command_parser, config_path, overrides, parse, run_work
from softdiff.studies.compare.config import load_compare_config

DEFAULT_PRESET = "toy"


def parser():
    p = command_parser(
        "softdiff compare", "Train every (activation, seed) with the same budget (optionally each activation at its "
        "own tuned setting, for equal seconds, or along a sweep), evaluate them identically, and write report.md, "
        "results.json and plots into one folder (finished runs are reused, interrupted ones resume).",
        ["softdiff compare                                  # the toy study (8 Gaussians, 4 activations x 3 seeds)",
         "softdiff compare --preset paper --output-dir runs/paper",
         "softdiff compare --preset toy_tuned                # each activation at its own best lr",
         "softdiff compare 'tune.grid.train.lr=[1e-3,3e-3,1e-2]' budget.mode=time budget.seconds=20",
         "softdiff compare --preset paper 'sweep.key=model.width' 'sweep.values=[64,256,1024]'",
         "softdiff compare --preset digits num_seeds=1 'activations=[softmax,relu]' workers=2",
         "softdiff compare --config my_compare.yaml --quiet"],
        presets="compare", default_preset=DEFAULT_PRESET,
        output_help="report folder (default: the config's output_dir)")
    p.add_argument("--workers", type=int, help="parallel processes (default: the config's workers)")
    add_overrides(p, "num_seeds=1")
    return p


def prepare(argv: Sequence[str]):
    """The parsed arguments and the checked config."""
    args = parse(parser(), argv)
    extra = [f"workers={args.workers}"] if args.workers is not None else []
    return args, load_compare_config(config_path(args, "compare", DEFAULT_PRESET), overrides(args) + extra)


def main(argv: Sequence[str]) -> int:
    return run_work("compare", *prepare(argv), " ".join(["softdiff compare", *argv]))
