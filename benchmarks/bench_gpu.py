"""The cifar10 config's training step on one CUDA device: images/s, step time, peak memory and MFU in fp32, bf16
and bf16 + torch.compile, and a bf16-vs-fp32 loss comparison over seeds.

Each mode times the training loop's step (softdiff.training.trainer's draw_batch on the device, the forward and
loss under autocast, backward, gradient clipping, AdamW (fused on CUDA), the foreach EMA) after --warmup steps
(compiling included), synchronising the device before and after the timed steps only. MFU = FLOPs of one step's
forward and backward (counted once by torch.utils.flop_counter.FlopCounterMode on the eager net: matrix
products, convolutions and attention; not the elementwise work nor the optimizer) x steps / seconds / the
device's peak FLOP/s for the mode's dtype. The peaks (dense, from the vendors' datasheets) are looked up by the
device's name: H100 SXM / PCIe / NVL, H200 (SXM / NVL) and A100; fp32 is measured against the TF32 peak, since the
trainer lets CUDA matrix products run in TF32; --peak-tflops overrides the table for every mode. "data ms" is the
host's time per step in draw_batch (noise and timesteps drawn on the device, the images copied there): it overlaps
the device's work unless it exceeds it.

The loss comparison trains --compare-steps steps of the config per seed in fp32 and in bf16 (both eager), its lr
schedule shortened to that many steps (warm-up keeping its share), so that the net learns at the config's lr
rather than sitting in the first steps of a 100,000-step warm-up; the same seed gives both precisions the same initial weights and
batches. It prints the final loss (mean of the last 50 steps, or of the last half of a shorter run) per seed and whether bf16's mean over seeds lies
within the seed-to-seed spread (max - min) of fp32's.

Data: CIFAR-10 from torchvision's files under data.root when they are there, else a stand-in tensor of its shape
and size (benchmarks/standin.py); no network is needed.

--cpu-smoke (automatic without CUDA): a reduced net and budget (no MFU unless --peak-tflops is given, no peak
memory). Every run also counts the full config's parameters and FLOPs per step on the meta device (no memory,
no compute), and what the step would take at 35% MFU on an H100 SXM.

On a GPU machine that has torch and accelerate but not diffusers or omegaconf (no network there): fetch their
wheels here and carry them,
    python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \\
        --platform manylinux2014_x86_64 -d .whl diffusers==0.42.1 importlib_metadata==10.2.0 omegaconf==2.4.0
then run, there, from the repository root:
    python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:.
    python3 benchmarks/bench_gpu.py --json bench_gpu.json

    python benchmarks/bench_gpu.py [--config configs/cifar10.yaml] [--steps 30] [--warmup 10] [--seeds 0 1 2]
        [--compare-steps 300] [--modes fp32 bf16 bf16+compile] [--peak-tflops T] [--cpu-smoke] [--json PATH]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

try:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    import softdiff.data
    from softdiff.diffusion.objective import Objective
    from softdiff.diffusion.sampling import model_output
    from softdiff.errors import SoftdiffError
    from softdiff.safe_io import check_output_file, write_json
    from softdiff.training import load_train_config
    from softdiff.training.models import build_model
    from softdiff.training.trainer import draw_batch
except ImportError as err:
    sys.exit(f"error: {err}; on a machine without diffusers or omegaconf, carry their wheels (see this script's "
             "docstring).")

from hand_step import HandStep  # noqa: E402 (same folder)
from standin import standin_loader  # noqa: E402

# Dense peak TFLOP/s by dtype (vendors' datasheets; the sparse figures are twice these). Checked in this order.
PEAK_TFLOPS = [
    (("H100", "NVL"), "H100 NVL", {"bf16": 835.5, "tf32": 417.5, "fp32": 60.0}),
    (("H100", "PCIe"), "H100 PCIe", {"bf16": 756.5, "tf32": 378.0, "fp32": 51.2}),
    (("H100",), "H100 SXM", {"bf16": 989.4, "tf32": 494.7, "fp32": 66.9}),
    (("H200", "NVL"), "H200 NVL", {"bf16": 835.5, "tf32": 417.5, "fp32": 60.0}),
    (("H200",), "H200 SXM", {"bf16": 989.4, "tf32": 494.7, "fp32": 66.9}),
    (("A100",), "A100", {"bf16": 312.0, "tf32": 156.0, "fp32": 19.5}),
]
MODES = {"fp32": (False, False), "bf16": (True, False), "bf16+compile": (True, True)}  # (autocast bf16, compile)
# --cpu-smoke: the config's recipe on a small net and batch, so that every mode and the comparison fit a minute.
CPU_SMOKE = ["model.hidden_size=32", "model.num_layers=2", "model.num_heads=2", "model.conv_stem=8",
             "model.conv_decoder=8", "train.batch_size=8"]
LAST = 50  # steps averaged into a final loss (at most half the run)


def fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


def peak_tflops(device: torch.device, override: float | None) -> tuple[str, dict[str, float] | None]:
    """(the device's name, its peak TFLOP/s by dtype); None where the name is not in the table."""
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    if override is not None:
        return name, {"bf16": override, "tf32": override, "fp32": override}
    for needles, label, peaks in PEAK_TFLOPS:
        if all(n.lower() in name.lower() for n in needles):
            return f"{name} ({label})", peaks
    return name, None


def load_dataset(cfg, n_standin: int):
    """The config's dataset; CIFAR-10 from the stand-in when torchvision's files are absent. (dataset, source)"""
    if cfg.data.name == "cifar10" and not (Path(cfg.data.root) / "cifar-10-batches-py").is_dir():
        softdiff.data.load_torchvision = standin_loader(n_standin)
        source = f"stand-in tensor of CIFAR-10's shape ({n_standin} images; torchvision's files not under " \
                 f"'{cfg.data.root}')"
    else:
        source = f"{cfg.data.name} files"
    return softdiff.data.dataset_from_config(cfg.data), source


class TrainStep:
    """One process's training step as the trainer takes it (one micro-batch, no accumulation)."""

    def __init__(self, cfg, dataset, device: torch.device, bf16: bool, compiled: bool):
        self.cfg, self.dataset, self.device, self.bf16 = cfg, dataset, device, bf16
        self.objective = Objective.from_config(cfg.diffusion)
        torch.manual_seed(cfg.train.seed)
        self.model = build_model(cfg, dataset).to(device).train()
        self.update = HandStep(self.model, cfg, device)
        self.forward = torch.compile(self.model) if compiled else self.model
        self.step, self.data_seconds = 0, 0.0

    def batch(self):
        start = time.perf_counter()
        x_t, t, target, weight, labels = draw_batch(self.dataset, self.objective, self.cfg, self.step, 0, 0, 1,
                                                    device=self.device)
        kwargs = {"class_labels": labels} if labels is not None else {}
        self.data_seconds += time.perf_counter() - start
        return x_t, t, target, weight, kwargs

    def loss(self, forward, x_t, t, target, weight, kwargs) -> torch.Tensor:
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            return self.objective.loss(model_output(forward(x_t, t, **kwargs)), target, weight).mean()

    def __call__(self) -> torch.Tensor:
        loss = self.loss(self.forward, *self.batch())
        self.update.step(loss)
        self.step += 1
        return loss.detach()

    def flops(self) -> int:
        """FLOPs of one forward and backward on the eager net (gradients cleared after)."""
        with FlopCounterMode(display=False) as counter:
            self.loss(self.model, *self.batch()).backward()
        self.update.optimizer.zero_grad(set_to_none=True)
        return counter.get_total_flops()


def full_size_count(cfg) -> tuple[int, int]:
    """(parameters, FLOPs of one forward and backward at the config's batch) of the config's net, counted on the
    meta device: shapes only, so the full CIFAR-10 net is counted on any machine."""
    from softdiff.data import Dataset

    d = cfg.data
    channels, size = (3, 32) if d.name == "cifar10" else (1, 28) if d.name in ("mnist", "fashion_mnist") else (
        d.channels, d.image_size)
    stub = Dataset(d.name, "image", (channels, size, size), (0.0, 1.0), 10)
    b = cfg.train.batch_size
    with torch.device("meta"):
        model = build_model(cfg, stub)
        x, t = torch.randn(b, channels, size, size), torch.rand(b) * 999
        labels = torch.randint(0, 10, (b,)) if cfg.data.class_conditional else None
    kwargs = {"class_labels": labels} if labels is not None else {}
    with FlopCounterMode(display=False) as counter:
        model_output(model(x, t, **kwargs)).float().pow(2).mean().backward()
    return sum(p.numel() for p in model.parameters()), counter.get_total_flops()


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_mode(cfg, dataset, device, mode: str, steps: int, warmup: int, peaks) -> dict:
    bf16, compiled = MODES[mode]
    step = TrainStep(cfg, dataset, device, bf16, compiled)
    flops = step.flops()
    for _ in range(warmup):
        step()
    sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    step.data_seconds = 0.0
    start = time.perf_counter()
    for _ in range(steps):
        step()
    sync(device)
    seconds = (time.perf_counter() - start) / steps
    peak = peaks.get("bf16" if bf16 else ("tf32" if torch.backends.cuda.matmul.allow_tf32 else "fp32")) \
        if peaks else None
    return {"mode": mode, "step_ms": 1e3 * seconds, "images_per_s": cfg.train.batch_size / seconds,
            "data_ms": 1e3 * step.data_seconds / steps, "gflops_per_step": flops / 1e9,
            "achieved_tflops": flops / seconds / 1e12,
            "mfu": flops / seconds / (peak * 1e12) if peak else None,
            "peak_memory_gb": torch.cuda.max_memory_allocated(device) / 1e9 if device.type == "cuda" else None}


def final_losses(cfg, dataset, device, bf16: bool, steps: int) -> list[float]:
    step = TrainStep(cfg, dataset, device, bf16, compiled=False)
    losses = torch.stack([step() for _ in range(steps)]).float().cpu()  # read back once, at the end
    return losses.tolist()[-min(LAST, steps // 2):]


def compare(cfg, dataset, device, seeds: list[int], steps: int) -> dict:
    from dataclasses import replace

    finals = {"fp32": [], "bf16": []}
    warmup = round(cfg.train.warmup_steps * steps / cfg.train.steps)
    for seed in seeds:
        seeded = replace(cfg, train=replace(cfg.train, seed=seed, steps=steps, warmup_steps=warmup))
        for name, bf16 in (("fp32", False), ("bf16", True)):
            losses = final_losses(seeded, dataset, device, bf16, steps)
            finals[name].append(statistics.fmean(losses))
    spread = max(finals["fp32"]) - min(finals["fp32"])
    gap = statistics.fmean(finals["bf16"]) - statistics.fmean(finals["fp32"])
    return {"seeds": seeds, "steps": steps, "final_fp32": finals["fp32"], "final_bf16": finals["bf16"],
            "fp32_spread": spread, "bf16_minus_fp32": gap, "within_spread": abs(gap) <= spread}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="configs/cifar10.yaml")
    p.add_argument("--steps", type=int, default=None, help="timed steps per mode (default 30; CPU smoke 5)")
    p.add_argument("--warmup", type=int, default=None, help="untimed steps first (default 10; CPU smoke 2)")
    p.add_argument("--modes", nargs="+", default=list(MODES), help=f"any of {', '.join(MODES)}")
    p.add_argument("--seeds", type=int, nargs="+", default=None, help="loss comparison (default 0 1 2; CPU 0 1)")
    p.add_argument("--compare-steps", type=int, default=None, help="default 300 (CPU smoke 20); 0: no comparison")
    p.add_argument("--peak-tflops", type=float, default=None, help="the device's peak TFLOP/s for every mode")
    p.add_argument("--cpu-smoke", action="store_true", help="reduced size on CPU (automatic without CUDA)")
    p.add_argument("--json", default=None, help="also write the results here")
    args = p.parse_args()
    smoke = args.cpu_smoke or not torch.cuda.is_available()
    steps = args.steps if args.steps is not None else (5 if smoke else 30)
    warmup = args.warmup if args.warmup is not None else (2 if smoke else 10)
    compare_steps = args.compare_steps if args.compare_steps is not None else (20 if smoke else 300)
    seeds = args.seeds if args.seeds is not None else ([0, 1] if smoke else [0, 1, 2])
    for key, value, low in (("--steps", steps, 1), ("--warmup", warmup, 0), ("--compare-steps", compare_steps, 0)):
        if value < low:
            fail(f"{key}={value} must be at least {low}.")
    if compare_steps == 1:
        fail("--compare-steps=1 must be 0 (no comparison) or at least 2 (the final loss averages the last half).")
    if args.peak_tflops is not None and not args.peak_tflops > 0:
        fail(f"--peak-tflops={args.peak_tflops} must be a positive number.")
    if unknown := [m for m in args.modes if m not in MODES]:
        fail(f"--modes {unknown[0]} is not a mode; choose from {', '.join(MODES)}.")
    try:  # a bad --json path or config is one line, before any work
        if args.json:
            check_output_file("--json", args.json)
        full = load_train_config(args.config)
        cfg = load_train_config(args.config, CPU_SMOKE if smoke else [])
    except SoftdiffError as err:
        fail(str(err))
    device = torch.device("cpu" if smoke else "cuda")
    if device.type == "cuda":  # as the trainer does
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    dataset, source = load_dataset(cfg, 2_000 if smoke else 50_000)
    name, peaks = peak_tflops(device, args.peak_tflops)
    m = cfg.model
    print(f"device: {name}; torch {torch.__version__}; threads {torch.get_num_threads()}")
    print(f"config: {args.config}{' (CPU smoke: ' + ' '.join(CPU_SMOKE) + ')' if smoke else ''}; net "
          f"h{m['hidden_size']} x {m['num_layers']} layers, patch {m['patch_size']}; batch {cfg.train.batch_size}; data: "
          f"{source}")
    params, flops = full_size_count(full)
    at_35 = flops / (0.35 * 989.4e12)
    print(f"full config: {params / 1e6:.1f} M parameters, {flops / 1e12:.2f} TFLOP per step at batch "
          f"{full.train.batch_size} (meta device); at 35% MFU of an H100 SXM's bf16 peak: {1e3 * at_35:.0f} ms a "
          f"step, {full.train.batch_size / at_35:.0f} images/s, {full.train.steps * at_35 / 60:.0f} min for its "
          f"{full.train.steps} steps")
    rows = [time_mode(cfg, dataset, device, mode, steps, warmup, peaks) for mode in args.modes]
    print(f"\n{steps} timed steps after {warmup} warm-up steps per mode\n")
    print("| mode | step (ms) | images/s | data (ms) | GFLOP/step | TFLOP/s | MFU | peak memory (GB) |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        mfu = f"{100 * r['mfu']:.1f}%" if r["mfu"] is not None else "n/a"
        mem = f"{r['peak_memory_gb']:.2f}" if r["peak_memory_gb"] is not None else "n/a"
        print(f"| {r['mode']} | {r['step_ms']:.1f} | {r['images_per_s']:.0f} | {r['data_ms']:.2f} | "
              f"{r['gflops_per_step']:.1f} | {r['achieved_tflops']:.3f} | {mfu} | {mem} |")
    result = {"device": name, "config": args.config, "cpu_smoke": smoke, "data": source, "timings": rows,
              "full_config": {"parameters": params, "flops_per_step": flops, "batch": full.train.batch_size}}
    if compare_steps:
        c = compare(cfg, dataset, device, seeds, compare_steps)
        result["loss_comparison"] = c
        print(f"\nloss, mean of the last {min(LAST, compare_steps // 2)} of {compare_steps} steps (eager)\n")
        print("| seed | fp32 | bf16 | bf16 - fp32 |\n| --- | --- | --- | --- |")
        for s, a, b in zip(c["seeds"], c["final_fp32"], c["final_bf16"]):
            print(f"| {s} | {a:.6f} | {b:.6f} | {b - a:+.6f} |")
        verdict = "within" if c["within_spread"] else "OUTSIDE"
        print(f"\nbf16 - fp32 (means over seeds): {c['bf16_minus_fp32']:+.6f}; fp32 seed-to-seed spread (max - min): "
              f"{c['fp32_spread']:.6f}: bf16 is {verdict} the seed noise of fp32")
    if args.json:
        write_json(Path(args.json), result, indent=2)


if __name__ == "__main__":
    main()
