"""Loss weightings, noise-level densities and the rectified flow: formulas, oracles and invariants."""
import math

import pytest
import torch

from softdiff.diffusion import make_scheduler, sample, training_scheduler_config
from softdiff.diffusion.objectives import (
    PREDICTION_TYPES, loss_weight, predict_x0, training_target, x0_error_factor,
)
from softdiff.diffusion.process import ForwardProcess
from softdiff.diffusion.sampling import guided
from softdiff.diffusion.timesteps import sample_flow_times, sample_timesteps, shift_times


def _vp(snr: float):
    """alpha, sigma of a variance-preserving process at a given SNR, as 1-element tensors."""
    alpha2 = snr / (1 + snr)
    return torch.tensor([math.sqrt(alpha2)], dtype=torch.float64), torch.tensor([math.sqrt(1 - alpha2)],
                                                                               dtype=torch.float64)


# Hand-computed: the weight of the native MSE for SNR 4 and 16, gamma 5, sigma_data 0.5.
@pytest.mark.parametrize("weighting,prediction_type,snr,expected", [
    ("min_snr", "epsilon", 4.0, 1.0),            # min(4, 5) / 4
    ("min_snr", "epsilon", 16.0, 5 / 16),        # min(16, 5) / 16
    ("min_snr", "sample", 16.0, 5.0),
    ("min_snr", "v_prediction", 16.0, 5 / 17),   # min(SNR, 5) / (SNR + 1)
    ("min_snr", "v_prediction", 4.0, 4 / 5),
    ("edm", "sample", 4.0, 8.0),                 # SNR + 1 / 0.5^2
    ("edm", "epsilon", 4.0, 2.0),                # (SNR + 4) / SNR
    ("edm", "v_prediction", 16.0, 20 / 17),      # (SNR + 4) / (SNR + 1)
    ("none", "epsilon", 16.0, 1.0),
])
def test_weightings_equal_their_formulas(weighting, prediction_type, snr, expected):
    alpha, sigma = _vp(snr)
    w = loss_weight(weighting, prediction_type, alpha, sigma, min_snr_gamma=5.0, sigma_data=0.5)
    assert w.item() == pytest.approx(expected, rel=1e-12)


def test_flow_weighting_uses_the_flow_snr():
    # Rectified flow at t = 0.2: alpha 0.8, sigma 0.2, SNR 16; the velocity error is the x0 error / sigma.
    alpha, sigma = torch.tensor([0.8], dtype=torch.float64), torch.tensor([0.2], dtype=torch.float64)
    assert loss_weight("min_snr", "flow", alpha, sigma).item() == pytest.approx(5 * 0.04, rel=1e-12)
    assert loss_weight("edm", "flow", alpha, sigma).item() == pytest.approx(20 * 0.04, rel=1e-12)


@pytest.mark.parametrize("prediction_type", PREDICTION_TYPES)
def test_weighted_native_loss_is_the_weighted_x0_loss(prediction_type):
    # ||out - target||^2 = factor * ||x0_hat - x0||^2 for any output: the weightings rest on this identity.
    g = torch.Generator().manual_seed(0)
    x0, noise, out = (torch.randn(5, 3, generator=g, dtype=torch.float64) for _ in range(3))
    t = torch.rand(5, 1, generator=g, dtype=torch.float64) * 0.9 + 0.05
    alpha, sigma = ((1 - t), t) if prediction_type == "flow" else (t.sqrt(), (1 - t).sqrt())
    x_t = alpha * x0 + noise * sigma
    target = training_target(prediction_type, x0, noise, alpha, sigma)
    native = (out - target).square().sum(-1, keepdim=True)
    x0_err = (predict_x0(prediction_type, out, x_t, alpha, sigma) - x0).square().sum(-1, keepdim=True)
    assert torch.allclose(native, x0_error_factor(prediction_type, alpha, sigma) * x0_err, rtol=1e-10)
    snr = alpha**2 / sigma**2
    weighted = loss_weight("min_snr", prediction_type, alpha, sigma, 5.0) * native
    assert torch.allclose(weighted, snr.clamp(max=5.0) * x0_err, rtol=1e-10)


def test_unknown_weighting_names_the_choices():
    with pytest.raises(ValueError, match="min_snr"):
        loss_weight("p2", "epsilon", *_vp(1.0))


