"""Where eval and compare run: the device choice (pure functions), compare's workers spread over the GPUs in real
processes, and the evaluation moving the model and feature networks where it is told."""
import os
import time
from pathlib import Path

import pytest
import torch

from softdiff.devices import resolve_device, visible_devices_for, worker_devices
from softdiff.errors import ConfigError


def test_workers_go_round_robin_over_the_gpus_and_to_the_cpu_without_one():
    assert worker_devices(5, 2) == ["cuda:0", "cuda:1", "cuda:0", "cuda:1", "cuda:0"]
    assert worker_devices(3, 8) == ["cuda:0", "cuda:1", "cuda:2"]
    assert worker_devices(3, 0) == ["cpu", "cpu", "cpu"]


def test_a_gpu_worker_sees_only_its_gpu_counted_among_the_parents():
    assert visible_devices_for("cuda:1", None) == "1"
    assert visible_devices_for("cuda:1", "4, 6") == "6"  # the parent sees GPUs 4 and 6 as cuda:0 and cuda:1
    assert visible_devices_for("cuda", "5") == "5"
    assert visible_devices_for("cpu", "0,1") is None


@pytest.mark.parametrize("bad", ["gpu", "cuda:x", "CPU", ""])
def test_a_bad_device_name_is_one_sentence_naming_the_key(bad):
    with pytest.raises(ConfigError, match=r"^--device .* is not a device name; use cpu, cuda or cuda:N.$"):
        resolve_device("--device", bad)


def test_the_default_device_is_a_gpu_when_there_is_one(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("--device", None) == torch.device("cpu")
    with pytest.raises(ConfigError, match=r"^--device 'cuda': no CUDA GPU is available on this machine; use cpu.$"):
        resolve_device("--device", "cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device("--device", None) == torch.device("cuda")
    assert resolve_device("--device", "cuda:1") == torch.device("cuda:1")
    with pytest.raises(ConfigError, match=r"^--device 'cuda:2': this machine has 2 GPU\(s\), cuda:0 to cuda:1.$"):
        resolve_device("--device", "cuda:2")


def test_eval_refuses_a_missing_gpu_in_one_line_before_any_work(tmp_path, capsys, monkeypatch):
    from softdiff.cli import run_main
    from softdiff.commands.evaluate import main

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert run_main(main, [str(tmp_path / "run"), "--device", "cuda:1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: --device 'cuda:1': no CUDA GPU is available on this machine; use cpu."]
    assert list(tmp_path.iterdir()) == []


def _report_visible_devices(job):
    """A pool job that records the GPUs its worker sees, then waits until every job has started, so that each
    runs in its own worker process."""
    folder = Path(job["folder"])
    (folder / f"{job['seed']}.seen").write_text(f"{os.getpid()} {os.environ.get('CUDA_VISIBLE_DEVICES', '')}")
    deadline = time.monotonic() + 120
    while len(list(folder.glob("*.seen"))) < job["jobs"] and time.monotonic() < deadline:
        time.sleep(0.05)
    return {"activation": "relu", "seed": job["seed"], "metrics": {}, "history": [], "total_seconds": 0.0}


def test_compare_workers_each_see_their_own_gpu(tmp_path, monkeypatch):
    """Real worker processes: worker i sees only GPU i % n (as CUDA_VISIBLE_DEVICES, the parent's numbering)."""
    from softdiff.studies.compare.runner import execute

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")  # inherited by the spawned workers
    jobs = [{"folder": str(tmp_path), "seed": seed, "jobs": 2} for seed in range(2)]
    records = execute(jobs, 2, lambda *_: None, work=_report_visible_devices, devices=["cuda:0", "cuda:1"])
    assert [r["seed"] for r in records] == [0, 1]
    seen = [(tmp_path / f"{seed}.seen").read_text().split() for seed in range(2)]
    assert len({pid for pid, _ in seen}) == 2  # two processes
    assert sorted(visible for _, visible in seen) == ["3", "5"]


def test_the_evaluation_moves_the_model_where_it_is_told(monkeypatch):
    """The model goes to the evaluator's device before sampling ("meta": a device without data, as a GPU is
    another device than the CPU the test runs on)."""
    import softdiff.evaluation.run_eval as run_eval
    from softdiff.data import make_dataset
    from softdiff.diffusion.schedulers import training_scheduler_config
    from softdiff.nets import ScoreMLP

    dataset = make_dataset("8gaussians")
    settings = run_eval.EvalSettings(num_samples=8, metrics=["w2"])
    evaluator = run_eval.RunEvaluator(dataset, settings, training_scheduler_config("linear", "epsilon", 100),
                                      device="meta")
    seen = []

    def fake_draw(model, scheduler_config, dataset, settings):
        seen.append(next(model.parameters()).device)
        return torch.full((settings.num_samples, 2), float("nan"))  # non-finite: the metrics stop here

    monkeypatch.setattr(run_eval, "draw_samples", fake_draw)
    metrics, _ = evaluator.evaluate(ScoreMLP(hidden_size=8, num_blocks=1), final=False)
    assert [device.type for device in seen] == ["meta"]
    assert list(metrics) == ["w2"]


def test_the_likelihood_feeds_the_model_on_its_device_and_dtype_and_answers_in_the_callers():
    """A float64 model (the path a GPU model takes: another device or dtype than the ODE state's) gives the
    float32 caller float32 answers equal to the float64 model's own output."""
    from softdiff.evaluation.likelihood import model_field_fn
    from softdiff.diffusion.schedulers import training_scheduler_config
    from softdiff.nets import ScoreMLP

    torch.manual_seed(0)
    model = ScoreMLP(hidden_size=8, num_blocks=1).double()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_()
    field = model_field_fn(model, training_scheduler_config("linear", "flow", 100))
    x, t = torch.randn(4, 2), torch.full((4,), 30.0)
    out = field(x, t)
    assert out.dtype == torch.float32 and out.device == x.device
    expected = model(x.double(), t.double())
    assert torch.allclose(out.double(), expected, atol=1e-6) and out.abs().sum() > 0
