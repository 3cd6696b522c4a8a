import math

import pytest
import torch

from softdiff.diffusion.schedulers import make_scheduler, training_scheduler_config
from softdiff.evaluation.likelihood import (
    DiscreteVP,
    LinearVP,
    OUProcess,
    bits_per_dim,
    log_likelihood,
    model_score_fn,
)


def gaussian_marginal(process, mu, s):
    """Data N(mu, s^2 I) diffuses to N(alpha mu, (alpha^2 s^2 + sigma^2) I): exact score and log-density."""

    def var_mean(t):
        alpha, sigma = process.alpha_sigma(t)
        return alpha**2 * s**2 + sigma**2, alpha

    def score(x, t):
        v, a = var_mean(t)
        return -(x - a[:, None] * mu) / v[:, None]

    def log_prob(x, t):
        v, a = var_mean(t)
        d = x.shape[1]
        return -0.5 * ((x - a[:, None] * mu) ** 2).sum(1) / v - 0.5 * d * torch.log(2 * math.pi * v)

    return score, log_prob


def points(n, d, seed=0):
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@pytest.mark.parametrize("process", [LinearVP(), OUProcess(0.01, 3.0)], ids=["linear_vp", "ou"])
def test_nll_of_a_gaussian_matches_closed_form(process):
    # mu != 0 and s != 1 make the flow non-trivial: a wrong direction or sign would shift the answer.
    mu, s = torch.tensor([1.0, -0.5], dtype=torch.float64), 0.5
    score, log_prob = gaussian_marginal(process, mu, s)
    x = mu + s * points(16, 2)
    t_end = torch.full((16,), process.t_max, dtype=torch.float64)
    exact_prior = lambda z: log_prob(z, t_end)
    got = log_likelihood(score, process, x, rtol=1e-8, atol=1e-8, prior_log_prob=exact_prior)
    expected = log_prob(x, torch.full((16,), process.t_min, dtype=torch.float64))
    assert torch.allclose(got, expected, atol=1e-5)
    if isinstance(process, LinearVP):
        # With the N(0, I) prior the error is only the prior mismatch at t_max (alpha(1) ~ 0.007 here).
        approx = log_likelihood(score, process, x, rtol=1e-8, atol=1e-8)
        assert torch.allclose(approx, expected, atol=0.05) and not torch.allclose(approx, expected, atol=1e-4)


def test_standard_normal_nll_under_perfect_score():
    process = LinearVP()
    x = points(8, 3, seed=1)
    got = -log_likelihood(lambda y, t: -y, process, x)
    expected = 0.5 * (x**2).sum(1) + 1.5 * math.log(2 * math.pi)
    assert torch.allclose(got, expected, atol=1e-8)


def test_hutchinson_is_unbiased_for_the_exact_divergence():
    process = LinearVP()
    mu, s = torch.tensor([0.3, -0.2, 0.1, 0.4], dtype=torch.float64), 0.7
    score, log_prob = gaussian_marginal(process, mu, s)
    x = mu + s * points(4, 4, seed=2)
    exact = log_likelihood(score, process, x, divergence="exact", rtol=1e-6, atol=1e-6)
    # For an isotropic field every Rademacher probe gives v^T (c I) v = c d: Hutchinson is exact here...
    hutch = log_likelihood(score, process, x, divergence="hutchinson", rtol=1e-6, atol=1e-6, seed=3)
    assert torch.allclose(exact, hutch, atol=1e-5)
    # ...and for an anisotropic linear field its mean over probes converges to the exact value.
    A = torch.diag(torch.tensor([0.6, 1.4, 1.0, 1.2], dtype=torch.float64))
    A[0, 1] = 0.3
    aniso = lambda y, t: -y @ A.T
    exact_a = log_likelihood(aniso, process, x[:1], divergence="exact", rtol=1e-6, atol=1e-6)
    draws = torch.stack([log_likelihood(aniso, process, x[:1].expand(32, 4), divergence="hutchinson",
                                        rtol=1e-6, atol=1e-6, seed=k) for k in range(4)]).flatten()
    assert (draws - exact_a).abs().max() > 1e-2   # single probes do differ
    assert (draws.mean() - exact_a).abs() < 4 * draws.std() / math.sqrt(len(draws)) + 1e-6


