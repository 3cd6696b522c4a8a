"""``softdiff eval``'s work: train a feature classifier, score a samples file, or evaluate a run."""
from __future__ import annotations

import json
from pathlib import Path

from softdiff.choices import FEATURE_DATASETS
from softdiff.command_line import output_folder
from softdiff.commands.evaluate import EvalConfig
from softdiff.errors import ConfigError, check_choice
from softdiff.evaluation import classifiers
from softdiff.evaluation.features import load_samples, reference_images, score_samples
from softdiff.evaluation.run_eval import evaluate_run
from softdiff.evaluation.settings import EvalSettings
from softdiff.safe_io import check_output_dir, finite_json, write_json


def _write_report(cfg: EvalConfig, name: str, report: dict, default_dir: Path | None = None) -> None:
    """Print ``report`` as one JSON line; write it as ``name`` into the output folder when there is one."""
    print(json.dumps(finite_json(report)))
    folder = output_folder(cfg.output_dir, default_dir)
    if folder:
        write_json(Path(folder) / name, finite_json(report), indent=2)
        print(f"wrote {Path(folder) / name}")


def _score_dataset(given: str, named: str | None, images, path: str) -> str:
    """The dataset whose classifier scores ``images``: ``dataset=``, else the samples file's, else digits by shape."""
    dataset = given or named or ("digits" if tuple(images.shape[1:]) == (1, 8, 8) else "")
    if not dataset:
        raise ConfigError(f"--score '{path}' does not name its dataset; add dataset=NAME, one of: "
                          f"{', '.join(FEATURE_DATASETS)}.")
    check_choice("dataset", dataset, FEATURE_DATASETS)
    shape = classifiers.RECIPES[dataset].network.image_shape
    if tuple(images.shape[1:]) != shape:
        raise ConfigError(f"--score '{path}' holds samples of shape {tuple(images.shape[1:])}, but {dataset} images "
                          f"are {shape}; name the right dataset=.")
    return dataset


def run(args, cfg: EvalConfig, device) -> int:
    # Classifier functions are read from their module at call time, so that a test's stand-in for one is used.
    if cfg.feature_classifier and not args.train_classifier and not Path(cfg.feature_classifier).is_file():
        classifiers.check_classifier_writable(cfg.feature_classifier)  # it will be trained and saved there: say so
    if args.train_classifier:
        dataset = cfg.dataset or "digits"
        out = Path(cfg.feature_classifier) if cfg.feature_classifier else classifiers.cached_classifier(dataset)
        classifiers.check_classifier_writable(out)  # before training, not after
        model, acc = classifiers.train_classifier(cfg.seed, cfg.epochs or None, dataset=dataset)
        classifiers.save_classifier(model, out, acc, dataset)
        _write_report(cfg, "classifier.json", {"output": str(out), "dataset": dataset, "seed": cfg.seed,
                                               "test_accuracy": round(acc, 4)})
        return 0
    if args.score:
        images, named, labels = load_samples(args.score)
        dataset = _score_dataset(cfg.dataset, named, images, args.score)
        reference, floor_pool = reference_images(dataset)
        path = classifiers.classifier_path(dataset, cfg.feature_classifier)
        classifier, meta = classifiers.ensure_classifier(path, cfg.seed, dataset)
        classifier.to(device)
        scores = score_samples(classifier, images, reference, floor_pool, cfg.seed, labels)
        scores = {k: round(v, 4) if isinstance(v, float) else v for k, v in scores.items()}
        _write_report(cfg, "score.json", {"samples": args.score, "dataset": dataset, "classifier": str(path),
                                          "classifier_test_accuracy": float(meta["test_accuracy"]), **scores})
        return 0
    default_dir = Path(cfg.run) / "eval"
    folder = check_output_dir("--output-dir", output_folder(cfg.output_dir, default_dir))
    settings = EvalSettings(**{k: getattr(cfg, k) for k in EvalSettings.__dataclass_fields__})
    report, _ = evaluate_run(cfg.run, settings, cfg.ema, folder, device=device)
    _write_report(cfg, "eval.json", report, default_dir)
    return 0
