"""Data loading at scale: a folder of 64x64 PNGs read lazily (0, 1, 2 DataLoader workers) as ``data.name=folder``
and as a Hugging Face dataset (``data.name=hf``: an image folder read in place), against the in-memory loader
(every image decoded and stacked before the first step).

For each dataset size and loader, a fresh process builds the dataset and the default ScoreTransformer
(its defaults, patch_size 8 at 64x64) and reports: time from building the dataset to the end of the
first training step (on a first start, and on a restart that reopens the data through the run's
``data_index.json`` as ``--resume`` does), the main process's peak resident memory, examples/s of the
loader alone (``draw_batch`` for the next steps), and examples/s of training steps fed by that loader.
Rounds interleave the loaders; figures are medians over rounds. Folders are generated once and cached under ``--cache``
(remove it afterwards). For reference, ``datasets.load_dataset`` of each folder is timed twice (building its Arrow
cache, then finding it).

    python benchmarks/bench_data.py [--sizes 2000 20000] [--rounds 3] [--batch 64] [--steps 8] [--loaders memory hf]
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

# (loader, workers, restart): a restart reopens the data through the run's data_index.json, as --resume does
LOADERS = [("memory", 0, False), ("folder", 0, False), ("folder", 1, False), ("folder", 2, False), ("folder", 2, True),
           ("hf", 0, False), ("hf", 1, False), ("hf", 2, False), ("hf", 2, True)]


def make_folder(root: Path, n: int) -> Path:
    """``n`` 64x64 RGB PNGs (smooth colour fields plus noise, so they compress like photos, not like noise)."""
    import numpy as np
    from PIL import Image

    folder = root / f"png64-{n}"
    if (folder / "done").is_file():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:64, 0:64] / 64.0
    for i in range(n):
        a, b, c = rng.uniform(0, 6, 3)
        base = np.stack([np.sin(a * xx + b * yy + c + k) for k in range(3)], -1) * 100 + 128
        img = np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)
        sub = folder / f"{i // 1000:03d}"  # a nested tree, as photo collections are
        sub.mkdir(exist_ok=True)
        Image.fromarray(img).save(sub / f"{i:06d}.png")
    (folder / "done").write_text("ok\n")
    return folder


def child(args) -> None:
    """One measurement in this process (see the module docstring); prints one JSON line."""
    import torch

    from softdiff.data import Dataset, dataset_from_config
    from softdiff.data.images import load_folder
    from softdiff.diffusion.objective import Objective
    from softdiff.diffusion.sampling import model_output
    from softdiff.training import load_train_config
    from softdiff.training.models import build_model
    from softdiff.training.trainer import batch_stream, draw_batch

    name = "folder" if args.loader == "memory" else args.loader
    total = 1 + 2 * args.steps
    cfg = load_train_config(None, [f"data.name={name}", f"data.path={args.folder}", "data.image_size=64",
                                   f"data.num_workers={args.workers}", "data.random_flip=true", "model.patch_size=8",
                                   f"train.batch_size={args.batch}", f"train.steps={total}"])
    torch.manual_seed(0)
    t0 = time.perf_counter()
    if args.loader == "memory":
        images = load_folder(args.folder, 64, 3)
        dataset = Dataset("folder", "image", tuple(images.shape[1:]), (0.0, 1.0), None, images)
    else:
        dataset = dataset_from_config(cfg.data, args.index)
    stream = batch_stream(dataset, cfg, 0, total, 0, 1)
    data_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # imports + the dataset
    objective = Objective.from_config(cfg.diffusion)
    model = build_model(cfg, dataset)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def train_step(step):
        x_t, t, target, weight, _ = draw_batch(dataset, objective, cfg, step, 0, 0, 1, stream)
        objective.loss(model_output(model(x_t, t)), target, weight).mean().backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    train_step(0)
    first = time.perf_counter() - t0
    start = time.perf_counter()
    for step in range(1, 1 + args.steps):
        train_step(step)
    train_rate = args.steps * args.batch / (time.perf_counter() - start)
    start = time.perf_counter()
    for step in range(1 + args.steps, total):
        draw_batch(dataset, objective, cfg, step, 0, 0, 1, stream)
    load_rate = args.steps * args.batch / (time.perf_counter() - start)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if stream is not None:
        stream.close()
    print(json.dumps({"first_step_s": first, "peak_rss_mb": peak, "data_rss_mb": data_rss, "load_per_s": load_rate,
                      "train_per_s": train_rate, "size": len(dataset)}))


def measure(folder: Path, loader: str, workers: int, index: Path | None, args, env: dict) -> dict:
    cmd = [sys.executable, __file__, "--child", "--folder", str(folder), "--loader", loader, "--workers",
           str(workers), "--batch", str(args.batch), "--steps", str(args.steps)]
    cmd += ["--index", str(index)] if index else []
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if res.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{res.stderr[-3000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[2000, 20000])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--cache", default="/tmp/softdiff-bench-data")
    p.add_argument("--loaders", nargs="+", choices=["memory", "folder", "hf"], default=["memory", "folder", "hf"])
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--folder", help=argparse.SUPPRESS)
    p.add_argument("--loader", help=argparse.SUPPRESS)
    p.add_argument("--workers", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--index", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        return child(args)
    cache = Path(args.cache)
    env = {**os.environ, "HF_DATASETS_CACHE": str(cache / "hf-cache"), "HF_HUB_OFFLINE": "1",
           "HF_DATASETS_OFFLINE": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    folders = {}
    for n in args.sizes:
        start = time.perf_counter()
        folders[n] = make_folder(cache, n)
        print(f"folder of {n} PNGs: {folders[n]} ({time.perf_counter() - start:.1f} s to generate or find)")
    loaders = [loader for loader in LOADERS if loader[0] in args.loaders]
    for n in args.sizes if "hf" in args.loaders else []:  # what data.name=hf does not do for an image folder
        for what in ("builds (or finds)", "finds"):
            start = time.perf_counter()
            subprocess.run([sys.executable, "-c", f"import datasets; datasets.load_dataset({str(folders[n])!r}, "
                            "split='train')"], env=env, check=True, capture_output=True)
            print(f"datasets.load_dataset of the folder of {n} (a fresh process that {what} its Arrow cache): "
                  f"{time.perf_counter() - start:.1f} s")
    indexes = {}
    for n in args.sizes:  # what a run's first start leaves in its folder for the restarts
        for name in ("folder", "hf"):
            indexes[(n, name)] = cache / f"index-{name}-{n}.json"
            indexes[(n, name)].unlink(missing_ok=True)
            subprocess.run([sys.executable, "-c", f"from softdiff.data import make_dataset; make_dataset({name!r}, "
                            f"path={str(folders[n])!r}, image_size=64, index={str(indexes[(n, name)])!r})"],
                           env=env, check=True, capture_output=True)
    results = {(n, *loader): [] for n in args.sizes for loader in loaders}
    for r in range(args.rounds):
        for n in args.sizes:
            for loader, w, restart in loaders:
                index = indexes[(n, loader)] if restart else None
                results[(n, loader, w, restart)].append(measure(folders[n], loader, w, index, args, env))
        print(f"round {r + 1}/{args.rounds} done", flush=True)
    med = {k: {f: statistics.median(m[f] for m in v) for f in v[0]} for k, v in results.items()}
    print(f"\nthreads={os.environ.get('OMP_NUM_THREADS', 'default')} batch={args.batch} steps={args.steps} "
          f"rounds={args.rounds} cpus={os.cpu_count()}")
    print("| images | loader | workers | start | first step (s) | peak RSS (MB) | RSS with the data, before the "
          "model (MB) | loader ex/s | training ex/s |\n| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for (n, loader, w, restart), m in med.items():
        print(f"| {n} | {loader} | {w} | {'restart' if restart else 'first'} | {m['first_step_s']:.2f} | "
              f"{m['peak_rss_mb']:.0f} | {m['data_rss_mb']:.0f} | {m['load_per_s']:.0f} | {m['train_per_s']:.0f} |")
    if len(args.sizes) > 1:
        lo, hi = min(args.sizes), max(args.sizes)
        print(f"\nratio {hi} / {lo} images (1.00 = independent of size):\n| loader | workers | start | first step | "
              "peak RSS | RSS with the data |\n| --- | --- | --- | --- | --- | --- |")
        for loader, w, restart in loaders:
            a, b = med[(lo, loader, w, restart)], med[(hi, loader, w, restart)]
            print(f"| {loader} | {w} | {'restart' if restart else 'first'} | "
                  f"{b['first_step_s'] / a['first_step_s']:.2f} | {b['peak_rss_mb'] / a['peak_rss_mb']:.2f} | "
                  f"{b['data_rss_mb'] / a['data_rss_mb']:.2f} |")


if __name__ == "__main__":
    main()
