"""Training through the objective object: the same draws and weights as before it, the draws on the device
the batch goes to, and a training loop that reads the device back only at its log steps."""
import hashlib
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import softdiff
from softdiff.data import dataset_from_config
from softdiff.diffusion.objective import Objective
from softdiff.training import load_train_config, train
from softdiff.training.trainer import draw_batch, step_generator

TOY = ["data.name=8gaussians", "model.type=ScoreMLP", "model.hidden_size=16", "model.num_layers=1",
       "train.batch_size=32", "train.warmup_steps=2", "sample.every=0", "sample.steps=2", "sample.num_samples=8"]
# Every objective the config offers: process, density, target and weighting, and an image set with labels.
CASES = {
    "toy_epsilon": ("configs/toy2d.yaml", TOY),
    "toy_flow": ("configs/toy2d.yaml", [*TOY, "diffusion.objective=flow", "diffusion.flow_shift=3.0",
                                        "diffusion.timestep_density=logit_normal", "diffusion.loss_weighting=min_snr"]),
    "toy_v_ou_edm": ("configs/toy2d.yaml", [*TOY, "diffusion.prediction_type=v_prediction",
                                            "diffusion.beta_schedule=ou", "diffusion.timestep_density=lognormal",
                                            "diffusion.loss_weighting=edm"]),
    "digits_labels": ("configs/digits.yaml", ["train.batch_size=16", "data.class_conditional=true",
                                              "train.label_dropout=0.3", "data.random_flip=true"]),
}
# sha256 of draw_batch's outputs (steps 0, 1 and 5, micro-steps 0 and 1, and process 1 of 2 at step 2), recorded
# with the code before the objective object (main at 059bade): the draws must not change.
DRAWS = {
    "toy_epsilon": "84d9feb223fb620c",
    "toy_flow": "19852ba906d8faf1",
    "toy_v_ou_edm": "50e2a1fd92048bf6",
    "digits_labels": "09b30499aeae853b",
}
# sha256 of the weights after 4 steps of grad_accum=2 (float reductions: recorded on x86-64 CPU, torch 2.14).
WEIGHTS = {
    "toy_epsilon": "31141b8faa72af96",
    "toy_flow": "5081cf87f81d14a9",
}


