"""The schema of ``softdiff compare``: which arms (activations) and seeds, how each arm is tuned, on what budget,
and along which scaling axis."""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from typing import Any, Sequence

from softdiff.config import load_config
from softdiff.errors import ConfigError, check_at_most, check_choice, check_positive
from softdiff.evaluation.settings import IMAGE_METRICS, INCEPTION_METRICS, VECTOR_METRICS, EvalSettings
from softdiff.nets.registry import net_entry
from softdiff.training.config import load_train_config

DEFAULT_ACTIVATIONS = ["softmax", "relu", "gelu", "exp"]
MAX_TRIALS = 1000           # per arm
MAX_SEEDS = 1000            # final seeds; tuning seeds per trial
MAX_SECONDS = 30 * 86400    # budget.seconds: a month of training per run
MAX_SEED = 2**32 - 1        # train.seed's largest value
# Keys every run sets itself; a tuning grid or a sweep may not set them.
RESERVED_KEYS = ("model.activation", "train.seed", "output_dir")


@dataclass
class TuneConfig:
    """Per-arm tuning: a small search over training keys on a short budget, each arm keeping its best setting."""

    grid: dict[str, Any] = field(default_factory=dict)     # key -> list of values; every combination is a trial
    log_uniform: dict[str, Any] = field(default_factory=dict)  # key -> [low, high]; `draws` random trials
    draws: int = 0                  # log-uniform draws (combined with every grid point)
    draw_seed: int = 0              # seed of those draws
    budget: float = 0.25            # share of the final budget (steps, or seconds with budget.mode=time) per trial
    seeds: int = 1                  # training seeds per trial: seed_offset, ... (apart from the final seeds)
    seed_offset: int = 1000
    metric: str = ""                # selection metric ("": the first metric of the evaluation, e.g. w2 or fid)
    num_samples: int = 0            # samples for the selection metric (0: eval.num_samples)
    sampling_seed: int = 1          # its sampling seed (the final evaluation samples with eval.seed)
    report_shared: bool = False     # also train the final seeds at the shared setting and report them beside

    def __post_init__(self):
        # ``tune.grid.train.lr=[...]`` on the command line nests {train: {lr: [...]}}: keep one dotted key.
        self.grid, self.log_uniform = _flatten(self.grid), _flatten(self.log_uniform)

    @property
    def enabled(self) -> bool:
        return bool(self.grid or self.log_uniform)

    def trials(self) -> list[dict[str, Any]]:
        """Every trial's settings ``{key: value}``, in a fixed order: grid points (in the order listed) times
        log-uniform draws (rounded to 3 significant digits)."""
        import numpy as np

        keys = list(self.grid)
        points = [dict(zip(keys, combo)) for combo in itertools.product(*(self.grid[k] for k in keys))]
        if not self.log_uniform:
            return points
        rng = np.random.default_rng(self.draw_seed)
        draws, seen = [], set()
        for _ in range(self.draws):
            draw = {}
            for key, (low, high) in self.log_uniform.items():
                value = math.exp(rng.uniform(math.log(low), math.log(high)))
                draw[key] = float(f"{value:.3g}")
            if str(draw) not in seen:  # two draws rounded alike would be one trial folder trained twice at once
                seen.add(str(draw))
                draws.append(draw)
        return [{**p, **d} for p in points for d in draws]

    def trial_count(self) -> int:
        """How many trials ``trials()`` gives at most, counted without making them."""
        return math.prod(len(v) for v in self.grid.values()) * (self.draws if self.log_uniform else 1)

    @property
    def seed_list(self) -> list[int]:
        return list(range(self.seed_offset, self.seed_offset + self.seeds))

    def validate(self, final_seeds: Sequence[int]) -> None:
        for name, table in (("tune.grid", self.grid), ("tune.log_uniform", self.log_uniform)):
            for key, values in table.items():
                if key in RESERVED_KEYS:
                    raise ConfigError(f"{name}.{key}: the runner sets {key} itself; tune other training keys.")
                if not isinstance(values, (list, tuple)) or not values:
                    raise ConfigError(f"{name}.{key} must be a non-empty list, e.g. [1.0e-3, 3.0e-3, 1.0e-2].")
                if any(isinstance(v, (dict, list, tuple)) for v in values):
                    raise ConfigError(f"{name}.{key}={list(values)} must list plain values (numbers, words).")
                if name == "tune.grid" and len({str(v) for v in values}) != len(values):
                    raise ConfigError(f"tune.grid.{key}={list(values)} lists a value twice; each value is one "
                                      "trial, list it once.")
        for key, bounds in self.log_uniform.items():
            ok = len(bounds) == 2 and all(isinstance(b, (int, float)) and math.isfinite(b) for b in bounds)
            if not ok or not 0 < bounds[0] < bounds[1]:
                raise ConfigError(f"tune.log_uniform.{key}={list(bounds)} must be [low, high] with 0 < low < high.")
        if set(self.grid) & set(self.log_uniform):
            raise ConfigError(f"tune: {sorted(set(self.grid) & set(self.log_uniform))[0]} is both in tune.grid and "
                              "tune.log_uniform; keep it in one.")
        check_at_most("tune.draws", self.draws, MAX_TRIALS, " (trials per arm)")
        if self.trial_count() > MAX_TRIALS:  # counted, not made: a 60^4 grid would fill the memory first
            raise ConfigError(f"tune has {self.trial_count()} trials per arm (the grid's combinations times "
                              f"tune.draws); at most {MAX_TRIALS}.")
        if self.log_uniform and self.draws < 1:
            raise ConfigError(f"tune.draws={self.draws} must be at least 1 with tune.log_uniform set.")
        if not self.log_uniform and self.draws:
            raise ConfigError(f"tune.draws={self.draws} is set but tune.log_uniform is empty; give the keys to draw, "
                              "e.g. tune.log_uniform.train.lr=[1e-4,1e-2].")
        if not self.enabled and self.report_shared:
            raise ConfigError("tune.report_shared=true needs trials to compare with; set tune.grid or "
                              "tune.log_uniform.")
        if not (math.isfinite(self.budget) and 0 < self.budget <= 1):
            raise ConfigError(f"tune.budget={self.budget} must be in (0, 1], the share of the final budget per trial.")
        check_positive("tune.seeds", self.seeds)
        check_at_most("tune.seeds", self.seeds, MAX_SEEDS)
        check_positive("tune.num_samples", self.num_samples, allow_zero=True)
        check_at_most("tune.seed_offset + tune.seeds", self.seed_offset + self.seeds, MAX_SEED + 1,
                      " (train.seed's largest value is 2**32 - 1)")
        if self.seed_offset < 0 or set(self.seed_list) & set(final_seeds):
            raise ConfigError(f"tune.seed_offset={self.seed_offset} must be non-negative and its seeds must differ "
                              f"from the final seeds {list(final_seeds)}, so that selection does not see them.")
        if not self.enabled:
            for key, value, default in (("metric", self.metric, ""), ("num_samples", self.num_samples, 0),
                                        ("seeds", self.seeds, 1), ("budget", self.budget, 0.25)):
                if value != default:
                    raise ConfigError(f"tune.{key}={value} is set but tune has no trials, so it would be ignored; "
                                      "set tune.grid or tune.log_uniform, or remove it.")


