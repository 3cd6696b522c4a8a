"""Crafted or mismatched model folders and bad ``softdiff eval --score`` inputs: one sentence, exit 2, found
before anything is built, sampled or trained.

Model folders are written in the test (a tiny ScoreMLP in the legacy layout, tests/legacy_layout.py, and as a
pipeline folder, the one format), damaged in one way each, and read through ``softdiff sample``,
``softdiff eval RUN`` and ``SoftdiffPipeline.from_pretrained``.
"""
import json
import os
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from legacy_layout import save_legacy_model

from softdiff.diffusion.schedulers import training_scheduler_config
from softdiff.errors import DataError
from softdiff.nets import ScoreMLP
from softdiff.pipeline import SoftdiffPipeline

WEIGHTS = "diffusion_pytorch_model.safetensors"
FLOW = {"_class_name": "FlowMatchEulerDiscreteScheduler", "num_train_timesteps": 1000, "shift": 1.0}


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    """A run folder whose model_ema/ holds a tiny 2-D ScoreMLP (DDPM schedule) in the legacy layout, and a saved
    pipeline of it."""
    run = tmp_path_factory.mktemp("model_folders") / "run"
    torch.manual_seed(0)
    net = ScoreMLP(dim=2, hidden_size=8, num_blocks=1)
    data = SimpleNamespace(name="8gaussians", kind="vector", shape=(2,), data_range=(-4.0, 4.0), num_classes=None)
    pipe = SoftdiffPipeline.for_training_run(net, data, training_scheduler_config())  # sampler: dpm++sde
    save_legacy_model(pipe, run / "model_ema")
    pipe.save_pretrained(run.parent / "pipeline")
    return run


def _edit_json(path: Path, **values) -> None:
    path.write_text(json.dumps({**json.loads(path.read_text()), **values}))


def _edit_weights(model: Path, edit) -> None:
    save_file(edit(load_file(str(model / WEIGHTS))), str(model / WEIGHTS))


# name -> (damage of model_ema/, the file / key / tensor the one line must name)
DAMAGES = {
    "data_shape_vs_net": (lambda m: _edit_json(m / "data_info.json", shape=[3]), "shape=[3]"),
    "image_shape_vs_net": (lambda m: _edit_json(m / "data_info.json", kind="image", shape=[1, 8, 8]), "shape="),
    "tensor_missing": (lambda m: _edit_weights(m, lambda w: {k: v for k, v in w.items() if k != "inp.weight"}),
                       "inp.weight"),
    "tensor_extra": (lambda m: _edit_weights(m, lambda w: {**w, "planted": torch.zeros(3)}), "planted"),
    "tensor_shape": (lambda m: _edit_weights(m, lambda w: {**w, "out.bias": torch.zeros(5)}), "out.bias"),
    "tensor_int_dtype": (lambda m: _edit_weights(m, lambda w: {**w, "out.bias": torch.zeros(2, dtype=torch.int64)}),
                         "out.bias"),
    "tensor_nan": (lambda m: _edit_weights(m, lambda w: {**w, "out.bias": torch.full((2,), float("nan"))}),
                   "out.bias"),
    "json_deep": (lambda m: (m / "data_info.json").write_text("[" * 100_000 + "]" * 100_000), "data_info.json"),
    "json_deep_config": (lambda m: _edit_json(m / "config.json", deep=json.loads("[" * 50 + "]" * 50)), "config.json"),
    "config_many_layers": (lambda m: _edit_json(m / "config.json", num_blocks=10**5), "far more than"),
    "json_huge": (lambda m: _edit_json(m / "config.json", pad="x" * (9 << 20)), "config.json"),
    "data_range_nan": (lambda m: (m / "data_info.json").write_text(
        json.dumps(json.loads((m / "data_info.json").read_text()) | {"data_range": ["NaN", 4]}).replace(
            '"NaN"', "NaN")), "data_range"),
    "data_range_inf": (lambda m: (m / "data_info.json").write_text(
        (m / "data_info.json").read_text().replace("4.0\n", "1e999\n")), "data_range"),
    "data_range_reversed": (lambda m: _edit_json(m / "data_info.json", data_range=[4, -4]), "data_range"),
    "beta_above_1": (lambda m: _edit_json(m / "scheduler_config.json", beta_end=1.5), "beta_end"),
    "beta_negative": (lambda m: _edit_json(m / "scheduler_config.json", beta_start=-0.1), "beta_start"),
    "beta_nan": (lambda m: (m / "scheduler_config.json").write_text(
        (m / "scheduler_config.json").read_text().replace('"beta_end": 0.02', '"beta_end": NaN')), "beta_end"),
    "trained_beta_above_1": (lambda m: _edit_json(m / "scheduler_config.json", trained_betas=[1.5] * 1000),
                             "trained_betas"),
    "zero_terminal_snr": (lambda m: _edit_json(m / "scheduler_config.json", rescale_betas_zero_snr=True),
                          "rescale_betas_zero_snr"),
    "thresholding": (lambda m: _edit_json(m / "scheduler_config.json", thresholding=True), "thresholding"),
    "flow_shift_negative": (lambda m: (m / "scheduler_config.json").write_text(json.dumps({**FLOW, "shift": -3.0})),
                            "shift"),
    "flow_shift_nan": (lambda m: (m / "scheduler_config.json").write_text(
        json.dumps({**FLOW, "shift": 7.0}).replace("7.0", "NaN")), "shift"),
}


