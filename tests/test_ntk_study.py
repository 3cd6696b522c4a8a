"""The `softdiff ntk` width study: tasks, GD invariants, a short end-to-end study, config errors."""
import json

import pytest
import torch

from softdiff import cli
from softdiff.studies.ntk.study import (NTKStudyConfig, loglog_slope, make_task, run_one, train_full_batch)
from softdiff.errors import ConfigError
from softdiff.nets import TwoLayerNet

SMALL = ["tasks=[regression]", "widths=[32,256,2048]", "n_train=8", "n_test=16", "d_in=4",
         "n_inits=2"]


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """One short study through the real command line (shared by the tests below)."""
    out = tmp_path_factory.mktemp("ntk")
    code = cli.main(["ntk", "--preset", "quick", "--quiet", "--output-dir", str(out), *SMALL])
    assert code == 0
    return out, json.loads((out / "results.json").read_text())


def test_study_writes_report_json_and_plots(study):
    out, results = study
    for name in ("report.md", "drift_vs_width.png", "loss_vs_step.png", "spectra.png", "config.yaml"):
        assert (out / name).stat().st_size > 1000 or name.endswith(".yaml")
    report = (out / "report.md").read_text()
    assert "drift slope" in report and "| softmax | 2048 |" in report
    assert set(results["runs"]["regression"]) == {"softmax", "relu", "exp"}
    assert results["config"]["widths"] == [32, 256, 2048]


def test_drift_decreases_with_width(study):
    _, results = study
    for act, rows in results["runs"]["regression"].items():
        drift = [r["kernel_drift"] for r in rows]
        assert drift[0] > drift[1] > drift[2], (act, drift)
        assert results["summary"]["regression"][act]["drift_slope"] < -0.2
        assert results["summary"]["regression"][act]["drift_slope"] == pytest.approx(
            loglog_slope([32, 256, 2048], drift))


def test_wide_softmax_rate_matches_linearised_prediction(study):
    _, results = study
    wide = results["runs"]["regression"]["softmax"][-1]
    assert wide["rate_measured"] == pytest.approx(wide["rate_linearised"], abs=1e-3)
    assert wide["test_gap"] < 1e-3 and wide["train_gap"] < 1e-3
    # the recalled bound (c = 1/2) is an upper bound on the per-step contraction here
    assert wide["rate_measured"] <= wide["rate_bound"] + 1e-12
    assert len(wide["loss"]) == wide["steps"] + 1 and wide["reached_target"] and wide["loss"][-1] < wide["loss"][0]


def test_full_batch_gd_conserves_column_sum_for_softmax():
    """docs/theory.md 1.2: sum_r dL/dw_r = 0, so GD keeps sum_r w_r fixed (only for the softmax net)."""
    cfg = NTKStudyConfig(n_train=6, n_test=2, d_in=3, d_out=2)
    task = make_task("regression", cfg, seed=1)
    for act, conserved in [("softmax", True), ("relu", False)]:
        net = TwoLayerNet(3, 2, 16, coupled=False, activation=act, seed=2).double()
        before = net.W.detach().sum(1).clone()
        losses = train_full_batch(net, task.x_train, task.y_train, lr=0.01, steps=20)
        change = float((net.W.detach().sum(1) - before).abs().max())
        assert (change < 1e-12) if conserved else (change > 1e-6)
        assert losses[-1] < losses[0]


def test_score_task_follows_theory_layout():
    cfg = NTKStudyConfig(n_train=20, n_test=10, data_dim=3)
    task = make_task("score", cfg, seed=0)
    assert task.x_train.shape == (20, 4) and task.y_train.shape == (20, 3) and task.x_test.shape == (10, 4)
    norms = torch.cat([task.x_train, task.x_test]).norm(dim=1)
    assert norms.max() == pytest.approx(1.0) and (task.x_train[:, -1] > 0).all()   # time column kept, positive
    again = make_task("score", cfg, seed=0)
    assert torch.equal(task.x_train, again.x_train)


def test_run_one_is_deterministic_and_uses_stable_step():
    cfg = NTKStudyConfig(n_train=6, n_test=4, d_in=3, steps=5)
    task = make_task("regression", cfg, seed=3)
    a, b = run_one(task, "exp", 16, cfg, seed=4), run_one(task, "exp", 16, cfg, seed=4)
    assert a["loss"] == b["loss"]
    assert a["effective_lr"] * a["lambda_max"] == pytest.approx(2 * cfg.lr_fraction)


@pytest.mark.parametrize("override, message", [
    ("activations=[softmax,tanh]", "activations='tanh' is not valid"),
    ("widths=[64,129]", "widths entry 129"),
    ("lr_fraction=1.5", "lr_fraction=1.5"),
    ("bogus=1", "unknown config key 'bogus'"),
    ("tasks=[images]", "tasks='images' is not valid"),
])
def test_bad_config_exits_2_with_one_line(override, message, capsys, tmp_path):
    code = cli.main(["ntk", "--preset", "quick", "--quiet", "--output-dir", str(tmp_path), override])
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert "Traceback" not in err


def test_unknown_task_name_lists_choices():
    with pytest.raises(ValueError, match="regression, score"):
        make_task("mnist", NTKStudyConfig(), seed=0)
    with pytest.raises(ConfigError, match="score_t1"):
        NTKStudyConfig(score_t0=1.0, score_t1=0.5).validate()
