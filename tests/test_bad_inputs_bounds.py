"""Bad inputs: sizes bounded before allocation, output paths tried for real, what a run
created taken back when an input error ends it, compare's tuning section checked up front, a duplicate YAML key.

Each CLI case runs as its own process (tests/fork_runner.py) and must exit 2 with one "error:" line naming the key,
without a traceback, leaving no output folder and nothing in the folder it ran in.
"""
import json
import os
import signal

import pytest

from softdiff.training import load_train_config, train

TINY_TOY = ["--config", "configs/toy2d.yaml", "data.name=8gaussians", "model.type=ScoreMLP", "model.hidden_size=16",
            "model.num_layers=1", "train.batch_size=32", "train.steps=2", "train.warmup_steps=1",
            "train.checkpoint_every=2", "sample.every=0", "sample.steps=2", "sample.num_samples=8"]
TINY_DIGITS = ["model.hidden_size=16", "model.num_layers=1", "model.num_heads=2", "train.steps=2",
               "train.batch_size=8", "train.checkpoint_every=2", "sample.every=0", "sample.steps=2",
               "sample.num_samples=4"]
# A compare that would finish in seconds if a bad input were missed (one arm, one seed, two steps).
TINY_COMPARE = ["activations=[relu]", "num_seeds=1", "workers=1", "eval.num_samples=16", "eval.steps=2",
                "train_overrides=[model.hidden_size=16,model.num_layers=1,train.steps=2,train.warmup_steps=1,"
                "train.checkpoint_every=2,sample.every=0,train.batch_size=32]", "--quiet"]
