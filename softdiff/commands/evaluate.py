"""``softdiff eval``: the metrics of a trained run, the classifier scores of a samples file, or training a
dataset's feature classifier (FID / KID features)."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

from softdiff.choices import FEATURE_DATASETS
from softdiff.command_line import (add_overrides, command_parser, config_path, output_folder, overrides, parse,
                                   split_positionals)
from softdiff.config import load_config
from softdiff.devices import resolve_device
from softdiff.errors import ConfigError, check_at_most, check_choice, check_positive
from softdiff.evaluation.settings import EvalSettings


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


def _write_report(cfg: EvalConfig, name: str, report: dict, default_dir: Path | None = None) -> None:
    """Print ``report`` as one JSON line; write it as ``name`` into the output folder when there is one."""
    from softdiff.safe_io import finite_json, write_json

    print(json.dumps(finite_json(report)))
    folder = output_folder(cfg.output_dir, default_dir)
    if folder:
        write_json(Path(folder) / name, finite_json(report), indent=2)
        print(f"wrote {Path(folder) / name}")


def _score_dataset(given: str, named: str | None, images, path: str) -> str:
    """The dataset whose classifier scores ``images``: ``dataset=``, else the samples file's, else digits by shape."""
    from softdiff.evaluation.classifiers import RECIPES

    dataset = given or named or ("digits" if tuple(images.shape[1:]) == (1, 8, 8) else "")
    if not dataset:
        raise ConfigError(f"--score '{path}' does not name its dataset; add dataset=NAME, one of: "
                          f"{', '.join(FEATURE_DATASETS)}.")
    check_choice("dataset", dataset, FEATURE_DATASETS)
    shape = RECIPES[dataset].network.image_shape
    if tuple(images.shape[1:]) != shape:
        raise ConfigError(f"--score '{path}' holds samples of shape {tuple(images.shape[1:])}, but {dataset} images "
                          f"are {shape}; name the right dataset=.")
    return dataset


def main(argv: Sequence[str]) -> int:
    from softdiff.safe_io import check_output_dir

    args = parse(parser(), argv)
    cfg = load_eval_config(args)
    device = resolve_device("--device", args.device)  # a GPU asked for but missing: one line, before any work
    if cfg.output_dir is not None:
        check_output_dir("--output-dir", cfg.output_dir)
    if cfg.feature_classifier and not args.train_classifier and not Path(cfg.feature_classifier).is_file():
        from softdiff.evaluation.classifiers import check_classifier_writable

        check_classifier_writable(cfg.feature_classifier)  # it will be trained and saved there: say so first
    if args.train_classifier:
        from softdiff.evaluation.classifiers import (cached_classifier, check_classifier_writable, save_classifier,
                                                     train_classifier)

        dataset = cfg.dataset or "digits"
        out = Path(cfg.feature_classifier) if cfg.feature_classifier else cached_classifier(dataset)
        check_classifier_writable(out)  # before training, not after
        model, acc = train_classifier(cfg.seed, cfg.epochs or None, dataset=dataset)
        save_classifier(model, out, acc, dataset)
        _write_report(cfg, "classifier.json", {"output": str(out), "dataset": dataset, "seed": cfg.seed,
                                               "test_accuracy": round(acc, 4)})
        return 0
    if args.score:
        from softdiff.evaluation.classifiers import classifier_path, ensure_classifier
        from softdiff.evaluation.features import load_samples, reference_images, score_samples

        images, named, labels = load_samples(args.score)
        dataset = _score_dataset(cfg.dataset, named, images, args.score)
        reference, floor_pool = reference_images(dataset)
        path = classifier_path(dataset, cfg.feature_classifier)
        classifier, meta = ensure_classifier(path, cfg.seed, dataset)
        classifier.to(device)
        scores = score_samples(classifier, images, reference, floor_pool, cfg.seed, labels)
        scores = {k: round(v, 4) if isinstance(v, float) else v for k, v in scores.items()}
        _write_report(cfg, "score.json", {"samples": args.score, "dataset": dataset, "classifier": str(path),
                                          "classifier_test_accuracy": float(meta["test_accuracy"]), **scores})
        return 0
    from softdiff.evaluation.run_eval import evaluate_run

    default_dir = Path(cfg.run) / "eval"
    folder = check_output_dir("--output-dir", output_folder(cfg.output_dir, default_dir))
    settings = EvalSettings(**{k: getattr(cfg, k) for k in EvalSettings.__dataclass_fields__})
    report, _ = evaluate_run(cfg.run, settings, cfg.ema, folder, device=device)
    _write_report(cfg, "eval.json", report, default_dir)
    return 0
