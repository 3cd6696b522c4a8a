import json
import math

import numpy as np
import pytest
import torch

from softdiff.cli import run_main
from softdiff.commands.compare import main
from softdiff.studies.compare.report import REPORT_SECTIONS
from softdiff.studies.compare.statistics import mean_std, winners
from softdiff.checkpoint_ema import load_ema_weights
from softdiff.pipeline import SoftdiffPipeline

TINY_TRAIN = "train_overrides=[model.hidden_size=16,model.num_layers=1,train.steps=20,train.log_every=5," \
             "train.batch_size=64,sample.every=0,sample.num_samples=8]"


def tiny_argv(out, *extra):
    return ["--config", "configs/compare/toy.yaml", "--output-dir", str(out), "--workers", "1",
            "activations=[softmax,relu]", "num_seeds=1", TINY_TRAIN, "eval.every=10", "eval.num_samples=64",
            "eval.likelihood_samples=16", "eval.ode_tol=1e-3", "eval.score_timesteps=[50,500]", *extra]


@pytest.fixture(scope="module")
def tiny_report(tmp_path_factory):
    out = tmp_path_factory.mktemp("compare")
    assert run_main(main, tiny_argv(out)) == 0
    return out


def test_tiny_comparison_writes_every_section_and_file(tiny_report):
    out = tiny_report
    report = (out / "report.md").read_text()
    for section in REPORT_SECTIONS:
        assert section in report
    for name in ("loss_curves.png", "metric_vs_steps.png", "samples.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and f"]({name})" in report
    assert "| softmax |" in report and "| relu |" in report and "*noise floor*" in report
    results = json.loads((out / "results.json").read_text())
    assert set(results) >= {"runs", "summary"} and set(results["summary"]) == {"softmax", "relu"}
    metrics = ["w2", "sliced_w2", "mmd", "nll", "mixture_loglik", "score_error"]
    for run in results["runs"]:
        assert set(metrics) <= set(run["metrics"]) and [h["step"] for h in run["history"]] == [10, 20]
        summary = results["summary"][run["activation"]]
        for m in metrics:  # one seed: the mean is that run's value and the spread is zero
            assert summary[m]["mean"] == pytest.approx(run["metrics"][m]) and summary[m]["std"] == 0
    assert results["noise_floor"]["w2"] > 0 and "one seed" in report and "Warning" not in report
    assert "## Diagnostics" not in report and all(r["probes"] is None for r in results["runs"])  # ScoreMLP


def test_checkpoint_ema_equals_final_ema_model(tiny_report):
    run = tiny_report / "runs" / "softmax-seed0"
    final = SoftdiffPipeline.from_pretrained(run / "model_ema").model
    live = SoftdiffPipeline.from_pretrained(run / "model").model
    assert any(not torch.equal(a, b) for a, b in zip(final.parameters(), live.parameters()))
    load_ema_weights(live, run / "checkpoints" / "checkpoint-20")
    assert all(torch.equal(a, b) for a, b in zip(final.parameters(), live.parameters()))


def test_rerun_reuses_finished_runs_and_reevaluates_identically(tiny_report, capsys):
    out = tiny_report
    run = out / "runs" / "relu-seed0"
    before = json.loads((out / "results.json").read_text())
    weights_mtime = (run / "model_ema" / "model" / "diffusion_pytorch_model.safetensors").stat().st_mtime_ns
    (run / "result.json").unlink()  # relu must be re-evaluated (not retrained), softmax reused
    capsys.readouterr()
    assert run_main(main, tiny_argv(out)) == 0
    log = capsys.readouterr().out
    assert "softmax seed 0 (reused)" in log and "relu seed 0 (reused)" not in log
    assert (run / "model_ema" / "model" / "diffusion_pytorch_model.safetensors").stat().st_mtime_ns == weights_mtime
    after = json.loads((out / "results.json").read_text())
    assert after["summary"] == before["summary"]  # evaluation is deterministic


def test_rerun_resumes_a_run_whose_final_save_was_torn(tiny_report, capsys):
    """An empty model_ema weights file (a kill during the final save of an older layout) is detected: the run is
    resumed from its last checkpoint, which rewrites both models exactly, and evaluated again."""
    from safetensors.torch import load_file

    out = tiny_report
    run = out / "runs" / "softmax-seed0"
    weights = run / "model_ema" / "model" / "diffusion_pytorch_model.safetensors"
    before = {k: v.clone() for k, v in load_file(str(weights)).items()}  # not the memory map of a file cut below
    weights.write_bytes(b"")
    (run / "result.json").unlink()
    capsys.readouterr()
    assert run_main(main, tiny_argv(out)) == 0
    assert "softmax seed 0 (reused)" not in capsys.readouterr().out
    after = load_file(str(weights))
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    assert json.loads((run / "train_summary.json").read_text())["finished"]


