import numpy as np
import pytest
import torch

from softdiff.diffusion import SCHEDULERS, make_scheduler, ou_betas, sample, training_scheduler_config
from softdiff.diffusion.objectives import alpha_sigma, predict_x0, score_from_output, training_target

MU, STD = 2.0, 0.5  # data N(2, 0.25 I): outside [-1, 1], so clip_sample would visibly break it
# First-order samplers need more steps to get the variance right (measured: ddim 0.446 at 25 steps, 0.487 at 100).
STEPS = {"ddpm": 500, "ddim": 200, "euler": 200, "heun": 25, "dpm++": 25, "dpm++sde": 50, "unipc": 25}


def gaussian_oracle(scheduler, prediction_type):
    """Exact prediction for data N(MU, STD^2 I) at any (possibly fractional) timestep."""
    ab = scheduler.alphas_cumprod.double()
    sig_table = ((1 - ab) / ab).sqrt().numpy()

    def model(x, t):
        # Interpolate sigma linearly in t, as diffusers' Euler-type schedulers do for fractional timesteps.
        sig = torch.as_tensor(np.interp(t.double().numpy(), np.arange(len(sig_table)), sig_table)).reshape(-1, 1)
        alpha = 1 / (1 + sig**2).sqrt()
        sigma = sig * alpha
        x = x.double()
        x0 = MU + alpha * STD**2 / (alpha**2 * STD**2 + sigma**2) * (x - alpha * MU)
        eps = (x - alpha * x0) / sigma
        return training_target(prediction_type, x0, eps, alpha, sigma).float()

    return model


@pytest.mark.parametrize("name", list(SCHEDULERS))
@pytest.mark.parametrize("prediction_type", ["epsilon", "sample", "v_prediction"])
def test_every_scheduler_recovers_the_gaussian(name, prediction_type):
    config = training_scheduler_config(prediction_type=prediction_type)
    scheduler = make_scheduler(name, config)
    assert scheduler.config.get("clip_sample", False) is False
    x = sample(gaussian_oracle(scheduler, prediction_type), scheduler, (4000, 2), num_steps=STEPS[name],
               generator=torch.Generator().manual_seed(0))
    assert abs(x.mean().item() - MU) < 0.05, (name, x.mean())
    assert abs(x.std().item() - STD) < 0.05, (name, x.std())


def test_fractional_timesteps_work():
    scheduler = make_scheduler("euler", training_scheduler_config(), timestep_spacing="linspace")
    scheduler.set_timesteps(7)
    assert (scheduler.timesteps.frac() != 0).any()
    x = sample(gaussian_oracle(scheduler, "epsilon"), scheduler, (4000, 2), num_steps=201,
               generator=torch.Generator().manual_seed(1))
    assert abs(x.mean().item() - MU) < 0.05 and abs(x.std().item() - STD) < 0.05


def test_clip_sample_trap_would_break_the_test():
    # The default-diffusers behaviour (clip_sample=True) clamps x0 to [-1, 1]: the oracle test must notice.
    scheduler = make_scheduler("ddim", training_scheduler_config(prediction_type="sample"), clip_sample=True)
    x = sample(gaussian_oracle(scheduler, "sample"), scheduler, (2000, 2), num_steps=25,
               generator=torch.Generator().manual_seed(0))
    assert abs(x.mean().item() - MU) > 0.5


def test_sampling_is_deterministic_for_a_generator():
    scheduler = make_scheduler("ddpm")
    model = gaussian_oracle(scheduler, "epsilon")
    a = sample(model, scheduler, (10, 2), 10, generator=torch.Generator().manual_seed(3))
    b = sample(model, scheduler, (10, 2), 10, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)


def test_ou_betas_give_the_ou_marginals():
    t_min, t_max = 0.01, 3.0
    scheduler = make_scheduler("ddpm", training_scheduler_config(beta_schedule="ou", prediction_type="sample",
                                                                  ou_t_min=t_min, ou_t_max=t_max))
    t = torch.linspace(t_min, t_max, 1000, dtype=torch.float64)
    assert torch.allclose(scheduler.alphas_cumprod.double(), torch.exp(-2 * t), rtol=1e-5)
    with pytest.raises(ValueError, match="t_min"):
        ou_betas(1.0, 0.5)


def test_cosine_schedule_uses_leading_spacing():
    scheduler = make_scheduler("ddim", training_scheduler_config(beta_schedule="squaredcos_cap_v2"))
    scheduler.set_timesteps(10)
    assert scheduler.timesteps[0] < 999


def test_conversions_are_consistent():
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(6, 3, generator=g, dtype=torch.float64), torch.randn(6, 3, generator=g, dtype=torch.float64)
    ab = torch.rand(6, 1, generator=g, dtype=torch.float64) * 0.9 + 0.05
    alpha, sigma = ab.sqrt(), (1 - ab).sqrt()
    x_t = alpha * x0 + sigma * eps
    for kind in ("epsilon", "sample", "v_prediction"):
        out = training_target(kind, x0, eps, alpha, sigma)
        assert torch.allclose(predict_x0(kind, out, x_t, alpha, sigma), x0, atol=1e-12)
        # Score of N(alpha x0, sigma^2) at x_t given x0: -eps / sigma.
        assert torch.allclose(score_from_output(kind, out, x_t, alpha, sigma), -eps / sigma, atol=1e-10)


def test_alpha_sigma_broadcasts_over_images():
    scheduler = make_scheduler("ddpm")
    a, s = alpha_sigma(scheduler.alphas_cumprod, torch.tensor([0, 999]), 4)
    assert a.shape == (2, 1, 1, 1) and torch.allclose(a**2 + s**2, torch.ones_like(a))


def test_unknown_names_raise():
    with pytest.raises(ValueError, match="dpm\\+\\+"):
        make_scheduler("nope")
    with pytest.raises(ValueError, match="epsilon"):
        training_scheduler_config(prediction_type="x")
