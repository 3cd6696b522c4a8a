"""``python sample.py MODEL_DIR`` / ``softdiff sample``: samples from a trained model as .npz plus a picture."""
from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from softdiff.diffusion.sampling import sample
from softdiff.diffusion.schedulers import SCHEDULERS, make_scheduler
from softdiff.cli import ArgumentParser
from softdiff.errors import ConfigError, check_device, check_positive


def _resolve_model_dir(path: str | Path, ema: bool) -> Path:
    """``RUN_DIR``, ``RUN_DIR/model`` or ``RUN_DIR/model_ema``: pick the EMA or live weights as asked."""
    path = Path(path)
    run_dir = path.parent if path.name in ("model", "model_ema") else path
    wanted = run_dir / ("model_ema" if ema else "model")
    if wanted.is_dir():
        return wanted
    if (path / "config.json").is_file():  # a bare save_pretrained folder without the run layout
        return path
    raise ConfigError(f"'{path}' is not a run folder or model folder (no {wanted.name}/ nor config.json); "
                      "pass RUN_DIR/model from a finished train.py run.")


def generate(model_dir: str | Path, scheduler: str = "dpm++", steps: int = 20, num_samples: int = 64,
             seed: int = 0, ema: bool = True, batch_size: int = 256, device: str | None = None,
             class_label: int | None = None, guidance_scale: float = 1.0, progress: bool = False) -> torch.Tensor:
    """Samples in data coordinates: images in [0, 1] (N, C, H, W), vectors (N, D).

    Class-conditional models draw ``class_label`` (or the classes in turn) with classifier-free guidance
    ``guidance_scale`` (1: the conditional model as it is; > 1 needs a model trained with label dropout).
    """
    from softdiff.data import from_model_space
    from softdiff.training.models import load_trained  # the training package imports this one

    if scheduler not in SCHEDULERS:
        raise ConfigError(f"--scheduler {scheduler!r} is not valid; choose one of: {', '.join(SCHEDULERS)}.")
    check_positive("--steps", steps)
    check_positive("--num-samples", num_samples)
    check_positive("--batch-size", batch_size)
    check_positive("--guidance-scale", guidance_scale, allow_zero=True)
    check_device("--device", device)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    model, scheduler_config, info = load_trained(_resolve_model_dir(model_dir, ema))
    if steps > scheduler_config["num_train_timesteps"]:
        raise ConfigError(f"--steps {steps} must be at most this model's num_train_timesteps "
                          f"({scheduler_config['num_train_timesteps']}).")
    _check_output_size(num_samples, info["shape"])
    model.to(device)
    classes = info.get("num_classes") if model.config.get("num_class_embeds") else None
    if class_label is not None and (classes is None or not 0 <= class_label < classes):
        raise ConfigError(f"--class-label {class_label} is not valid for this model "
                          f"({'labels 0..' + str(classes - 1) if classes else 'it is unconditional'}).")
    if guidance_scale != 1.0 and not classes:
        raise ConfigError(f"--guidance-scale {guidance_scale} needs a class-conditional model; this one is "
                          "unconditional (use 1).")
    try:
        sched = make_scheduler(scheduler, scheduler_config)
    except ValueError as err:  # a diffusion-only sampler for a flow-matching model
        raise ConfigError(f"--scheduler {scheduler!r}: {err}.") from None
    generator = torch.Generator().manual_seed(seed)
    shape = tuple(info["shape"])
    chunks = []
    for start in range(0, num_samples, batch_size):
        n = min(batch_size, num_samples - start)
        labels = None
        if classes:
            labels = (torch.full((n,), class_label) if class_label is not None
                      else torch.arange(start, start + n) % classes).to(device)
        chunks.append(sample(model, sched, (n, *shape), steps, generator, device, class_labels=labels,
                             guidance_scale=guidance_scale, progress=progress).cpu())
    x = torch.cat(chunks)
    return from_model_space(x, info["kind"])


def _check_output_size(num_samples: int, shape) -> None:
    """Refuse a sample count whose output alone cannot fit in memory (before any sampling)."""
    from softdiff.training.preflight import available_memory

    need, available = 2 * 4 * num_samples * math.prod(shape), available_memory(gpu=False)  # samples end on the host
    if available is not None and need > available:
        raise ConfigError(f"--num-samples {num_samples} needs about {need / 1e9:.3g} GB for the samples alone, more "
                          f"than the {available / 1e9:.3g} GB of memory available; ask for fewer.")


def parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog="sample.py", description="Sample from a trained model.")
    p.add_argument("model_dir", help="RUN_DIR/model (or RUN_DIR, or RUN_DIR/model_ema)")
    p.add_argument("--scheduler", default="dpm++sde",
                   help=f"one of: {', '.join(SCHEDULERS)} (default dpm++sde, the stochastic DPM-Solver++: "
                   "cleaner samples than the ODE dpm++ at 20 steps)")
    p.add_argument("--steps", type=int, default=20, help="sampling steps (default 20)")
    p.add_argument("--num-samples", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--class-label", type=int, help="class to sample (class-conditional models only)")
    p.add_argument("--guidance-scale", type=float, default=1.0,
                   help="classifier-free guidance for class-conditional models trained with label dropout "
                   "(default 1: none; 0: unconditional)")
    p.add_argument("--ema", action=argparse.BooleanOptionalAction, default=True,
                   help="use the EMA weights (default) or the live ones (--no-ema)")
    p.add_argument("--device", help="cpu, cuda, ... (default: cuda when available)")
    p.add_argument("--output", default="samples.npz", help="output .npz; a .png picture is written beside it")
    return p


def main(argv: Sequence[str]) -> int:
    from softdiff.training.models import load_trained
    from softdiff.training.previews import save_picture

    from softdiff.safe_io import atomic_path, check_output_file

    args = parser().parse_args(argv)
    out = check_output_file("--output", args.output, ".npz")
    x = generate(args.model_dir, args.scheduler, args.steps, args.num_samples, args.seed, args.ema,
                 args.batch_size, args.device, args.class_label, args.guidance_scale, progress=True)
    info = load_trained(_resolve_model_dir(args.model_dir, args.ema))[2]
    with atomic_path(out) as tmp:
        np.savez(tmp, samples=x.numpy())
    picture = out.with_suffix(".png")
    save_picture(x, picture, info["kind"], tuple(info["data_range"]),
                 title=f"{len(x)} samples, {args.scheduler} {args.steps} steps")
    print(f"wrote {out} (samples: {tuple(x.shape)}) and {picture}")
    return 0