def test_discrete_vp_matches_scheduler_table_and_integrates_its_beta():
    config = training_scheduler_config("linear", "epsilon", 1000)
    table = make_scheduler("ddpm", config).alphas_cumprod.double()
    process = DiscreteVP.from_scheduler_config(config)
    k = torch.tensor([0.0, 10.0, 500.0, 999.0], dtype=torch.float64)
    assert torch.allclose(process.log_alpha_bar(k).exp(), table[k.long()], rtol=1e-12)
    # beta is -d log alpha_bar / dt: a midpoint-rule integral recovers the table.
    grid = torch.arange(0, 999, dtype=torch.float64) + 0.5
    assert torch.allclose(-process.beta(grid).sum(), process.log_alpha_bar(torch.tensor([999.0], dtype=torch.float64))
                          - process.log_alpha_bar(torch.tensor([0.0], dtype=torch.float64)), rtol=1e-10)


def test_model_score_fn_converts_epsilon_output():
    config = training_scheduler_config("linear", "epsilon", 1000)
    process = DiscreteVP.from_scheduler_config(config)

    class EpsModel(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.tensor(0.5, dtype=torch.float64))

        def forward(self, x, t):
            return self.w * x

    score = model_score_fn(EpsModel(), config)
    x, t = points(3, 2), torch.full((3,), 250.0, dtype=torch.float64)
    _, sigma = process.alpha_sigma(t)
    assert torch.allclose(score(x, t), -0.5 * x / sigma[:, None], atol=1e-12)


def test_bits_per_dim_of_uniform_model_is_log2_levels():
    # A model whose data density is uniform on [0, 1]^D gives exactly log2(L) bits/dim; check the conversion
    # with a Gaussian instead: bpd = (nll_model - D log 2 + D log L) / (D log 2) for its known nll.
    process = LinearVP()
    images = torch.rand(4, 1, 2, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    bpd = bits_per_dim(lambda y, t: -y, process, images, num_levels=17, seed=0)
    g = torch.Generator().manual_seed(0)
    levels = torch.round(images * 16)
    y = 2 * (levels + torch.rand(images.shape, generator=g, dtype=torch.float64)) / 17 - 1
    nll_model = 0.5 * (y.flatten(1) ** 2).sum(1) + 2 * math.log(2 * math.pi)
    expected = (nll_model - 4 * math.log(2) + 4 * math.log(17)) / (4 * math.log(2))
    assert torch.allclose(bpd, expected, atol=1e-7)


@pytest.mark.parametrize("call,msg", [
    (lambda: log_likelihood(lambda y, t: -y, LinearVP(), torch.zeros(2, 2), divergence="trace"), "exact, hutchinson"),
    (lambda: LinearVP(t_min=1.0, t_max=0.5), "t_min < t_max"),
    (lambda: bits_per_dim(lambda y, t: -y, LinearVP(), torch.full((1, 1, 2, 2), 2.0), 17), r"\[0, 1\]"),
])
def test_bad_arguments(call, msg):
    with pytest.raises(ValueError, match=msg):
        call()


def test_flow_nll_of_a_gaussian_matches_closed_form():
    # Rectified flow of N(mu, s^2 I): exact velocity, and the prior at s = 1 is exactly N(0, I).
    from softdiff.evaluation.likelihood import FlowProcess

    mu, s, n = torch.tensor([1.0, -0.5], dtype=torch.float64), 0.5, 1000
    process = FlowProcess(n, t_min=1.0)

    def velocity(x, t):
        u = (t / n)[:, None]
        var = (1 - u) ** 2 * s**2 + u**2
        resid = x - (1 - u) * mu
        return u / var * resid - (mu + (1 - u) * s**2 / var * resid)

    x = mu + s * points(16, 2)
    got = log_likelihood(velocity, process, x, rtol=1e-8, atol=1e-8)
    u0 = process.t_min / n
    var0 = (1 - u0) ** 2 * s**2 + u0**2
    expected = -0.5 * ((x - (1 - u0) * mu) ** 2).sum(1) / var0 - math.log(2 * math.pi * var0)
    assert torch.allclose(got, expected, atol=1e-5)