@dataclass
class SweepConfig:
    """A scaling axis: the whole comparison (tuning included) at each value of one training key."""

    key: str = ""                   # e.g. model.width ("": no sweep)
    values: list[Any] = field(default_factory=list)

    def validate(self) -> None:
        if not self.key:
            if self.values:
                raise ConfigError("sweep.values is set but sweep.key is empty; name the training key to sweep.")
            return
        if self.key in RESERVED_KEYS:
            raise ConfigError(f"sweep.key={self.key}: the runner sets it itself; sweep another training key.")
        if not self.values:
            raise ConfigError(f"sweep.values is empty; list the values of {self.key} to compare at.")
        if len({str(v) for v in self.values}) != len(self.values):
            raise ConfigError(f"sweep.values={list(self.values)} lists a value twice.")


@dataclass
class BudgetConfig:
    """What "the same budget" means: the same optimizer steps, or the same training seconds."""

    mode: str = "steps"             # steps (train.steps for every arm) | time (`seconds` of training per run)
    seconds: float = 0.0            # mode=time: training seconds of each final run
    probe_steps: int = 20           # mode=time: steps timed per arm (after as many warm-up steps) to size its run

    def validate(self) -> None:
        check_choice("budget.mode", self.mode, ("steps", "time"))
        if self.mode == "time" and not (math.isfinite(self.seconds) and self.seconds > 0):
            raise ConfigError(f"budget.seconds={self.seconds} must be a positive number of seconds with "
                              "budget.mode=time.")
        check_at_most("budget.seconds", self.seconds, MAX_SECONDS, " seconds (a month of training per run)")
        check_positive("budget.probe_steps", self.probe_steps)
        check_at_most("budget.probe_steps", self.probe_steps, 10_000)


