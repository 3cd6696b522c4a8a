"""How a run is evaluated (``softdiff eval``'s keys, the ``eval`` section of a compare config) and the metric
names; no torch, so that these configs validate before the evaluation stack loads."""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from softdiff.choices import SCHEDULERS
from softdiff.errors import ConfigError, check_at_most, check_choice, check_positive

VECTOR_METRICS = ("w2", "sliced_w2", "mmd", "nll", "mixture_loglik", "score_error")
IMAGE_METRICS = ("fid", "kid", "confidence", "class_balance", "bpd")
INCEPTION_METRICS = ("inception_fid", "inception_kid")  # any image set; computed only when listed in eval.metrics
HIGHER_IS_BETTER = {"mixture_loglik", "confidence", "class_balance"}
HELD_OUT_SEED = 1_000_003   # true points for metrics are drawn with seeds far from any training seed
MAX_EVAL_SIZE = 1_000_000   # samples, held-out points and ODE steps per evaluation


@dataclass
class EvalSettings:
    """How every run of a comparison is evaluated (the ``eval`` section of a compare config)."""

    scheduler: str = "dpm++"        # diffusers sampler for generated samples
    steps: int = 20                 # sampling steps
    num_samples: int = 1000         # generated samples per evaluation (and true samples for the floors)
    seed: int = 0                   # sampling seed (the same for every run)
    every: int = 0                  # also evaluate the EMA weights of checkpoints every this many steps (0: end only)
    metrics: list[str] = field(default_factory=list)  # empty: every metric that applies to the data
    likelihood_samples: int = 256   # held-out points (images) for nll / bpd through the PF-ODE
    ode_tol: float = 1e-4           # rtol = atol of the PF-ODE solve
    ode_max_steps: int = 1000       # adaptive ODE steps before giving up (a stiff learned field): nll/bpd = NaN
    score_timesteps: list[int] = field(default_factory=lambda: [10, 50, 100, 250, 500, 750])
    feature_classifier: str = ""    # the dataset's feature classifier ("": the cached one); trained if missing
    inception_download: bool = False  # inception_fid / inception_kid: fetch the Inception weights if not cached
    reference_seed: int = HELD_OUT_SEED  # draws the true points (2-D sets) or splits the images metrics compare to

    def validate(self, prefix: str = "") -> None:
        """Raise ConfigError naming ``prefix + key`` (e.g. "eval.num_samples") for a value out of its range."""
        check_choice(prefix + "scheduler", self.scheduler, SCHEDULERS)
        for key in ("steps", "num_samples", "likelihood_samples", "ode_tol", "ode_max_steps"):
            check_positive(prefix + key, getattr(self, key))
        for key in ("steps", "num_samples", "likelihood_samples", "ode_max_steps"):
            check_at_most(prefix + key, getattr(self, key), MAX_EVAL_SIZE)
        for key in ("seed", "every"):
            check_positive(prefix + key, getattr(self, key), allow_zero=True)
        if self.num_samples < 2:
            raise ConfigError(f"{prefix}num_samples={self.num_samples} must be at least 2 (MMD and FID need two).")
        if not (math.isfinite(self.ode_tol) and self.ode_tol < 1):
            raise ConfigError(f"{prefix}ode_tol={self.ode_tol} must be a finite number in (0, 1).")
        for name in self.metrics:
            check_choice(prefix + "metrics", name, (*VECTOR_METRICS, *IMAGE_METRICS, *INCEPTION_METRICS))
