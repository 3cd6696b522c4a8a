import json
import warnings
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from softdiff.cli import run_main
from softdiff.pipeline import SoftdiffPipeline
from softdiff.training import load_train_config, train
from softdiff.commands.train import main as train_main
from softdiff.errors import ConfigError
from softdiff.training.callbacks import TrainerCallback
from softdiff.training.trainer import TrainingError

TOY = "configs/toy2d.yaml"
TINY = ["--config", TOY, "data.name=8gaussians", "model.type=ScoreMLP", "model.hidden_size=16", "model.num_layers=1",
        "train.batch_size=32", "train.log_every=5", "train.checkpoint_every=10", "train.warmup_steps=2",
        "sample.every=0", "sample.steps=2", "sample.num_samples=8"]


def tiny(tmp_path, *extra):
    overrides = [o for o in TINY if o not in ("--config", TOY)]
    return load_train_config(TOY, [*overrides, f"output_dir={tmp_path}", *extra])


def weights(path: Path) -> dict:
    return load_file(str(path / "model" / "diffusion_pytorch_model.safetensors"))


@pytest.mark.parametrize("argv,needle", [
    (["train.stepz=5"], "train.stepz"),
    (["train.steps=abc"], "train.steps"),
    (["model.activation=swish2"], "softmax, relu"),
    (["data.name=imagenet"], "8gaussians"),
    (["train.steps=0"], "train.steps=0 must be positive"),
    (["--config", "configs/nope.yaml"], "configs/nope.yaml"),
    (["data.name=8gaussians"], "ScoreTransformer needs an image dataset"),
])
def test_config_errors_are_one_sentence_with_exit_2(argv, needle, capsys):
    assert run_main(train_main, argv) == 2
    err = capsys.readouterr().err
    assert needle in err and err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err


def test_cli_entry_point_has_no_traceback(run_script):
    res = run_script("train.py", "model.activation=nope", timeout=120)
    assert res.returncode == 2 and "Traceback" not in res.stderr and "model.activation" in res.stderr


