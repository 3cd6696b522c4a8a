"""Ablation of the digits recipe: each variant of configs/digits.yaml trained for the same steps, one run each.

Every variant is a list of config overrides on top of the default; all train with the package's own batch draws,
objective, density and weighting (the same ``Arm`` as bench_time_to_quality.py), and their final EMA weights are
scored on 500 samples (FID in the digits classifier's feature space, its mean top-class probability). Training
seconds are reported too; compare them only within one run.

    python benchmarks/bench_recipes.py --steps 1000 --round 1     # objectives and network options
    python benchmarks/bench_recipes.py --steps 3000 --round 2     # lr and density around the default
"""
from __future__ import annotations

import argparse

import torch

from softdiff.data import make_dataset
from softdiff.evaluation.classifiers import ensure_classifier
from softdiff.evaluation.features import score_samples
from softdiff.training import load_train_config
from softdiff.training.models import build_model

from bench_time_to_quality import Arm  # noqa: E402 (same folder)

OLD_NETWORK = ["model.conv_stem=0", "model.conv_out=false"]
EPSILON = ["diffusion.objective=diffusion", "diffusion.prediction_type=epsilon", "diffusion.timestep_density=uniform"]
STEP_ONE = ["train.lr=2e-3", "diffusion.density_std=1.0"]  # the settings of the first round of the search
VARIANTS = {
    # Round 1 (--steps 1000): objectives and network options, lr 2e-3.
    "epsilon, uniform t (the former default)": [*STEP_ONE, *OLD_NETWORK, *EPSILON],
    "v-prediction": [*STEP_ONE, *OLD_NETWORK, *EPSILON, "diffusion.prediction_type=v_prediction"],
    "epsilon + min-SNR-5": [*STEP_ONE, *OLD_NETWORK, *EPSILON, "diffusion.loss_weighting=min_snr"],
    "v + min-SNR-5": [*STEP_ONE, *OLD_NETWORK, *EPSILON, "diffusion.prediction_type=v_prediction",
                      "diffusion.loss_weighting=min_snr"],
    "x0 + EDM weighting + lognormal": [*STEP_ONE, *OLD_NETWORK, *EPSILON, "diffusion.prediction_type=sample",
                                       "diffusion.loss_weighting=edm", "diffusion.timestep_density=lognormal"],
    "flow, uniform t": [*STEP_ONE, *OLD_NETWORK, "diffusion.timestep_density=uniform"],
    "flow, logit-normal t": [*STEP_ONE, *OLD_NETWORK],
    "flow + conv stem and output conv": [*STEP_ONE],
    "flow + output conv only": [*STEP_ONE, "model.conv_stem=0"],
    "flow + conv stem, output conv, long skips": [*STEP_ONE, "model.long_skips=true"],
    "flow + long skips, output conv, time token": [*STEP_ONE, "model.conv_stem=0", "model.long_skips=true",
                                                   "model.conditioning=token"],
    "flow + conv stem, output conv, 4 layers": [*STEP_ONE, "model.num_layers=4"],
    # Round 2 (--steps 3000): the optimiser and density around the default.
    "lr 3e-3, logit-normal std 1": ["train.lr=3e-3", "diffusion.density_std=1.0"],
    "lr 5e-3, logit-normal std 1": ["train.lr=5e-3", "diffusion.density_std=1.0"],
    "lr 8e-3, logit-normal std 1": ["diffusion.density_std=1.0"],
    "the default (lr 8e-3, logit-normal std 0.8)": [],
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--round", type=int, choices=(1, 2), help="only the variants of round 1 or 2")
    p.add_argument("--only", nargs="+", help="variant names to run (default: all)")
    p.add_argument("--config", default="configs/digits.yaml")
    p.add_argument("--classifier", default=None, help="digits classifier file (default: the cached one)")
    args = p.parse_args()
    classifier = ensure_classifier(args.classifier)[0]
    dataset = make_dataset("digits")
    print(f"threads={torch.get_num_threads()} steps={args.steps} seed={args.seed} config={args.config}")
    print("| variant | FID | confidence | train seconds |\n| --- | --- | --- | --- |")
    names = list(VARIANTS)
    if args.round:
        names = names[:12] if args.round == 1 else names[12:]
    for name in names:
        overrides = VARIANTS[name]
        if args.only and name not in args.only:
            continue
        cfg = load_train_config(args.config, [*overrides, f"train.steps={args.steps}", f"train.seed={args.seed}"])
        torch.manual_seed(args.seed)
        arm = Arm(name, build_model(cfg, dataset), cfg, dataset)
        while arm.step < args.steps:
            arm.train_step()
        scores = score_samples(classifier, arm.samples(500, 1), dataset.data_tensor())
        print(f"| {name} | {scores['fid']:.2f} | {scores['confidence']:.3f} | {arm.seconds:.0f} |",
              flush=True)


if __name__ == "__main__":
    main()