def fingerprint(tensors) -> str:
    digest = hashlib.sha256()
    for t in tensors:
        digest.update(b"none" if t is None else str(t.dtype).encode() + t.contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def draws_of(case: str):
    config, overrides = CASES[case]
    cfg = load_train_config(config, overrides)
    dataset, objective = dataset_from_config(cfg.data), Objective.from_config(cfg.diffusion)
    for step, micro, rank, world in [(0, 0, 0, 1), (1, 1, 0, 1), (5, 0, 0, 1), (2, 0, 1, 2)]:
        yield from draw_batch(dataset, objective, cfg, step, micro, rank, world, device="cpu")


@pytest.mark.parametrize("case", sorted(CASES))
def test_draw_batch_on_the_cpu_is_bitwise_the_previous_code(case):
    assert fingerprint(draws_of(case)) == DRAWS[case]


@pytest.mark.parametrize("case", sorted(WEIGHTS))
def test_a_short_run_trains_bitwise_the_weights_of_the_previous_code(case, tmp_path):
    config, overrides = CASES[case]
    out = train(load_train_config(config, [*overrides, "train.steps=4", "train.grad_accum=2",
                                           f"output_dir={tmp_path}"]), quiet=True)
    weights = load_file(str(out / "model" / "model" / "diffusion_pytorch_model.safetensors"))  # a saved pipeline
    assert fingerprint(weights[k] for k in sorted(weights)) == WEIGHTS[case]


HOST_READS = ("item", "tolist", "__bool__", "__float__", "__int__")


def reads_of_a_run(tmp_path, monkeypatch, steps: int, *extra) -> list:
    """Where the training code (softdiff/training, softdiff/diffusion) read a tensor back to the host during one
    run of ``steps`` steps logged once: each such read waits for the device (a host sync on a GPU)."""
    package = Path(softdiff.__file__).parent
    watched = (package / "training", package / "diffusion")
    reads = []

    def counting(name):
        real = getattr(torch.Tensor, name)

        def read(self, *args, **kwargs):
            caller = Path(sys._getframe(1).f_code.co_filename)
            if any(folder in caller.parents for folder in watched):
                reads.append(f"{caller.name}:{sys._getframe(1).f_lineno} {name}")
            return real(self, *args, **kwargs)

        return read

    with monkeypatch.context() as patch:
        for name in HOST_READS:
            patch.setattr(torch.Tensor, name, counting(name))
        cfg = load_train_config(CASES["toy_epsilon"][0], [
            *CASES["toy_epsilon"][1], f"train.steps={steps}", f"train.log_every={steps}",
            f"train.checkpoint_every={steps}", f"output_dir={tmp_path / str(steps)}", *extra])
        train(cfg, quiet=True)
    return reads


def test_the_training_loop_reads_the_device_back_only_at_its_log_steps(tmp_path, monkeypatch):
    # The reads of a 3-step and a 12-step run logged once are the same few (the loss, the finiteness flag, the
    # final weight checksum): none per step.
    short, long = (reads_of_a_run(tmp_path, monkeypatch, steps, "train.grad_accum=2") for steps in (3, 12))
    assert sorted(long) == sorted(short), long
    assert len(long) <= 6, long


def test_skip_mode_reads_the_finiteness_of_every_micro_batch(tmp_path, monkeypatch):
    # It must know before optimizer.step(): one read per micro-batch, the price of skipping.
    short, long = (reads_of_a_run(tmp_path, monkeypatch, steps, "train.on_nonfinite=skip") for steps in (3, 12))
    assert len(long) - len(short) == 9


def test_on_an_accelerator_the_draws_come_from_their_own_generator_seeded_by_the_step(monkeypatch):
    """On a GPU, draw_batch asks for a generator on the device seeded by (seed, step, micro) and draws the global
    batch's timesteps, noise and label dropout from it, in that order, keeping this process's slice. No CUDA
    here: a CPU generator stands in for the device's, and the batch stays where it was drawn."""
    import softdiff.training.trainer as trainer

    asked = []

    def stand_in(seed, step, micro, device="cpu"):
        asked.append(torch.device(device).type)
        return step_generator(seed, step, micro)

    monkeypatch.setattr(trainer, "step_generator", stand_in)
    monkeypatch.setattr(trainer, "to_device", lambda x, device: x)
    config, overrides = CASES["digits_labels"]
    cfg = load_train_config(config, [*overrides, "diffusion.objective=diffusion", "diffusion.prediction_type=epsilon",
                                     "diffusion.timestep_density=lognormal"])
    dataset, objective = dataset_from_config(cfg.data), Objective.from_config(cfg.diffusion)
    _, t, target, _, labels = draw_batch(dataset, objective, cfg, 3, 1, 1, 2, device="cuda")
    assert asked == ["cpu", "cuda"]
    g = step_generator(cfg.train.seed, 3, 1)
    want_t = objective.draw_timesteps(16, g)
    want_noise = torch.randn((16, *dataset.shape), generator=g)
    want_dropped = torch.rand(16, generator=g) < cfg.train.label_dropout
    assert torch.equal(t, want_t[8:]) and torch.equal(target, want_noise[8:])  # epsilon: the target is the noise
    assert torch.equal(labels == -1, want_dropped[8:])
    # On the CPU one generator draws the indices, then the rest: other numbers, those of every run so far.
    asked.clear()
    _, cpu_t, _, _, _ = draw_batch(dataset, objective, cfg, 3, 1, 1, 2, device="cpu")
    assert asked == ["cpu"] and not torch.equal(cpu_t, t)
