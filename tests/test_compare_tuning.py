"""Per-arm tuning, equal-time budgets and scaling sweeps of ``softdiff compare``: the orchestration on a synthetic
objective (each run's metric is a known function of its settings), and real tiny trainings for resuming."""
import json
import math
from pathlib import Path

import numpy as np
import pytest

from softdiff.cli import run_main
from softdiff.evaluation.run_eval import VECTOR_METRICS
from softdiff.studies.compare import budget as budget_module
from softdiff.studies.compare import runner
from softdiff.commands.compare import main
from softdiff.studies.compare.config import TuneConfig, load_compare_config
from softdiff.studies.compare.tuning import select_best
from softdiff.training import load_train_config

TINY = ("train_overrides=[model.hidden_size=16,model.num_layers=1,train.steps=40,train.log_every=10,"
        "train.batch_size=64,sample.every=0,sample.num_samples=8]")
TINY_EVAL = ["eval.every=0", "eval.num_samples=64", "eval.likelihood_samples=16", "eval.ode_tol=1e-3",
             "eval.score_timesteps=[50,500]"]


def config(out, *extra):
    return load_compare_config("configs/compare/toy.yaml", [f"output_dir={out}", "workers=1", TINY, *TINY_EVAL,
                                                            *extra])


class FakeRuns:
    """Stands in for ``run_one``: a run's metrics are ``objective(activation, train_config, seed)``; records
    every job it is given."""

    def __init__(self, objective):
        self.objective, self.jobs = objective, []

    def __call__(self, job):
        self.jobs.append(job)
        cfg = load_train_config(job["base_config"], job["overrides"])
        run_dir = Path(job["run_dir"])
        run_dir.mkdir(parents=True, exist_ok=True)
        np.save(run_dir / "eval_samples.npy", np.zeros((4, 2), dtype=np.float32))
        value = self.objective(job["activation"], cfg, job["seed"])
        return {"activation": job["activation"], "seed": job["seed"], "run_dir": str(run_dir),
                "settings": job["settings"], "steps": cfg.train.steps, "metrics": {m: value for m in VECTOR_METRICS},
                "history": [], "loss": [[cfg.train.steps, 1.0]], "ntk_drift": [], "probes": None,
                "train_seconds": 0.01 * cfg.train.steps, "total_seconds": 0.0}


BEST_LR = {"softmax": 3e-3, "relu": 1e-2}


def lr_objective(act, cfg, seed):
    """Lowest (best) at BEST_LR[act]; a small seed effect that does not move the optimum."""
    return (math.log10(cfg.train.lr) - math.log10(BEST_LR[act])) ** 2 + 0.01 * (seed % 3)


def test_the_tuner_picks_each_arms_known_best_lr_and_trains_the_final_seeds_there(tmp_path, monkeypatch):
    fake = FakeRuns(lr_objective)
    monkeypatch.setattr(runner, "run_one", fake)
    cfg = config(tmp_path, "activations=[softmax,relu]", "num_seeds=3", "tune.grid.train.lr=[1e-3,3e-3,1e-2,3e-2]",
                 "tune.seeds=2", "tune.budget=0.5")
    runner.run_comparison(cfg, log=lambda *_: None)
    results = json.loads((tmp_path / "results.json").read_text())
    for act, lr in BEST_LR.items():
        assert results["tuning"][act]["best"] == {"train.lr": lr}
        assert [t["settings"]["train.lr"] for t in results["tuning"][act]["trials"]] == [1e-3, 3e-3, 1e-2, 3e-2]
        finals = [r for r in results["runs"] if r["activation"] == act]
        assert [r["seed"] for r in finals] == [0, 1, 2] and all(r["settings"] == {"train.lr": lr} for r in finals)
    tuning_jobs = [j for j in fake.jobs if j["trial"]]
    assert len(tuning_jobs) == 2 * 4 * 2 and {j["seed"] for j in tuning_jobs} == {1000, 1001}  # apart from finals
    assert all("train.steps=20" in j["overrides"] for j in tuning_jobs)                        # half the budget
    # Selection saw only the validation metric: its own reference draw and sampling seed.
    assert all(j["eval"]["metrics"] == ["w2"] and j["eval"]["reference_seed"] != cfg.eval.reference_seed
               and j["eval"]["seed"] == cfg.tune.sampling_seed for j in tuning_jobs)
    report = (tmp_path / "report.md").read_text()
    assert "## Tuning" in report and "beyond" not in report  # both optima lie inside the grid


