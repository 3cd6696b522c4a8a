"""Sample-based distances between point clouds (W2, sliced W2, RBF MMD), their noise floors, exact
scores / log-likelihoods under an analytic Gaussian mixture, and FID / KID on any feature extractor."""
from __future__ import annotations

import math
import warnings
from typing import Callable

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from scipy.spatial.distance import cdist
from torch import Tensor, nn

from softdiff.errors import lookup


def _as_2d_numpy(x, name: str) -> np.ndarray:
    arr = np.asarray(x.detach().cpu().double() if isinstance(x, Tensor) else x, dtype=np.float64)
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2:
        arr = arr.reshape(arr.shape[0], -1)
    if len(arr) == 0:
        raise ValueError(f"{name} is empty; pass at least one sample")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} holds NaN or inf values; metrics need finite samples")
    return arr


def _pair(x, y) -> tuple[np.ndarray, np.ndarray]:
    a, b = _as_2d_numpy(x, "x"), _as_2d_numpy(y, "y")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"x has dimension {a.shape[1]} but y has dimension {b.shape[1]}; they must match")
    return a, b


def wasserstein2(x, y) -> float:
    """Exact W2 between two equal-size empirical measures (optimal assignment on squared distances)."""
    a, b = _pair(x, y)
    if len(a) != len(b):
        raise ValueError(f"wasserstein2 needs equal sample counts, got {len(a)} and {len(b)}")
    cost = cdist(a, b, "sqeuclidean")
    rows, cols = linear_sum_assignment(cost)
    return float(math.sqrt(cost[rows, cols].mean()))


def sliced_wasserstein(x, y, num_projections: int = 256, seed: int = 0) -> float:
    """Sliced W2: root mean over random unit directions of the 1-D W2^2 (quantile matching, equal sizes)."""
    a, b = _pair(x, y)
    if len(a) != len(b):
        raise ValueError(f"sliced_wasserstein needs equal sample counts, got {len(a)} and {len(b)}")
    if num_projections < 1:
        raise ValueError(f"num_projections={num_projections} must be at least 1")
    dirs = np.random.default_rng(seed).standard_normal((a.shape[1], num_projections))
    dirs /= np.linalg.norm(dirs, axis=0, keepdims=True)
    pa, pb = np.sort(a @ dirs, axis=0), np.sort(b @ dirs, axis=0)
    return float(math.sqrt(((pa - pb) ** 2).mean()))


def median_bandwidth(x, y) -> float:
    """Median heuristic: the median pairwise distance over the pooled sample."""
    a, b = _pair(x, y)
    pooled = np.concatenate([a, b])
    d = cdist(pooled, pooled)
    off = d[np.triu_indices(len(pooled), k=1)]
    med = float(np.median(off)) if off.size else 1.0
    return med if med > 0 else 1.0


def mmd_rbf(x, y, bandwidth: float | None = None) -> float:
    """Unbiased squared MMD with the kernel ``exp(-|u-v|^2 / (2 h^2))``; ``h`` by the median heuristic if None."""
    a, b = _pair(x, y)
    if len(a) < 2 or len(b) < 2:
        raise ValueError("mmd_rbf needs at least two samples in x and in y")
    h = median_bandwidth(a, b) if bandwidth is None else float(bandwidth)
    if h <= 0:
        raise ValueError(f"bandwidth={bandwidth} must be positive (or None for the median heuristic)")
    gamma = 1.0 / (2 * h * h)
    kxx = np.exp(-gamma * cdist(a, a, "sqeuclidean"))
    kyy = np.exp(-gamma * cdist(b, b, "sqeuclidean"))
    kxy = np.exp(-gamma * cdist(a, b, "sqeuclidean"))
    n, m = len(a), len(b)
    xx = (kxx.sum() - np.trace(kxx)) / (n * (n - 1))
    yy = (kyy.sum() - np.trace(kyy)) / (m * (m - 1))
    return float(xx + yy - 2 * kxy.mean())


