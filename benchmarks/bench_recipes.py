"""Ablation of the digits recipe: each variant of configs/digits.yaml trained for the same steps, one run each.

Every variant is a list of config overrides on top of the default; all train with the package's own batch draws,
objective, density and weighting (the same ``Arm`` as bench_time_to_quality.py), and their final EMA weights are
scored on 500 samples (FID in the digits classifier's feature space, its mean top-class probability). Training
seconds are reported too; compare them only within one run.

    python benchmarks/bench_recipes.py [--steps 1000] [--seed 0] [--only NAME ...]
"""
from __future__ import annotations

import argparse

import torch

from softdiff.data import make_dataset
from softdiff.evaluation.features import classifier_scores, ensure_classifier, fid_kid
from softdiff.training import load_train_config
from softdiff.training.models import build_model

from bench_time_to_quality import Arm  # noqa: E402 (same folder)

OLD_NETWORK = ["model.conv_stem=0", "model.conv_out=false"]
EPSILON = ["diffusion.objective=diffusion", "diffusion.prediction_type=epsilon", "diffusion.timestep_density=uniform",
           "sample.scheduler=dpm++sde"]
VARIANTS = {
    "epsilon, uniform t, lr 2e-3 (the former default)": [*OLD_NETWORK, *EPSILON, "train.lr=2e-3"],
    "v-prediction": [*OLD_NETWORK, *EPSILON, "diffusion.prediction_type=v_prediction", "train.lr=2e-3"],
    "epsilon + min-SNR-5": [*OLD_NETWORK, *EPSILON, "diffusion.loss_weighting=min_snr", "train.lr=2e-3"],
    "v + min-SNR-5": [*OLD_NETWORK, *EPSILON, "diffusion.prediction_type=v_prediction",
                      "diffusion.loss_weighting=min_snr", "train.lr=2e-3"],
    "x0 + EDM weighting + lognormal": [*OLD_NETWORK, *EPSILON, "diffusion.prediction_type=sample",
                                       "diffusion.loss_weighting=edm", "diffusion.timestep_density=lognormal",
                                       "train.lr=2e-3"],
    "flow, uniform t": [*OLD_NETWORK, "diffusion.timestep_density=uniform", "train.lr=2e-3"],
    "flow, logit-normal t": [*OLD_NETWORK, "train.lr=2e-3"],
    "flow, logit-normal, + conv stem and output conv": ["train.lr=2e-3"],
    "... + long skips": ["train.lr=2e-3", "model.long_skips=true"],
    "... output conv only": ["train.lr=2e-3", "model.conv_stem=0"],
    "... 4 layers": ["train.lr=2e-3", "model.num_layers=4"],
    "... lr 5e-3": ["train.lr=5e-3"],
    "the default": [],
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--only", nargs="+", help="variant names to run (default: all)")
    p.add_argument("--config", default="configs/digits.yaml")
    p.add_argument("--classifier", default="features/digits_classifier.safetensors")
    args = p.parse_args()
    classifier = ensure_classifier(args.classifier)[0]
    dataset = make_dataset("digits")
    real = dataset.data_tensor()
    print(f"threads={torch.get_num_threads()} steps={args.steps} seed={args.seed} config={args.config}")
    print("| variant | FID | confidence | train seconds |\n| --- | --- | --- | --- |")
    for name, overrides in VARIANTS.items():
        if args.only and name not in args.only:
            continue
        cfg = load_train_config(args.config, [*overrides, f"train.steps={args.steps}", f"train.seed={args.seed}"])
        torch.manual_seed(args.seed)
        arm = Arm(name, build_model(cfg, dataset), cfg, dataset)
        while arm.step < args.steps:
            arm.train_step()
        x = arm.samples(500, 1)
        fid = fid_kid(classifier, real, x)["fid"]
        print(f"| {name} | {fid:.2f} | {classifier_scores(classifier, x)['confidence']:.3f} | {arm.seconds:.0f} |",
              flush=True)


if __name__ == "__main__":
    main()
