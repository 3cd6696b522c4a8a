"""How a run is evaluated (``softdiff eval``'s keys, the ``eval`` section of a compare config) and the metric
names; no torch, so that these configs validate before the evaluation stack loads."""
from __future__ import annotations

from dataclasses import dataclass, field

VECTOR_METRICS = ("w2", "sliced_w2", "mmd", "nll", "mixture_loglik", "score_error")
IMAGE_METRICS = ("fid", "kid", "confidence", "class_balance", "bpd")
INCEPTION_METRICS = ("inception_fid", "inception_kid")  # any image set; computed only when listed in eval.metrics
HIGHER_IS_BETTER = {"mixture_loglik", "confidence", "class_balance"}
HELD_OUT_SEED = 1_000_003   # true points for metrics are drawn with seeds far from any training seed


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
