"""Lazy image datasets: folders and Hugging Face datasets decoded per example, DataLoader workers fed by a batch
sampler, exact resume with workers and random flips, per-process slices, unreadable files."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from softdiff.config import to_yaml
from softdiff.data import make_dataset
from softdiff.data.augment import flip_mask
from softdiff.data.lazy import to_square
from softdiff.data.loader import draw_indices
from softdiff.errors import DataError
from softdiff.training import load_train_config, train
from softdiff.training.trainer import batch_stream, draw_batch, step_generator
from softdiff.diffusion.objective import Objective

N_IMAGES = 24
TINY = ["data.name=folder", "data.image_size=8", "model.hidden_size=16", "model.num_layers=1", "model.num_heads=2",
        "model.conv_stem=4", "model.dropout=0.1", "train.batch_size=8", "train.steps=6", "train.warmup_steps=1",
        "train.checkpoint_every=3", "train.log_every=2", "sample.every=0", "sample.steps=2", "sample.num_samples=4"]

pytestmark = pytest.mark.usefixtures("one_thread")


def write_folder(root: Path, n: int = N_IMAGES, size: int = 8) -> list[np.ndarray]:
    """``n`` random RGB PNGs in two nested subfolders (sorted order = index order); their pixels."""
    rng = np.random.default_rng(0)
    pixels = []
    for i in range(n):
        sub = root / ("a" if i < n // 2 else "b/c")
        sub.mkdir(parents=True, exist_ok=True)
        arr = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        Image.fromarray(arr).save(sub / f"img-{i:03d}.png")
        pixels.append(arr.transpose(2, 0, 1))
    return pixels


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("images")
    return root, write_folder(root)


def config(out, path, *extra):
    return load_train_config("configs/digits.yaml", [*TINY, f"data.path={path}", f"output_dir={out}", *extra])


def batches_of(cfg, dataset, steps, rank=0, world=1, accum=1):
    objective = Objective.from_config(cfg.diffusion)
    stream = batch_stream(dataset, cfg, 0, steps, rank, world)
    try:
        return [draw_batch(dataset, objective, cfg, s, m, rank, world, stream) for s in range(steps)
                for m in range(accum)]
    finally:
        stream.close()


def test_workers_give_the_same_batches_and_each_process_decodes_its_slice(folder, tmp_path):
    root, pixels = folder
    cfg = config(tmp_path, root, "diffusion.objective=diffusion", "diffusion.prediction_type=sample",
                 "train.grad_accum=2")
    dataset = make_dataset("folder", path=str(root), image_size=8)
    plain = batches_of(cfg, dataset, 3, accum=2)
    cfg.data.num_workers = 2
    workers = batches_of(cfg, dataset, 3, accum=2)
    for a, b in zip(plain, workers):
        assert all(torch.equal(x, y) for x, y in zip(a[:4], b[:4]))
    # target = x0 (sample prediction): the decoded images of the indices the (seed, step) stream draws
    idx = draw_indices(N_IMAGES, 8, step_generator(cfg.train.seed, 1, 1))
    expected = torch.from_numpy(np.stack([pixels[i] for i in idx])).float() / 255 * 2 - 1
    assert torch.equal(plain[3][2], expected)
    # two processes: each decodes its half, and the halves are the one-process batch
    halves = [batches_of(cfg, dataset, 3, rank=r, world=2, accum=2) for r in (0, 1)]
    for k, whole in enumerate(workers):
        assert halves[0][k][2].shape[0] == 4
        assert torch.equal(torch.cat([halves[0][k][2], halves[1][k][2]]), whole[2])


def test_random_flip_flips_exactly_the_examples_of_its_stream(folder, tmp_path):
    root, _ = folder
    cfg = config(tmp_path, root, "diffusion.objective=diffusion", "diffusion.prediction_type=sample")
    dataset = make_dataset("folder", path=str(root), image_size=8)
    objective = Objective.from_config(cfg.diffusion)
    masks = []
    for step in (0, 1):
        plain = draw_batch(dataset, objective, cfg, step, 0, 0, 1)
        cfg.data.random_flip = True
        flipped = draw_batch(dataset, objective, cfg, step, 0, 0, 1)
        cfg.data.random_flip = False
        mask = flip_mask(cfg.train.seed, step, 0, 8)
        assert 0 < mask.sum() < 8
        assert torch.equal(plain[1], flipped[1])  # timesteps (and noise) are not disturbed by the flip
        for k in range(8):
            want = plain[2][k].flip(-1) if mask[k] else plain[2][k]
            assert torch.equal(flipped[2][k], want), (step, k)
        masks.append(mask)
    assert not torch.equal(masks[0], masks[1])


def test_images_round_trip_exactly_and_are_centre_cropped(tmp_path):
    grey = np.arange(256, dtype=np.uint8).reshape(16, 16)
    Image.fromarray(grey).save(tmp_path / "ramp.png")
    ds = make_dataset("folder", path=str(tmp_path), image_size=16, channels=1)
    assert torch.equal(ds.decode(torch.tensor([0]))[0, 0], torch.from_numpy(grey))
    data = ds.data_tensor()
    assert data.min() == 0 and data.max() == 1 and torch.equal((data * 255).round().byte()[0, 0],
                                                                torch.from_numpy(grey))
    x, _ = ds.sample(4, torch.Generator().manual_seed(0))
    assert x.min() == -1 and x.max() == 1
    assert torch.equal((ds.from_model(x) * 255).round().byte()[0, 0], torch.from_numpy(grey))
    # 10 x 30: the shorter side is scaled to 10 and the middle third kept (green), not squeezed
    wide = np.zeros((10, 30, 3), dtype=np.uint8)
    wide[:, :10, 0], wide[:, 10:20, 1], wide[:, 20:, 2] = 255, 255, 255
    out = to_square(Image.fromarray(wide), 10, 3)
    assert out.shape == (3, 10, 10) and (out[1] == 255).all() and (out[0] == 0).all() and (out[2] == 0).all()


def test_file_index_pins_the_run_to_its_files(tmp_path):
    write_folder(tmp_path / "imgs", n=4)
    index = tmp_path / "run" / "data_index.json"
    index.parent.mkdir()
    assert len(make_dataset("folder", path=str(tmp_path / "imgs"), image_size=8, index=index)) == 4
    assert len(json.loads(index.read_text())["files"]) == 4
    Image.new("RGB", (8, 8)).save(tmp_path / "imgs" / "zz-new.png")
    assert len(make_dataset("folder", path=str(tmp_path / "imgs"), image_size=8, index=index)) == 4
    assert len(make_dataset("folder", path=str(tmp_path / "imgs"), image_size=8)) == 5


def weights(path):
    return load_file(str(path / "model" / "diffusion_pytorch_model.safetensors"))


def test_split_run_with_workers_is_bitwise_the_straight_run(folder, tmp_path):
    root, _ = folder
    straight = train(config(tmp_path / "a", root, "data.random_flip=true"), quiet=True)
    split_cfg = config(tmp_path / "b", root, "data.random_flip=true", "data.num_workers=2")
    train(split_cfg, quiet=True, stop_after=3)
    assert not (tmp_path / "b/model").exists() and (tmp_path / "b/data_index.json").is_file()
    split = train(split_cfg, resume="latest", quiet=True)
    for sub in ("model", "model_ema"):
        a, b = weights(straight / sub), weights(split / sub)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), sub


def first_drawn_file(root: Path, seed=0) -> Path:
    files = sorted(p for p in root.rglob("*.png"))
    return files[int(draw_indices(len(files), 8, step_generator(seed, 0, 0))[0])]


def test_corrupt_file_is_one_line_naming_it_or_skipped_and_counted(tmp_path, forked):
    write_folder(tmp_path / "imgs", n=12)
    bad = first_drawn_file(tmp_path / "imgs")
    bad.write_bytes(b"not a png at all")
    args = ["--config", "configs/digits.yaml", *TINY, "train.steps=2", f"data.path={tmp_path / 'imgs'}", "--quiet"]
    res = forked("train.py", *args, "data.num_workers=2", f"output_dir={tmp_path / 'out'}")
    lines = res.stderr.strip().splitlines()
    assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr[-1500:]
    assert len(lines) == 1 and lines[0].startswith("error: ") and bad.name in lines[0], res.stderr
    res = forked("train.py", *args, "data.skip_bad_files=true", f"output_dir={tmp_path / 'skip'}")
    assert res.returncode == 0, res.stderr[-1500:]
    assert bad.name in res.stderr and "skipped" in res.stderr
    records = [json.loads(line) for line in (tmp_path / "skip/metrics.jsonl").read_text().splitlines()]
    assert records[-1]["skipped_files"] == 1


def test_dataset_smaller_than_the_batch(tmp_path):
    write_folder(tmp_path / "imgs", n=3)
    with pytest.raises(DataError, match="has 3 images, fewer than train.batch_size=8"):
        train(config(tmp_path / "out", tmp_path / "imgs"), quiet=True)


@pytest.fixture(scope="module")
def hf_folder(tmp_path_factory):
    datasets = pytest.importorskip("datasets")
    rng = np.random.default_rng(1)
    arrays = [rng.integers(0, 256, (8, 8, 3), dtype=np.uint8) for _ in range(16)]
    features = datasets.Features({"img": datasets.Image(), "digit": datasets.ClassLabel(num_classes=3),
                                  "caption": datasets.Value("string")})
    table = datasets.Dataset.from_dict({"img": [Image.fromarray(a) for a in arrays], "digit": [i % 3 for i in
                                        range(16)], "caption": ["x"] * 16}, features=features)
    path = tmp_path_factory.mktemp("hf") / "saved"
    table.save_to_disk(str(path))
    return path, arrays


def test_hf_dataset_trains_a_class_conditional_run(hf_folder, tmp_path):
    path, arrays = hf_folder
    ds = make_dataset("hf", path=str(path), image_size=8, image_column="img", label_column="digit")
    assert len(ds) == 16 and ds.num_classes == 3 and ds.labels.tolist() == [i % 3 for i in range(16)]
    assert torch.equal(ds.decode(torch.tensor([5, 2])), torch.from_numpy(np.stack([arrays[5], arrays[2]])
                                                                        .transpose(0, 3, 1, 2)))
    cfg = config(tmp_path / "run", path, "data.name=hf", "data.image_column=img", "data.label_column=digit",
                 "data.class_conditional=true", "train.steps=3", "data.num_workers=1")
    out = train(cfg, quiet=True)
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["finished"] and summary["step"] == 3
    info = json.loads((out / "model/model_index.json").read_text())
    assert info["dataset"] == "hf" and info["num_classes"] == 3 and info["sample_shape"] == [3, 8, 8]


def test_hf_restart_reopens_the_pinned_arrow_files(hf_folder, tmp_path, monkeypatch):
    import softdiff.data.hf as hf

    path, arrays = hf_folder
    index = tmp_path / "data_index.json"
    make_dataset("hf", path=str(path), image_size=8, image_column="img", index=index)
    assert json.loads(index.read_text())["arrow_files"]

    def no_listing(*args):
        raise AssertionError("the dataset folder was opened again")

    monkeypatch.setattr(hf, "_open", no_listing)
    ds = make_dataset("hf", path=str(path), image_size=8, image_column="img", index=index)
    assert len(ds) == 16 and torch.equal(ds.decode(torch.tensor([7]))[0], torch.from_numpy(arrays[7]).permute(2, 0, 1))
    with pytest.raises(DataError, match="split 'train'.*data.rebuild_index"):  # another split: not what it pins
        make_dataset("hf", path=str(path), image_size=8, image_column="img", split="test", index=index)


def test_hf_missing_columns_are_named(hf_folder):
    path, _ = hf_folder
    with pytest.raises(DataError, match="data.image_column='image' is not a column.*img, digit, caption"):
        make_dataset("hf", path=str(path), image_size=8)
    with pytest.raises(DataError, match="data.label_column='label'"):
        make_dataset("hf", path=str(path), image_size=8, image_column="img", label_column="label")
    with pytest.raises(DataError, match="data.image_column='caption' .* not images"):
        make_dataset("hf", path=str(path), image_size=8, image_column="caption")
    with pytest.raises(DataError, match="data.download=true"):
        make_dataset("hf", path="someone/some-dataset", image_size=8)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def first_run_on_two_nodes(data_args: list[str], tmp_path: Path) -> dict:
    """``torchrun --nnodes 2`` on one machine, one process per node, both writing into one run folder as nodes on
    NFS do, on a dataset no run has listed yet: both nodes finish, both ranks end with the same weights, and those
    equal a one-process run's up to float reduction order. The run's data_index.json."""
    import os
    import subprocess
    import sys

    repo = Path(__file__).resolve().parents[1]
    args = ["train.py", "--config", "configs/digits.yaml", *TINY, "model.dropout=0.0", *data_args,
            f"output_dir={tmp_path / 'run'}", "--quiet"]
    endpoint = f"127.0.0.1:{_free_port()}"
    env = {**os.environ, "PYTHONPATH": str(repo), "OMP_NUM_THREADS": "1"}
    nodes = [subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc_per_node", "1",
                               "--node_rank", str(rank), "--rdzv-endpoint", endpoint, *args], cwd=repo, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for rank in (0, 1)]
    results = [node.communicate(timeout=300) for node in nodes]
    assert [node.returncode for node in nodes] == [0, 0], results[0][1][-1500:] + results[1][1][-1500:]
    summary = json.loads((tmp_path / "run" / "train_summary.json").read_text())
    assert summary["num_processes"] == 2 and len(set(summary["rank_weight_checksums"])) == 1
    single = train(load_train_config("configs/digits.yaml", [*TINY, "model.dropout=0.0", *data_args,
                                                             f"output_dir={tmp_path / 'one'}"]), quiet=True)
    w1, w2 = weights(single / "model"), weights(tmp_path / "run" / "model")
    assert all(torch.allclose(w1[k], w2[k], rtol=1e-5, atol=1e-6) for k in w1)
    assert not list((tmp_path / "run").glob(".data_index.tmp-*"))  # no rank left a half-written index behind
    return json.loads((tmp_path / "run" / "data_index.json").read_text())


@pytest.mark.slow
def test_two_nodes_sharing_the_run_folder_make_a_first_run_on_a_folder(folder, tmp_path):
    """The main process lists the folder first, then the other node reads its index (no race on data_index.json)."""
    root, _ = folder
    index = first_run_on_two_nodes([f"data.path={root}"], tmp_path)
    assert len(index["files"]) == N_IMAGES


@pytest.mark.slow
def test_two_nodes_sharing_the_run_folder_make_a_first_run_on_an_hf_dataset(hf_folder, tmp_path):
    """The same for a saved Hugging Face dataset: one index pins its Arrow files for both nodes."""
    path, _ = hf_folder
    index = first_run_on_two_nodes([f"data.path={path}", "data.name=hf", "data.image_column=img"], tmp_path)
    assert index["arrow_files"]


def test_in_memory_sets_prepare_only_their_slice_of_the_global_batch(tmp_path):
    """Each process gathers and converts only its slice of an in-memory set's batch, and the slices are exactly the
    global batch ``Dataset.sample`` draws from the (seed, step) stream."""
    cfg = load_train_config("configs/digits.yaml", [f"output_dir={tmp_path}", "diffusion.objective=diffusion",
                                                   "diffusion.prediction_type=sample", "train.batch_size=8"])
    dataset = make_dataset("digits")
    objective = Objective.from_config(cfg.diffusion)
    whole = draw_batch(dataset, objective, cfg, 3, 0, 0, 1)
    x0, _ = dataset.sample(8, step_generator(cfg.train.seed, 3, 0))
    assert torch.equal(whole[2], x0)                     # target = x0 (sample prediction)
    gathered = []
    examples = dataset.examples
    dataset.examples = lambda idx: (gathered.append(len(idx)), examples(idx))[1]
    halves = [draw_batch(dataset, objective, cfg, 3, 0, rank, 2) for rank in (0, 1)]
    assert gathered == [4, 4]
    for k in range(4):                                   # x_t, t, target, weight
        assert torch.equal(torch.cat([halves[0][k], halves[1][k]]), whole[k])


def test_a_run_is_evaluated_on_the_files_it_trained_on(tmp_path):
    """The evaluation reads a run's data as its training did: the run's config (or the caller's DataConfig) with
    the run's file index, so images added to the folder later are not in its references."""
    from softdiff.evaluation.run_eval import run_dataset, training_run_folder

    write_folder(tmp_path / "imgs", n=4)
    run = tmp_path / "run"
    run.mkdir()
    cfg = load_train_config(None, ["data.name=folder", f"data.path={tmp_path / 'imgs'}", "data.image_size=8"])
    (run / "config.yaml").write_text(to_yaml(cfg))
    make_dataset("folder", path=str(tmp_path / "imgs"), image_size=8, index=run / "data_index.json")  # training
    Image.new("RGB", (8, 8)).save(tmp_path / "imgs" / "zz-new.png")
    assert training_run_folder(run) == training_run_folder(run / "model_ema") == run
    assert len(run_dataset(run)) == len(run_dataset(run, cfg.data)) == 4
    assert training_run_folder(tmp_path / "imgs") is None