def test_lognormal_density_puts_log_sigma_where_asked():
    ab = make_scheduler("ddpm").alphas_cumprod
    t = sample_timesteps(20000, ab, torch.Generator().manual_seed(0), "lognormal", mean=-1.2, std=1.2)
    log_sigma = 0.5 * torch.log((1 - ab[t]) / ab[t]).double()
    assert log_sigma.mean().item() == pytest.approx(-1.2, abs=0.03)
    assert log_sigma.std().item() == pytest.approx(1.2, abs=0.03)
    uniform = sample_timesteps(20000, ab, torch.Generator().manual_seed(0))
    assert uniform.min() == 0 and uniform.max() == 999 and abs(uniform.double().mean().item() - 499.5) < 10


def test_logit_normal_flow_times_and_shift():
    t = sample_flow_times(20000, torch.Generator().manual_seed(0), "logit_normal")
    logit = torch.log(t / (1 - t)).double()
    assert logit.mean().item() == pytest.approx(0.0, abs=0.03) and logit.std().item() == pytest.approx(1.0, abs=0.03)
    s = torch.tensor([0.0, 0.25, 0.5, 1.0])
    assert torch.allclose(shift_times(s, 3.0), torch.tensor([0.0, 0.5, 0.75, 1.0]))
    # The shift of training is the one diffusers' flow scheduler applies to its training sigmas.
    sched = make_scheduler("euler", training_scheduler_config(prediction_type="flow", flow_shift=3.0))
    raw = torch.arange(1000, 0, -1, dtype=torch.float64) / 1000
    assert torch.allclose(sched.sigmas.double(), shift_times(raw, 3.0), atol=1e-6)


def test_flow_process_interpolates_data_and_noise():
    process = ForwardProcess(training_scheduler_config(prediction_type="flow"))
    x0, noise = torch.ones(2, 3), torch.zeros(2, 3)
    t = torch.tensor([250.0, 1000.0])
    assert torch.allclose(process.add_noise(x0, noise, t), torch.tensor([[0.75] * 3, [0.0] * 3]))
    assert process.prediction_type == "flow" and process.scheduler().__class__.__name__ == \
        "FlowMatchEulerDiscreteScheduler"


MU, STD = 2.0, 0.5


def flow_oracle(std: float):
    """Exact velocity E[noise - x0 | x_t] for data N(MU, std^2 I) (a point mass at MU when std = 0)."""

    def model(x, t):
        t = (t.double() / 1000).reshape(-1, *([1] * (x.dim() - 1)))
        x = x.double()
        var = (1 - t) ** 2 * std**2 + t**2
        resid = x - (1 - t) * MU
        x0 = MU + (1 - t) * std**2 / var * resid
        eps = t / var * resid
        return (eps - x0).float()

    return model


FLOW_STEPS = {"euler": 100, "heun": 20, "dpm++": 20, "dpm++sde": 50, "unipc": 20}


@pytest.mark.parametrize("name", list(FLOW_STEPS))
@pytest.mark.parametrize("std", [0.0, STD])
def test_flow_schedulers_recover_the_distribution(name, std):
    scheduler = make_scheduler(name, training_scheduler_config(prediction_type="flow"))
    x = sample(flow_oracle(std), scheduler, (4000, 2), FLOW_STEPS[name], torch.Generator().manual_seed(0))
    assert abs(x.mean().item() - MU) < 0.03, (name, x.mean())
    assert abs(x.std().item() - std) < 0.03, (name, x.std())


def test_diffusion_only_samplers_refuse_flow_models():
    with pytest.raises(ValueError, match="flow"):
        make_scheduler("ddpm", training_scheduler_config(prediction_type="flow"))


def test_guidance_scale_one_is_conditional_and_zero_unconditional():
    def model(x, t, class_labels=None):  # a different, label-dependent output for "no class" (-1)
        return x * (class_labels.float() + 2).reshape(-1, 1) + t.reshape(-1, 1)

    x, t, labels = torch.randn(4, 3), torch.full((4,), 7.0), torch.tensor([0, 1, 2, 3])
    cond, uncond = model(x, t, labels), model(x, t, torch.full((4,), -1))
    assert torch.equal(guided(model, labels, 1.0)(x, t), cond)
    assert torch.allclose(guided(model, labels, 0.0)(x, t), uncond)
    assert torch.allclose(guided(model, labels, 3.0)(x, t), uncond + 3 * (cond - uncond))


