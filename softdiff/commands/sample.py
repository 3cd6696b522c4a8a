"""``softdiff sample RUN_OR_MODEL_DIR`` / ``python sample.py``: samples of a trained model as .npz plus a picture."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

from softdiff.choices import DEFAULT_SAMPLER, SCHEDULERS
from softdiff.command_line import add_overrides, command_parser, config_path, overrides, parse, split_positionals
from softdiff.config import load_config
from softdiff.errors import ConfigError, DataError, check_choice, check_device, check_finite, check_positive

# The pipeline's argument names as this command's keys, for its error messages.
KEYS = {"batch_size": "num_samples", "num_inference_steps": "steps", "max_batch_size": "batch_size",
        "class_labels": "class_label"}


@dataclass
class SampleConfig:
    """What ``softdiff sample`` draws (every key can be set as ``key=value``)."""

    run: str = ""                   # a run folder, RUN_DIR/model(_ema), a bare model folder or a saved pipeline
    scheduler: str = DEFAULT_SAMPLER
    steps: int = 20
    num_samples: int = 64
    seed: int = 0
    batch_size: int = 256           # samples drawn at once
    guidance_scale: float = 1.0     # classifier-free guidance (class-conditional models; 1: none, 0: unconditional)
    class_label: int | None = None  # one class for every sample (class-conditional models; default: classes in turn)
    ema: bool = True                # the EMA weights (model_ema/) or the live ones (model/)
    device: str | None = None       # cpu, cuda, cuda:N (default: cuda when available)
    output_dir: str = "."           # samples.npz and samples.png go here

    def validate(self) -> None:
        check_choice("scheduler", self.scheduler, SCHEDULERS)
        for key in ("steps", "num_samples", "batch_size"):
            check_positive(key, getattr(self, key))
        check_positive("seed", self.seed, allow_zero=True)
        check_finite("guidance_scale", self.guidance_scale)
        check_positive("guidance_scale", self.guidance_scale, allow_zero=True)
        check_device("device", self.device)


def parser():
    p = command_parser(
        "softdiff sample", "Sample from a trained model: writes samples.npz (data space) and samples.png.",
        ["softdiff sample runs/digits                       # 64 samples of the EMA model into ./samples.npz",
         "softdiff sample runs/digits num_samples=500 steps=50 --output-dir runs/digits/more",
         "softdiff sample runs/digits --no-ema scheduler=ddim class_label=3 guidance_scale=2 --quiet",
         "python sample.py runs/toy --num-samples 1000 --output toy.npz"],
        output_help="where samples.npz and samples.png go (default: the current folder)")
    p.add_argument("run", nargs="?", metavar="RUN_OR_MODEL_DIR",
                   help="a training run folder (RUN_DIR, RUN_DIR/model, RUN_DIR/model_ema), a model folder or a "
                   "folder written by SoftdiffPipeline.save_pretrained")
    p.add_argument("--no-ema", action="store_true", help="the live weights (model/) instead of the EMA ones")
    p.add_argument("--output", metavar="FILE.npz", help="write this .npz (the .png beside it) instead")
    for flag, kind in (("--scheduler", str), ("--steps", int), ("--num-samples", int), ("--batch-size", int),
                       ("--seed", int), ("--class-label", int), ("--guidance-scale", float), ("--device", str)):
        p.add_argument(flag, type=kind, help=f"same as {flag[2:].replace('-', '_')}=...")
    add_overrides(p, "num_samples=500")
    return p


def _flag_overrides(args) -> list[str]:
    keys = ("scheduler", "steps", "num_samples", "batch_size", "seed", "class_label", "guidance_scale", "device")
    return [f"{key}={getattr(args, key)}" for key in keys if getattr(args, key) is not None]


def load_sample_config(args) -> SampleConfig:
    """The command's config: file, convenience flags, then ``key=value`` overrides; the folder argument last."""
    paths, extra = split_positionals([*([args.run] if args.run else []), *args.overrides])
    if len(paths) > 1:
        raise ConfigError(f"got {len(paths)} folders ({', '.join(paths)}); pass one RUN_OR_MODEL_DIR.")
    cfg = load_config(SampleConfig, config_path(args), [*_flag_overrides(args), *extra, *overrides(args),
                                                        *(["ema=false"] if args.no_ema else [])])
    cfg.run = paths[0] if paths else cfg.run
    if not cfg.run:
        raise ConfigError("RUN_OR_MODEL_DIR is missing: pass the folder of a trained run (softdiff sample RUN_DIR).")
    return cfg