@dataclass
class CompareConfig:
    title: str = "softmax vs ReLU / GELU / exp score nets"
    base_config: str = "configs/toy2d.yaml"    # the training config every run starts from
    train_overrides: list[str] = field(default_factory=list)  # dotted overrides applied to every run
    activations: list[str] = field(default_factory=lambda: list(DEFAULT_ACTIVATIONS))
    num_seeds: int = 3                          # seeds seed_offset .. seed_offset + num_seeds - 1
    seed_offset: int = 0
    output_dir: str = "runs/compare_toy"
    workers: int = 0                            # parallel processes (0: as many as cores allow)
    threads_per_worker: int = 1                 # torch threads in each process
    ntk_every: int = 0                          # record each run's NTK drift every this many steps (0: off)
    probes: bool = True                         # attention-sink probes of each trained run (attention models only)
    eval: EvalSettings = field(default_factory=EvalSettings)
    tune: TuneConfig = field(default_factory=TuneConfig)
    sweep: SweepConfig = field(default_factory=SweepConfig)
    budget: BudgetConfig = field(default_factory=BudgetConfig)

    def validate(self) -> None:
        if not self.activations:
            raise ConfigError("activations is empty; list at least one, e.g. [softmax, relu].")
        if len(set(self.activations)) != len(self.activations):
            raise ConfigError(f"activations={self.activations} lists an activation twice.")
        check_positive("num_seeds", self.num_seeds)
        check_at_most("num_seeds", self.num_seeds, MAX_SEEDS)
        if self.seed_offset < 0:
            raise ConfigError(f"seed_offset={self.seed_offset} must be non-negative (the final runs' train.seed is "
                              "seed_offset, seed_offset + 1, ...).")
        check_at_most("seed_offset + num_seeds", self.seed_offset + self.num_seeds, MAX_SEED + 1,
                      " (train.seed's largest value is 2**32 - 1)")
        check_positive("workers", self.workers, allow_zero=True)
        check_at_most("workers", self.workers, 1024)
        check_positive("threads_per_worker", self.threads_per_worker)
        check_at_most("threads_per_worker", self.threads_per_worker, 1024)
        check_positive("ntk_every", self.ntk_every, allow_zero=True)
        self.eval.validate("eval.")
        if self.tune.metric:
            check_choice("tune.metric", self.tune.metric, (*VECTOR_METRICS, *IMAGE_METRICS, *INCEPTION_METRICS))
        self.tune.validate(self.seeds)
        self.sweep.validate()
        self.budget.validate()
        for point in self.sweep_points():
            try:
                base = self.base_train_config(point)
            except ConfigError as err:
                if not point:
                    raise
                raise ConfigError(f"sweep point {point[0]}: {err}") from None
            if self.eval.steps > base.diffusion.num_train_timesteps:
                raise ConfigError(f"eval.steps={self.eval.steps} must be at most the base config's "
                                  f"diffusion.num_train_timesteps={base.diffusion.num_train_timesteps}.")
            net = base.model["type"]
            allowed = net_entry(net).choices.get("activation", ())
            if not allowed:
                raise ConfigError(f"model.type={net} of base_config has no activation argument to compare.")
            for act in self.activations:
                if act not in allowed:
                    raise ConfigError(f"activations: {act!r} is not valid for model.type={net}; "
                                      f"choose from: {', '.join(allowed)}.")
            for settings in (self.tune.trials() if self.tune.enabled else []):
                try:  # every trial must be a valid training config
                    self.base_train_config(point, settings)
                except ConfigError as err:
                    raise ConfigError(f"tune trial {', '.join(setting_overrides(settings))}: {err}") from None

    def sweep_points(self) -> list[list[str]]:
        """The overrides of each sweep point (``[[]]`` without a sweep)."""
        if not self.sweep.key:
            return [[]]
        return [[f"{self.sweep.key}={value}"] for value in self.sweep.values]

    def base_train_config(self, point: Sequence[str] = (), settings: dict | None = None):
        return load_train_config(self.base_config, [*self.train_overrides, *point, *setting_overrides(settings)])

    @property
    def seeds(self) -> list[int]:
        return list(range(self.seed_offset, self.seed_offset + self.num_seeds))


def _flatten(table, prefix: str = "") -> dict:
    """``{"train": {"lr": [...]}}`` -> ``{"train.lr": [...]}`` (lists and scalars are leaves)."""
    out = {}
    for key, value in dict(table or {}).items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def setting_overrides(settings: dict | None) -> list[str]:
    """``{"train.lr": 0.003}`` -> ``["train.lr=0.003"]``."""
    return [f"{key}={value}" for key, value in (settings or {}).items()]


def load_compare_config(path, overrides: Sequence[str] = ()) -> CompareConfig:
    """Defaults, then the YAML file, then dotted overrides; validated (including every run's training config)."""
    return load_config(CompareConfig, path, overrides)
