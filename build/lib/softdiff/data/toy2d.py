"""Toy 2-D distributions sampled on the fly, and a Gaussian mixture with exact score and log-density."""
from __future__ import annotations

import math
from typing import Callable

import numpy as np
import torch
from sklearn.datasets import make_moons, make_swiss_roll
from torch import Tensor


def _randn(n: int, d: int, g: torch.Generator | None) -> Tensor:
    return torch.randn(n, d, generator=g)


def _rand(n: int, g: torch.Generator | None) -> Tensor:
    return torch.rand(n, generator=g)


def _numpy_seed(g: torch.Generator | None) -> int:
    # sklearn generators take a NumPy seed: draw it from the torch generator so one seed drives everything.
    return int(torch.randint(0, 2**31 - 1, (1,), generator=g))


class GaussianMixture:
    """Isotropic Gaussian mixture ``sum_k w_k N(mu_k, std_k^2 I)`` with exact ``log_prob`` and ``score``."""

    def __init__(self, means, stds, weights=None):
        self.means = torch.as_tensor(means, dtype=torch.float64)
        k = self.means.shape[0]
        self.stds = torch.as_tensor(stds, dtype=torch.float64).expand(k).clone()
        w = torch.ones(k, dtype=torch.float64) if weights is None else torch.as_tensor(weights, dtype=torch.float64)
        if (w < 0).any() or w.sum() <= 0 or (self.stds <= 0).any():
            raise ValueError("GaussianMixture needs non-negative weights with a positive sum and positive stds")
        self.weights = w / w.sum()

    @property
    def dim(self) -> int:
        return self.means.shape[1]

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        comp = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        eps = torch.randn(n, self.dim, generator=generator, dtype=torch.float64)
        return (self.means[comp] + self.stds[comp, None] * eps).float()

    def _component_log_probs(self, x: Tensor) -> Tensor:
        x = x.to(torch.float64)
        sq = ((x[:, None, :] - self.means[None]) ** 2).sum(-1)                      # (n, k)
        var = self.stds**2
        return torch.log(self.weights) - 0.5 * sq / var - 0.5 * self.dim * torch.log(2 * math.pi * var)

    def log_prob(self, x: Tensor) -> Tensor:
        """Exact log-density (float64, shape (n,))."""
        return torch.logsumexp(self._component_log_probs(x), dim=1)

    def score(self, x: Tensor) -> Tensor:
        """Exact ``grad_x log p(x)`` (float64, shape (n, dim))."""
        resp = torch.softmax(self._component_log_probs(x), dim=1)                   # posterior over components
        comp_scores = (self.means[None] - x.to(torch.float64)[:, None, :]) / (self.stds**2)[None, :, None]
        return (resp[..., None] * comp_scores).sum(1)

    def noised(self, alpha: float, sigma: float) -> "GaussianMixture":
        """The law of ``alpha X + sigma eps``: again a Gaussian mixture (the exact diffused marginal)."""
        return GaussianMixture(alpha * self.means, torch.sqrt(alpha**2 * self.stds**2 + sigma**2), self.weights)


def eight_gaussians(scale: float = 2.0, std: float = 0.1) -> GaussianMixture:
    """Eight Gaussians on a circle of radius ``scale`` (the classic toy)."""
    angles = torch.arange(8, dtype=torch.float64) * (2 * math.pi / 8)
    return GaussianMixture(torch.stack([scale * torch.cos(angles), scale * torch.sin(angles)], 1), std)


def _checkerboard(n: int, g) -> Tensor:
    x1 = _rand(n, g) * 4 - 2
    x2 = _rand(n, g) - torch.randint(0, 2, (n,), generator=g) * 2.0
    x2 = x2 + torch.floor(x1) % 2
    return torch.stack([x1, x2], 1)


def _swissroll(n: int, g) -> Tensor:
    x, _ = make_swiss_roll(n, noise=0.5, random_state=_numpy_seed(g))
    return torch.from_numpy(x[:, [0, 2]] / 5.0).float()


def _moons(n: int, g) -> Tensor:
    x, _ = make_moons(n, noise=0.05, random_state=_numpy_seed(g))
    return torch.from_numpy((x - np.array([0.5, 0.25])) * 1.5).float()


def _pinwheel(n: int, g, num_classes: int = 5, radial_std: float = 0.3, tangential_std: float = 0.1,
              rate: float = 0.25) -> Tensor:
    labels = torch.randint(0, num_classes, (n,), generator=g)
    feats = _randn(n, 2, g) * torch.tensor([radial_std, tangential_std]) + torch.tensor([1.0, 0.0])
    angles = labels * (2 * math.pi / num_classes) + rate * torch.exp(feats[:, 0])
    c, s = torch.cos(angles), torch.sin(angles)
    rot = torch.stack([torch.stack([c, -s], -1), torch.stack([s, c], -1)], -2)
    return 2 * torch.einsum("nij,nj->ni", rot, feats)


def _rings(n: int, g) -> Tensor:
    radius = torch.randint(1, 5, (n,), generator=g).float() * 0.7
    theta = _rand(n, g) * 2 * math.pi
    pts = torch.stack([radius * torch.cos(theta), radius * torch.sin(theta)], 1)
    return pts + 0.05 * _randn(n, 2, g)


def _gmm_sampler(mix: GaussianMixture) -> Callable[[int, torch.Generator | None], Tensor]:
    return lambda n, g: mix.sample(n, g)


ANALYTIC: dict[str, GaussianMixture] = {
    "8gaussians": eight_gaussians(),
    "gmm": GaussianMixture([[-1.5, -1.0], [1.5, -1.0], [0.0, 1.5]], [0.3, 0.5, 0.4], [0.5, 0.3, 0.2]),
}

TOY2D: dict[str, Callable[[int, torch.Generator | None], Tensor]] = {
    **{name: _gmm_sampler(mix) for name, mix in ANALYTIC.items()},
    "swissroll": _swissroll,
    "moons": _moons,
    "checkerboard": _checkerboard,
    "pinwheel": _pinwheel,
    "rings": _rings,
}
