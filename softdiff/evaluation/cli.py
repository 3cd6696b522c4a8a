"""``softdiff eval``: the metrics of a trained run, the classifier scores of a samples file, or training the
digits feature classifier (FID / KID features)."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from softdiff.command_line import add_overrides, command_parser, config_path, overrides, parse, split_positionals
from softdiff.config import load_config
from softdiff.errors import ConfigError, check_choice, check_positive
from softdiff.evaluation.features import FEATURE_DATASETS
from softdiff.evaluation.run_eval import EvalSettings


@dataclass
class EvalConfig(EvalSettings):
    """``softdiff eval``'s keys: the evaluation settings of ``softdiff compare`` (its ``eval`` section) plus these."""

    run: str = ""                 # the run folder to evaluate (its final model; see every)
    ema: bool = True              # the EMA weights (model_ema/) or the live ones (model/)
    epochs: int = 30              # --train-classifier: training epochs (seed: the classifier's seed)
    dataset: str = "digits"       # --train-classifier: the dataset of the feature classifier
    output_dir: str = ""          # eval.json and eval_samples.npz (a run: default RUN_DIR/eval); score.json

    def validate(self) -> None:
        from softdiff.diffusion.schedulers import SCHEDULERS
        from softdiff.evaluation.run_eval import IMAGE_METRICS, INCEPTION_METRICS, VECTOR_METRICS

        check_choice("scheduler", self.scheduler, SCHEDULERS)
        check_choice("dataset", self.dataset, FEATURE_DATASETS)
        for key in ("steps", "num_samples", "likelihood_samples", "ode_tol", "ode_max_steps", "epochs"):
            check_positive(key, getattr(self, key))
        for key in ("seed", "every"):
            check_positive(key, getattr(self, key), allow_zero=True)
        if self.num_samples < 2:
            raise ConfigError(f"num_samples={self.num_samples} must be at least 2 (MMD and FID need two).")
        if not self.ode_tol < 1:
            raise ConfigError(f"ode_tol={self.ode_tol} must be a finite number in (0, 1).")
        for name in self.metrics:
            check_choice("metrics", name, (*VECTOR_METRICS, *IMAGE_METRICS, *INCEPTION_METRICS))


def parser():
    p = command_parser(
        "softdiff eval", "Evaluate a trained run (the metrics of softdiff compare), score a samples file with the "
        "digits feature classifier, or train that classifier.",
        ["softdiff eval runs/digits                          # writes runs/digits/eval/eval.json",
         "softdiff eval runs/toy num_samples=2000 steps=50 --no-ema --output-dir toy_eval",
         "softdiff eval runs/digits every=500 metrics=[fid,confidence] --quiet",
         "softdiff eval --score samples.npz                  # confidence, class shares, FID, KID",
         "softdiff eval --train-classifier feature_classifier=features/digits_classifier.safetensors"],
        output_help="where eval.json / score.json go (a run: default RUN_DIR/eval)")
    p.add_argument("run", nargs="?", metavar="RUN_DIR", help="a training run folder (or a model or pipeline folder)")
    p.add_argument("--no-ema", action="store_true", help="evaluate the live weights (model/) instead of the EMA ones")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--score", metavar="SAMPLES.npz", help="score the digits in a samples file (softdiff sample's "
                      "samples.npz) with the feature classifier (trained first if missing)")
    mode.add_argument("--train-classifier", action="store_true",
                      help="train the feature classifier and save it as feature_classifier")
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


def _write_report(cfg: EvalConfig, name: str, report: dict, default_dir: Path | None = None) -> None:
    """Print ``report`` as one JSON line; write it as ``name`` into the output folder when there is one."""
    from softdiff.safe_io import finite_json, write_json

    print(json.dumps(finite_json(report)))
    folder = cfg.output_dir or default_dir
    if folder:
        write_json(Path(folder) / name, finite_json(report), indent=2)
        print(f"wrote {Path(folder) / name}")


def main(argv: Sequence[str]) -> int:
    from softdiff.safe_io import check_output_dir

    args = parse(parser(), argv)
    cfg = load_eval_config(args)
    if cfg.output_dir:
        check_output_dir("--output-dir", cfg.output_dir)
    if args.train_classifier:
        from softdiff.evaluation.features import save_classifier, train_classifier

        model, acc = train_classifier(cfg.seed, cfg.epochs)
        save_classifier(model, cfg.feature_classifier, acc, cfg.dataset)
        _write_report(cfg, "classifier.json", {"output": cfg.feature_classifier, "dataset": cfg.dataset,
                                               "seed": cfg.seed, "test_accuracy": round(acc, 4)})
        return 0
    if args.score:
        from softdiff.evaluation.features import ensure_classifier, load_samples, score_samples

        images = load_samples(args.score)
        classifier, _ = ensure_classifier(cfg.feature_classifier, cfg.seed)
        scores = {k: round(v, 4) if isinstance(v, float) else v for k, v in score_samples(classifier, images).items()}
        _write_report(cfg, "score.json", {"samples": args.score, "classifier": cfg.feature_classifier, **scores})
        return 0
    from softdiff.evaluation.run_eval import evaluate_run

    default_dir = Path(cfg.run) / "eval"
    check_output_dir("--output-dir", cfg.output_dir or default_dir)
    settings = EvalSettings(**{k: getattr(cfg, k) for k in EvalSettings.__dataclass_fields__})
    report = evaluate_run(cfg.run, settings, cfg.ema, Path(cfg.output_dir or default_dir))
    _write_report(cfg, "eval.json", report, default_dir)
    return 0
