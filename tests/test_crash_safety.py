"""Trust and crash safety: no code from received files, atomic saves, one run per folder, all-or-nothing resume,
faults as one sentence. Runs are tiny (ScoreMLP on 8 Gaussians, dropout on so that resume exactness covers
the RNG); commands run as their own processes through the fork runner (see fork_runner.py)."""
import gc
import json
import os
import shutil
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from softdiff.errors import ConfigError, DataError
from softdiff.training import load_train_config, train
from softdiff.pipeline import SoftdiffPipeline

ROOT = Path(__file__).resolve().parents[1]
TOY = "configs/toy2d.yaml"
OVERRIDES = ["data.name=8gaussians", "model.type=ScoreMLP", "model.hidden_size=16", "model.num_layers=1",
             "model.dropout=0.1", "train.batch_size=32", "train.log_every=5", "train.checkpoint_every=10",
             "train.warmup_steps=2", "train.steps=20", "sample.every=0", "sample.steps=2", "sample.num_samples=8"]


def argv(out, *extra):
    return ["--config", TOY, *OVERRIDES, f"output_dir={out}", "--quiet", *extra]


def config(out, *extra):
    return load_train_config(TOY, [*OVERRIDES, f"output_dir={out}", *extra])


def weights(path: Path) -> dict:
    return load_file(str(path / "model" / "diffusion_pytorch_model.safetensors"))


def assert_same_models(a: Path, b: Path) -> None:
    for sub in ("model", "model_ema"):
        wa, wb = weights(a / sub), weights(b / sub)
        assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa), sub
        SoftdiffPipeline.from_pretrained(b / sub)  # and the folder loads as a whole


class Payload:
    """A pickle that creates a folder when unpickled by anything that runs pickle's globals."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def poison(path: Path, marker: Path) -> None:
    torch.save({"state": Payload(marker)}, path)
    probe = marker.with_name(f"{marker.name}-probe-{'-'.join(path.parts[-4:])}")  # one per poisoned file
    copy = path.with_name(path.name + ".probe")  # the payload is live: full unpickling runs it
    torch.save({"state": Payload(probe)}, copy)
    torch.load(copy, weights_only=False)
    assert probe.is_dir()
    copy.unlink()


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Runs compared bitwise must use the same number of threads (it changes float summation order): one, as
    the commands run by the fork runner do (OMP_NUM_THREADS=1)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """The uninterrupted 20-step run."""
    return train(config(tmp_path_factory.mktemp("straight")), quiet=True)


@pytest.fixture(scope="module")
def stopped(tmp_path_factory):
    """The same run stopped after 10 steps (one checkpoint, no models)."""
    out = tmp_path_factory.mktemp("stopped")
    train(config(out), quiet=True, stop_after=10)
    return out


def copy_run(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns(".lock"))
    return dst


# --------------------------------------------------------------------------------- 1. no code from files
@pytest.mark.parametrize("name", ["optimizer.bin", "scheduler.bin", "random_states_0.pkl", "custom_checkpoint_0.pkl"])
def test_poisoned_checkpoint_is_refused_and_runs_nothing(name, stopped, tmp_path, forked):
    run = copy_run(stopped, tmp_path / "run")
    ckpt = run / "checkpoints" / "checkpoint-10"
    marker = tmp_path / "marker"
    if name == "custom_checkpoint_0.pkl":  # a checkpoint of an older softdiff: EMA state as a pickle
        (ckpt / "ema.safetensors").unlink()
        (ckpt / "ema.json").unlink()
    poison(ckpt / name, marker)
    res = forked("train.py", *argv(run, "--resume", ckpt))
    assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert "checkpoint-10" in res.stderr and "Traceback" not in res.stderr
    res = forked("train.py", *argv(run, "--resume", "latest"))
    assert res.returncode == 2 and "none of the 1 checkpoints" in res.stderr and "Traceback" not in res.stderr
    assert len(res.stderr.strip().splitlines()) <= 3, res.stderr
    assert not marker.exists(), "a checkpoint file ran code"
    assert not (run / "model").exists() and ckpt.is_dir()  # nothing written, nothing rotated away


def test_poisoned_model_folder_is_refused_and_runs_nothing(straight, tmp_path, forked):
    marker = tmp_path / "marker"
    only_pickle = shutil.copytree(straight / "model", tmp_path / "a" / "model")
    (only_pickle / "model" / "diffusion_pytorch_model.safetensors").unlink()
    poison(only_pickle / "model" / "diffusion_pytorch_model.bin", marker)
    res = forked("sample.py", only_pickle, "--steps", "2", "--num-samples", "4", "--output", tmp_path / "a.npz")
    assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1 and "safetensors" in res.stderr
    both = shutil.copytree(straight / "model", tmp_path / "b" / "model")
    poison(both / "model" / "diffusion_pytorch_model.bin", marker)  # beside good safetensors: never opened
    res = forked("sample.py", both, "--steps", "2", "--num-samples", "4", "--output", tmp_path / "b.npz")
    assert res.returncode == 0, res.stderr
    assert not marker.exists(), "a model-folder file ran code"


def test_checkpoint_ema_of_an_older_format_is_not_unpickled(stopped, straight, tmp_path):
    from softdiff.checkpoint_ema import load_ema_weights

    ckpt = copy_run(stopped, tmp_path / "run") / "checkpoints" / "checkpoint-10"
    model = SoftdiffPipeline.from_pretrained(straight / "model").model
    load_ema_weights(model, ckpt)  # the current format loads
    (ckpt / "ema.safetensors").unlink()
    poison(ckpt / "custom_checkpoint_0.pkl", tmp_path / "marker")
    with pytest.raises(DataError, match="older softdiff"):
        load_ema_weights(model, ckpt)
    assert not (tmp_path / "marker").exists()


# ------------------------------------------------------------------------------------------- 2. atomic saves
def test_kill_during_final_model_save_then_resume_rewrites_equal_models(straight, tmp_path, forked):
    run = tmp_path / "run"
    killer = """
