"""``python train.py`` / ``softdiff train``: train a score model from a config."""
from __future__ import annotations

from typing import Sequence

from softdiff.command_line import add_overrides, command_parser, config_path, overrides, parse, run_work
from softdiff.errors import ConfigError
from softdiff.studies.training_callbacks import check_callback_names
from softdiff.training.config import load_train_config

DEFAULT_PRESET = "digits"


def parser():
    p = command_parser(
        "softdiff train", "Train a score model (default: the softmax ScoreTransformer on the embedded 8x8 digits).",
        ["softdiff train                                   # the default job (same as python train.py)",
         "softdiff train --preset toy2d train.steps=2000 --output-dir runs/toy",
         "softdiff train --config my.yaml model.activation=relu --quiet",
         "softdiff train --output-dir runs/digits --resume latest"],
        presets="", default_preset=DEFAULT_PRESET, output_help="run folder (default: the config's output_dir)")
    p.add_argument("--resume", help="'latest' (the newest checkpoint that loads; an error if none does), 'auto' "
                   "(the same, or step 0 when none loads) or a checkpoint folder")
    p.add_argument("--stop-after", type=int, default=0, metavar="N",
                   help="stop (with a checkpoint) after N steps of this invocation; continue with --resume latest")
    add_overrides(p, "train.steps=2000")
    return p


def prepare(argv: Sequence[str]):
    """The parsed arguments and the checked config (its callbacks named right too)."""
    args = parse(parser(), argv)
    if args.stop_after < 0:
        raise ConfigError(f"--stop-after {args.stop_after} must be non-negative.")
    cfg = load_train_config(config_path(args, "", DEFAULT_PRESET), overrides(args))
    check_callback_names(cfg)
    return args, cfg


def main(argv: Sequence[str]) -> int:
    return run_work("train", *prepare(argv))