def _damaged(good: Path, tmp_path: Path, name: str) -> Path:
    """A copy of the good run folder whose model_ema/ is damaged as ``name`` says."""
    run = tmp_path / "damaged_run"
    shutil.copytree(good, run)
    DAMAGES[name][0](run / "model_ema")
    return run


def _assert_one_line(res, needle: str, out: Path, paths: dict, damage: str | None = None) -> str:
    lines = res.stderr.strip().splitlines()
    assert res.returncode == 2, (res.returncode, res.stderr[-1500:])
    assert "Traceback" not in res.stderr, res.stderr[-1500:]
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], res.stderr[-1500:]
    assert not out.exists(), "a bad input must not write anything"
    if log := os.environ.get("SOFTDIFF_BAD_INPUT_LOG"):  # as tests/test_bad_inputs.py: docs/reliability.md's table
        with open(log, "a") as f:
            f.write(json.dumps({"entry": res.args[0], "argv": res.args[1:], "code": res.returncode, "error": lines[0],
                                "paths": {k: str(v) for k, v in paths.items()}, "damage": damage}) + "\n")
    return lines[0]


def _sample(forked, folder: Path, tmp_path: Path, damage: str | None, needle: str) -> str:
    """``softdiff sample FOLDER`` must refuse in one line and write nothing."""
    res = forked("softdiff", "sample", folder, "steps=2", "num_samples=4", "device=cpu", "--quiet", "--output",
                 tmp_path / "out" / "s.npz")
    return _assert_one_line(res, needle, tmp_path / "out", {"tmp": tmp_path, "run": folder}, damage)


@pytest.mark.parametrize("name", DAMAGES)
def test_crafted_model_folder_is_refused_before_loading(name, good, tmp_path, forked):
    run = _damaged(good, tmp_path, name)
    with pytest.raises(DataError, match=DAMAGES[name][1].replace("[", r"\[")) as err:
        SoftdiffPipeline.from_pretrained(run)
    assert len(str(err.value).splitlines()) == 1 and "model_ema" in str(err.value)
    assert _sample(forked, run, tmp_path, name, DAMAGES[name][1]) == f"error: {err.value}"


@pytest.mark.parametrize("name", ["data_shape_vs_net", "tensor_missing", "json_deep", "data_range_nan",
                                  "beta_above_1", "flow_shift_negative"])
def test_crafted_model_folder_through_eval(name, good, tmp_path, forked):
    run = _damaged(good, tmp_path, name)
    res = forked("softdiff", "eval", run, "num_samples=8", "steps=2", "--quiet", "--output-dir", tmp_path / "out")
    _assert_one_line(res, DAMAGES[name][1], tmp_path / "out", {"tmp": tmp_path, "run": run}, name)


def test_a_sound_folder_still_loads_and_its_saved_pipeline_too(good):
    """The checks refuse no folder that softdiff writes (a saved DPM-Solver keeps lambda_min_clipped=-inf)."""
    index = json.loads((good.parent / "pipeline" / "scheduler" / "scheduler_config.json").read_text())
    assert index["lambda_min_clipped"] == float("-inf")
    a = SoftdiffPipeline.from_pretrained(good)
    b = SoftdiffPipeline.from_pretrained(good.parent / "pipeline")
    draw = lambda pipe: pipe(batch_size=4, num_inference_steps=2, generator=torch.Generator().manual_seed(1),
                             progress=False).samples
    assert torch.equal(draw(a), draw(b)) and torch.isfinite(draw(a)).all()