@pytest.mark.parametrize("extra,needle", [
    (["activations=[softmax,swish9]"], "activations: 'swish9' is not valid"),
    (["num_seeds=0"], "num_seeds=0 must be positive"),
    (["activations=[]"], "activations is empty"),
    (["eval.metrics=[w2,fidd]"], "eval.metrics='fidd' is not valid"),
    (["--config", "configs/compare/paper.yaml", "activations=[softmax,gelu]"], "model.type=TwoLayerScoreNet"),
    (["numseeds=2"], "numseeds"),
])
def test_bad_config_is_one_clear_line_with_exit_2(tmp_path, extra, needle, capsys):
    assert run_main(main, tiny_argv(tmp_path, *extra)) == 2
    err = capsys.readouterr().err
    assert needle in err and err.startswith("error: ") and err.count("\n") == 1
    assert not (tmp_path / "runs").exists()


def test_winner_and_significance_rules():
    summary = {"softmax": {"w2": mean_std([1.0, 1.2, 1.1]), "confidence": mean_std([0.9, 0.91])},
               "relu": {"w2": mean_std([2.0, 2.1, 2.2]), "confidence": mean_std([0.5, 0.99])},
               "exp": {"w2": mean_std([math.nan]), "confidence": mean_std([0.1, 0.1])}}
    w = winners(summary, ["w2", "confidence"], {"confidence"})
    assert w["w2"]["winner"] == "softmax" and w["w2"]["runner_up"] == "relu" and w["w2"]["significant"] is True
    assert w["w2"]["gap"] == pytest.approx(1.0)
    assert w["confidence"]["winner"] == "softmax" and w["confidence"]["significant"] is False  # higher is better
    assert mean_std([1.0, 3.0]) == {"mean": 2.0, "std": pytest.approx(np.sqrt(2.0)), "n": 2}


def test_a_diverging_run_is_reported_not_fatal(tmp_path, monkeypatch, capsys):
    import softdiff.training
    from softdiff.training.trainer import TrainingError

    real_train = softdiff.training.train

    def flaky(cfg, **kw):
        if cfg.model["activation"] == "exp":
            raise TrainingError("the loss became non-finite at step 3")
        return real_train(cfg, **kw)

    monkeypatch.setattr(softdiff.training, "train", flaky)
    argv = tiny_argv(tmp_path, "activations=[relu,exp]", "eval.every=0", "eval.metrics=[w2]")
    assert run_main(main, argv) == 0
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["summary"]["exp"]["w2"]["mean"] is None and results["summary"]["relu"]["w2"]["mean"] > 0
    assert results["winners"]["w2"]["winner"] == "relu"
    report = (tmp_path / "report.md").read_text()
    assert "failed: the loss became non-finite at step 3" in report and "FAILED" in capsys.readouterr().out


class PerfectEpsModel(torch.nn.Module):
    """The exact epsilon-prediction of the 8-Gaussian data under a diffusers schedule: eps* = -sigma * score."""

    def __init__(self, mixture, scheduler_config):
        super().__init__()
        from softdiff.evaluation.likelihood import DiscreteVP

        self.mixture, self.process = mixture, DiscreteVP.from_scheduler_config(scheduler_config)
        self.dummy = torch.nn.Parameter(torch.zeros(()))

    def forward(self, x, t):
        t = torch.as_tensor(t, dtype=torch.float64).reshape(-1).expand(len(x))
        alpha, sigma = self.process.alpha_sigma(t)
        out = torch.empty(x.shape, dtype=torch.float64)
        for value in t.unique():  # the noised mixture depends on the level
            rows = t == value
            a, s = float(alpha[rows][0]), float(sigma[rows][0])
            out[rows] = -s * self.mixture.noised(a, s).score(x[rows])
        return out.to(x.dtype)


def test_perfect_model_reaches_the_floors():
    from softdiff.data import make_dataset
    from softdiff.diffusion.schedulers import training_scheduler_config
    from softdiff.evaluation.run_eval import EvalSettings, RunEvaluator

    dataset = make_dataset("8gaussians")
    config = training_scheduler_config("linear", "epsilon", 1000)
    settings = EvalSettings(num_samples=300, likelihood_samples=48, ode_tol=1e-4, score_timesteps=[10, 300, 800],
                            scheduler="ddpm", steps=100)
    evaluator = RunEvaluator(dataset, settings, config)
    floors = evaluator.noise_floors()
    metrics, samples = evaluator.evaluate(PerfectEpsModel(dataset.analytic, config), final=True)
    assert metrics["score_error"] < 1e-12                        # the whole score chain is exact
    assert metrics["nll"] == pytest.approx(floors["nll"], abs=0.02)  # PF-ODE NLL = exact NLL at timestep 0
    assert metrics["w2"] < 2 * floors["w2"] and metrics["mixture_loglik"] > floors["mixture_loglik"] - 0.5


