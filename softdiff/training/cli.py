"""``python train.py`` / ``softdiff train``: train a score model from a config."""
from __future__ import annotations

import json
from typing import Sequence

from softdiff.cli import ArgumentParser
from softdiff.errors import ConfigError
from softdiff.training.config import load_train_config

DEFAULT_CONFIG = "configs/digits.yaml"


def parser() -> ArgumentParser:
    p = ArgumentParser(prog="train.py", description="Train a score model (default: softmax "
                                "ScoreTransformer on the embedded 8x8 digits).")
    p.add_argument("--config", default=DEFAULT_CONFIG, help=f"YAML config (default: {DEFAULT_CONFIG})")
    p.add_argument("--output-dir", help="run folder (default: the config's output_dir)")
    p.add_argument("--resume", help="'latest' (the newest checkpoint that loads; an error if none does), 'auto' "
                   "(the same, or step 0 when none loads) or a checkpoint folder")
    p.add_argument("--stop-after", type=int, default=0, metavar="N",
                   help="stop (with a checkpoint) after N steps of this invocation; continue with --resume latest")
    p.add_argument("--quiet", action="store_true", help="no progress bar (for CI and logs)")
    p.add_argument("overrides", nargs="*", metavar="key.sub=value", help="config overrides, e.g. train.steps=2000")
    return p


def main(argv: Sequence[str]) -> int:
    args = parser().parse_intermixed_args(argv)  # overrides may come before or after the options
    overrides = list(args.overrides) + ([f"output_dir={args.output_dir}"] if args.output_dir else [])
    if args.stop_after < 0:
        raise ConfigError(f"--stop-after {args.stop_after} must be non-negative.")
    cfg = load_train_config(args.config, overrides)
    from accelerate import PartialState

    from softdiff.training.trainer import train  # heavy imports only once the config is valid

    out = train(cfg, resume=args.resume, quiet=args.quiet, stop_after=args.stop_after)
    if not PartialState().is_main_process:
        return 0
    if not json.loads((out / "train_summary.json").read_text())["finished"]:
        print(f"stopped early: continue with --resume latest (checkpoints in {out / 'checkpoints'})")
        return 0
    print(f"done: samples in {out / 'samples'}, model in {out / 'model_ema'} (EMA) and {out / 'model'}")
    print(f"sample more with: python sample.py {out / 'model'} --num-samples 64 --output {out / 'samples.npz'}")
    return 0