OUT = "{tmp}/out"  # an output folder that must still not exist after the case
GRID_60 = "[" + ",".join(f"{0.5 + i / 1000:g}" for i in range(60)) + "]"


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A finished tiny toy run (ScoreMLP) and a finished tiny digits run (ScoreTransformer, for probe)."""
    base = tmp_path_factory.mktemp("bounds_runs")
    toy = train(load_train_config("configs/toy2d.yaml", [*TINY_TOY[2:], f"output_dir={base / 'toy'}"]), quiet=True)
    img = train(load_train_config("configs/digits.yaml", [*TINY_DIGITS, f"output_dir={base / 'img'}"]), quiet=True)
    return {"run": toy, "img": img}


def _check_one_line(res, needle):
    lines = res.stderr.strip().splitlines()
    assert res.returncode == 2, (res.returncode, res.stderr[-1500:])
    assert "Traceback" not in res.stderr, res.stderr[-1500:]
    assert 1 <= len(lines) <= 3 and lines[-1].startswith("error: "), res.stderr[-1500:]
    assert needle in lines[-1], res.stderr[-1500:]
    return lines[-1]


def _log(entry, argv, line):
    if log := os.environ.get("SOFTDIFF_BAD_INPUT_LOG"):  # docs/reliability.md's table is made from this log
        with open(log, "a") as f:
            f.write(json.dumps({"entry": entry, "argv": argv, "code": 2, "error": line}) + "\n")


# (entry, args, needle): placeholders {tmp} (a fresh folder), {run} / {img} (finished toy / digits runs).
SIZE_CASES = [
    ("train.py", [*TINY_TOY, "train.steps=1000000000000", f"output_dir={OUT}"], "train.steps=1000000000000"),
    ("softdiff", ["sinks", "--output-dir", OUT, "vocab_size=100000000000"], "vocab_size=100000000000"),
    ("softdiff", ["sinks", "--output-dir", OUT, "embed_dim=1048576"], "embed_dim=1048576"),
    ("softdiff", ["sinks", "--output-dir", OUT, "embed_dim=4096", "num_layers=64"], "embed_dim=4096"),
    ("softdiff", ["sinks", "--output-dir", OUT, "num_train=5000000", "vocab_size=1000"], "num_train=5000000"),
    ("softdiff", ["ntk", "--output-dir", OUT, "widths=[64,1000000000000]"], "widths entry 1000000000000"),
    ("softdiff", ["ntk", "--output-dir", OUT, "n_train=1000000"], "n_train=1000000"),
    ("softdiff", ["regress", "--output-dir", OUT, "instances=[{{n: 100000000000, d: 5, kind: gaussian}}]"],
     "instances[0].n"),
    ("softdiff", ["regress", "--output-dir", OUT, "instances=[{{n: 1000000, d: 1000, kind: gaussian}}]"],
     "instances[0].d=1000"),
    ("softdiff", ["flow", "--output-dir", OUT, "steps=1000000000000"], "steps=1000000000000"),
    ("softdiff", ["compare", "--output-dir", OUT, *TINY_COMPARE, "tune.log_uniform.train.lr=[1e-4,1e-2]",
                  "tune.draws=100000000"], "tune.draws=100000000"),
    ("softdiff", ["compare", "--output-dir", OUT, *TINY_COMPARE, *(f"tune.grid.{key}={GRID_60}" for key in (
        "train.lr", "train.weight_decay", "train.ema_decay", "diffusion.sigma_data"))], "tune has 12960000 trials"),
    ("softdiff", ["compare", "--output-dir", OUT, *TINY_COMPARE, "budget.mode=time", "budget.seconds=1e12"],
     "budget.seconds"),
    ("softdiff", ["compare", "--output-dir", OUT, *TINY_COMPARE, "num_seeds=1000000000000"], "num_seeds"),
    ("softdiff", ["eval", "{run}", "num_samples=10000000000", "--output-dir", OUT], "num_samples=10000000000"),
    ("softdiff", ["eval", "{run}", "ode_max_steps=10000000000", "--output-dir", OUT], "ode_max_steps=10000000000"),
]

# Pseudo file systems: root may write anywhere by os.access, the real write fails.
OUTPUT_CASES = [
    ("train.py", [*TINY_TOY, "--output-dir", "/proc/softdiff-out"], "'/proc/softdiff-out' cannot be written"),
    ("softdiff", ["train", *TINY_TOY, "--output-dir", "/sys/softdiff-out"], "'/sys/softdiff-out' cannot be written"),
    ("softdiff", ["sample", "{run}", "--num-samples", "4", "--steps", "2", "--output-dir", "/proc/softdiff-out"],
     "--output-dir '/proc/softdiff-out' cannot be written"),
    ("softdiff", ["sample", "{run}", "--num-samples", "4", "--steps", "2", "--output", "/sys/softdiff-out/s.npz"],
     "--output '/sys/softdiff-out/s.npz' cannot be written"),
    ("softdiff", ["eval", "{run}", "num_samples=16", "steps=2", "--output-dir", "/proc/softdiff-out"],
     "--output-dir '/proc/softdiff-out' cannot be written"),
    ("softdiff", ["compare", *TINY_COMPARE, "--output-dir", "/sys/softdiff-out"], "'/sys/softdiff-out' cannot"),
    ("softdiff", ["ntk", "--preset", "quick", "steps=2", "widths=[4,8]", "--output-dir", "/proc/softdiff-out"],
     "--output-dir '/proc/softdiff-out' cannot be written"),
    ("softdiff", ["regress", "--preset", "quick", "--output-dir", "/sys/softdiff-out"], "'/sys/softdiff-out' cannot"),
    ("softdiff", ["flow", "steps=10", "--output-dir", "/proc/softdiff-out"], "'/proc/softdiff-out' cannot"),
    ("softdiff", ["sinks", "steps=1", "seeds=1", "num_train=64", "--output-dir", "/sys/softdiff-out"],
     "'/sys/softdiff-out' cannot"),
    ("softdiff", ["probe", "{img}", "--num-samples", "4", "--timesteps", "10", "--output-dir", "/proc/softdiff-out"],
     "--output-dir '/proc/softdiff-out' cannot be written"),
    # an empty path would write into the current folder (or be ignored)
    ("train.py", [*TINY_TOY, "--output-dir", ""], "is empty"),
    ("train.py", [*TINY_TOY, "output_dir=''"], "output_dir is empty"),
    ("softdiff", ["compare", *TINY_COMPARE, "--output-dir", ""], "is empty"),
    ("softdiff", ["ntk", "--preset", "quick", "steps=2", "widths=[4,8]", "output_dir=''"], "output_dir is empty"),
    ("softdiff", ["flow", "steps=10", "--output-dir", ""], "is empty"),
    ("softdiff", ["eval", "{run}", "num_samples=16", "steps=2", "output_dir=''"], "is empty"),
]

COMPARE_CASES = [
    ("softdiff", ["compare", "--output-dir", OUT, *TINY_COMPARE, "tune.grid=[1,2]"], "'tune.grid'"),
    ("softdiff", ["compare", "--output-dir", OUT, *TINY_COMPARE, "tune.grid.train.lr=[1e-3,1e-3]"],
     "tune.grid.train.lr=[0.001, 0.001] lists a value twice"),
    ("softdiff", ["compare", "--output-dir", OUT, *TINY_COMPARE, "seed_offset=-5"], "seed_offset=-5"),
    ("softdiff", ["compare", "--output-dir", OUT, *TINY_COMPARE, "tune.metric=w2"], "tune.metric=w2"),
    ("softdiff", ["compare", "--output-dir", OUT, *TINY_COMPARE, "tune.grid.train.lr=[1e-3]",
                  "tune.seed_offset=4294967295", "tune.seeds=2"], "tune.seed_offset + tune.seeds"),
]


def _ids(cases):
    seen = {}
    for entry, args, _ in cases:
        shown = [a for a in args if a not in TINY_TOY and a not in TINY_COMPARE and not a.startswith(("{", "--out"))]
        name = "-".join([entry.replace(".py", ""), *shown][:4])[:60]
        seen[name] = seen.get(name, 0) + 1
        yield name if seen[name] == 1 else f"{name}-{seen[name]}"


def _run_case(entry, args, needle, tmp_path, runs, forked):
    cwd = tmp_path / "cwd"  # where the command runs: an empty output path must not write here
    cwd.mkdir()
    fill = {"tmp": tmp_path, "run": runs["run"], "img": runs["img"]}
    argv = [a.format(**fill) for a in args]
    res = forked(entry, *argv, cwd=cwd, timeout=90)
    line = _check_one_line(res, needle)
    assert not (tmp_path / "out").exists(), "a bad input must not leave an output folder behind"
    assert not list(cwd.iterdir()), f"a bad input wrote into the current folder: {list(cwd.iterdir())}"
    _log(entry, argv, line)


@pytest.mark.parametrize("entry,args,needle", SIZE_CASES, ids=list(_ids(SIZE_CASES)))
def test_size_is_bounded_before_allocation(entry, args, needle, tmp_path, runs, forked):
    _run_case(entry, args, needle, tmp_path, runs, forked)


@pytest.mark.parametrize("entry,args,needle", OUTPUT_CASES, ids=list(_ids(OUTPUT_CASES)))
def test_output_path_is_tried_for_real_and_never_empty(entry, args, needle, tmp_path, runs, forked):
    _run_case(entry, args, needle, tmp_path, runs, forked)


@pytest.mark.parametrize("entry,args,needle", COMPARE_CASES, ids=list(_ids(COMPARE_CASES)))
def test_compare_tuning_section_is_checked_up_front(entry, args, needle, tmp_path, runs, forked):
    _run_case(entry, args, needle, tmp_path, runs, forked)


@pytest.mark.parametrize("extra,needle", [
    ([f"tune.grid.{key}={GRID_60}" for key in ("train.lr", "train.weight_decay", "train.ema_decay",
                                              "diffusion.sigma_data")], "tune has 12960000 trials"),
    (["tune.log_uniform.train.lr=[1e-4,1e-2]", "tune.draws=100000000"], "tune.draws=100000000"),
])
def test_tuning_trials_are_counted_before_any_is_made(extra, needle, monkeypatch):
    """The 1,000-trial limit is checked on the count: making 13 million grid points (or 10^8 draws) first would
    take minutes and gigabytes."""
    from softdiff.errors import ConfigError
    from softdiff.studies.compare.config import TuneConfig, load_compare_config

    monkeypatch.setattr(TuneConfig, "trials", lambda self: pytest.fail("the trials were made before being counted"))
    with pytest.raises(ConfigError, match=needle.replace("[", r"\[")):
        load_compare_config("configs/compare/toy.yaml", extra)


def test_duplicate_yaml_key_is_named(tmp_path, forked):
    config = tmp_path / "dup.yaml"
    config.write_text("data:\n  name: 8gaussians\ntrain:\n  steps: 5\n  lr: 0.001\n  steps: 6\n")
    res = forked("train.py", "--config", config, f"output_dir={tmp_path / 'out'}", timeout=60)
    line = _check_one_line(res, "'train.steps' twice (lines 4 and 6)")
    assert not (tmp_path / "out").exists()
    _log("train.py", ["--config", str(config), f"output_dir={tmp_path / 'out'}"], line)


def test_input_error_after_the_lock_takes_back_what_the_run_created(tmp_path, forked):
    """data.class_conditional on unlabelled data is found once the dataset is loaded, after the folder is locked:
    the new folder goes, and in a folder that already existed, only what the run added (.lock, data_index...)."""
    res = forked("train.py", *TINY_TOY, "data.class_conditional=true", f"output_dir={tmp_path / 'new' / 'run'}",
                 timeout=90)
    _check_one_line(res, "has no labels")
    assert not (tmp_path / "new").exists(), list((tmp_path / "new").rglob("*"))
    kept = tmp_path / "kept"
    kept.mkdir()
    (kept / "notes.txt").write_text("mine\n")
    res = forked("train.py", *TINY_TOY, "data.class_conditional=true", f"output_dir={kept}", timeout=90)
    _check_one_line(res, "has no labels")
    assert sorted(p.name for p in kept.iterdir()) == ["notes.txt"]


def test_compare_input_error_in_a_run_takes_back_the_compare_folder(tmp_path, forked):
    """A training key that only the run itself can check (labels of the data) fails inside the first run, after the
    compare folder was locked and its config written: neither folder may stay."""
    out = tmp_path / "out"
    args = ["compare", "--output-dir", out, *TINY_COMPARE]
    args = [a.replace("sample.every=0,", "sample.every=0,data.class_conditional=true,") for a in map(str, args)]
    res = forked("softdiff", *args, timeout=120)
    _check_one_line(res, "has no labels")
    assert not out.exists(), list(out.rglob("*"))


def _job_or_death(job):
    """A pool job that either returns a record or kills its own worker process (as the OOM killer would)."""
    if job["die"]:
        os.kill(os.getpid(), signal.SIGKILL)
    return {"activation": "relu", "seed": job["seed"], "metrics": {}, "history": [], "total_seconds": 0.0}


def test_dead_pool_worker_is_one_line(capsys):
    """A worker killed mid-job (the OOM killer) is one line and exit code 1, not a BrokenProcessPool traceback."""
    from softdiff.cli import run_main
    from softdiff.studies.compare.runner import execute

    jobs = [{"die": False, "seed": 0}, {"die": True, "seed": 1}, {"die": False, "seed": 2}]
    code = run_main(lambda argv: execute(jobs, 2, lambda *_: None, work=_job_or_death), [])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1, err
    assert err[0].startswith("error: a worker process died") and "run the same command again" in err[0], err
