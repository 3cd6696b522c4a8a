"""``softdiff ntk``: NTK width study: drift, kernel spectra and network-vs-kernel gap of two-layer softmax / relu / exp
networks as the width grows (theory: docs/theory.md, section 1)."""
from __future__ import annotations

from typing import Sequence

from softdiff.command_line import add_overrides, command_parser, load_with_output, parse, run_work
from softdiff.studies.ntk.study import NTKStudyConfig

DEFAULT_PRESET = "default"


EXAMPLES = ["softdiff ntk                                      # widths 64..8192, a few minutes on CPU",
            "softdiff ntk --preset quick --output-dir runs/ntk_quick",
            "softdiff ntk 'widths=[64,256,1024]' steps=200 'activations=[softmax,relu]' --quiet"]


def build_parser():
    p = command_parser("softdiff ntk", " ".join(__doc__.split(": ", 1)[1].split()), EXAMPLES, "ntk", DEFAULT_PRESET)
    add_overrides(p, "steps=200")
    return p


def prepare(argv: Sequence[str]):
    """The parsed arguments, the checked config and its output folder (checked, not created)."""
    args = parse(build_parser(), argv)
    return (args, *load_with_output(args, NTKStudyConfig, "ntk", DEFAULT_PRESET, "runs/ntk"))


def main(argv: Sequence[str]) -> int:
    return run_work("ntk", *prepare(argv))