@pytest.mark.parametrize("edit,needle", [
    (lambda p: _edit_json(p / "model_index.json", sample_shape=[5]), "sample_shape=[5]"),
    (lambda p: (p / "model_index.json").write_text('{"a": ' + "[" * 100_000 + "]" * 100_000 + "}"),
     "model_index.json"),
    (lambda p: _edit_json(p / "model_index.json", data_range=[0, 1e999]), "data_range"),
    (lambda p: _edit_json(p / "model_index.json", forward_process={**FLOW, "shift": -1.0}), "shift"),
    (lambda p: _edit_json(p / "scheduler" / "scheduler_config.json", beta_end=2.0), "beta_end"),
    (lambda p: _edit_json(p / "scheduler" / "scheduler_config.json", num_train_timesteps=10), "num_train_timesteps"),
    (lambda p: _edit_weights(p / "model", lambda w: {k: v for k, v in w.items() if k != "out.weight"}),
     "out.weight"),
], ids=["sample_shape", "deep_index", "data_range_inf", "flow_shift", "sampler_beta", "sampler_timesteps",
        "tensor_missing"])
def test_crafted_saved_pipeline_is_refused(edit, needle, good, tmp_path, forked, request):
    saved = tmp_path / "pipeline"
    shutil.copytree(good.parent / "pipeline", saved)
    edit(saved)
    with pytest.raises(DataError, match=needle.replace("[", r"\[")) as err:
        SoftdiffPipeline.from_pretrained(saved)
    assert len(str(err.value).splitlines()) == 1
    damage = "pipeline_" + request.node.callspec.id
    assert _sample(forked, saved, tmp_path, damage, needle) == f"error: {err.value}"


def test_non_finite_samples_are_not_written(good, tmp_path, forked):
    """Finite but huge weights draw inf / NaN samples: the command says so, exits 2 and writes nothing."""
    run = tmp_path / "run"
    shutil.copytree(good, run)
    _edit_weights(run / "model_ema", lambda w: {k: torch.full_like(v, 1e30) for k, v in w.items()})
    line = _sample(forked, run, tmp_path, "huge_weights", "NaN or inf")
    assert "4 of 4 samples" in line and "nothing was written" in line


# ------------------------------------------------------------------------------------ softdiff eval --score
@pytest.fixture
def samples_files(tmp_path):
    files = tmp_path / "files"
    files.mkdir()
    images = np.random.default_rng(0).random((6, 1, 8, 8), dtype=np.float32)
    np.save(files / "s.npy", images)
    for name, n in (("zero", 0), ("one", 1), ("six", 6)):
        np.savez(files / f"{name}.npz", samples=images[:n], dataset=np.str_("digits"))
    (files / "afile").write_text("a file, not a folder\n")
    return files


@pytest.mark.parametrize("args,needle", [
    (["--score", "{files}/s.npy"], ".npy array"),
    (["--score", "{files}/zero.npz"], "holds 0 samples"),
    (["--score", "{files}/one.npz"], "holds 1 sample;"),
    (["--score", "{files}/six.npz", "feature_classifier=/proc/softdiff-nope/c.safetensors"], "feature_classifier"),
    (["--score", "{files}/six.npz", "feature_classifier={files}/afile/c.safetensors"], "feature_classifier"),
    (["--train-classifier", "feature_classifier=/proc/c.safetensors"], "feature_classifier"),
], ids=["npy", "zero_samples", "one_sample", "classifier_in_proc", "classifier_under_a_file", "train_into_proc"])
def test_score_inputs_are_refused_before_the_classifier_trains(args, needle, samples_files, tmp_path, forked):
    cache = tmp_path / "cache"  # empty: a classifier would be trained (and cached) before scoring
    res = forked("softdiff", "eval", *[a.format(files=samples_files) for a in args], "--output-dir",
                 tmp_path / "out", env={"SOFTDIFF_CACHE": str(cache)})
    _assert_one_line(res, needle, tmp_path / "out", {"tmp": tmp_path, "files": samples_files})
    assert not cache.exists(), "the classifier was trained before the bad input was found"
