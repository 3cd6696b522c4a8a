import math

import numpy as np
import pytest
import scipy.stats
import torch

from softdiff.data.toy2d import GaussianMixture, eight_gaussians
from softdiff.evaluation.metrics import (
    get_sample_metric,
    median_bandwidth,
    mixture_log_likelihood,
    mmd_rbf,
    noise_floor,
    score_error,
    sliced_wasserstein,
    wasserstein2,
)


def gauss(n, d, seed, shift=0.0, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g, dtype=torch.float64) * scale + shift


def test_w2_matches_brute_force_permutations():
    x, y = gauss(6, 2, 0), gauss(6, 2, 1)
    import itertools
    best = min(((x - y[list(p)]) ** 2).sum(1).mean().item() for p in itertools.permutations(range(6)))
    assert wasserstein2(x, y) == pytest.approx(math.sqrt(best), rel=1e-12)


def test_w2_of_two_gaussians_approaches_closed_form():
    # W2(N(m1, s1^2 I), N(m2, s2^2 I))^2 = |m1 - m2|^2 + d (s1 - s2)^2; 1-D sorted matching is exact for samples.
    n = 600
    x, y = gauss(n, 1, 0), gauss(n, 1, 1, shift=2.0, scale=0.5)
    exact_sample = math.sqrt(((np.sort(x[:, 0].numpy()) - np.sort(y[:, 0].numpy())) ** 2).mean())
    assert wasserstein2(x, y) == pytest.approx(exact_sample, rel=1e-9)
    assert wasserstein2(x, y) == pytest.approx(math.sqrt(4 + 0.25), rel=0.05)
    # 2-D: the sample W2 is close to the population one (plus the finite-sample bias, small at this size).
    x2, y2 = gauss(400, 2, 2), gauss(400, 2, 3, shift=torch.tensor([3.0, 0.0], dtype=torch.float64))
    assert wasserstein2(x2, y2) == pytest.approx(3.0, rel=0.05)


def test_sliced_w2_in_1d_equals_w2_and_is_translation_sensitive():
    x, y = gauss(300, 1, 0), gauss(300, 1, 1, shift=1.0)
    assert sliced_wasserstein(x, y, num_projections=4, seed=0) == pytest.approx(wasserstein2(x, y), rel=1e-9)
    # A pure shift by c in d dims: every 1-D projection shifts by <u, c>, E<u,c>^2 = |c|^2 / d.
    x3 = gauss(500, 3, 2)
    c = torch.tensor([1.0, -2.0, 2.0], dtype=torch.float64)
    sw = sliced_wasserstein(x3, x3 + c, num_projections=4000, seed=1)
    assert sw == pytest.approx(math.sqrt(9 / 3), rel=0.03)


def test_mmd_identical_is_zero_and_shift_exceeds_floor():
    x = gauss(300, 2, 0)
    h = median_bandwidth(x, x)
    # Unbiased MMD^2 of a sample with itself is -2 (1 - mean_{i!=j} k) / n: within 2/n of zero.
    assert abs(mmd_rbf(x, x)) < 2.0 / len(x)
    floor = noise_floor(mmd_rbf, lambda n, g: torch.randn(n, 2, generator=g), 300, seed=5, repeats=3)
    shifted = mmd_rbf(gauss(300, 2, 1), gauss(300, 2, 2, shift=1.0))
    assert shifted > 10 * abs(floor) and shifted > 0.05
    assert h > 0


def test_mmd_matches_direct_unbiased_formula():
    x, y = gauss(40, 3, 0), gauss(50, 3, 1, shift=0.3)
    h = 0.7
    k = lambda a, b: torch.exp(-torch.cdist(a, b) ** 2 / (2 * h * h))
    kxx, kyy = k(x, x), k(y, y)
    expected = ((kxx.sum() - kxx.trace()) / (40 * 39) + (kyy.sum() - kyy.trace()) / (50 * 49) - 2 * k(x, y).mean())
    assert mmd_rbf(x, y, bandwidth=h) == pytest.approx(expected.item(), rel=1e-10)
    # Median heuristic: the median of the pooled pairwise distances.
    pooled = torch.cat([x, y])
    d = torch.cdist(pooled, pooled)
    iu = torch.triu_indices(90, 90, 1)
    assert median_bandwidth(x, y) == pytest.approx(float(np.median(d[iu[0], iu[1]].numpy())), rel=1e-12)


def test_noise_floor_is_deterministic_and_positive_for_w2():
    sampler = lambda n, g: eight_gaussians().sample(n, g)
    a = noise_floor(wasserstein2, sampler, 200, seed=3)
    b = noise_floor(wasserstein2, sampler, 200, seed=3)
    assert a == b and 0 < a < 1.0


def test_score_error_is_zero_for_exact_score_and_positive_otherwise():
    mix = GaussianMixture([[0.0, 0.0], [2.0, 1.0]], [0.3, 0.6], [0.4, 0.6])
    alphas = torch.tensor([0.99, 0.7, 0.2], dtype=torch.float64)
    sigmas = (1 - alphas**2).sqrt()
    timesteps = torch.tensor([10.0, 400.0, 900.0])
    lookup = {10.0: (0.99, sigmas[0].item()), 400.0: (0.7, sigmas[1].item()), 900.0: (0.2, sigmas[2].item())}

    def exact(x, t):
        a, s = lookup[float(t[0])]
        return mix.noised(a, s).score(x)

    assert score_error(exact, mix, alphas, sigmas, timesteps, n=256).abs().max() < 1e-20
    zero = score_error(lambda x, t: torch.zeros_like(x), mix, alphas, sigmas, timesteps, n=256)
    assert (zero > 0.01).all()


def test_mixture_log_likelihood_matches_scipy():
    mix = GaussianMixture([[0.0, 0.0], [2.0, 1.0]], [0.3, 0.6], [0.4, 0.6])
    x = gauss(50, 2, 0)
    normal = scipy.stats.multivariate_normal
    pdf = 0.4 * normal([0, 0], 0.09).pdf(x) + 0.6 * normal([2, 1], 0.36).pdf(x)
    assert mixture_log_likelihood(mix, x) == pytest.approx(np.log(pdf).mean(), rel=1e-10)


@pytest.mark.parametrize("bad,msg", [
    (lambda: wasserstein2(torch.zeros(3, 2), torch.zeros(4, 2)), "equal sample counts"),
    (lambda: wasserstein2(torch.zeros(3, 2), torch.zeros(3, 3)), "dimension"),
    (lambda: mmd_rbf(torch.full((3, 2), float("nan")), torch.zeros(3, 2)), "NaN"),
    (lambda: sliced_wasserstein(torch.zeros(3, 2), torch.zeros(3, 2), num_projections=0), "num_projections"),
    (lambda: get_sample_metric("fid2"), "w2, sliced_w2, mmd"),
])
def test_bad_inputs_raise_clear_errors(bad, msg):
    with pytest.raises(ValueError, match=msg):
        bad()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_sliced_w2_never_exceeds_w2(seed):
    # Each projection of the optimal coupling is a coupling of the projections, and sorting is optimal in 1-D.
    x, y = gauss(60, 3, seed), gauss(60, 3, seed + 10, shift=0.5, scale=1.5)
    assert sliced_wasserstein(x, y, num_projections=64, seed=seed) <= wasserstein2(x, y) + 1e-12
