"""``softdiff eval``: the metrics of a trained run, the classifier scores of a samples file, or training a
dataset's feature classifier (FID / KID features)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

from softdiff.choices import FEATURE_DATASETS
from softdiff.command_line import (add_overrides, command_parser, config_path, overrides, parse, run_work,
                                   split_positionals)
from softdiff.config import load_config
from softdiff.devices import resolve_device
from softdiff.errors import ConfigError, check_at_most, check_choice, check_positive
from softdiff.evaluation.settings import EvalSettings
from softdiff.safe_io import check_output_dir


@dataclass
class EvalConfig(EvalSettings):
    """``softdiff eval``'s keys: the evaluation settings of ``softdiff compare`` (its ``eval`` section) plus these."""

    run: str = ""                 # the run folder to evaluate (its final model; see every)
    ema: bool = True              # the EMA weights (model_ema/) or the live ones (model/)
    epochs: int = 0               # --train-classifier: training epochs (0: the dataset's recipe; seed: its seed)
    dataset: str = ""             # --score / --train-classifier: the dataset (--score: default the one the
                                  # samples file names, else digits for 8x8 samples)
    output_dir: Optional[str] = None  # eval.json and eval_samples.npz (a run: default RUN_DIR/eval); score.json

    def validate(self) -> None:
        super().validate()
        if self.dataset:
            check_choice("dataset", self.dataset, FEATURE_DATASETS)
        check_positive("epochs", self.epochs, allow_zero=True)
        check_at_most("epochs", self.epochs, 1000)


def parser():
    p = command_parser(
        "softdiff eval", "Evaluate a trained run (the metrics of softdiff compare), score a samples file with its "
        f"dataset's feature classifier ({', '.join(FEATURE_DATASETS)}), or train that classifier.",
        ["softdiff eval runs/digits                          # writes runs/digits/eval/eval.json",
         "softdiff eval runs/toy num_samples=2000 steps=50 --no-ema --output-dir toy_eval",
         "softdiff eval runs/digits every=500 metrics=[fid,confidence] --quiet",
         "softdiff eval --score samples.npz                  # confidence, class shares, FID, KID",
         "softdiff eval --score samples.npz dataset=fashion_mnist   # against the 10,000 test images, with floors",
         "softdiff eval --train-classifier dataset=mnist      # train (and cache) MNIST's classifier"],
        output_help="where eval.json / score.json go (a run: default RUN_DIR/eval)")
    p.add_argument("run", nargs="?", metavar="RUN_DIR", help="a training run folder (or a model or pipeline folder)")
    p.add_argument("--no-ema", action="store_true", help="evaluate the live weights (model/) instead of the EMA ones")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--score", metavar="SAMPLES.npz", help="score the images in a samples file (softdiff sample's "
                      "samples.npz) with their dataset's feature classifier (shipped, or trained and cached first)")
    mode.add_argument("--train-classifier", action="store_true",
                      help="train dataset's feature classifier and save it as feature_classifier (default: the "
                      "cache; Fashion-MNIST's ships with softdiff and is never overwritten)")
    p.add_argument("--device", help="where the model and the feature networks run: cpu, cuda or cuda:N (default: "
                   "cuda when a GPU is available, else cpu)")
    add_overrides(p, "num_samples=500")
    return p


def load_eval_config(args) -> EvalConfig:
    paths, extra = split_positionals([*([args.run] if args.run else []), *args.overrides])
    if len(paths) > 1:
        raise ConfigError(f"got {len(paths)} folders ({', '.join(paths)}); pass one RUN_DIR.")
    cfg = load_config(EvalConfig, config_path(args), [*extra, *overrides(args), *(["ema=false"] if args.no_ema else [])])
    cfg.run = paths[0] if paths else cfg.run
    if bool(cfg.run) == bool(args.score or args.train_classifier):
        raise ConfigError("pass exactly one of: RUN_DIR (evaluate a run), --score SAMPLES.npz, --train-classifier.")
    return cfg


def prepare(argv: Sequence[str]):
    """The parsed arguments, the checked config and the device; the output folder checked (not created)."""
    args = parse(parser(), argv)
    cfg = load_eval_config(args)
    device = resolve_device("--device", args.device)  # a GPU asked for but missing: one line, before any work
    if cfg.output_dir is not None:
        check_output_dir("--output-dir", cfg.output_dir)
    return args, cfg, device


def main(argv: Sequence[str]) -> int:
    return run_work("evaluate", *prepare(argv))