SAMPLE_METRICS: dict[str, Callable[..., float]] = {
    "w2": wasserstein2,
    "sliced_w2": sliced_wasserstein,
    "mmd": mmd_rbf,
}


def get_sample_metric(name: str) -> Callable[..., float]:
    """The sample metric called ``name``; ValueError listing the names if unknown."""
    return lookup(SAMPLE_METRICS, "metric", name)


def noise_floor(metric: Callable[[Tensor, Tensor], float], sample_data: Callable[[int, torch.Generator], Tensor],
                n: int, seed: int = 0, repeats: int = 1) -> float:
    """The metric between two independent draws of ``n`` true points (mean over ``repeats``): what a perfect
    generator would score at this sample size."""
    g = torch.Generator().manual_seed(seed)
    values = [metric(sample_data(n, g), sample_data(n, g)) for _ in range(repeats)]
    return float(np.mean(values))


def mixture_log_likelihood(mixture, samples: Tensor) -> float:
    """Mean exact log-density of ``samples`` under the true mixture (higher: samples sit where data is)."""
    return float(mixture.log_prob(samples).mean())


def score_error(score_fn: Callable[[Tensor, Tensor], Tensor], mixture, alphas: Tensor, sigmas: Tensor,
                timesteps: Tensor, n: int = 512, seed: int = 0) -> Tensor:
    """Per noise level ``k``: ``E |s(x, t_k) - grad log p_k(x)|^2 / D`` with ``x ~ p_k = law(alpha_k X + sigma_k eps)``.

    ``score_fn(x, t)`` is the model's score at timestep ``t`` (a batch of equal values); the exact marginal
    ``p_k`` is ``mixture.noised(alpha_k, sigma_k)``. Returns a float64 tensor of shape ``(len(timesteps),)``.
    """
    g = torch.Generator().manual_seed(seed)
    errors = []
    for alpha, sigma, t in zip(alphas.tolist(), sigmas.tolist(), timesteps.tolist()):
        noisy = mixture.noised(alpha, sigma)
        x = noisy.sample(n, g)
        with torch.no_grad():
            model = score_fn(x, torch.full((n,), float(t))).double()
        errors.append(((model - noisy.score(x)) ** 2).sum(-1).mean() / mixture.dim)
    return torch.stack(errors)


class GivenFeatures(nn.Module):
    """Features computed beforehand, passed through torchmetrics' FID / KID: one pass of the feature network
    serves both metrics (and every comparison against the same reference images)."""

    def __init__(self, num_features: int):
        super().__init__()
        self.num_features = num_features  # torchmetrics reads this attribute of a custom feature extractor

    def forward(self, features: Tensor) -> Tensor:
        return features


@torch.no_grad()
def fid_kid(real_features: Tensor, fake_features: Tensor, kid_subsets: int, kid_subset_size: int,
            seed: int) -> dict[str, float]:
    """torchmetrics' FID and KID between two sets of features (N, F): ``{"fid", "kid", "kid_std"}``, KID's random
    subsets drawn with ``seed``."""
    from torchmetrics.image.fid import FrechetInceptionDistance
    from torchmetrics.image.kid import KernelInceptionDistance

    given = GivenFeatures(real_features.shape[1])
    fid = FrechetInceptionDistance(feature=given)
    with warnings.catch_warnings():  # its memory warning is irrelevant at these sizes
        warnings.simplefilter("ignore", UserWarning)
        kid = KernelInceptionDistance(feature=given, subsets=kid_subsets, subset_size=kid_subset_size)
    for metric in (fid, kid):
        metric.update(real_features.double(), real=True)
        metric.update(fake_features.double(), real=False)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)  # KID draws its subsets with the global RNG
        kid_mean, kid_std = kid.compute()
    return {"fid": float(fid.compute()), "kid": float(kid_mean), "kid_std": float(kid_std)}