def test_accelerate_launch_mixed_precision_reaches_the_run(tmp_path, run_script, monkeypatch, capsys):
    # What `accelerate launch --mixed_precision bf16` sets; its own process: accelerate's state outlives a run.
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "bf16")
    res = run_script("train.py", *TINY, "train.steps=2", f"output_dir={tmp_path / 'run'}", "--quiet", timeout=300,
                     env_extra={"OMP_NUM_THREADS": "1"})
    assert res.returncode == 0, res.stderr[-2000:]
    assert load_train_config(tmp_path / "run" / "config.yaml").train.mixed_precision == "bf16"
    # A config naming another precision than the launcher's is refused before anything runs.
    assert run_main(train_main, [*TINY, "train.mixed_precision=fp16", f"output_dir={tmp_path / 'other'}"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "train.mixed_precision=fp16" in err and "bf16" in err
    assert not (tmp_path / "other").exists()


def test_run_directory_layout_and_metrics(tmp_path):
    cfg = tiny(tmp_path, "train.steps=10", "sample.every=5")
    out = train(cfg, quiet=True)
    for name in ("config.yaml", "metrics.jsonl", "model/model_index.json", "model/model/config.json",
                 "model_ema/model/config.json", "model/scheduler/scheduler_config.json", "samples/step-5.png",
                 "samples/step-10.png", "checkpoints/checkpoint-10"):
        assert (out / name).exists(), name
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [5, 10]
    assert {"loss", "lr", "samples_per_s", "wall_time"} <= set(records[0])
    # The resolved config reloads to the same values, the overrides included.
    reloaded = load_train_config(out / "config.yaml")
    assert reloaded == cfg and (reloaded.model["hidden_size"], reloaded.data.name) == (16, "8gaussians")
    # EMA weights differ from the live ones, and EMA state is not written into config.json (diffusers trap).
    assert any(not torch.equal(a, b) for a, b in zip(weights(out / "model").values(),
                                                     weights(out / "model_ema").values()))
    assert "decay" not in json.loads((out / "model_ema/model/config.json").read_text())


def test_resume_is_bitwise_exact(tmp_path):
    straight = train(tiny(tmp_path / "a", "train.steps=20"), quiet=True)
    split_cfg = tiny(tmp_path / "b", "train.steps=20")
    train(split_cfg, quiet=True, stop_after=10)
    assert not (tmp_path / "b/model").exists() and (tmp_path / "b/checkpoints/checkpoint-10").is_dir()
    split = train(split_cfg, resume="latest", quiet=True)
    for sub in ("model", "model_ema"):
        a, b = weights(straight / sub), weights(split / sub)
        assert all(torch.equal(a[k], b[k]) for k in a), sub
    steps = [json.loads(line)["step"] for line in (split / "metrics.jsonl").read_text().splitlines()]
    assert steps == [5, 10, 15, 20]  # no duplicated lines after the resume


def test_resume_skips_incomplete_and_corrupt_checkpoints(tmp_path):
    cfg = tiny(tmp_path, "train.steps=30", "train.checkpoints_total_limit=5")
    train(cfg, quiet=True, stop_after=20)
    ckpts = tmp_path / "checkpoints"
    assert sorted(p.name for p in ckpts.iterdir()) == ["checkpoint-10", "checkpoint-20"]
    (ckpts / "checkpoint-20" / "model.safetensors").write_bytes(b"garbage")          # corrupt
    (ckpts / ".tmp-checkpoint-25").mkdir()                                             # killed mid-save
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        train(cfg, resume="latest", quiet=True)
    assert any("checkpoint-20" in str(w.message) for w in caught)
    assert json.loads((tmp_path / "train_summary.json").read_text())["finished"]
    # Resumed from step 10: the metrics restart after 10.
    steps = [json.loads(line)["step"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert steps == [5, 10, 15, 20, 25, 30]


def test_checkpoint_rotation_keeps_the_newest(tmp_path):
    train(tiny(tmp_path, "train.steps=40", "train.checkpoints_total_limit=2"), quiet=True)
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["checkpoint-30", "checkpoint-40"]


def poison_loss(monkeypatch, is_nan):
    """Make the training loss NaN on the calls where ``is_nan(call_number)`` holds."""
    from softdiff.diffusion.objective import Objective

    real, calls = Objective.loss, {"n": 0}

    def poisoned(self, *args):
        calls["n"] += 1
        loss = real(self, *args)
        return loss * float("nan") if is_nan(calls["n"]) else loss

    monkeypatch.setattr(Objective, "loss", poisoned)


def test_nonfinite_loss_stops_without_saving(tmp_path, monkeypatch):
    poison_loss(monkeypatch, lambda n: n > 12)
    with pytest.raises(TrainingError, match="non-finite at step 13"):
        train(tiny(tmp_path, "train.steps=30"), quiet=True)
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == ["checkpoint-10"]
    assert not (tmp_path / "model").exists()


def test_nonfinite_loss_skip_mode_leaves_the_weights_unchanged(tmp_path, monkeypatch):
    # Steps 4 and 10 are skipped. The last step being skipped, the saved weights must be checkpoint-9's exactly:
    # neither the optimizer (whose moments and weight decay move weights even at zero gradient) nor the EMA stepped.
    poison_loss(monkeypatch, lambda n: n in (4, 10))
    out = train(tiny(tmp_path, "train.steps=10", "train.checkpoint_every=9", "train.on_nonfinite=skip"), quiet=True)
    assert json.loads((out / "train_summary.json").read_text())["finished"]
    checkpoint = out / "checkpoints" / "checkpoint-9"
    live, saved = load_file(str(checkpoint / "model.safetensors")), weights(out / "model")
    assert live.keys() == saved.keys() and all(torch.equal(live[k], saved[k]) for k in live)
    ema, saved_ema = load_file(str(checkpoint / "ema.safetensors")), weights(out / "model_ema")
    assert ema and all(torch.equal(ema[k], saved_ema[k]) for k in ema)
    assert any(not torch.equal(live[k], ema[k]) for k in ema)  # the two comparisons are not the same one


class WeightTrace(TrainerCallback):
    """Records a fingerprint of the live weights after every step."""

    def __init__(self):
        self.sums = {}

    def due(self, step):
        return True

    def on_step_end(self, state):
        self.sums[state.step] = float(sum(p.detach().double().sum() for p in state.model.parameters()))


@pytest.mark.parametrize("accum,call", [(2, 3), (3, 5)])
def test_a_skipped_micro_batch_keeps_gradient_accumulation_in_step(accum, call, tmp_path, monkeypatch):
    # The poisoned call is a micro-batch of step 2 before its last. A step cut short must not shift accelerate's
    # count of micro-batches, or the optimizer stops stepping for good while the LR schedule and the EMA go on.
    poison_loss(monkeypatch, lambda n: n == call)
    trace = WeightTrace()
    train(tiny(tmp_path, "train.steps=6", f"train.grad_accum={accum}", "train.on_nonfinite=skip"), quiet=True,
          callbacks=[trace])
    assert sorted(trace.sums) == [1, 3, 4, 5, 6]
    after = [trace.sums[s] for s in (3, 4, 5, 6)]
    assert len(set(after)) == 4, after


def test_sigkill_during_checkpoint_save_leaves_previous_usable(tmp_path, run_script):
    script = tmp_path / "killer.py"
    script.write_text(f"""
import os, signal, sys
from accelerate import Accelerator
real = Accelerator.save_state
def dying_save(self, output_dir=None, **kw):
    if output_dir.endswith('-20'):
        os.makedirs(output_dir, exist_ok=True)
        open(os.path.join(output_dir, 'model.safetensors'), 'wb').write(b'half')
        os.kill(os.getpid(), signal.SIGKILL)
    return real(self, output_dir, **kw)
Accelerator.save_state = dying_save
from softdiff.cli import run_main
from softdiff.commands.train import main
sys.exit(run_main(main, {[*TINY, 'train.steps=30', f'output_dir={tmp_path / "run"}', '--quiet']!r}))
""")
    res = run_script(script)
    assert res.returncode == -9
    ckpts = tmp_path / "run" / "checkpoints"
    assert (ckpts / "checkpoint-10").is_dir() and not (ckpts / "checkpoint-20").exists()
    res = run_script("train.py", *TINY, "train.steps=30", f"output_dir={tmp_path / 'run'}", "--resume", "latest",
                     "--quiet")
    assert res.returncode == 0, res.stderr
    assert json.loads((tmp_path / "run" / "train_summary.json").read_text())["finished"]


def test_sample_cli_writes_npz_and_picture(tmp_path, run_script):
    import numpy as np

    out = train(tiny(tmp_path / "run", "train.steps=5"), quiet=True)
    res = run_script("sample.py", out / "model", "--scheduler", "ddim", "--steps", "3", "--num-samples", "9",
                     "--seed", "0", "--output", tmp_path / "s.npz")
    assert res.returncode == 0, res.stderr
    samples = np.load(tmp_path / "s.npz")["samples"]
    assert samples.shape == (9, 2) and np.isfinite(samples).all() and (tmp_path / "s.png").is_file()
    again = run_script("sample.py", out / "model", "--scheduler", "ddim", "--steps", "3", "--num-samples", "9",
                       "--seed", "0", "--output", tmp_path / "t.npz")
    assert again.returncode == 0 and np.array_equal(np.load(tmp_path / "t.npz")["samples"], samples)  # deterministic
    bad = run_script("sample.py", out / "model", "--steps", "0", "--output", tmp_path / "u.npz")
    assert bad.returncode == 2 and "steps=0 must be positive" in bad.stderr and "Traceback" not in bad.stderr


@pytest.mark.slow
def test_two_process_cpu_ddp_matches_one_process(tmp_path, run_script):
    args = [*TINY, "train.steps=10", "train.checkpoint_every=5", "--quiet", f"output_dir={tmp_path / 'ddp'}"]
    ddp = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "train.py", *args]
    # Split in two invocations: the second resumes both processes from checkpoint-5 (one RNG file per process).
    res = run_script(*ddp, "--stop-after", "5", env_extra={"OMP_NUM_THREADS": "1"})
    assert res.returncode == 0, res.stderr[-2000:]
    assert sorted(p.name for p in (tmp_path / "ddp/checkpoints/checkpoint-5").glob("random_states_*")) == [
        "random_states_0.pkl", "random_states_1.pkl"]
    res = run_script(*ddp, "--resume", "latest", env_extra={"OMP_NUM_THREADS": "1"})
    assert res.returncode == 0, res.stderr[-2000:]
    summary = json.loads((tmp_path / "ddp" / "train_summary.json").read_text())
    assert summary["num_processes"] == 2
    a, b = summary["rank_weight_checksums"]
    assert a == b  # both ranks end with identical weights
    single = train(tiny(tmp_path / "one", "train.steps=10"), quiet=True)
    w1, w2 = weights(single / "model"), weights(tmp_path / "ddp" / "model")
    # Same global batch per step: the two-process run equals the one-process run up to float reduction order.
    bad = {k: (w1[k] - w2[k]).abs().max().item() for k in w1 if not torch.allclose(w1[k], w2[k], rtol=1e-5, atol=1e-6)}
    assert not bad


@pytest.mark.slow
def test_compile_matches_eager_to_float_tolerance(tmp_path):
    # torch.compile (inductor, CPU here) may reorder float ops: equal to float tolerance, not bitwise.
    eager = train(tiny(tmp_path / "eager", "train.steps=10"), quiet=True)
    compiled = train(tiny(tmp_path / "compiled", "train.steps=10", "train.compile=true"), quiet=True)
    a, b = weights(eager / "model"), weights(compiled / "model")
    assert all(torch.allclose(a[k], b[k], rtol=1e-4, atol=1e-5) for k in a)


def test_image_run_and_class_conditional_sampling(tmp_path, run_script):
    import numpy as np

    cfg = load_train_config("configs/digits.yaml", [
        f"output_dir={tmp_path}", "model.hidden_size=16", "model.num_layers=1", "model.num_heads=2",
        "data.class_conditional=true", "train.steps=3", "train.batch_size=16", "sample.steps=2",
        "sample.num_samples=4"])
    out = train(cfg, quiet=True)
    assert (out / "samples" / "step-3.png").is_file()
    res = run_script("sample.py", out, "--no-ema", "--steps", "2", "--num-samples", "5", "--class-label", "7",
                     "--output", tmp_path / "s.npz")
    assert res.returncode == 0, res.stderr
    x = np.load(tmp_path / "s.npz")["samples"]
    assert x.shape == (5, 1, 8, 8) and x.min() >= 0 and x.max() <= 1
    bad = run_script("sample.py", out, "--class-label", "12", "--output", tmp_path / "t.npz")
    assert bad.returncode == 2 and "labels 0..9" in bad.stderr
    # The label reaches the model: another class gives other samples from the same noise.
    pipe = SoftdiffPipeline.from_pretrained(out, use_ema=False)
    draw = lambda label: pipe(batch_size=5, num_inference_steps=2, generator=torch.Generator().manual_seed(0),
                              class_labels=label, progress=False).samples
    seven = draw(7)
    assert torch.allclose(torch.from_numpy(x), seven, atol=1e-5)  # sample.py draws what the pipeline draws
    assert not torch.equal(draw(2), seven)


def test_ntk_drift_is_recorded_during_training(tmp_path):
    from softdiff.studies.training_callbacks import callbacks_from_config

    cfg = tiny(tmp_path, "train.steps=10", "callbacks.ntk_drift.every=5", "callbacks.ntk_drift.probe_size=4")
    with pytest.raises(ConfigError, match="callbacks.ntk_drift is set but no callback"):  # asked for, not done
        train(cfg, quiet=True)
    out = train(cfg, quiet=True, callbacks=callbacks_from_config(cfg))
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    drift = {r["step"]: r for r in records if "ntk_drift" in r}
    assert sorted(drift) == [0, 5, 10]
    assert drift[0]["ntk_drift"] == 0 and drift[0]["weight_movement"] == 0
    assert 0 < drift[5]["ntk_drift"] and 0 < drift[5]["weight_movement"] < drift[10]["weight_movement"]
    assert all(r["ntk_lambda_min"] >= -1e-6 for r in drift.values())  # a Gram matrix is PSD


def test_ntk_drift_probe_follows_the_model_dtype_and_device(tmp_path):
    from softdiff.data import dataset_from_config
    from softdiff.diffusion.objective import Objective
    from softdiff.studies.ntk import NTKDriftCallback
    from softdiff.training.callbacks import TrainState
    from softdiff.training.models import build_model

    # A float64 model on the CPU takes the path of a model on a GPU: the probe is built on the CPU in float32.
    cfg = tiny(tmp_path, "callbacks.ntk_drift.every=5", "callbacks.ntk_drift.probe_size=4")
    dataset = dataset_from_config(cfg.data)
    objective = Objective.from_config(cfg.diffusion)
    model = build_model(cfg, dataset).double()
    state = TrainState(cfg, dataset, objective.process, objective.scheduler_config, tmp_path, torch.device("cpu"),
                       0, model=model)
    callback = NTKDriftCallback(5, 4)
    record = callback.on_train_begin(state)
    sample, timestep = callback.tracker.probe
    assert (sample.dtype, timestep.dtype) == (torch.float64, torch.float64)
    assert sample.device == timestep.device == next(model.parameters()).device
    assert record["ntk_drift"] == 0 and record["ntk_lambda_min"] >= -1e-9


def test_the_memory_check_sizes_the_batch_slice_of_one_process(tmp_path, monkeypatch):
    import softdiff.training.preflight as preflight

    cfg = tiny(tmp_path, "train.batch_size=4096")
    model = preflight.count_parameters(cfg) * preflight.BYTES_PER_PARAMETER
    batch = preflight.activation_bytes(cfg)  # the whole batch's activations
    monkeypatch.setattr(preflight, "available_memory", lambda gpu=None: model + batch // 2)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    with pytest.raises(ConfigError, match="train.batch_size=4096 is too large"):
        preflight.check_memory(cfg)
    monkeypatch.setenv("WORLD_SIZE", "8")
    preflight.check_memory(cfg)  # each of the 8 processes holds 512 examples


def test_dropout_seeds_differ_per_rank_and_rank_0_keeps_the_run_seed():
    from softdiff.training.trainer import dropout_seed

    for seed in (0, 7, 2**32 - 1):
        seeds = [dropout_seed(seed, rank) for rank in range(8)]
        assert seeds[0] == seed  # a one-process run draws the masks it always did
        assert len(set(seeds)) == 8 and all(0 <= s < 2**64 for s in seeds)
        torch.manual_seed(seeds[1])  # a seed torch takes
    assert dropout_seed(0, 1) != dropout_seed(1, 1)


class Recorder(TrainerCallback):
    """Logs the step and a fingerprint of the weights it sees, every third step."""

    def __init__(self):
        self.begin, self.seen = None, []

    def on_train_begin(self, state):
        self.begin = state.start
        return {"began": state.start}

    def due(self, step):
        return step % 3 == 0

    def on_step_end(self, state):
        self.seen.append(state.step)
        return {"weight_sum": float(sum(p.detach().sum() for p in state.model.parameters()))}


def test_callbacks_run_on_their_steps_and_log_into_metrics(tmp_path):
    recorder = Recorder()
    out = train(tiny(tmp_path, "train.steps=10", "train.log_every=100"), quiet=True, callbacks=[recorder])
    assert recorder.begin == 0 and recorder.seen == [3, 6, 9]
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert records[0] == {"step": 0, "began": 0}
    assert [r["step"] for r in records if "weight_sum" in r] == [3, 6, 9]
    sums = [r["weight_sum"] for r in records if "weight_sum" in r]
    assert len(set(sums)) == 3  # the live weights, as they move
    # A callback does not change the run: the weights equal those of a run without it.
    plain = train(tiny(tmp_path / "plain", "train.steps=10", "train.log_every=100"), quiet=True)
    assert all(torch.equal(a, b) for a, b in zip(weights(out / "model").values(), weights(plain / "model").values()))


def test_older_configs_ask_for_the_ntk_drift_in_its_new_place(tmp_path):
    """``diagnostics.ntk_every`` (the key of older configs and run folders) reads as the study's callback section;
    the old defaults (off) ask for nothing, so an old run folder's config.yaml loads with no callback."""
    old_run = tmp_path / "config.yaml"
    old_run.write_text("train:\n  steps: 7\ndiagnostics:\n  ntk_every: 0\n  ntk_probe_size: 8\n")
    assert load_train_config(old_run).callbacks == {}
    old_run.write_text("diagnostics:\n  ntk_every: 50\n")
    assert load_train_config(old_run).callbacks == {"ntk_drift": {"every": 50}}
    cfg = load_train_config(old_run, ["diagnostics.ntk_probe_size=4"])
    assert cfg.callbacks == {"ntk_drift": {"every": 50, "probe_size": 4}}
    assert load_train_config(None, ["callbacks.ntk_drift.every=5"]).callbacks == {"ntk_drift": {"every": 5}}


def test_a_callback_section_is_checked_by_its_callback_before_training(tmp_path):
    from softdiff.studies.training_callbacks import callbacks_from_config

    with pytest.raises(ConfigError, match=r"^callbacks.nope names no training callback; choose from: ntk_drift.$"):
        callbacks_from_config(load_train_config(None, ["callbacks.nope.every=5"]))
    with pytest.raises(ConfigError, match=r"^callbacks.ntk_drift.evry is not a setting .*; valid: every, probe_size"):
        callbacks_from_config(load_train_config(None, ["callbacks.ntk_drift.evry=5"]))
    with pytest.raises(ConfigError, match=r"^callbacks.ntk_drift.probe_size=0 must be positive.$"):
        callbacks_from_config(load_train_config(None, ["callbacks.ntk_drift.probe_size=0"]))
    with pytest.raises(ConfigError, match=r"^callbacks.ntk_drift must be a mapping"):
        load_train_config(None, ["callbacks.ntk_drift=5"])
    (off,) = callbacks_from_config(load_train_config(None, ["callbacks.ntk_drift.every=0"]))
    assert not any(off.due(step) for step in range(1, 50))  # every=0 records nothing


def test_the_core_trainer_names_no_study_callback():
    root = Path(__file__).resolve().parents[1] / "softdiff" / "training"
    for name in ("callbacks.py", "trainer.py"):
        text = (root / name).read_text()
        assert "ntk" not in text.lower() and "diagnostics." not in text, name


STUDIES = ("softdiff.studies", "softdiff.commands", "softdiff.evaluation")
# What each core package may not import: no study, and the pipeline (which owns the model format and loading)
# nothing from training either; training may import the pipeline (a run saves pipelines).
LAYERS = {"nets": STUDIES, "diffusion": STUDIES, "data": STUDIES, "training": STUDIES,
          "pipeline": (*STUDIES, "softdiff.training")}


def _imported_modules(path: Path) -> list[str]:
    """Every softdiff module ``path`` imports, at the top or inside a function (``from softdiff import x``
    counts as ``softdiff.x``)."""
    import ast

    names = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            module = node.module or ""
            names += [f"{module}.{a.name}" for a in node.names] if module == "softdiff" else [module]
    return names


@pytest.mark.parametrize("package", LAYERS)
def test_core_packages_import_nothing_from_the_studies(package):
    root = Path(__file__).resolve().parents[1] / "softdiff"
    offenders = [f"{path.name}: {name}" for path in (root / package).rglob("*.py")
                 for name in _imported_modules(path) if name.startswith(LAYERS[package])]
    assert offenders == []


@pytest.mark.parametrize("main,local_main,turn", [(True, True, 0), (False, True, 1), (False, False, 2)])
def test_in_turn_builds_once_in_its_turn_and_raises_after_every_barrier(main, local_main, turn):
    """One writer at a time (main, then each node's local main, then the rest), and an error never leaves the
    other processes waiting: every process passes the same three barriers."""
    from softdiff.training.trainer import in_turn

    class State:
        is_main_process, is_local_main_process, num_processes = main, local_main, 4
        barriers = 0

        def wait_for_everyone(self):
            self.barriers += 1

    state, calls = State(), []
    assert in_turn(state, lambda: calls.append(state.barriers) or "data") == "data"
    assert calls == [turn] and state.barriers == 3

    def broken():
        raise ValueError("no such folder")

    state = State()
    with pytest.raises(ValueError, match="no such folder"):
        in_turn(state, broken)
    assert state.barriers == 3
