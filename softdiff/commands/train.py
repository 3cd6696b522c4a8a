"""``python train.py`` / ``softdiff train``: train a score model from a config."""
from __future__ import annotations

import json
from typing import Sequence

from softdiff.command_line import add_overrides, command_parser, config_path, overrides, parse
from softdiff.errors import ConfigError
from softdiff.studies.training_callbacks import callbacks_from_config, check_callback_names
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


def main(argv: Sequence[str]) -> int:
    args = parse(parser(), argv)
    if args.stop_after < 0:
        raise ConfigError(f"--stop-after {args.stop_after} must be non-negative.")
    cfg = load_train_config(config_path(args, "", DEFAULT_PRESET), overrides(args))
    check_callback_names(cfg)
    from accelerate import PartialState  # heavy imports only once the config is valid

    from softdiff.training.trainer import train

    out = train(cfg, resume=args.resume, quiet=args.quiet, stop_after=args.stop_after,
                callbacks=callbacks_from_config(cfg))
    if not PartialState().is_main_process:
        return 0
    if not json.loads((out / "train_summary.json").read_text())["finished"]:
        print(f"stopped early: continue with --resume latest (checkpoints in {out / 'checkpoints'})")
        return 0
    print(f"done: samples in {out / 'samples'}, model in {out / 'model_ema'} (EMA) and {out / 'model'}")
    print(f"sample more with: softdiff sample {out} --num-samples 64 --output-dir {out / 'samples_more'}")
    return 0