@pytest.mark.parametrize("objective,prediction_type,density", [
    ("diffusion", "epsilon", "uniform"), ("diffusion", "sample", "lognormal"),
    ("diffusion", "v_prediction", "uniform"), ("flow", "epsilon", "logit_normal"),
])
@pytest.mark.parametrize("weighting", ["none", "min_snr", "edm"])
def test_every_objective_trains_a_tiny_model_whose_loss_falls(tmp_path, objective, prediction_type, density,
                                                              weighting):
    import json

    from softdiff.training import load_train_config, train

    cfg = load_train_config("configs/toy2d.yaml", [
        f"output_dir={tmp_path}", "model.hidden_size=32", "model.num_layers=1", "train.batch_size=256",
        "train.steps=150", "train.log_every=25", "train.warmup_steps=5", "train.lr=3e-3", "sample.every=0",
        "sample.steps=4", "sample.num_samples=8", "train.checkpoint_every=1000",
        f"diffusion.objective={objective}", f"diffusion.prediction_type={prediction_type}",
        f"diffusion.loss_weighting={weighting}", f"diffusion.timestep_density={density}",
        "sample.scheduler=dpm++"])
    train(cfg, quiet=True)
    losses = [json.loads(line)["loss"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert len(losses) == 6 and all(math.isfinite(v) for v in losses)
    # Each objective keeps an irreducible part (the data is multimodal), so the fall is relative, not to zero.
    assert losses[-1] < 0.95 * losses[0] and min(losses[-2:]) < min(losses[:2]), losses


def test_the_objective_of_a_flow_config_noises_targets_and_weighs_by_the_flow_formulas():
    from types import SimpleNamespace

    from softdiff.diffusion.objective import Objective

    d = SimpleNamespace(objective="flow", prediction_type="epsilon", beta_schedule="linear", num_train_timesteps=1000,
                        ou_t_min=0.01, ou_t_max=3.0, flow_shift=3.0, timestep_density="logit_normal",
                        density_mean=None, density_std=0.8, loss_weighting="min_snr", min_snr_gamma=5.0,
                        sigma_data=0.5)
    objective = Objective.from_config(d)
    # The flow ignores the diffusion's prediction type and keeps the shift in the config it saves.
    assert objective.prediction_type == "flow" and objective.scheduler_config["shift"] == 3.0
    x0, noise = torch.full((2, 3), 2.0, dtype=torch.float64), torch.full((2, 3), -1.0, dtype=torch.float64)
    t = torch.tensor([200.0, 900.0])  # s = 0.2 (SNR 16) and 0.9 (SNR 1/81)
    x_t, target, weight = objective.noised(x0, noise, t)
    assert torch.allclose(x_t[:, 0], torch.tensor([0.8 * 2 - 0.2, 0.1 * 2 - 0.9], dtype=torch.float64))
    assert torch.equal(target, noise - x0)
    # min(SNR, 5) weighs the x0 error; the velocity error is 1/s^2 times it: weight = min(SNR, 5) s^2.
    assert torch.allclose(weight.flatten().double(), torch.tensor([5 * 0.04, 0.01], dtype=torch.float64),
                          rtol=1e-5)
    # The time density's parameters reach the draws: logit(t) ~ N(0, 0.8^2), shifted by 3.
    s = objective.draw_timesteps(20000, torch.Generator().manual_seed(0)).double() / 1000
    unshifted = s / (3 - 2 * s)
    logit = torch.log(unshifted / (1 - unshifted))
    assert logit.std().item() == pytest.approx(0.8, abs=0.02) and logit.mean().item() == pytest.approx(0, abs=0.02)


@pytest.mark.parametrize("config", [training_scheduler_config("linear", "epsilon"),
                                    training_scheduler_config("ou", "sample"),
                                    training_scheduler_config(prediction_type="flow", flow_shift=2.0)])
def test_a_process_and_its_continuous_view_for_the_likelihood_agree(config):
    """The likelihood's process is the training process seen in continuous time: the same alpha and sigma at
    every training timestep."""
    process = ForwardProcess(config)
    continuous = process.continuous()
    t = torch.tensor([1, 250, 500, 999]) if not process.is_flow else torch.tensor([1.0, 250.0, 500.0, 999.0])
    alpha, sigma = process.alpha_sigma(t, 1)
    alpha_c, sigma_c = continuous.alpha_sigma(t.double())
    assert torch.allclose(alpha.double(), alpha_c.double(), rtol=1e-6, atol=1e-7)
    assert torch.allclose(sigma.double(), sigma_c.double(), rtol=1e-6, atol=1e-7)
    assert type(process).__name__ == ("RectifiedFlow" if process.is_flow else "DiscreteDiffusion")
