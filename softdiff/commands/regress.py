"""``softdiff regress``: every softmax-regression solver and scipy's on generated instances, one report."""
from __future__ import annotations

from typing import Sequence

from softdiff.command_line import add_overrides, command_parser, config_path, overrides, parse, run_work
from softdiff.config import load_config
from softdiff.studies.softmax_regression.study import RegressConfig

DEFAULT_PRESET = "default"


EXAMPLES = ["softdiff regress                                  # four instances up to n=20000, about a minute",
            "softdiff regress --preset quick --output-dir runs/regress_quick",
            "softdiff regress 'methods=[newton,approx_newton]' tol=1e-10 seed=3",
            "softdiff regress --config my_instances.yaml --quiet"]
DESCRIPTION = ("Softmax regression (docs/theory.md, section 2): Newton, approximate Newton, Newton-CG and gradient "
               "descent against scipy's L-BFGS-B, BFGS and trust-ncg on generated instances.")


def parser():
    p = command_parser("softdiff regress", DESCRIPTION, EXAMPLES, "regress", DEFAULT_PRESET)
    add_overrides(p, "tol=1e-10")
    return p


def prepare(argv: Sequence[str]):
    """The parsed arguments and the checked config."""
    args = parse(parser(), argv)
    return args, load_config(RegressConfig, config_path(args, "regress", DEFAULT_PRESET), overrides(args))


def main(argv: Sequence[str]) -> int:
    return run_work("regress", *prepare(argv), " ".join(["softdiff regress", *argv]))
