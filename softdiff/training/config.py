"""The schema of a training run (``configs/*.yaml`` hold only the keys that differ from these defaults).

Imports no torch: a config error answers before the training stack loads (see softdiff.choices)."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Optional, Sequence

from softdiff.choices import (DATASETS, DEFAULT_SAMPLER, DIFFUSION_PREDICTION_TYPES, FLOW_SCHEDULERS, IDX_DATASETS, IDX_SPLITS,
                              IMAGE_DATASETS, LAZY_DATASETS, LOSS_WEIGHTINGS, SCHEDULERS, TIMESTEP_DENSITIES,
                              example_shape)
from softdiff.config import load_config
from softdiff.errors import ConfigError, check_choice, check_positive
from softdiff.nets.model_config import resolve_model_section

BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2", "ou")
MAX_STEPS = 100_000_000  # train.steps: weeks of the fastest step; larger is a typo, refused before any work


@dataclass
class DataConfig:
    name: str = "digits"            # a name from softdiff.data.DATASETS
    root: str = "data"              # where torchvision sets live
    download: bool = False          # allow torchvision / the Hugging Face hub to download (needs a network)
    path: str | None = None         # name=folder: a folder of images (searched recursively); name=hf: a local
                                    # dataset folder (save_to_disk, imagefolder, Parquet) or a hub name;
                                    # name=mnist / fashion_mnist: a folder holding the IDX files
    image_size: int = 32            # folder / hf images: shorter side scaled to this, then centre-cropped
    channels: int = 3               # folder / hf images: 1 (grey) or 3 (RGB)
    class_conditional: bool = False  # feed labels to the model (image sets with labels)
    image_column: str = "image"     # name=hf: the column that holds the images
    label_column: Optional[str] = None  # name=hf: a column of integer class labels (None: no labels)
    split: str = "train"            # name=hf: the split to train on; mnist / fashion_mnist: train or test
    num_workers: int = 0            # folder / hf: DataLoader worker processes decoding ahead (0: in the loop)
    random_flip: bool = False       # mirror each image left-right with probability 1/2 (image sets)
    skip_bad_files: bool = False    # folder / hf: replace an unreadable image by the next readable one, counted
    rebuild_index: bool = False     # folder / hf: list the dataset again and replace the run folder's
                                    # data_index.json (and .arrow) instead of reading it, e.g. when it is damaged
                                    # or the dataset moved; for this invocation only (config.yaml records false)


def default_model() -> dict[str, Any]:
    """The model section when a config gives none: the image net with its defaults."""
    return {"type": "ScoreTransformer"}


@dataclass
class DiffusionConfig:
    objective: str = "diffusion"      # diffusion (a noise schedule) | flow (rectified flow, velocity target)
    prediction_type: str = "epsilon"  # diffusion: epsilon | sample (x0) | v_prediction
    loss_weighting: str = "none"      # none (plain MSE of the prediction) | min_snr | edm
    min_snr_gamma: float = 5.0        # min_snr: the x0 error is weighted by min(SNR, gamma)
    sigma_data: float = 0.5           # edm: the data's standard deviation in the weighting
    timestep_density: str = "uniform"  # uniform | lognormal (EDM) | logit_normal (SD3; the same rule for flows)
    density_mean: Optional[float] = None  # mean of log(sigma/alpha) (None: -1.2 lognormal, 0 logit_normal)
    density_std: Optional[float] = None   # its standard deviation (None: 1.2 lognormal, 1 logit_normal)
    flow_shift: float = 1.0           # flow: time shift t -> s t / (1 + (s - 1) t) in training and sampling
    beta_schedule: str = "linear"     # linear | scaled_linear | squaredcos_cap_v2 | ou (docs/theory.md 1.5)
    num_train_timesteps: int = 1000
    ou_t_min: float = 0.01            # ou: time T0 of the first timestep
    ou_t_max: float = 3.0             # ou: time T of the last timestep


@dataclass
class TrainSection:
    steps: int = 3000               # optimizer steps
    batch_size: int = 128           # global batch (split over processes)
    lr: float = 1e-3
    weight_decay: float = 0.0
    lr_schedule: str = "cosine"     # constant | cosine | linear (after warmup)
    warmup_steps: int = 100
    grad_clip: float = 1.0          # max gradient norm (0: off)
    grad_accum: int = 1             # micro-batches per optimizer step
    mixed_precision: str = "no"     # no | fp16 | bf16
    ema_decay: float = 0.999
    seed: int = 0
    compile: bool = False           # torch.compile the forward pass (GPU speed path)
    checkpoint_every: int = 1000
    checkpoints_total_limit: int = 2  # keep this many newest checkpoints
    log_every: int = 50
    on_nonfinite: str = "stop"      # stop (found at the next log step) | skip (checked every step; stops after 10)
    label_dropout: float = 0.0      # class-conditional runs: share of labels dropped (classifier-free guidance)


@dataclass
class SampleSection:
    every: int = 1000               # write samples/step-N.png every this many steps (0: only at the end)
    scheduler: str = DEFAULT_SAMPLER  # the previews' sampler, and the one the run's model folders save
    steps: int = 20
    num_samples: int = 64
    guidance_scale: float = 1.0     # class-conditional previews: classifier-free guidance (1: none)


# Keys of older configs and run folders, read as their new spelling: (old dotted key, its old default, new key).
# A value equal to the old default asked for nothing and is dropped.
LEGACY_KEYS = (("diagnostics.ntk_every", 0, "callbacks.ntk_drift.every"),
               ("diagnostics.ntk_probe_size", 8, "callbacks.ntk_drift.probe_size"))


@dataclass
class TrainConfig:
    output_dir: str = "runs/digits"
    data: DataConfig = field(default_factory=DataConfig)
    # `type` plus that net's constructor arguments (softdiff.nets.registry); validate() fills in the rest
    model: dict[str, Any] = field(default_factory=default_model)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    train: TrainSection = field(default_factory=TrainSection)
    sample: SampleSection = field(default_factory=SampleSection)
    # Work besides training, by name: callbacks.NAME.KEY=VALUE; the command that trains builds the callback
    # registered under NAME (e.g. a study's) and it checks its settings; the core knows no names.
    callbacks: Dict[str, Any] = field(default_factory=dict)

    @staticmethod
    def upgrade_keys(layer: dict) -> dict:
        """One layer of a config (a file or an override) with the keys of older configs in their new place."""
        for old, default, new in LEGACY_KEYS:
            section, key = old.split(".")
            if not isinstance(layer.get(section), dict) or key not in layer[section]:
                continue
            value = layer[section].pop(key)
            if not layer[section]:
                del layer[section]
            if value != default:
                node = layer
                for part in new.split(".")[:-1]:
                    node = node.setdefault(part, {})
                node[new.rsplit(".", 1)[1]] = value
        return layer

    def validate(self) -> None:
        """Value checks that types alone cannot express; one sentence per problem."""
        d, t = self.data, self.train
        check_choice("data.name", d.name, DATASETS)
        check_choice("diffusion.objective", self.diffusion.objective, ("diffusion", "flow"))
        check_choice("diffusion.prediction_type", self.diffusion.prediction_type, DIFFUSION_PREDICTION_TYPES)
        check_choice("diffusion.loss_weighting", self.diffusion.loss_weighting, LOSS_WEIGHTINGS)
        check_choice("diffusion.timestep_density", self.diffusion.timestep_density, TIMESTEP_DENSITIES)
        check_choice("diffusion.beta_schedule", self.diffusion.beta_schedule, BETA_SCHEDULES)
        check_choice("train.lr_schedule", t.lr_schedule, ("constant", "cosine", "linear"))
        if t.mixed_precision == "False":  # YAML reads an unquoted `no` (accelerate's spelling) as false
            t.mixed_precision = "no"
        check_choice("train.mixed_precision", t.mixed_precision, ("no", "fp16", "bf16"))
        check_choice("train.on_nonfinite", t.on_nonfinite, ("stop", "skip"))
        check_choice("sample.scheduler", self.sample.scheduler,
                     FLOW_SCHEDULERS if self.diffusion.objective == "flow" else SCHEDULERS)
        check_choice("data.channels", d.channels, (1, 3))
        for key, value in [("train.steps", t.steps), ("train.batch_size", t.batch_size), ("train.lr", t.lr),
                           ("train.grad_accum", t.grad_accum), ("train.checkpoint_every", t.checkpoint_every),
                           ("train.log_every", t.log_every), ("sample.steps", self.sample.steps),
                           ("sample.num_samples", self.sample.num_samples),
                           ("diffusion.num_train_timesteps", self.diffusion.num_train_timesteps),
                           ("diffusion.min_snr_gamma", self.diffusion.min_snr_gamma),
                           ("diffusion.sigma_data", self.diffusion.sigma_data),
                           ("diffusion.flow_shift", self.diffusion.flow_shift)]:
            check_positive(key, value)
        for key, value in [("train.warmup_steps", t.warmup_steps), ("train.grad_clip", t.grad_clip),
                           ("train.weight_decay", t.weight_decay), ("sample.every", self.sample.every),
                           ("sample.guidance_scale", self.sample.guidance_scale)]:
            check_positive(key, value, allow_zero=True)
        if self.diffusion.density_std is not None and self.diffusion.density_std <= 0:
            raise ConfigError(f"diffusion.density_std={self.diffusion.density_std} must be positive.")
        if not 0 <= t.label_dropout < 1:
            raise ConfigError(f"train.label_dropout={t.label_dropout} must be in [0, 1).")
        if not 0 <= t.ema_decay < 1:
            raise ConfigError(f"train.ema_decay={t.ema_decay} must be in [0, 1).")
        if t.checkpoints_total_limit < 1:
            raise ConfigError(f"train.checkpoints_total_limit={t.checkpoints_total_limit} must be at least 1.")
        self._validate_data()
        self._validate_ranges()
        for name, settings in self.callbacks.items():
            if not isinstance(settings, dict):
                raise ConfigError(f"callbacks.{name} must be a mapping of that callback's settings "
                                  f"(callbacks.{name}.KEY=VALUE), not {settings!r}.")
        # the net's own keys, checked by its registry entry against the data's shape (aliases renamed, defaults
        # filled in: config.yaml records every argument)
        self.model = resolve_model_section(self.model, example_shape(d.name, d.image_size, d.channels), d.name)

    def _validate_data(self) -> None:
        d = self.data
        if d.name in LAZY_DATASETS and not d.path:
            raise ConfigError(f"data.name={d.name} needs data.path: " + (
                "a folder of images." if d.name == "folder" else "a local dataset folder, or a hub name with "
                "data.download=true."))
        if not 0 <= d.num_workers <= 64:
            raise ConfigError(f"data.num_workers={d.num_workers} must be between 0 (decode in the training loop) "
                              "and 64.")
        for key, value in (("data.image_column", d.image_column), ("data.label_column", d.label_column),
                           ("data.split", d.split)):
            if value is not None and not str(value).strip():
                raise ConfigError(f"{key} must be a non-empty column or split name.")
        if d.name in IDX_DATASETS:
            check_choice("data.split", d.split, tuple(IDX_SPLITS))
        if d.label_column is not None and d.name != "hf":
            raise ConfigError(f"data.label_column is only read with data.name=hf, not data.name={d.name!r}; "
                              "remove it.")
        if d.random_flip and d.name not in IMAGE_DATASETS:
            raise ConfigError(f"data.random_flip=true needs an image dataset, but data.name={d.name!r} is a 2-D toy "
                              "set; remove it.")
        if d.class_conditional and d.name == "hf" and d.label_column is None:
            raise ConfigError("data.class_conditional=true with data.name=hf needs data.label_column, the column of "
                              "class labels.")

    def _validate_ranges(self) -> None:
        """Finite floats, ranges, divisibility and limits, so that no bad value surfaces mid-run."""
        d, t, diff = self.data, self.train, self.diffusion
        for key, value in [("train.lr", t.lr), ("train.weight_decay", t.weight_decay), ("train.grad_clip",
                           t.grad_clip), ("train.ema_decay", t.ema_decay),
                           ("diffusion.ou_t_min", diff.ou_t_min), ("diffusion.ou_t_max", diff.ou_t_max),
                           ("diffusion.min_snr_gamma", diff.min_snr_gamma), ("diffusion.sigma_data", diff.sigma_data),
                           ("diffusion.flow_shift", diff.flow_shift), ("diffusion.density_mean", diff.density_mean),
                           ("diffusion.density_std", diff.density_std), ("train.label_dropout", t.label_dropout),
                           ("sample.guidance_scale", self.sample.guidance_scale)]:
            if value is not None and not math.isfinite(value):
                raise ConfigError(f"{key}={value} must be a finite number.")
        if t.seed < 0:
            raise ConfigError(f"train.seed={t.seed} must be at least 0.")
        for key, value, high in [("train.seed", t.seed, 2**32 - 1), ("data.image_size", d.image_size, 4096),
                                 ("train.steps", t.steps, MAX_STEPS), ("train.warmup_steps", t.warmup_steps, MAX_STEPS),
                                 ("sample.num_samples", self.sample.num_samples, 100_000),
                                 ("diffusion.num_train_timesteps", diff.num_train_timesteps, 100_000)]:
            if value > high:
                raise ConfigError(f"{key}={value} must be at most {high}.")
        if d.image_size < 1:
            raise ConfigError(f"data.image_size={d.image_size} must be positive.")
        if self.sample.steps > diff.num_train_timesteps:
            raise ConfigError(f"sample.steps={self.sample.steps} must be at most diffusion.num_train_timesteps="
                              f"{diff.num_train_timesteps} (the sampler picks that many of the training timesteps).")
        if diff.beta_schedule == "ou" and not 0 < diff.ou_t_min < diff.ou_t_max:
            raise ConfigError(f"diffusion.ou_t_min={diff.ou_t_min} and ou_t_max={diff.ou_t_max} must satisfy "
                              "0 < ou_t_min < ou_t_max.")


def load_train_config(path: str | Path | None = None, overrides: Sequence[str] = ()) -> TrainConfig:
    """Defaults, then the YAML file, then ``key.sub=value`` overrides; validated."""
    return load_config(TrainConfig, path, overrides)