def _check_output_size(num_samples: int, shape) -> None:
    """Refuse a sample count whose output alone cannot fit in memory (before any sampling)."""
    from softdiff.memory import available_memory  # torch only once the arguments are valid

    need, available = 2 * 4 * num_samples * math.prod(shape), available_memory(gpu=False)  # samples end on the host
    if available is not None and need > available:
        raise ConfigError(f"num_samples={num_samples} needs about {need / 1e9:.3g} GB for the samples alone, more "
                          f"than the {available / 1e9:.3g} GB of memory available; ask for fewer.")


def _check_finite_samples(x, source, cfg: SampleConfig) -> None:
    """Refuse to write samples with NaN / inf values: they come from broken weights or a broken schedule."""
    import torch

    bad = int((~torch.isfinite(x)).flatten(1).any(1).sum())
    if bad:
        raise DataError(f"the model in '{source}' drew {bad} of {len(x)} samples with NaN or inf values "
                        f"(scheduler={cfg.scheduler}, steps={cfg.steps}); nothing was written: its weights or noise "
                        "schedule are broken, or the run diverged.")


def main(argv: Sequence[str]) -> int:
    args = parse(parser(), argv)
    cfg = load_sample_config(args)
    import numpy as np  # the sampling stack only once the arguments are valid
    import torch

    from softdiff.pipeline import SoftdiffPipeline
    from softdiff.safe_io import atomic_path, check_output_dir, check_output_file
    from softdiff.pictures import MAX_GRID_IMAGES, save_picture

    if args.output:
        out = check_output_file("--output", args.output, ".npz")
    else:
        out = check_output_dir("--output-dir", cfg.output_dir) / "samples.npz"
    pipe = SoftdiffPipeline.from_pretrained(cfg.run, use_ema=cfg.ema, scheduler=cfg.scheduler)
    labels = pipe.check_inputs(cfg.num_samples, cfg.steps, cfg.class_label, cfg.guidance_scale, "pt", cfg.batch_size,
                               KEYS)
    _check_output_size(cfg.num_samples, pipe.config.sample_shape)
    pipe.to(cfg.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    x = pipe(batch_size=cfg.num_samples, num_inference_steps=cfg.steps,
             generator=torch.Generator().manual_seed(cfg.seed), class_labels=cfg.class_label,
             guidance_scale=cfg.guidance_scale, max_batch_size=cfg.batch_size, progress=not args.quiet).samples
    _check_finite_samples(x, pipe.source_dir, cfg)
    with atomic_path(out) as tmp:
        # The dataset and (class-conditional models) the requested labels let `softdiff eval --score` check them.
        extra = {} if labels is None else {"labels": labels.numpy()}
        np.savez(tmp, samples=x.numpy(), dataset=np.str_(pipe.config.dataset or ""), **extra)
    picture = out.with_suffix(".png")
    save_picture(x, picture, pipe.config.kind, tuple(pipe.config.data_range),
                 title=f"{len(x)} samples, {cfg.scheduler} {cfg.steps} steps")
    shown = f" (the first {MAX_GRID_IMAGES})" if pipe.config.kind == "image" and len(x) > MAX_GRID_IMAGES else ""
    print(f"wrote {out} (samples: {tuple(x.shape)}) and {picture}{shown}")
    return 0