def test_identical_activation_results_are_flagged():
    from softdiff.studies.compare.report import identical_activations

    runs = [{"activation": "softmax", "seed": 0, "metrics": {"fid": 3.0}},
            {"activation": "relu", "seed": 0, "metrics": {"fid": 3.0}},
            {"activation": "gelu", "seed": 0, "metrics": {"fid": 2.5}},
            {"activation": "relu", "seed": 1, "metrics": {"fid": 3.0}}]
    alerts = identical_activations(runs)
    assert len(alerts) == 1 and "softmax and relu" in alerts[0] and alerts[0].startswith("seed 0")


@pytest.mark.slow
def test_parallel_processes_give_the_same_results_as_in_process(tmp_path):
    serial, parallel = tmp_path / "serial", tmp_path / "parallel"
    def argv(out, workers):
        args = tiny_argv(out, "eval.every=0")
        args[args.index("--workers") + 1] = workers
        return args

    assert run_main(main, argv(serial, "1")) == 0 and run_main(main, argv(parallel, "2")) == 0
    a, b = (json.loads((p / "results.json").read_text()) for p in (serial, parallel))
    assert a["summary"] == b["summary"] and len(b["runs"]) == 2


def test_comparison_reports_attention_probes_and_ntk_drift(tmp_path):
    out = tmp_path / "cmp"
    train = ("train_overrides=[model.hidden_size=16,model.num_layers=1,model.num_heads=2,train.steps=6,"
             "train.log_every=3,train.batch_size=16,sample.every=0,sample.num_samples=4,diagnostics.ntk_probe_size=2]")
    argv = ["--config", "configs/compare/digits.yaml", "--output-dir", str(out), "--workers", "1",
            "activations=[softmax,relu]", "num_seeds=1", "ntk_every=3", train, "eval.metrics=[bpd]",
            "eval.num_samples=8", "eval.likelihood_samples=2", "eval.ode_tol=1e-2", "eval.every=0"]
    assert run_main(main, argv) == 0
    results = json.loads((out / "results.json").read_text())
    for run in results["runs"]:
        steps, drift = zip(*run["ntk_drift"])
        assert steps == (0, 3, 6) and drift[0] == 0 and drift[-1] > 0  # relative to the kernel at step 0
        p = run["probes"]
        assert p["log_num_tokens"] == pytest.approx(math.log(16))  # 8x8 digits in 2x2 patches
        assert 0 < p["entropy"] <= p["log_num_tokens"] + 1e-9      # an entropy over 16 keys
        assert 1 / 16 - 1e-9 <= p["sparsity"] <= 1 and 0 <= p["sink_heads"] <= 1 and p["massive"] >= 1
        summary = results["diagnostics"][run["activation"]]
        assert summary["entropy"]["mean"] == pytest.approx(p["entropy"])
        assert summary["final_ntk_drift"]["mean"] == pytest.approx(drift[-1])
    report = (out / "report.md").read_text()
    assert "## Diagnostics" in report and "| softmax |" in report.split("## Diagnostics")[1]
    assert "](ntk_drift.png)" in report and (out / "ntk_drift.png").read_bytes()[:4] == b"\x89PNG"


def test_report_names_the_objective_the_runs_trained():
    from softdiff.studies.compare.report import objective_summary
    from softdiff.training import load_train_config
    flow = objective_summary(load_train_config("configs/digits.yaml", []).diffusion)
    assert flow.startswith("rectified flow") and "logit_normal (std 0.8)" in flow and "epsilon" not in flow
    eps = objective_summary(load_train_config("configs/digits.yaml", [
        "diffusion.objective=diffusion", "diffusion.prediction_type=v_prediction",
        "diffusion.timestep_density=uniform", "diffusion.loss_weighting=min_snr"]).diffusion)
    assert eps.startswith("v_prediction prediction, linear betas") and "min_snr" in eps


def test_a_flow_comparison_takes_its_floors_under_the_flow():
    """The evaluator of a comparison point takes the process its runs train: a flow toy comparison's exact NLL floor
    is the data noised by the flow at its start time, not by a DDPM's betas."""
    from softdiff.config import load_config
    from softdiff.evaluation.likelihood import FlowProcess
    from softdiff.studies.compare.config import CompareConfig
    from softdiff.studies.compare.runner import point_evaluator

    cfg = load_config(CompareConfig, "configs/compare/toy.yaml", [
        "train_overrides=[diffusion.objective=flow,diffusion.flow_shift=3.0]", "eval.likelihood_samples=16",
        "eval.num_samples=64", "eval.metrics=[nll]"])
    base = cfg.base_train_config(())
    evaluator = point_evaluator(base, cfg.eval)
    assert isinstance(evaluator.process, FlowProcess)
    assert evaluator.scheduler_config["shift"] == 3.0
    s = evaluator.process.t_min / evaluator.process.num_train_timesteps
    want = -float(evaluator.dataset.analytic.noised(1 - s, s).log_prob(evaluator.held_out).mean())
    assert evaluator.noise_floors()["nll"] == pytest.approx(want, rel=1e-12)
