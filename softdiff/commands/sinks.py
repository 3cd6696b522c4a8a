"""``softdiff sinks``: train small transformers on the induction or classification task per attention
normalisation and seed, and report whether an attention sink forms on the first (BOS / CLS) token.

Writes ``results.json`` (config, summary, every run's history), ``sinks.png`` (over training) and
``heads.png`` (final mass per layer and head) into the output directory.
"""
from __future__ import annotations

from typing import Sequence

from softdiff.command_line import add_overrides, command_parser, load_with_output, parse, run_work
from softdiff.studies.sinks.core import SinksConfig

DEFAULT_PRESET = "induction"


EXAMPLES = ["softdiff sinks --preset induction",
            "softdiff sinks --preset classification seeds=5 --output-dir runs/sinks/cls",
            "softdiff sinks --preset induction attentions=[softmax,sigmoid] steps=300 --quiet"]


def parser():
    p = command_parser("softdiff sinks", __doc__.splitlines()[0].split(": ", 1)[1] + " ...", EXAMPLES,
                       presets="sinks", default_preset=DEFAULT_PRESET, output_help="where results.json and the PNGs go")
    add_overrides(p, "steps=300")
    return p


def prepare(argv: Sequence[str]):
    """The parsed arguments, the checked config and its output folder (checked, not created)."""
    args = parse(parser(), argv)
    return (args, *load_with_output(args, SinksConfig, "sinks", DEFAULT_PRESET, "runs/sinks/{task}"))


def main(argv: Sequence[str]) -> int:
    return run_work("sinks", *prepare(argv))
