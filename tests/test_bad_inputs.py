"""Every bad input of the eight commands (and train.py / sample.py) is one sentence on stderr and exit code 2.

Each case runs as its own process (a fork of an interpreter that imported softdiff once; see fork_runner.py)
and must: exit 2, print at most 3 stderr lines starting with "error:", name the key / flag / file (the
needle), print no traceback, and write nothing into the output folder it was given.
"""
import json
import os
import shutil

import pytest
import torch

from legacy_layout import save_legacy_model
from softdiff.pipeline import SoftdiffPipeline
from softdiff.training import load_train_config, train

TOY = ["--config", "configs/toy2d.yaml"]
TINY_TOY = ["data.name=8gaussians", "model.type=ScoreMLP", "model.hidden_size=16", "model.num_layers=1",
            "train.batch_size=32", "train.steps=4", "train.warmup_steps=1", "train.checkpoint_every=4",
            "sample.every=0", "sample.steps=2", "sample.num_samples=8"]
TINY_DIGITS = ["model.hidden_size=16", "model.num_layers=1", "model.num_heads=2", "train.steps=2",
               "train.batch_size=8", "train.checkpoint_every=2", "sample.every=0", "sample.steps=2",
               "sample.num_samples=4"]
OUT = "{tmp}/out"  # an output folder that must still not exist after the case


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A finished tiny toy run (ScoreMLP) and a finished tiny digits run (ScoreTransformer)."""
    base = tmp_path_factory.mktemp("bad_inputs_runs")
    toy = train(load_train_config("configs/toy2d.yaml", [*TINY_TOY, f"output_dir={base / 'toy'}"]), quiet=True)
    img = train(load_train_config("configs/digits.yaml", [*TINY_DIGITS, f"output_dir={base / 'img'}"]), quiet=True)
    return {"run": toy, "img": img}


def _damage(name):
    """The toy run's live model as a legacy model folder (tests/legacy_layout.py), damaged in one way: the
    checks of the legacy branch (those of the net's files are the same for pipeline folders)."""

    def edit(model, name=name):
        if name == "pickle_only":
            (model / "diffusion_pytorch_model.safetensors").unlink()
            torch.save({"w": torch.zeros(1)}, model / "diffusion_pytorch_model.bin")
        elif name == "empty_weights":
            (model / "diffusion_pytorch_model.safetensors").write_bytes(b"")
        elif name == "bad_config_json":
            (model / "config.json").write_text("{not json")
        elif name == "unknown_class":
            cfg = json.loads((model / "config.json").read_text())
            (model / "config.json").write_text(json.dumps({**cfg, "_class_name": "os.system"}))
        elif name == "config_wrong_type":
            cfg = json.loads((model / "config.json").read_text())
            (model / "config.json").write_text(json.dumps({**cfg, "hidden_size": "abc"}))
        elif name == "config_wrong_shape":
            cfg = json.loads((model / "config.json").read_text())
            (model / "config.json").write_text(json.dumps({**cfg, "hidden_size": 24}))
        elif name == "bad_data_info":
            (model / "data_info.json").write_text("[1, 2")
        elif name == "data_info_no_shape":
            info = json.loads((model / "data_info.json").read_text())
            del info["shape"]
            (model / "data_info.json").write_text(json.dumps(info))
        elif name == "data_info_list":
            (model / "data_info.json").write_text("[1, 2]")
        elif name == "bad_scheduler_json":
            (model / "scheduler_config.json").write_text("")
        elif name == "scheduler_negative_steps":
            cfg = json.loads((model / "scheduler_config.json").read_text())
            (model / "scheduler_config.json").write_text(json.dumps({**cfg, "num_train_timesteps": -5}))
        elif name == "scheduler_bad_schedule":
            cfg = json.loads((model / "scheduler_config.json").read_text())
            (model / "scheduler_config.json").write_text(json.dumps({**cfg, "beta_schedule": "nope"}))
        elif name == "no_data_info":
            (model / "data_info.json").unlink()
        else:
            raise KeyError(name)

    return edit


# (entry, args, needle); placeholders: {tmp} (a fresh folder), {file} (a regular file), {run} / {img} (finished
# toy / digits runs), {model} (a damaged legacy copy of {run}/model, see the fourth item), {yaml_*} (prepared files).
CASES = [
    # --- train.py / softdiff train: config values
    ("train.py", ["train.steps=0", f"output_dir={OUT}"], "train.steps=0", None),
    ("train.py", ["train.lr=nan", f"output_dir={OUT}"], "train.lr", None),
    ("train.py", ["train.lr=inf", f"output_dir={OUT}"], "train.lr=inf", None),
    ("train.py", ["train.lr=-1", f"output_dir={OUT}"], "train.lr", None),
    ("train.py", ["train.lr=abc", f"output_dir={OUT}"], "train.lr", None),
    ("train.py", ["train.grad_clip=inf", f"output_dir={OUT}"], "train.grad_clip", None),
    ("train.py", ["train.ema_decay=1.0", f"output_dir={OUT}"], "train.ema_decay", None),
    ("train.py", ["train.ema_decay=nan", f"output_dir={OUT}"], "train.ema_decay", None),
    ("train.py", ["model.dropout=1.5", f"output_dir={OUT}"], "model.dropout", None),
    ("train.py", ["model.dropout=-0.1", f"output_dir={OUT}"], "model.dropout", None),
    ("train.py", ["model.num_registers=-1", f"output_dir={OUT}"], "model.num_registers", None),
    ("train.py", [*TOY, "model.fourier_features=-2", f"output_dir={OUT}"], "model.fourier_features", None),
    ("train.py", ["model.width_mult=0", f"output_dir={OUT}"], "model.width_mult", None),
    ("train.py", ["train.seed=-1", f"output_dir={OUT}"], "train.seed", None),
    ("train.py", ["train.seed=99999999999", f"output_dir={OUT}"], "train.seed", None),
    ("train.py", ["data.name=folder", "data.path={tmp}", "data.image_size=0", f"output_dir={OUT}"],
     "data.image_size", None),
    ("train.py", ["data.name=folder", "data.path={tmp}", "data.image_size=100000", f"output_dir={OUT}"],
     "data.image_size", None),
    ("train.py", ["data.name=folder", "data.path={tmp}/nope", f"output_dir={OUT}"], "data.path", None),
    ("train.py", ["data.name=folder", f"output_dir={OUT}"], "data.path", None),
    ("train.py", ["data.num_workers=-1", f"output_dir={OUT}"], "data.num_workers", None),
    ("train.py", [*TOY, "data.random_flip=true", f"output_dir={OUT}"], "data.random_flip", None),
    ("train.py", ["data.label_column=label", f"output_dir={OUT}"], "data.label_column", None),
    ("train.py", ["data.name=hf", f"output_dir={OUT}"], "data.path", None),
    ("train.py", ["data.name=mnist", "data.split=val", f"output_dir={OUT}"], "data.split='val'", None),
    ("train.py", ["data.name=hf", "data.path={tmp}/nope", f"output_dir={OUT}"], "data.download=true", None),
    ("train.py", ["data.name=hf", "data.path={tmp}", "data.class_conditional=true", f"output_dir={OUT}"],
     "data.label_column", None),
    ("train.py", ["diffusion.objective=score", f"output_dir={OUT}"], "diffusion.objective", None),
    ("train.py", ["diffusion.loss_weighting=p2", f"output_dir={OUT}"], "diffusion.loss_weighting", None),
    ("train.py", ["diffusion.timestep_density=beta", f"output_dir={OUT}"], "diffusion.timestep_density", None),
    ("train.py", ["diffusion.density_std=0", f"output_dir={OUT}"], "diffusion.density_std", None),
    ("train.py", ["diffusion.flow_shift=nan", f"output_dir={OUT}"], "diffusion.flow_shift", None),
    ("train.py", ["diffusion.min_snr_gamma=-5", f"output_dir={OUT}"], "diffusion.min_snr_gamma", None),
    ("train.py", ["sample.scheduler=ddpm", f"output_dir={OUT}"], "sample.scheduler='ddpm'", None),
    ("train.py", ["train.label_dropout=1.0", f"output_dir={OUT}"], "train.label_dropout", None),
    ("train.py", ["sample.guidance_scale=-1", f"output_dir={OUT}"], "sample.guidance_scale", None),
    ("train.py", ["model.conditioning=film", f"output_dir={OUT}"], "model.conditioning", None),
    ("train.py", ["model.conv_stem=-4", f"output_dir={OUT}"], "model.conv_stem", None),
    ("train.py", ["model.patch_size=3", f"output_dir={OUT}"], "model.patch_size=3", None),
    ("train.py", ["model.patch_size=0", f"output_dir={OUT}"], "model.patch_size", None),
    ("train.py", ["model.num_heads=3", f"output_dir={OUT}"], "model.num_heads=3", None),
    ("train.py", ["sample.steps=5000", f"output_dir={OUT}"], "sample.steps=5000", None),
    ("train.py", ["diffusion.num_train_timesteps=10", f"output_dir={OUT}"], "diffusion.num_train_timesteps=10",
     None),
    ("train.py", ["diffusion.num_train_timesteps=1000000000", f"output_dir={OUT}"],
     "diffusion.num_train_timesteps", None),
    ("train.py", [*TOY, "diffusion.beta_schedule=ou", "diffusion.ou_t_min=2", "diffusion.ou_t_max=1",
                  f"output_dir={OUT}"], "ou_t_min", None),
    ("train.py", ["data.channels=2", f"output_dir={OUT}"], "data.channels", None),
    ("train.py", ["train.batch_size=0", f"output_dir={OUT}"], "train.batch_size", None),
    ("train.py", ["model.type=Nope", f"output_dir={OUT}"], "model.type", None),
    ("train.py", ["train.mixed_precision=fp8", f"output_dir={OUT}"], "train.mixed_precision", None),
    ("train.py", ["train.stepz=5", f"output_dir={OUT}"], "train.stepz", None),
    ("train.py", ["model.hidden_size=1000000", f"output_dir={OUT}"], "model.hidden_size=1000000", None),
    ("train.py", ["--config", "configs/toy2d_paper.yaml", "model.width=200000000000", f"output_dir={OUT}"],
     "model.width", None),
    ("train.py", ["train.batch_size=1000000000", f"output_dir={OUT}"], "train.batch_size=1000000000", None),
    # --- train.py: files, folders and flags
    ("train.py", ["--output-dir", "{file}"], "is a file", None),
    ("train.py", ["--output-dir", "{file}/sub"], "cannot be created", None),
    ("train.py", ["--config", "{tmp}/nope.yaml", f"output_dir={OUT}"], "nope.yaml", None),
    ("train.py", ["--config", "{yaml_garbage}", f"output_dir={OUT}"], "not valid YAML", None),
    ("train.py", ["--config", "{yaml_list}", f"output_dir={OUT}"], "mapping", None),
    ("train.py", ["--resume", "{tmp}/nope", f"output_dir={OUT}"], "--resume", None),
    ("train.py", ["--resume", "{tmp}", f"output_dir={OUT}"], "not a softdiff checkpoint", None),
    ("train.py", ["--resume", "latest", f"output_dir={OUT}"], "no checkpoint", None),
    ("train.py", ["--stop-after", "-1", f"output_dir={OUT}"], "--stop-after", None),
    ("train.py", ["--stop-after", "abc", f"output_dir={OUT}"], "--stop-after", None),
    ("train.py", ["--bogus", f"output_dir={OUT}"], "--bogus", None),
    ("softdiff", ["train", "train.steps=-3", f"output_dir={OUT}"], "train.steps", None),
    ("softdiff", ["train", "model.attention_normalization=max", f"output_dir={OUT}"],
     "model.attention_normalization", None),
    # --- sample.py / softdiff sample
    ("sample.py", ["{tmp}/nope", "--output", f"{OUT}/s.npz"], "nope", None),
    ("sample.py", ["{model}", "--output", f"{OUT}/s.npz"], "safetensors", "pickle_only"),
    ("sample.py", ["{model}", "--output", f"{OUT}/s.npz"], "safetensors", "empty_weights"),
    ("sample.py", ["{model}", "--output", f"{OUT}/s.npz"], "config.json", "bad_config_json"),
    ("sample.py", ["{model}", "--output", f"{OUT}/s.npz"], "_class_name", "unknown_class"),
    ("sample.py", ["{model}", "--output", f"{OUT}/s.npz"], "could not be loaded", "config_wrong_type"),
    ("sample.py", ["{model}", "--output", f"{OUT}/s.npz"], "could not be loaded", "config_wrong_shape"),
    ("sample.py", ["{model}", "--output", f"{OUT}/s.npz"], "data_info.json", "bad_data_info"),
    ("sample.py", ["{model}", "--output", f"{OUT}/s.npz"], "data_info.json", "data_info_no_shape"),
    ("sample.py", ["{model}", "--output", f"{OUT}/s.npz"], "data_info.json", "data_info_list"),
    ("sample.py", ["{model}", "--output", f"{OUT}/s.npz"], "data_info.json", "no_data_info"),
    ("sample.py", ["{model}", "--output", f"{OUT}/s.npz"], "scheduler_config.json", "bad_scheduler_json"),
    ("sample.py", ["{model}", "--output", f"{OUT}/s.npz"], "num_train_timesteps", "scheduler_negative_steps"),
    ("sample.py", ["{model}", "--output", f"{OUT}/s.npz"], "scheduler_config.json", "scheduler_bad_schedule"),
    ("sample.py", ["{run}/model", "--steps", "0", "--output", f"{OUT}/s.npz"], "steps=0", None),
    ("sample.py", ["{run}/model", "--steps", "5000", "--output", f"{OUT}/s.npz"], "steps=5000", None),
    ("sample.py", ["{run}/model", "--steps", "abc", "--output", f"{OUT}/s.npz"], "--steps", None),
    ("sample.py", ["{run}/model", "--scheduler", "bogus", "--output", f"{OUT}/s.npz"], "scheduler='bogus'", None),
    ("sample.py", ["{run}/model", "--device", "bogus", "--output", f"{OUT}/s.npz"], "device 'bogus'", None),
    ("sample.py", ["{run}/model", "--device", "cuda:99", "--output", f"{OUT}/s.npz"], "device 'cuda:99'", None),
    ("sample.py", ["{run}/model", "--output", f"{OUT}/s.txt"], ".npz", None),
    ("sample.py", ["{run}/model", "--output", "{tmp}/dir.npz"], "is a folder", None),
    ("sample.py", ["{run}/model", "--output", "{file}/s.npz"], "cannot be created", None),
    ("sample.py", ["{run}/model", "--num-samples", "-3", "--output", f"{OUT}/s.npz"], "num_samples=-3", None),
    ("sample.py", ["{run}/model", "--num-samples", "10000000000000", "--output", f"{OUT}/s.npz"],
     "num_samples=", None),
    ("sample.py", ["{run}/model", "--max-batch-size", "0", "--output", f"{OUT}/s.npz"], "max_batch_size=0", None),
    ("sample.py", ["{run}/model", "--batch-size", "0", "--output", f"{OUT}/s.npz"], "max_batch_size=0", None),
    ("sample.py", ["{run}/model", "--class-label", "3", "--output", f"{OUT}/s.npz"], "class_label=3", None),
    ("sample.py", ["{img}/model", "--scheduler", "ddpm", "--output", f"{OUT}/s.npz"], "scheduler 'ddpm'", None),
    ("sample.py", ["{img}/model", "--guidance-scale", "-1", "--output", f"{OUT}/s.npz"], "guidance_scale=-1",
     None),
    ("sample.py", ["{img}/model", "--guidance-scale", "3", "--output", f"{OUT}/s.npz"], "guidance_scale=3",
     None),
    ("softdiff", ["sample"], "RUN_OR_MODEL_DIR", None),
    ("softdiff", ["sample", "{run}", "--seed", "x", "--output", f"{OUT}/s.npz"], "--seed", None),
    ("softdiff", ["sample", "{run}", "steps=abc", "--output-dir", OUT], "steps", None),
    ("softdiff", ["sample", "{run}", "bogus=1", "--output-dir", OUT], "bogus", None),
    ("softdiff", ["sample", "{run}", "{img}", "--output-dir", OUT], "2 folders", None),
    ("softdiff", ["sample", "{run}", "--output-dir", "{file}"], "is a file", None),
    # --- softdiff eval
    ("softdiff", ["eval", "--output-dir", OUT], "exactly one of", None),
    ("softdiff", ["eval", "{tmp}/nope", "--output-dir", OUT], "nope", None),
    ("softdiff", ["eval", "{run}", "num_samples=1", "--output-dir", OUT], "num_samples=1", None),
    ("softdiff", ["eval", "{run}", "scheduler=bogus", "--output-dir", OUT], "scheduler", None),
    ("softdiff", ["eval", "{run}", "metrics=[bogus]", "--output-dir", OUT], "metrics", None),
    ("softdiff", ["eval", "{run}", "steps=5000", "--output-dir", OUT], "steps=5000", None),
    ("softdiff", ["eval", "{img}", "scheduler=ddpm", "--output-dir", OUT], "scheduler 'ddpm'", None),
    ("softdiff", ["eval", "--score", "{file}", "--output-dir", OUT], "--score", None),
    ("softdiff", ["eval", "--train-classifier", "dataset=cifar10", "--output-dir", OUT], "dataset", None),
    # --- softdiff compare
    ("softdiff", ["compare", "--output-dir", OUT, "activations=[]"], "activations", None),
    ("softdiff", ["compare", "--output-dir", OUT, "num_seeds=0"], "num_seeds", None),
    ("softdiff", ["compare", "--output-dir", OUT, "eval.scheduler=bogus"], "eval.scheduler", None),
    ("softdiff", ["compare", "--output-dir", OUT, "eval.metrics=[bogus]"], "eval.metrics", None),
    ("softdiff", ["compare", "--output-dir", OUT, "base_config={tmp}/nope.yaml"], "nope.yaml", None),
    ("softdiff", ["compare", "--output-dir", OUT, "train_overrides=[model.dropout=2]"], "model.dropout", None),
    ("softdiff", ["compare", "--output-dir", OUT, "eval.steps=5000"], "eval.steps", None),
    ("softdiff", ["compare", "--output-dir", OUT, "eval.ode_tol=nan"], "eval.ode_tol", None),
    ("softdiff", ["compare", "--output-dir", OUT, "workers=-1"], "workers", None),
    ("softdiff", ["compare", "--output-dir", OUT, "bogus=1"], "bogus", None),
    ("softdiff", ["compare", "--output-dir", OUT, "--workers", "abc"], "--workers", None),
    ("softdiff", ["compare", "--output-dir", "{file}", "num_seeds=1"], "is a file", None),
    ("softdiff", ["compare", "--output-dir", OUT, "tune.grid.train.seed=[1,2]"], "train.seed", None),
    ("softdiff", ["compare", "--output-dir", OUT, "tune.grid.train.lr=[-1.0]"], "train.lr", None),
    ("softdiff", ["compare", "--output-dir", OUT, "tune.grid.train.lr=[1e-3]", "tune.metric=fid"], "tune.metric",
     None),
    ("softdiff", ["compare", "--output-dir", OUT, "tune.log_uniform.train.lr=[1e-2,1e-4]", "tune.draws=2"],
     "tune.log_uniform.train.lr", None),
    ("softdiff", ["compare", "--output-dir", OUT, "budget.mode=time"], "budget.seconds", None),
    ("softdiff", ["compare", "--output-dir", OUT, "sweep.key=model.widht", "sweep.values=[64]"], "model.widht",
     None),
    # --- softdiff ntk
    ("softdiff", ["ntk", "--output-dir", OUT, "widths=[64]"], "widths", None),
    ("softdiff", ["ntk", "--output-dir", OUT, "widths=[63,64]"], "widths entry 63", None),
    ("softdiff", ["ntk", "--output-dir", OUT, "lr_fraction=1.5"], "lr_fraction", None),
    ("softdiff", ["ntk", "--output-dir", OUT, "tasks=[bogus]"], "tasks", None),
    ("softdiff", ["ntk", "--output-dir", OUT, "steps=-1"], "steps", None),
    ("softdiff", ["ntk", "--output-dir", OUT, "foo=1"], "foo", None),
    ("softdiff", ["ntk", "--config", "{tmp}/nope.yaml", "--output-dir", OUT], "nope.yaml", None),
    ("softdiff", ["ntk", "--preset", "quick", "--output-dir", "{file}"], "is a file", None),
    # --- softdiff regress
    ("softdiff", ["regress", "--output-dir", OUT, "--preset", "bogus"], "--preset", None),
    ("softdiff", ["regress", "--output-dir", OUT, "methods=[bogus]"], "methods", None),
    ("softdiff", ["regress", "--output-dir", OUT, "tol=0"], "tol=0", None),
    ("softdiff", ["regress", "--output-dir", OUT, "tol=nan"], "tol=nan", None),
    ("softdiff", ["regress", "--output-dir", OUT, "seed=abc"], "seed", None),
    ("softdiff", ["regress", "--output-dir", OUT, "seed=-1"], "seed=-1", None),
    ("softdiff", ["regress", "--preset", "quick", "--output-dir", "{file}"], "is a file", None),
    ("softdiff", ["regress", "--output-dir", OUT, "instances=[{{n: 100, d: 5, kind: dense}}]"], "instances[0].kind", None),
    # --- softdiff flow
    ("softdiff", ["flow", "--output-dir", OUT, "--preset", "E9"], "preset", None),
    ("softdiff", ["flow", "--output-dir", OUT, "method=bogus"], "method", None),
    ("softdiff", ["flow", "--output-dir", OUT, "seeds=0"], "seeds", None),
    ("softdiff", ["flow", "--output-dir", OUT, "seed=-1"], "seed", None),
    ("softdiff", ["flow", "--output-dir", OUT, "device=bogus"], "device", None),
    ("softdiff", ["flow", "--output-dir", OUT, "device=cuda:99"], "device", None),
    ("softdiff", ["flow", "--output-dir", OUT, "lr=inf"], "lr", None),
    ("softdiff", ["flow", "--output-dir", OUT, "steps=-5"], "steps", None),
    ("softdiff", ["flow", "--output-dir", "{file}"], "is a file", None),
    ("softdiff", ["flow", "--output-dir", OUT, "rng=bogus"], "rng", None),
    ("softdiff", ["flow", "--output-dir", OUT, "spectrum=bogus"], "spectrum", None),
    # --- softdiff sinks
    *[("softdiff", ["sinks", "--output-dir", OUT, f"{key}={value}"], key, None)
      for key, value in (("attentions", "[bogus]"), ("steps", 0), ("embed_dim", 30))],
    ("softdiff", ["sinks", "--output-dir", "{file}"], "is a file", None),
    # --- softdiff probe
    ("softdiff", ["probe", "{tmp}/nope", "--output-dir", OUT], "nope", None),
    ("softdiff", ["probe", "{img}", "{img}", "{img}", "--output-dir", OUT], "3 run folders", None),
    ("softdiff", ["probe", "{img}", "--threshold", "1.5", "--output-dir", OUT], "threshold=1.5", None),
    ("softdiff", ["probe", "{img}", "--threshold", "nan", "--output-dir", OUT], "threshold=nan", None),
    ("softdiff", ["probe", "{img}", "--num-samples", "0", "--output-dir", OUT], "num_samples=0", None),
    ("softdiff", ["probe", "{img}", "--timesteps", "5000", "--output-dir", OUT], "timesteps", None),
    ("softdiff", ["probe", "{img}", "timesteps=[]", "--output-dir", OUT], "timesteps", None),
    ("softdiff", ["probe", "{run}", "--output-dir", OUT], "no attention layers", None),
    ("softdiff", ["probe", "{img}", "--output-dir", "{file}"], "is a file", None),
    ("softdiff", ["probe", "{model}", "--output-dir", OUT], "safetensors", "empty_weights"),
    # --- the dispatcher
    ("softdiff", ["nope"], "unknown command", None),
]


def _ids():
    seen = {}
    for entry, args, _, damage in CASES:
        shown = [a for a in args if not a.startswith(("--output", "{", "output_dir"))]
        name = "-".join([entry.replace(".py", ""), *shown][:4])
        name = (name + (f"-{damage}" if damage else ""))[:60]
        seen[name] = seen.get(name, 0) + 1
        yield name if seen[name] == 1 else f"{name}-{seen[name]}"


@pytest.mark.parametrize("entry,args,needle,damage", CASES, ids=list(_ids()))
def test_bad_input_is_one_sentence_and_exit_2(entry, args, needle, damage, tmp_path, runs, forked):
    if "cuda:99" in args and torch.cuda.device_count() >= 100:
        pytest.skip("this machine has a cuda:99")
    (tmp_path / "afile").write_text("a file, not a folder\n")
    (tmp_path / "dir.npz").mkdir()
    (tmp_path / "garbage.yaml").write_text("train: [1, 2\n  : :\n")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    model = tmp_path / "damaged" / "model"
    if damage:
        save_legacy_model(SoftdiffPipeline.from_pretrained(runs["run"] / "model"), model)
        _damage(damage)(model)
    fill = {"tmp": tmp_path, "file": tmp_path / "afile", "run": runs["run"], "img": runs["img"],
            "model": model.parent if args[:1] == ["probe"] else model,
            "yaml_garbage": tmp_path / "garbage.yaml", "yaml_list": tmp_path / "list.yaml"}
    if args[:1] == ["probe"] and damage:  # probe takes a run folder: its model_ema is the damaged copy
        shutil.copytree(model, model.parent / "model_ema")
    argv = [a.format(**fill) for a in args]
    res = forked(entry, *argv, timeout=120)
    lines = res.stderr.strip().splitlines()
    assert res.returncode == 2, (res.returncode, res.stderr[-1500:])
    assert "Traceback" not in res.stderr, res.stderr[-1500:]
    assert 1 <= len(lines) <= 3, res.stderr
    assert lines[-1].startswith("error: ") and needle in res.stderr, res.stderr
    assert not (tmp_path / "out").exists(), "a bad input must not leave an output folder behind"
    if log := os.environ.get("SOFTDIFF_BAD_INPUT_LOG"):  # docs/reliability.md's table is made from this log
        with open(log, "a") as f:
            f.write(json.dumps({"entry": entry, "argv": argv, "code": res.returncode, "error": lines[-1],
                                "paths": {k: str(v) for k, v in fill.items()}, "damage": damage}) + "\n")


@pytest.mark.parametrize("argv,needle", [
    (["sample.py", "nope-folder"], "nope-folder"),
    (["-m", "softdiff.cli", "regress", "tol=nan"], "tol=nan"),
])
def test_bad_input_in_a_fresh_interpreter(argv, needle, run_script):
    """The same promise without the fork runner: a real interpreter start, as a user runs it."""
    res = run_script(*argv, timeout=180)
    assert res.returncode == 2 and "Traceback" not in res.stderr and needle in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1, res.stderr


def test_case_count():
    assert len(CASES) >= 60
    covered = {e if e != "softdiff" else a[0] for e, a, _, _ in CASES}
    assert {"train.py", "sample.py", "train", "sample", "compare", "ntk", "regress", "flow", "probe",
            "eval"} <= covered