def test_a_best_setting_at_the_edge_of_the_grid_is_flagged(tmp_path, monkeypatch):
    monkeypatch.setattr(runner, "run_one", FakeRuns(lr_objective))
    cfg = config(tmp_path, "activations=[softmax,relu]", "num_seeds=1", "tune.grid.train.lr=[1e-3,3e-3,5e-3]")
    runner.run_comparison(cfg, log=lambda *_: None)
    report = (tmp_path / "report.md").read_text()
    assert "relu chose the largest train.lr of the grid (0.005)" in report and "softmax chose" not in report


def test_ties_go_to_the_trial_listed_first_and_failed_trials_are_never_chosen():
    assert select_best([2.0, 1.0, 1.0, 3.0], higher_is_better=False) == 1
    assert select_best([2.0, 3.0, 3.0], higher_is_better=True) == 1
    assert select_best([math.nan, 5.0, math.inf], higher_is_better=False) == 1
    assert select_best([math.nan, None], higher_is_better=False) is None


def test_tied_trials_pick_the_same_setting_on_every_run(tmp_path, monkeypatch):
    flat = lambda act, cfg, seed: 1.0 if cfg.train.lr in (1e-3, 1e-2) else 2.0  # noqa: E731
    picks = []
    for order in ("[1e-2,1e-3,3e-2]", "[1e-2,1e-3,3e-2]", "[1e-3,1e-2,3e-2]"):
        monkeypatch.setattr(runner, "run_one", FakeRuns(flat))
        out = tmp_path / f"run{len(picks)}"
        runner.run_comparison(config(out, "activations=[relu]", "num_seeds=1", f"tune.grid.train.lr={order}"),
                              log=lambda *_: None)
        picks.append(json.loads((out / "results.json").read_text())["tuning"]["relu"]["best"]["train.lr"])
    assert picks == [1e-2, 1e-2, 1e-3]  # the first listed of the tied pair, every time


def test_log_uniform_draws_are_seeded_rounded_and_inside_their_bounds():
    tune = TuneConfig(grid={"train.warmup_steps": [0, 10]}, log_uniform={"train.lr": [1e-4, 1e-2]}, draws=5,
                      draw_seed=3)
    trials = tune.trials()
    assert len(trials) == 10 and trials == TuneConfig(**{**tune.__dict__}).trials()
    assert [t["train.warmup_steps"] for t in trials] == [0] * 5 + [10] * 5
    lrs = [t["train.lr"] for t in trials[:5]]
    assert lrs == [t["train.lr"] for t in trials[5:]] and all(1e-4 <= v <= 1e-2 for v in lrs)
    assert all(float(f"{v:.3g}") == v for v in lrs) and len(set(lrs)) == 5
    assert TuneConfig(log_uniform={"train.lr": [1e-4, 1e-2]}, draws=5, draw_seed=4).trials() != trials[:5]


def test_a_killed_tuning_run_resumes_without_retraining_finished_trials(tmp_path, monkeypatch):
    import softdiff.training

    real_train, calls = softdiff.training.train, []

    def killed_at_third(cfg, **kw):
        calls.append(cfg.output_dir)
        if len(calls) == 3:
            raise KeyboardInterrupt  # the process is stopped while the third trial trains
        return real_train(cfg, **kw)

    monkeypatch.setattr(softdiff.training, "train", killed_at_third)
    cfg = config(tmp_path, "activations=[relu]", "num_seeds=1", "tune.grid.train.lr=[1e-3,3e-3,1e-2]",
                 "eval.metrics=[w2]")
    with pytest.raises(KeyboardInterrupt):
        runner.run_comparison(cfg, log=lambda *_: None)
    first = list(calls)
    calls.clear()
    monkeypatch.setattr(softdiff.training, "train", lambda c, **kw: (calls.append(c.output_dir), real_train(c, **kw))[1])
    log = []
    runner.run_comparison(cfg, log=log.append)
    assert len(first) == 3 and calls == [first[2], str(tmp_path / "runs" / "relu-seed0")]
    assert sum("(reused)" in line for line in log if line.startswith("[tune")) == 2
    results = json.loads((tmp_path / "results.json").read_text())
    assert len(results["tuning"]["relu"]["trials"]) == 3
    assert all(math.isfinite(t["score"]) for t in results["tuning"]["relu"]["trials"])


