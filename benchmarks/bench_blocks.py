"""Forward+backward time of the same ScoreTransformer with softmax vs relu vs gelu blocks (ratios to relu).

    python benchmarks/bench_blocks.py [--repeats 15] [--device cpu|cuda] [--threads N]
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from softdiff.nets import ScoreTransformer

SIZES = {
    "small (digits default, 8x8, h64 x3)": dict(sample_size=8, in_channels=1, hidden_size=64, num_layers=3,
                                                 patch_size=2, batch=128),
    "medium (32x32x3, h256 x6)": dict(sample_size=32, in_channels=3, hidden_size=256, num_layers=6, patch_size=4,
                                      batch=64),
}
ACTIVATIONS = ("relu", "softmax", "gelu")


def time_step(model, x, t, repeats: int, device) -> float:
    """Median seconds of one forward+backward."""
    times = []
    for i in range(repeats + 3):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        model(x, t).square().mean().backward()
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i >= 3:  # warm-up
            times.append(time.perf_counter() - start)
        model.zero_grad(set_to_none=True)
    return statistics.median(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    print(f"device={device} threads={torch.get_num_threads()} torch={torch.__version__} repeats={args.repeats}")
    print("| size | activation | median ms | ratio to relu |\n| --- | --- | --- | --- |")
    for label, spec in SIZES.items():
        spec = dict(spec)
        batch = spec.pop("batch")
        g = torch.Generator().manual_seed(0)
        x = torch.randn(batch, spec["in_channels"], spec["sample_size"], spec["sample_size"], generator=g).to(device)
        t = torch.randint(0, 1000, (batch,), generator=g).float().to(device)
        # Interleave the activations over rounds so that machine noise hits all of them alike.
        results = {a: [] for a in ACTIVATIONS}
        models = {}
        for a in ACTIVATIONS:
            torch.manual_seed(0)
            models[a] = ScoreTransformer(activation=a, **spec).to(device)
            for prm in models[a].parameters():  # leave the zero init: gradients must flow everywhere
                prm.data.add_(torch.randn_like(prm) * 0.01)
        for _ in range(3):
            for a in ACTIVATIONS:
                results[a].append(time_step(models[a], x, t, max(1, args.repeats // 3), device))
        base = statistics.median(results["relu"])
        for a in ACTIVATIONS:
            med = statistics.median(results[a])
            print(f"| {label} | {a} | {med * 1e3:.2f} | {med / base:.3f} |")


if __name__ == "__main__":
    main()
