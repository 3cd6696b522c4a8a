"""One model format: a training run saves pipelines (what ``SoftdiffPipeline.save_pretrained`` writes) and one
reader loads them; run folders of the legacy layout still load, sample bitwise as they did, and resume.

tests/fixtures/run_v1 is a run folder made by softdiff before training saved pipelines, with samples recorded
from it by ``sample.py`` (its README says which commit and commands made them).
"""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from legacy_layout import save_legacy_model
from softdiff.pipeline import SoftdiffPipeline
from softdiff.training import load_train_config, train

FIXTURE = Path(__file__).parent / "fixtures" / "run_v1"
RECORDED = FIXTURE / "recorded_samples"
# recorded file -> the sample.py arguments that drew it (besides the folder and --output)
SAMPLE_ARGS = {"ema_dpmppsde.npz": [], "ema_euler.npz": ["scheduler=euler"], "live_dpmppsde.npz": ["--no-ema"]}
COMMON = ["seed=0", "steps=10", "num_samples=8", "device=cpu", "--quiet"]
WEIGHTS = "diffusion_pytorch_model.safetensors"
TOY = ["data.name=8gaussians", "model.type=ScoreMLP", "model.hidden_size=16", "model.num_layers=1",
       "train.batch_size=32", "train.steps=4", "train.warmup_steps=1", "train.checkpoint_every=4", "sample.every=0",
       "sample.scheduler=unipc", "sample.steps=2", "sample.num_samples=8"]


def recorded(name: str) -> np.ndarray:
    with np.load(RECORDED / name, allow_pickle=False) as f:
        return f["samples"]


def test_the_fixture_is_a_legacy_run_folder():
    """The fixture is what it claims: the old layout, not a pipeline folder (so the tests below read the legacy
    branch), and tests/legacy_layout.py writes exactly its files."""
    for sub in ("model", "model_ema"):
        files = sorted(p.name for p in (FIXTURE / sub).iterdir())
        assert files == ["config.json", "data_info.json", WEIGHTS, "scheduler_config.json"], files
    assert json.loads((FIXTURE / "train_summary.json").read_text())["finished"] is True


@pytest.mark.parametrize("sub", ["model", "model_ema"])
def test_the_legacy_writer_of_the_tests_writes_what_old_training_wrote(sub, tmp_path):
    pipe = SoftdiffPipeline.from_pretrained(FIXTURE / sub)
    save_legacy_model(pipe, tmp_path / sub)
    for name in ("config.json", "data_info.json", "scheduler_config.json"):
        assert json.loads((tmp_path / sub / name).read_text()) == json.loads((FIXTURE / sub / name).read_text())
    a, b = load_file(str(tmp_path / sub / WEIGHTS)), load_file(str(FIXTURE / sub / WEIGHTS))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("name", SAMPLE_ARGS)
def test_legacy_run_samples_bitwise_as_recorded(name, tmp_path, forked):
    """sample.py on the legacy folder draws exactly the recorded samples (same seed, sampler and weights)."""
    out = tmp_path / "s.npz"
    res = forked("sample.py", FIXTURE, *COMMON, *SAMPLE_ARGS[name], "--output", out)
    assert res.returncode == 0, res.stderr[-2000:]
    with np.load(out, allow_pickle=False) as f:
        again = f["samples"]
    assert again.shape == (8, 1, 8, 8) and np.array_equal(again, recorded(name))