import os, signal, sys
import safetensors.torch
real = safetensors.torch.save_file
def dying(tensors, filename, *args, **kwargs):
    if "model_ema" in filename:  # the final EMA save: leave an empty weights file behind, then die
        open(filename, "wb").close()
        os.kill(os.getpid(), signal.SIGKILL)
    return real(tensors, filename, *args, **kwargs)
safetensors.torch.save_file = dying
from softdiff.cli import run_main
from softdiff.commands.train import main
sys.exit(run_main(main, sys.argv[1:]))
"""
    res = forked("code", *argv(run), code=killer)
    assert res.returncode == -9
    assert not json.loads((run / "train_summary.json").read_text())["finished"]
    assert not (run / "model_ema").exists()  # only a hidden temporary folder was torn
    res = forked("train.py", *argv(run, "--resume", "latest"))
    assert res.returncode == 0, res.stderr
    assert json.loads((run / "train_summary.json").read_text())["finished"]
    assert_same_models(straight, run)
    assert not [p for p in run.iterdir() if p.name.startswith(".model")]  # stale temporaries were removed


def test_torn_final_save_of_a_finished_run_is_rewritten_by_resume(straight, tmp_path):
    from softdiff.studies.compare.runner import run_is_complete

    run = copy_run(straight, tmp_path / "run")
    assert run_is_complete(run)
    (run / "model_ema" / "model" / "diffusion_pytorch_model.safetensors").write_bytes(b"")  # torn, "finished"
    assert not run_is_complete(run)
    with pytest.raises(DataError, match="not a readable safetensors file"):
        SoftdiffPipeline.from_pretrained(run / "model_ema")
    train(config(run), resume="latest", quiet=True)
    assert run_is_complete(run)
    assert_same_models(straight, run)


def test_torn_metrics_line_is_dropped_on_resume(stopped, straight, tmp_path):
    run = copy_run(stopped, tmp_path / "run")
    with (run / "metrics.jsonl").open("a") as f:
        f.write('{"step": 15, "loss": 0.')  # a kill mid-write
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        train(config(run), resume="latest", quiet=True)
    assert any("unreadable line" in str(w.message) for w in caught)
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [5, 10, 15, 20]
    assert_same_models(straight, run)


# ------------------------------------------------------------------------------------- 3. one run per folder
def test_second_run_into_a_busy_folder_exits_2_at_once_and_the_first_is_undisturbed(straight, tmp_path, forked):
    run, gate = tmp_path / "run", tmp_path / "gate"
    first = f"""
