"""``softdiff sample RUN_OR_MODEL_DIR`` / ``python sample.py``: samples of a trained model as .npz plus a picture."""
from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Sequence

from softdiff.choices import DEFAULT_SAMPLER, SCHEDULERS
from softdiff.command_line import (add_overrides, command_parser, config_path, overrides, parse, run_work,
                                   split_positionals)
from softdiff.config import load_config
from softdiff.errors import ConfigError, check_choice, check_device, check_finite, check_positive
from softdiff.safe_io import check_output_dir, check_output_file

# The pipeline's argument names as this command's keys, for its error messages.
KEYS = {"batch_size": "num_samples", "num_inference_steps": "steps", "class_labels": "class_label"}


@dataclass
class SampleConfig:
    """What ``softdiff sample`` draws (every key can be set as ``key=value``)."""

    run: str = ""                   # a run folder, RUN_DIR/model(_ema), a bare model folder or a saved pipeline
    scheduler: str = DEFAULT_SAMPLER
    steps: int = 20
    num_samples: int = 64
    seed: int = 0
    max_batch_size: int = 256       # samples drawn at once (the pipeline's argument of the same name)
    guidance_scale: float = 1.0     # classifier-free guidance (class-conditional models; 1: none, 0: unconditional)
    class_label: int | None = None  # one class for every sample (class-conditional models; default: classes in turn)
    ema: bool = True                # the EMA weights (model_ema/) or the live ones (model/)
    device: str | None = None       # cpu, cuda, cuda:N (default: cuda when available)
    output_dir: str = "."           # samples.npz and samples.png go here

    def validate(self) -> None:
        check_choice("scheduler", self.scheduler, SCHEDULERS)
        for key in ("steps", "num_samples", "max_batch_size"):
            check_positive(key, getattr(self, key))
        check_positive("seed", self.seed, allow_zero=True)
        check_finite("guidance_scale", self.guidance_scale)
        check_positive("guidance_scale", self.guidance_scale, allow_zero=True)
        check_device("device", self.device)

    @staticmethod
    def upgrade_keys(layer: dict) -> dict:
        """``batch_size``, this command's old name for ``max_batch_size`` (it is the sample count in the pipeline)."""
        if "batch_size" in layer:
            layer.setdefault("max_batch_size", layer.pop("batch_size"))
        return layer


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
    for flag, kind in (("--scheduler", str), ("--steps", int), ("--num-samples", int), ("--max-batch-size", int),
                       ("--seed", int), ("--class-label", int), ("--guidance-scale", float), ("--device", str)):
        p.add_argument(flag, type=kind, help=f"same as {flag[2:].replace('-', '_')}=...")
    p.add_argument("--batch-size", type=int, dest="max_batch_size", help=argparse.SUPPRESS)  # the old name
    add_overrides(p, "num_samples=500")
    return p


def _flag_overrides(args) -> list[str]:
    keys = ("scheduler", "steps", "num_samples", "max_batch_size", "seed", "class_label", "guidance_scale", "device")
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


def prepare(argv: Sequence[str]) -> tuple:
    """The parsed arguments, the checked config and the .npz to write (its folder checked, not created)."""
    args = parse(parser(), argv)
    cfg = load_sample_config(args)
    if args.output:
        out = check_output_file("--output", args.output, ".npz")
    else:
        out = check_output_dir("--output-dir", cfg.output_dir) / "samples.npz"
    return args, cfg, out


def main(argv: Sequence[str]) -> int:
    return run_work("sample", *prepare(argv))