def test_results_json_carries_intervals_paired_differences_tuning_and_the_shared_table(tmp_path, monkeypatch):
    monkeypatch.setattr(runner, "run_one", FakeRuns(lr_objective))
    cfg = config(tmp_path, "activations=[softmax,relu]", "num_seeds=3", "tune.grid.train.lr=[3e-3,1e-2]",
                 "tune.report_shared=true")
    runner.run_comparison(cfg, log=lambda *_: None)
    r = json.loads((tmp_path / "results.json").read_text())
    assert set(r) >= {"runs", "summary", "paired", "winners", "tuning", "noise_floor", "setup", "shared"}
    s = r["summary"]["relu"]["w2"]
    assert s["mean"] == pytest.approx(0.01) and s["ci95"] == pytest.approx([0.0, 0.02])  # seeds add 0, .01, .02
    # Tuned, both arms sit at their optimum: equal per seed, so the paired difference is exactly zero.
    assert r["paired"]["relu"]["w2"]["diff"] == pytest.approx(0.0)
    assert r["paired"]["softmax"]["w2"]["against"] == "softmax"
    assert r["tuning"]["softmax"]["best"] == {"train.lr": 3e-3} and len(r["tuning"]["relu"]["trials"]) == 2
    # At the shared lr both arms are off their optimum by a known amount on every seed.
    lr0, shared = cfg.base_train_config().train.lr, r["shared"]
    gap = {act: math.log10(lr0 / lr) ** 2 for act, lr in BEST_LR.items()}
    best = min(gap, key=gap.get)
    other = "relu" if best == "softmax" else "softmax"
    assert shared["paired"][other]["w2"]["diff"] == pytest.approx(gap[other] - gap[best])
    assert shared["paired"][other]["w2"]["clear"] is True and shared["winners"]["w2"]["winner"] == best
    assert {x["run_dir"].split("/")[-2] for x in shared["runs"]} == {"runs_shared"}
    report = (tmp_path / "report.md").read_text()
    assert "At the shared setting" in report and "Paired differences" in report and "95% bootstrap" in report


def test_equal_time_budgets_give_each_arm_the_steps_its_speed_allows(tmp_path, monkeypatch):
    per_step = {"softmax": 0.02, "relu": 0.005}
    timed = []

    def probe(base_config, overrides, probe_steps, threads, folder):
        act = next(o.split("=")[1] for o in overrides if o.startswith("model.activation="))
        timed.append(act)
        return per_step[act]

    monkeypatch.setattr(budget_module, "seconds_per_step", probe)
    monkeypatch.setattr(runner, "run_one", FakeRuns(lambda act, cfg, seed: 1.0))
    argv = ["activations=[softmax,relu]", "num_seeds=2", "budget.mode=time", "budget.seconds=0.5",
            "tune.grid.train.lr=[1e-3,1e-2]", "tune.budget=0.5"]
    runner.run_comparison(config(tmp_path, *argv), log=lambda *_: None)
    r = json.loads((tmp_path / "results.json").read_text())
    steps = {x["activation"]: x["steps"] for x in r["runs"]}
    assert steps == {"softmax": 25, "relu": 100}
    assert {t["steps"] for t in r["tuning"]["relu"]["trials"]} == {50}  # half the seconds
    assert sorted(timed) == ["relu", "softmax"]  # lr does not change the cost of a step: one timing per arm
    assert r["budget"] == {"softmax": {"seconds_per_step": 0.02}, "relu": {"seconds_per_step": 0.005}}
    # A resumed comparison reads the timings back instead of timing again.
    monkeypatch.setattr(budget_module, "seconds_per_step", lambda *a, **k: pytest.fail("timed again"))
    runner.run_comparison(config(tmp_path, *argv), log=lambda *_: None)
    assert "Equal time" in (tmp_path / "report.md").read_text()


def test_a_real_step_timing_is_positive_and_leaves_no_folder(tmp_path):
    overrides = ["data.name=8gaussians", "model.type=ScoreMLP", "model.hidden_size=16", "model.num_layers=1",
                 "train.batch_size=32"]
    seconds = budget_module.seconds_per_step("configs/toy2d.yaml", overrides, 3, 1, tmp_path / "probe")
    assert 0 < seconds < 5 and not (tmp_path / "probe").exists()


