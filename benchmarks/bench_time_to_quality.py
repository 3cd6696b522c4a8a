"""Time to quality on digits: the default ScoreTransformer vs diffusers' UNet2DModel, same recipe, same run.

Both train with AdamW (constant lr: ours from configs/digits.yaml, the UNet's ``--lr-unet``, the better of
1e-3 and 2e-3 for it), the epsilon objective on linear betas, batch 128, EMA 0.995. Every ``--eval-every``
steps the EMA weights draw 512 samples (dpm++sde, 20 steps) and their FID against the real digits is computed
in the feature space of softdiff's digits classifier. Training time excludes evaluation.

    python benchmarks/bench_time_to_quality.py [--fid 10] [--budget 60] [--eval-every 50]
"""
from __future__ import annotations

import argparse
import copy
import time
from pathlib import Path

import torch
from diffusers.training_utils import EMAModel

from softdiff.data import make_dataset
from softdiff.diffusion import make_scheduler, sample, training_scheduler_config
from softdiff.diffusion.objectives import alpha_sigma
from softdiff.evaluation.features import ensure_classifier, fid_kid
from softdiff.training import load_train_config
from softdiff.training.models import build_model

from bench_train import unet_baseline  # noqa: E402 (same folder)


def fid_of(model, ema: EMAModel, classifier, real: torch.Tensor) -> float:
    shadow = copy.deepcopy(model)
    ema.copy_to(shadow.parameters())
    shadow.eval()
    forward = (lambda x, t: shadow(x, t).sample) if hasattr(shadow, "time_embedding") else shadow
    x = sample(forward, make_scheduler("dpm++sde", training_scheduler_config()), (512, 1, 8, 8), 20,
               torch.Generator().manual_seed(0))
    return fid_kid(classifier, real, ((x + 1) / 2).clamp(0, 1))["fid"]


def time_to_quality(model, dataset, classifier, real, args, lr: float) -> dict:
    ab = make_scheduler("ddpm").alphas_cumprod
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    ema = EMAModel(model.parameters(), decay=0.995)
    g = torch.Generator().manual_seed(0)
    train_time, step, history = 0.0, 0, []
    while train_time < args.budget:
        start = time.perf_counter()
        for _ in range(args.eval_every):
            x0, _ = dataset.sample(128, g)
            t = torch.randint(0, 1000, (128,), generator=g)
            noise = torch.randn(x0.shape, generator=g)
            a, s = alpha_sigma(ab, t, 4)
            out = model(a * x0 + s * noise, t)
            loss = ((out.sample if hasattr(out, "sample") else out) - noise).square().mean()
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            ema.step(model.parameters())
        train_time += time.perf_counter() - start
        step += args.eval_every
        fid = fid_of(model, ema, classifier, real)
        history.append((step, train_time, fid))
        print(f"    step {step:5d}  train {train_time:6.1f} s  FID {fid:.2f}", flush=True)
        if fid <= args.fid:
            break
    reached = [h for h in history if h[2] <= args.fid]
    return {"history": history, "reached": reached[0] if reached else None}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--fid", type=float, default=10.0, help="quality bar: FID in the classifier's feature space")
    p.add_argument("--budget", type=float, default=60.0, help="training seconds per model at most")
    p.add_argument("--eval-every", type=int, default=50)
    p.add_argument("--lr", type=float, default=None, help="our lr (default: configs/digits.yaml's train.lr)")
    p.add_argument("--lr-unet", type=float, default=1e-3)
    p.add_argument("--classifier", default="features/digits_classifier.safetensors")
    args = p.parse_args()
    Path(args.classifier).parent.mkdir(parents=True, exist_ok=True)
    classifier, meta = ensure_classifier(args.classifier)
    dataset = make_dataset("digits")
    real = dataset.data_tensor()
    torch.manual_seed(0)
    config = load_train_config("configs/digits.yaml")
    models = {"softdiff ScoreTransformer (softmax)": (build_model(config, dataset), args.lr or config.train.lr),
              "diffusers UNet2DModel": (unet_baseline(), args.lr_unet)}
    results = {}
    for name, (model, lr) in models.items():
        print(f"{name} (lr {lr:g})", flush=True)
        results[name] = time_to_quality(model, dataset, classifier, real, args, lr)
    print(f"\nthreads={torch.get_num_threads()} FID bar={args.fid} budget={args.budget:.0f} s per model")
    print("| model | steps to bar | train seconds to bar | last FID |\n| --- | --- | --- | --- |")
    for name, r in results.items():
        step, sec, _ = r["reached"] or ("-", None, None)
        last = r["history"][-1][2]
        print(f"| {name} | {step} | {'-' if sec is None else f'{sec:.0f}'} | {last:.2f} |")


if __name__ == "__main__":
    main()
