"""Training throughput of the default digits ScoreTransformer vs diffusers' UNet2DModel (channels 32/64).

Both train on the same 8x8 digits batches with the same objective (epsilon, linear betas) and AdamW, in the same
run, interleaved in rounds so machine noise hits both alike. Prints samples/s and the ratio.

    python benchmarks/bench_train.py [--steps 30] [--rounds 3] [--threads N]
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from softdiff.data import make_dataset
from softdiff.diffusion.objectives import alpha_sigma
from softdiff.diffusion.sampling import model_output
from softdiff.diffusion.schedulers import make_scheduler
from softdiff.training import load_train_config
from softdiff.training.models import build_model

from baselines import unet  # noqa: E402 (same folder)


def samples_per_second(model, dataset, alphas_cumprod, batch: int, steps: int) -> float:
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(0)
    model.train()
    start = None
    for i in range(steps + 2):
        if i == 2:  # two warm-up steps
            start = time.perf_counter()
        x0, _ = dataset.sample(batch, g)
        t = torch.randint(0, 1000, (batch,), generator=g)
        noise = torch.randn(x0.shape, generator=g)
        a, s = alpha_sigma(alphas_cumprod, t, 4)
        out = model_output(model(a * x0 + s * noise, t))
        loss = (out - noise).square().mean()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return steps * batch / (time.perf_counter() - start)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=0)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = load_train_config("configs/digits.yaml")
    dataset = make_dataset("digits")
    alphas_cumprod = make_scheduler("ddpm").alphas_cumprod
    torch.manual_seed(0)
    models = {"softdiff ScoreTransformer (softmax)": build_model(cfg, dataset), "diffusers UNet2DModel": unet()}
    rates = {name: [] for name in models}
    for _ in range(args.rounds):
        for name, model in models.items():
            rates[name].append(samples_per_second(model, dataset, alphas_cumprod, cfg.train.batch_size, args.steps))
    base = statistics.median(rates["diffusers UNet2DModel"])
    print(f"threads={torch.get_num_threads()} batch={cfg.train.batch_size} steps={args.steps} rounds={args.rounds}")
    print("| model | parameters | samples/s (median) | ratio to UNet |\n| --- | --- | --- | --- |")
    for name, model in models.items():
        n = sum(p.numel() for p in model.parameters())
        med = statistics.median(rates[name])
        print(f"| {name} | {n / 1e3:.0f}k | {med:.0f} | {med / base:.2f} |")


if __name__ == "__main__":
    main()