def test_a_width_sweep_runs_the_comparison_at_every_value(tmp_path, monkeypatch):
    fake = FakeRuns(lambda act, cfg, seed: 1.0 / cfg.model["hidden_size"] + (0.5 if act == "relu" else 0.0) + 0.01 * seed)
    monkeypatch.setattr(runner, "run_one", fake)
    runner.run_comparison(config(tmp_path, "activations=[softmax,relu]", "num_seeds=2", "sweep.key=model.hidden_size",
                                 "sweep.values=[8,32]"), log=lambda *_: None)
    r = json.loads((tmp_path / "results.json").read_text())
    assert r["sweep"]["key"] == "model.hidden_size" and [p["value"] for p in r["sweep"]["points"]] == [8, 32]
    for point in r["sweep"]["points"]:
        assert point["summary"]["softmax"]["w2"]["mean"] == pytest.approx(1 / point["value"] + 0.005)
        assert point["paired"]["relu"]["w2"]["diff"] == pytest.approx(0.5)
    assert r["summary"] == r["sweep"]["points"][-1]["summary"]  # the top level is the last sweep value
    assert sorted({x["sweep_point"] for x in r["runs"]}) == ["model.hidden_size=32", "model.hidden_size=8"]
    assert all(f"/points/{x['sweep_point']}/runs/" in x["run_dir"] for x in r["runs"])
    assert (tmp_path / "scaling.png").read_bytes()[:4] == b"\x89PNG"
    report = (tmp_path / "report.md").read_text()
    assert "](scaling.png)" in report and "### model.hidden_size=8" in report
    assert "](points/model.hidden_size=8/samples.png)" in report


@pytest.mark.parametrize("extra,needle", [
    (["tune.grid.train.seed=[1,2]"], "tune.grid.train.seed: the runner sets train.seed"),
    (["tune.grid.train.lr=3e-3"], "tune.grid.train.lr must be a non-empty list"),
    (["tune.grid.train.lr=[-1.0]"], "train.lr"),
    (["tune.grid.train.lrr=[1e-3]"], "train.lrr"),
    (["tune.log_uniform.train.lr=[1e-2,1e-4]", "tune.draws=3"], "0 < low < high"),
    (["tune.log_uniform.train.lr=[1e-4,1e-2]"], "tune.draws=0 must be at least 1"),
    (["tune.grid.train.lr=[1e-3]", "tune.budget=0"], "tune.budget=0"),
    (["tune.draws=-1"], "tune.draws=-1 is set but tune.log_uniform is empty"),
    (["tune.report_shared=true"], "tune.report_shared=true needs trials"),
    (["tune.grid.train.lr=[1e-3]", "tune.seed_offset=0"], "tune.seed_offset=0"),
    (["tune.grid.train.lr=[1e-3]", "tune.metric=fid"], "tune.metric=fid does not apply"),
    (["tune.metric=fidd"], "tune.metric='fidd' is not valid"),
    (["budget.mode=wall"], "budget.mode"),
    (["budget.mode=time"], "budget.seconds=0.0 must be a positive"),
    (["sweep.key=model.width_mul", "sweep.values=[1,2]"], "model.width_mul"),
    (["sweep.key=model.hidden_size"], "sweep.values is empty"),
    (["sweep.key=output_dir", "sweep.values=[a]"], "sweep.key=output_dir"),
    (["sweep.key=model.hidden_size", "sweep.values=[8,8]"], "lists a value twice"),
    (["sweep.key=model.hidden_size", "sweep.values=[8,-1]"], "model.hidden_size"),
])
def test_bad_tuning_budget_and_sweep_settings_are_one_line_with_exit_2_before_any_run(tmp_path, extra, needle,
                                                                                      capsys):
    argv = ["--config", "configs/compare/toy.yaml", "--output-dir", str(tmp_path), "--workers", "1", "num_seeds=1",
            TINY, *TINY_EVAL, *extra]
    assert run_main(main, argv) == 2
    err = capsys.readouterr().err
    assert needle in err and err.startswith("error: ") and err.count("\n") == 1
    assert not (tmp_path / "runs").exists() and not (tmp_path / "tune").exists()
