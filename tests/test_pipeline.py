"""SoftdiffPipeline: loading run / model / pipeline folders, deterministic sampling equal to what sample.py
writes, save_pretrained round trips, output types, class labels, and one-sentence errors for bad folders."""
import json
import runpy
import sys

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from softdiff.cli import run_main
from softdiff.errors import ConfigError, DataError
from softdiff.pipeline import SoftdiffPipeline
from softdiff.commands.sample import main as sample_main
from softdiff.training import load_train_config, train

TOY = ["data.name=8gaussians", "model.type=ScoreMLP", "model.hidden_size=16", "model.num_layers=1",
       "train.batch_size=32", "train.steps=4", "train.warmup_steps=1", "train.checkpoint_every=2", "sample.every=0",
       "sample.steps=2", "sample.num_samples=8"]
DIGITS = ["model.hidden_size=16", "model.num_layers=1", "model.num_heads=2", "data.class_conditional=true",
          "train.steps=3", "train.batch_size=16", "train.checkpoint_every=3", "sample.every=0", "sample.steps=2",
          "sample.num_samples=4"]

SAMPLE_DEFAULT = "dpm++sde"  # softdiff sample's default sampler (a run saves its config's sample.scheduler)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A finished tiny toy run (ScoreMLP, DDPM schedule) and a class-conditional digits run (ScoreTransformer,
    flow matching)."""
    base = tmp_path_factory.mktemp("pipeline_runs")
    toy = train(load_train_config("configs/toy2d.yaml", [*TOY, f"output_dir={base / 'toy'}"]), quiet=True)
    img = train(load_train_config("configs/digits.yaml", [*DIGITS, f"output_dir={base / 'img'}"]), quiet=True)
    return {"toy": toy, "img": img}


def draw(pipe, seed=5, n=6, **kwargs):
    return pipe(batch_size=n, num_inference_steps=3, generator=torch.Generator().manual_seed(seed), progress=False,
                **kwargs).samples


@pytest.mark.parametrize("name,shape", [("toy", (6, 2)), ("img", (6, 1, 8, 8))])
def test_samples_are_deterministic_and_equal_what_sample_py_writes(name, shape, runs, tmp_path, monkeypatch):
    pipe = SoftdiffPipeline.from_pretrained(runs[name], scheduler=SAMPLE_DEFAULT)
    x = draw(pipe)
    assert x.shape == shape and torch.isfinite(x).all()
    assert torch.equal(x, draw(pipe))                       # same generator seed: bitwise the same samples
    assert not torch.equal(x, draw(pipe, seed=6))           # another seed: other samples
    if name == "img":
        assert x.min() >= 0 and x.max() <= 1                # images in data space
    # sample.py (the script) and softdiff sample (key=value and flags) write exactly these samples.
    monkeypatch.setattr(sys, "argv", ["sample.py", str(runs[name]), "seed=5", "steps=3", "--num-samples", "6",
                                      "device=cpu", "--output-dir", str(tmp_path / "a"), "--quiet"])
    with pytest.raises(SystemExit) as done:
        runpy.run_path("sample.py", run_name="__main__")
    assert done.value.code == 0
    assert np.array_equal(np.load(tmp_path / "a" / "samples.npz")["samples"], x.numpy())
    assert (tmp_path / "a" / "samples.png").read_bytes()[:4] == b"\x89PNG"
    chunked = draw(pipe, max_batch_size=4)                  # drawn in chunks of 4, as max_batch_size=4 asks
    for key in ("max_batch_size", "batch_size"):  # batch_size: the command's old name for it, still read
        assert run_main(sample_main, [str(runs[name] / "model"), "--seed", "5", "--steps", "3", "num_samples=6",
                                      f"{key}=4", "device=cpu", "--output", str(tmp_path / f"{key}.npz")]) == 0
        assert np.array_equal(np.load(tmp_path / f"{key}.npz")["samples"], chunked.numpy())


def test_no_ema_and_checkpoints_pick_other_weights(runs, tmp_path):
    run = runs["toy"]
    live = SoftdiffPipeline.from_pretrained(run, use_ema=False, scheduler=SAMPLE_DEFAULT)
    assert live.source_dir == run / "model" and SoftdiffPipeline.from_pretrained(run).source_dir == run / "model_ema"
    assert run_main(sample_main, [str(run), "--no-ema", "seed=5", "steps=3", "num_samples=6", "device=cpu",
                                  "--output-dir", str(tmp_path), "--quiet"]) == 0
    assert np.array_equal(np.load(tmp_path / "samples.npz")["samples"], draw(live).numpy())
    checkpoint = run / "checkpoints" / "checkpoint-2"
    ema = load_file(str(checkpoint / "ema.safetensors"))
    model = SoftdiffPipeline.from_pretrained(run, checkpoint=checkpoint).model
    assert all(torch.equal(p, ema[n]) for n, p in model.named_parameters())
    assert not all(torch.equal(p, ema[n]) for n, p in SoftdiffPipeline.from_pretrained(run).model.named_parameters())


@pytest.mark.parametrize("name", ["toy", "img"])
def test_save_pretrained_round_trip(name, runs, tmp_path):
    pipe = SoftdiffPipeline.from_pretrained(runs[name], scheduler="unipc")
    pipe.save_pretrained(tmp_path / "saved")
    index = json.loads((tmp_path / "saved" / "model_index.json").read_text())
    assert index["_class_name"] == "SoftdiffPipeline" and index["scheduler"] == ["diffusers", "UniPCMultistepScheduler"]
    assert index["model"][1] == type(pipe.model).__name__ and index["kind"] == pipe.config.kind
    files = sorted(p.relative_to(tmp_path / "saved").as_posix() for p in (tmp_path / "saved").rglob("*") if p.is_file())
    assert files == ["model/config.json", "model/diffusion_pytorch_model.safetensors", "model_index.json",
                     "scheduler/scheduler_config.json"]
    again = SoftdiffPipeline.from_pretrained(tmp_path / "saved")
    assert type(again.scheduler).__name__ == "UniPCMultistepScheduler" and again.forward_process == pipe.forward_process
    assert torch.equal(draw(again), draw(pipe))
    other = SoftdiffPipeline.from_pretrained(tmp_path / "saved", scheduler="euler")  # a sampler by name, again
    assert type(other.scheduler).__name__ != "UniPCMultistepScheduler" and not torch.equal(draw(other), draw(pipe))


def test_output_types_agree(runs):
    pipe = SoftdiffPipeline.from_pretrained(runs["img"])
    pt, np_out = draw(pipe), pipe(batch_size=6, num_inference_steps=3, generator=torch.Generator().manual_seed(5),
                                  output_type="np", progress=False)
    pil = pipe(batch_size=6, num_inference_steps=3, generator=torch.Generator().manual_seed(5), output_type="pil",
               progress=False)
    assert isinstance(np_out.samples, np.ndarray) and np.array_equal(np_out.samples, pt.numpy())
    assert np_out.images is None and len(pil.images) == 6 and pil.images[0].size == (8, 8)
    assert np.array_equal(np.stack([np.asarray(im) for im in pil.images]), (pt[:, 0].numpy() * 255).round())
    samples, images = pipe(batch_size=2, num_inference_steps=3, output_type="pil", return_dict=False, progress=False)
    assert samples.shape == (2, 1, 8, 8) and len(images) == 2
    with pytest.raises(ConfigError, match="needs image data"):
        SoftdiffPipeline.from_pretrained(runs["toy"])(batch_size=2, output_type="pil")


def test_class_labels_change_class_conditional_samples(runs):
    pipe = SoftdiffPipeline.from_pretrained(runs["img"])
    three = draw(pipe, class_labels=3)
    assert torch.equal(three, draw(pipe, class_labels=[3] * 6))           # one label = that label for every sample
    assert not torch.equal(three, draw(pipe, class_labels=7))             # another label: other samples
    assert torch.equal(draw(pipe), draw(pipe, class_labels=[0, 1, 2, 3, 4, 5]))  # default: the classes in turn
    with pytest.raises(ConfigError, match=r"labels 0\.\.9"):
        draw(pipe, class_labels=10)
    with pytest.raises(ConfigError, match="unconditional"):
        draw(SoftdiffPipeline.from_pretrained(runs["toy"]), class_labels=1)


def test_bad_folders_are_one_sentence_errors(runs, tmp_path, capsys):
    with pytest.raises(ConfigError, match="is not a run folder") as err:
        SoftdiffPipeline.from_pretrained(tmp_path / "nope")
    assert "\n" not in str(err.value) and "nope" in str(err.value)
    assert run_main(sample_main, [str(tmp_path / "nope"), "--output-dir", str(tmp_path / "o")]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and not (tmp_path / "o").exists()
    saved = tmp_path / "saved"
    SoftdiffPipeline.from_pretrained(runs["toy"]).save_pretrained(saved)
    index = json.loads((saved / "model_index.json").read_text())
    (saved / "model_index.json").write_text(json.dumps({**index, "model": ["os", "system"]}))
    with pytest.raises(DataError, match="class among: ScoreMLP"):  # a class name is looked up, not imported
        SoftdiffPipeline.from_pretrained(saved)
    (saved / "model_index.json").write_text(json.dumps(index))
    weights = saved / "model" / "diffusion_pytorch_model.safetensors"
    weights.rename(saved / "model" / "diffusion_pytorch_model.bin")
    with pytest.raises(DataError, match="safetensors weights only"):
        SoftdiffPipeline.from_pretrained(saved)


def test_image_grid_shows_at_most_100_samples(tmp_path):
    from PIL import Image

    from softdiff.pictures import MAX_GRID_IMAGES, save_picture

    for n, side in ((7, 3), (100, 10), (2000, 10)):     # a square grid of min(n, 100) images (enlarged to 56 px)
        x = torch.rand(n, 1, 28, 28, generator=torch.Generator().manual_seed(n))
        save_picture(x, tmp_path / f"{n}.png", "image", (0.0, 1.0))
        width, height = Image.open(tmp_path / f"{n}.png").size
        assert MAX_GRID_IMAGES == 100 and width == side * (56 + 2) + 2
        assert height == -(-min(n, 100) // side) * (56 + 2) + 2