import sys, time
from pathlib import Path
import softdiff.training.checkpoints as ck
real = ck.Checkpoints.save
def held(self, step):  # hold the run at its first checkpoint until the test says go
    Path({str(gate)!r} + ".paused").write_text("")
    deadline = time.time() + 240
    while not Path({str(gate)!r} + ".go").exists() and time.time() < deadline:
        time.sleep(0.05)
    return real(self, step)
ck.Checkpoints.save = held
from softdiff.cli import run_main
from softdiff.commands.train import main
sys.exit(run_main(main, sys.argv[1:]))
"""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-c", first, *map(str, argv(run))], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 240
        while not Path(str(gate) + ".paused").exists():
            assert proc.poll() is None and time.time() < deadline, proc.communicate()[1][-2000:]
            time.sleep(0.1)
        t0 = time.perf_counter()
        second = forked("train.py", *argv(run, "train.seed=1"))
        took = time.perf_counter() - t0
    finally:
        Path(str(gate) + ".go").write_text("")
        out, err = proc.communicate(timeout=300)
    assert second.returncode == 2 and len(second.stderr.strip().splitlines()) == 1, second.stderr
    assert "in use by another process" in second.stderr and str(run) in second.stderr
    assert took < 20, f"the second run took {took:.1f} s to give up"
    assert proc.returncode == 0, err[-2000:]
    assert_same_models(straight, run)  # bitwise equal to a lone run
    assert "seed: 0" in (run / "config.yaml").read_text()
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == [5, 10, 15, 20]  # one run's lines only


# ---------------------------------------------------------------------------------- 4. all-or-nothing resume
def test_resume_latest_when_no_checkpoint_loads_changes_nothing(tmp_path):
    run = tmp_path / "run"
    train(config(run, "train.steps=30", "train.checkpoints_total_limit=5"), quiet=True, stop_after=20)
    for step in (10, 20):
        (run / "checkpoints" / f"checkpoint-{step}" / "model.safetensors").write_bytes(b"garbage")
    before = {p: p.read_bytes() for p in (run / "checkpoints").rglob("*") if p.is_file()}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(ConfigError, match="none of the 2 checkpoints"):
            train(config(run, "train.steps=30", "train.checkpoints_total_limit=5"), resume="latest", quiet=True)
    after = {p: p.read_bytes() for p in (run / "checkpoints").rglob("*") if p.is_file()}
    assert after == before and not (run / "model").exists()


def test_a_checkpoint_failing_late_leaves_no_partial_state(straight, stopped, tmp_path):
    """checkpoint-10's weights and optimizer are good but its EMA file is corrupt: with --resume auto the run
    must start truly fresh (equal to the straight run), not from checkpoint-10's weights."""
    run = copy_run(stopped, tmp_path / "run")
    (run / "checkpoints" / "checkpoint-10" / "ema.safetensors").write_bytes(b"\0" * 64)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        train(config(run), resume="auto", quiet=True)
    assert any("checkpoint-10" in str(w.message) for w in caught)
    assert_same_models(straight, run)
    markers = [json.loads((p / "softdiff_checkpoint.json").read_text()) for p in (run / "checkpoints").iterdir()]
    assert len({m["run"] for m in markers}) == 1  # the unloadable checkpoint was replaced by this run's own


# ------------------------------------------------------------------------------------------------- 5. faults
def _mount_tmpfs(path: Path) -> bool:
    path.mkdir()
    try:
        return subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(path)],
                              capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