def test_legacy_run_loads_through_the_one_reader_and_samples_as_recorded(tmp_path):
    """The Python API too: the legacy branch picks the same weights and default sampler as sample.py did."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as when the samples were recorded (OMP_NUM_THREADS=1)
    try:
        for name, use_ema in (("ema_dpmppsde.npz", True), ("live_dpmppsde.npz", False)):
            pipe = SoftdiffPipeline.from_pretrained(FIXTURE, use_ema=use_ema)
            assert pipe.source_dir == FIXTURE / ("model_ema" if use_ema else "model")
            x = pipe(batch_size=8, num_inference_steps=10, generator=torch.Generator().manual_seed(0),
                     progress=False).samples
            assert np.array_equal(x.numpy(), recorded(name)), name
    finally:
        torch.set_num_threads(threads)
    # Saved again, the legacy model is a pipeline folder that samples the same.
    pipe = SoftdiffPipeline.from_pretrained(FIXTURE / "model_ema", scheduler="euler")
    pipe.save_pretrained(tmp_path / "saved")
    again = SoftdiffPipeline.from_pretrained(tmp_path / "saved")
    assert again.forward_process == pipe.forward_process and type(again.scheduler) is type(pipe.scheduler)
    draw = lambda p: p(batch_size=4, num_inference_steps=3, generator=torch.Generator().manual_seed(1),
                       progress=False).samples
    assert torch.equal(draw(again), draw(pipe))


def test_legacy_run_resumes(tmp_path, forked):
    """train.py --resume latest on a copy of the legacy run continues from its checkpoint and finishes, writing
    pipeline folders."""
    run = shutil.copytree(FIXTURE, tmp_path / "run")
    shutil.rmtree(run / "recorded_samples")
    before = load_file(str(run / "model_ema" / WEIGHTS))
    res = forked("train.py", "--config", run / "config.yaml", f"output_dir={run}", "train.steps=30", "--resume",
                 "latest", "--quiet")
    assert res.returncode == 0, res.stderr[-2000:]
    summary = json.loads((run / "train_summary.json").read_text())
    assert summary["step"] == 30 and summary["finished"] is True
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps[-1] == 30 and steps == sorted(set(steps)) and max(s for s in steps if s <= 20) == 20
    assert (run / "checkpoints" / "checkpoint-30").is_dir()
    assert (run / "model_ema" / "model_index.json").is_file()  # rewritten in the one format
    after = SoftdiffPipeline.from_pretrained(run).model.state_dict()
    assert after.keys() == before.keys() and any(not torch.equal(after[k], before[k]) for k in before)


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory):
    base = tmp_path_factory.mktemp("format_runs")
    return train(load_train_config("configs/toy2d.yaml", [*TOY, f"output_dir={base / 'toy'}"]), quiet=True)


def _files(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


@pytest.mark.parametrize("sub", ["model", "model_ema"])
def test_a_run_saves_pipelines_that_from_pretrained_loads_and_save_pretrained_rewrites(sub, toy_run, tmp_path):
    """diffusers' convention: RUN_DIR/model is a pipeline folder; from_pretrained(RUN_DIR / "model") loads that
    folder, and save_pretrained writes back the same files with the same JSON and weights."""
    folder = toy_run / sub
    pipe = SoftdiffPipeline.from_pretrained(folder)
    assert pipe.source_dir == folder
    pipe.save_pretrained(tmp_path / "again")
    assert _files(folder) == _files(tmp_path / "again") == [
        "model/config.json", f"model/{WEIGHTS}", "model_index.json", "scheduler/scheduler_config.json"]
    for name in ("model_index.json", "model/config.json", "scheduler/scheduler_config.json"):
        assert json.loads((tmp_path / "again" / name).read_text()) == json.loads((folder / name).read_text()), name
    a, b = load_file(str(folder / "model" / WEIGHTS)), load_file(str(tmp_path / "again" / "model" / WEIGHTS))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert all(torch.equal(p, a[n]) for n, p in pipe.model.state_dict().items())


def test_a_run_saves_the_sampler_its_config_names(toy_run):
    """The saved scheduler is the config's sample.scheduler (unipc here), built for the forward process: loading
    without a sampler name samples exactly as naming it does."""
    index = json.loads((toy_run / "model_ema" / "model_index.json").read_text())
    assert index["scheduler"][1] == "UniPCMultistepScheduler"
    assert index["forward_process"]["_class_name"] == "DDPMScheduler"  # the training process, kept apart
    saved = SoftdiffPipeline.from_pretrained(toy_run)
    named = SoftdiffPipeline.from_pretrained(toy_run, scheduler="unipc")
    settings = lambda pipe: {k: v for k, v in pipe.scheduler.config.items() if not k.startswith("_")}
    assert type(saved.scheduler) is type(named.scheduler) and settings(saved) == settings(named)
    draw = lambda p: p(batch_size=6, num_inference_steps=3, generator=torch.Generator().manual_seed(2),
                       progress=False).samples
    assert torch.equal(draw(saved), draw(named))
    assert not torch.equal(draw(saved), draw(SoftdiffPipeline.from_pretrained(toy_run, scheduler="ddim")))


def test_use_ema_picks_the_weights_of_a_run_and_none_loads_the_folder_given(toy_run):
    live, ema = (load_file(str(toy_run / sub / "model" / WEIGHTS)) for sub in ("model", "model_ema"))
    same = lambda pipe, w: all(torch.equal(p, w[n]) for n, p in pipe.model.state_dict().items())
    assert same(SoftdiffPipeline.from_pretrained(toy_run), ema)
    assert same(SoftdiffPipeline.from_pretrained(toy_run, use_ema=False), live)
    assert same(SoftdiffPipeline.from_pretrained(toy_run / "model"), live)             # the folder given
    assert same(SoftdiffPipeline.from_pretrained(toy_run / "model", use_ema=True), ema)  # --no-ema not given
    assert same(SoftdiffPipeline.from_pretrained(toy_run / "model_ema", use_ema=False), live)
    assert not same(SoftdiffPipeline.from_pretrained(toy_run), live)


def test_loading_and_sampling_import_no_training_module(tmp_path):
    """The layering at run time: loading a run (with a checkpoint's EMA weights) and ``softdiff sample`` import
    nothing from softdiff.training, also indirectly (a fresh process)."""
    code = f"""
import sys
from softdiff.pipeline import SoftdiffPipeline
from softdiff.pipeline.cli import main
SoftdiffPipeline.from_pretrained({str(FIXTURE)!r}, checkpoint={str(FIXTURE / "checkpoints" / "checkpoint-20")!r})
assert main([{str(FIXTURE)!r}, "steps=2", "num_samples=4", "device=cpu", "--quiet", "--output-dir",
             {str(tmp_path)!r}]) == 0
print(sorted(m for m in sys.modules if m.startswith("softdiff.training")))
"""
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                         cwd=Path(__file__).resolve().parents[1])
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.strip().splitlines()[-1] == "[]" and (tmp_path / "samples.npz").is_file()