@pytest.mark.parametrize("kind", ["simulated", "tmpfs"])
def test_disk_full_is_one_sentence_and_the_previous_checkpoint_stays_usable(kind, straight, tmp_path, forked):
    """``tmpfs``: a real 8 MB file system, filled up after the first checkpoint (needs the right to mount);
    ``simulated``: every write of the second checkpoint fails with ENOSPC."""
    disk = tmp_path / "disk"
    if kind == "tmpfs" and not _mount_tmpfs(disk):
        pytest.skip("cannot mount a tmpfs here")
    run = disk / "run" if kind == "tmpfs" else tmp_path / "run"
    full_after_10 = f"""
import errno, os, sys, torch
import softdiff.training.checkpoints as ck
real = ck.Checkpoints.save
def save(self, step):
    if step == 10 or {kind!r} == "tmpfs":
        out = real(self, step)
        if step == 10 and {kind!r} == "tmpfs":  # fill the disk
            fd = os.open({str(disk / 'filler')!r}, os.O_WRONLY | os.O_CREAT)
            try:
                while True:
                    os.write(fd, b"\\0" * 65536)
            except OSError as err:
                assert err.errno == errno.ENOSPC
            os.close(fd)
        return out
    real_save = torch.save
    def full(obj, f, *a, **k):
        raise OSError(errno.ENOSPC, "No space left on device", str(f))
    torch.save = full
    try:
        return real(self, step)
    finally:
        torch.save = real_save
ck.Checkpoints.save = save
from softdiff.cli import run_main
from softdiff.commands.train import main
sys.exit(run_main(main, sys.argv[1:]))
"""
    try:
        res = forked("code", *argv(run), code=full_after_10)
        lines = res.stderr.strip().splitlines()
        assert res.returncode == 1 and len(lines) == 1 and "Traceback" not in res.stderr, res.stderr
        assert "no space left on device" in lines[0] and str(run) in lines[0], lines
        assert "'checkpoint-10' is intact" in lines[0], lines
        assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["checkpoint-10"]
        (disk / "filler").unlink(missing_ok=True)
        res = forked("train.py", *argv(run, "--resume", "latest"))
        assert res.returncode == 0, res.stderr
        assert_same_models(straight, run)
    finally:
        if kind == "tmpfs":
            gc.collect()  # drop memory maps of the weights read from the mount
            if subprocess.run(["umount", str(disk)], capture_output=True, timeout=30).returncode:
                subprocess.run(["umount", "-l", str(disk)], capture_output=True, timeout=30)  # detach when free


def test_an_allocation_failure_mid_run_names_the_size_keys(tmp_path, monkeypatch):
    import softdiff.training.trainer as trainer

    def no_memory(*args):
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:121] DefaultCPUAllocator: can't allocate memory: you "
                           "tried to allocate 1099511627776 bytes.")

    monkeypatch.setattr(trainer, "draw_batch", no_memory)
    with pytest.raises(ConfigError, match=r"ran out of memory .* lower train.batch_size=32, model.hidden_size=16"):
        train(config(tmp_path / "run"), quiet=True)


# ------------------------------------------------------------------------------------------ 7. multi-process
@pytest.mark.skipif(torch.cuda.device_count() > 1, reason="with several GPUs accelerate launch starts them all")
def test_accelerate_launch_of_two_processes_on_cpu_refuses_with_the_torchrun_command(tmp_path, run_script):
    run = tmp_path / "run"
    res = run_script("-m", "accelerate.commands.accelerate_cli", "launch", "--cpu", "--num_processes", "2",
                     "train.py", *argv(run), timeout=300, env_extra={"OMP_NUM_THREADS": "1"})
    ours = [line for line in res.stderr.splitlines() if line.startswith("error: ")]
    assert res.returncode != 0 and len(ours) == 1, res.stderr[-2000:]
    assert "asked for 2 processes" in ours[0] and "torchrun --standalone --nproc_per_node 2 train.py" in ours[0]
    assert not run.exists()


def test_killing_a_comparison_ends_its_worker_processes(tmp_path):
    """A comparison killed with SIGKILL leaves no pool worker training on (and holding a run folder's lock)."""
    import signal
    import time

    import psutil

    out = tmp_path / "cmp"
    argv = [sys.executable, "-m", "softdiff.cli", "compare", "--output-dir", str(out), "--workers", "2", "--quiet",
            "activations=[softmax,relu]", "num_seeds=1", "eval.every=0", "eval.metrics=[w2]",
            "train_overrides=[model.hidden_size=16,model.num_layers=1,train.steps=100000,train.log_every=10,"
            "train.batch_size=16,sample.every=0]"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    workers = []
    try:
        deadline = time.time() + 120
        while len(list(out.glob("runs/*/metrics.jsonl"))) < 2 and time.time() < deadline:
            time.sleep(0.5)
        workers = [p for p in psutil.Process(proc.pid).children(recursive=True) if "spawn_main" in " ".join(p.cmdline())]
        assert len(workers) == 2 and len(list(out.glob("runs/*/metrics.jsonl"))) == 2  # both are training
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        gone, alive = psutil.wait_procs(workers, timeout=30)
        assert not alive, [p.pid for p in alive]
    finally:  # only this comparison's processes (the session's other helpers, e.g. the fork runner, stay)
        try:
            workers += psutil.Process(proc.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            pass
        proc.kill()
        for p in workers:
            try:
                p.kill()
            except psutil.NoSuchProcess:
                pass
