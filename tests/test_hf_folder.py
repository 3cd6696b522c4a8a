"""A local image folder opened as a Hugging Face dataset without an Arrow conversion: the same rows, images,
labels and columns as ``datasets.load_dataset("imagefolder", data_dir=...)``, other layouts left to
``load_dataset``, the saved table reopened on a restart, errors naming the file."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from softdiff.data import make_dataset
from softdiff.data.hf_folder import open_image_folder
from softdiff.data.loader import draw_indices
from softdiff.errors import DataError
from softdiff.training import load_train_config, train
from softdiff.training.trainer import step_generator

datasets = pytest.importorskip("datasets")
TINY = ["data.name=hf", "data.image_size=8", "model.hidden_size=16", "model.num_layers=1", "model.num_heads=2",
        "model.conv_stem=4", "model.dropout=0.1", "train.batch_size=8", "train.steps=6", "train.warmup_steps=1",
        "train.checkpoint_every=3", "train.log_every=2", "sample.every=0", "sample.steps=2", "sample.num_samples=4"]

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(autouse=True)
def hf_cache(tmp_path, monkeypatch):
    """load_dataset (the reference, and the layouts left to it) writes its Arrow cache under the test's folder."""
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf-cache")


def write_image(path: Path, seed: int, size: int = 8) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)).save(path)


def classes(root: Path) -> None:
    """Three class folders with uneven counts, plus what the library skips: a hidden folder, a '__pycache__'
    folder, a file without a suffix, a file it ignores by name."""
    for i in range(14):
        write_image(root / ["zebra", "ant", "mole"][i % 3 if i < 12 else 0] / f"{i:02d}.png", i)
    write_image(root / ".cache" / "x.png", 90)
    write_image(root / "__pycache__" / "y.png", 91)
    (root / "done").write_text("ok\n")
    (root / "zebra" / "config.json").write_text("{}\n")


def nested_classes(root: Path) -> None:
    """Classes one level down, named by their own folder: the sorted names (ant, cat, zebra) are not in the order
    the files come in (set1/zebra before set2/ant), and 'cat' is in two places."""
    for i, folder in enumerate(["set1/zebra", "set1/cat", "set2/ant", "set2/cat", "set1/zebra", "set2/ant"]):
        write_image(root / folder / f"{i}.png", i)


def mixed_depths(root: Path) -> None:
    """Images at two depths: no labels."""
    for i in range(4):
        write_image(root / ("a" if i % 2 else "b/c") / f"{i}.png", i)


def flat(root: Path) -> None:
    for i in range(9):
        write_image(root / f"img{i}.jpg" if i % 2 else root / f"img{i}.png", i)


def metadata_csv(root: Path) -> None:
    """Rows in the metadata file's order, a subset of the images (one in a subfolder), integer labels and text."""
    for i in range(10):
        write_image(root / ("pics" if i < 5 else "more/pics") / f"{i}.png", i)
    rows = [(7, 2), (0, 1), (3, 0), (9, 2), (4, 1), (1, 0)]
    (root / "metadata.csv").write_text("file_name,digit,caption\n" + "".join(
        f"{'./pics' if i < 5 else 'more/pics'}/{i}.png,{d},a picture {i}\n" for i, d in rows))


def metadata_jsonl(root: Path) -> None:
    for i in range(8):
        write_image(root / f"{i}.png", i)
    rows = [{"file_name": f"{i}.png", "label": i % 3, "tags": ["x"], "mask_file_name": f"{7 - i}.png"}
            for i in (5, 2, 7, 0, 3)]  # two image columns: 'image' and 'mask'
    (root / "metadata.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))


LAYOUTS = {"classes": classes, "nested_classes": nested_classes, "mixed_depths": mixed_depths, "flat": flat,
           "metadata_csv": metadata_csv, "metadata_jsonl": metadata_jsonl}


def reference(root: Path, split: str = "train"):
    return datasets.load_dataset("imagefolder", data_dir=str(root), split=split)


def pixels(table) -> torch.Tensor:
    """A table's images, decoded by the library, as uint8 (N, 3, H, W)."""
    return torch.from_numpy(np.stack([np.asarray(img.convert("RGB")).transpose(2, 0, 1) for img in table["image"]]))


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_image_folder_is_the_imagefolder_builders_table(layout, tmp_path, monkeypatch):
    root = tmp_path / layout
    LAYOUTS[layout](root)
    ref = reference(root)
    ours = open_image_folder(root, "train")
    assert ours is not None, "the folder went to load_dataset"
    assert ours.features == ref.features and ours.column_names == ref.column_names
    assert ours.with_format("arrow")[:].equals(ref.with_format("arrow")[:])  # paths, labels, other columns
    # through make_dataset, with load_dataset out of reach: the same decoded images and labels, in order
    monkeypatch.setattr(datasets, "load_dataset", None)
    label = {"classes": "label", "nested_classes": "label", "metadata_csv": "digit",
             "metadata_jsonl": "label"}.get(layout)
    ds = make_dataset("hf", path=str(root), image_size=8, label_column=label)
    assert len(ds) == len(ref) and torch.equal(ds.decode(torch.arange(len(ds))), pixels(ref))
    if label:
        assert ds.labels.tolist() == ref[label]
        feature = ref.features[label]
        assert ds.num_classes == (feature.num_classes if isinstance(feature, datasets.ClassLabel)
                                  else max(ref[label]) + 1)


def test_class_names_sort_as_the_builder_sorts_them(tmp_path):
    classes(tmp_path / "imgs")
    ds = open_image_folder(tmp_path / "imgs", "train")
    assert ds.features["label"].names == ["ant", "mole", "zebra"]
    assert ds["label"] == [0] * 4 + [1] * 4 + [2] * 6  # rows in sorted path order: ant/01.png first
    assert Path(ds.with_format("arrow")[0].column("image")[0].as_py()["path"]).parts[-2:] == ("ant", "01.png")
    nested_classes(tmp_path / "nested")
    ds = open_image_folder(tmp_path / "nested", "train")
    assert ds.features["label"].names == ["ant", "cat", "zebra"] and ds["label"] == [1, 2, 2, 0, 0, 1]
    assert open_image_folder(tmp_path / "nested" / "set1", "train")["label"] == [0, 1, 1]  # cat, zebra


@pytest.mark.parametrize("extra", ["split_folders", "text_file", "card"])
def test_other_layouts_are_left_to_load_dataset(extra, tmp_path):
    root = tmp_path / "imgs"
    if extra == "split_folders":
        for i in range(6):
            write_image(root / ("train" if i < 4 else "test") / ["cat", "dog"][i % 2] / f"{i}.png", i)
    else:
        classes(root)
        (root / ("notes.txt" if extra == "text_file" else "README.md")).write_text("notes\n")
    assert open_image_folder(root, "train") is None
    for split in ("train", "test") if extra == "split_folders" else ("train",):
        ref = reference(root, split)
        ds = make_dataset("hf", path=str(root), image_size=8, split=split)
        assert len(ds) == len(ref) and torch.equal(ds.decode(torch.arange(len(ds))), pixels(ref))


def test_restart_reopens_the_saved_table_not_the_folder(tmp_path, monkeypatch):
    import softdiff.data.hf as hf

    root = tmp_path / "imgs"
    classes(root)
    index = tmp_path / "run" / "data_index.json"
    first = make_dataset("hf", path=str(root), image_size=8, label_column="label", index=index)
    assert json.loads(index.read_text())["arrow_files"] == [index.with_suffix(".arrow").name]
    write_image(root / "ant" / "99.png", 99)  # added mid-run: not read by the resumed run

    def no_listing(*args):
        raise AssertionError("the dataset folder was opened again")

    monkeypatch.setattr(hf, "_open", no_listing)
    again = make_dataset("hf", path=str(root), image_size=8, label_column="label", index=index)
    assert len(again) == len(first) == 14 and torch.equal(again.labels, first.labels)
    assert again.num_classes == 3 and torch.equal(again.decode(torch.arange(14)), first.decode(torch.arange(14)))


def test_unreadable_images_split_and_metadata_paths_are_named(tmp_path):
    root = tmp_path / "imgs"
    classes(root)
    (root / "ant" / "01.png").write_bytes(b"not a png")
    ds = make_dataset("hf", path=str(root), image_size=8)
    with pytest.raises(DataError, match=r"image file '.*ant/01\.png' \(row 0 of .*column 'image'\) could not be"):
        ds.decode(torch.tensor([0]))
    assert torch.equal(ds.decode(torch.tensor([0]), skip_bad=True), ds.decode(torch.tensor([1])))
    with pytest.raises(DataError, match="data.split='test' is not a split of .*choose one of: train"):
        make_dataset("hf", path=str(root), image_size=8, split="test")
    (root / "metadata.csv").write_text("file_name,label\nant/04.png,0\n../outside.png,1\n")
    with pytest.raises(DataError, match=r"metadata.csv' names '\.\./outside\.png' in column 'file_name'"):
        make_dataset("hf", path=str(root), image_size=8)


def test_corrupt_image_stops_training_with_one_line(tmp_path, forked):
    root = tmp_path / "imgs"
    classes(root)
    row = int(draw_indices(14, 8, step_generator(0, 0, 0))[0])  # the first example of step 0 (seed 0)
    bad = Path(open_image_folder(root, "train").with_format("arrow")[row].column("image")[0].as_py()["path"])
    bad.write_bytes(b"not a png")
    args = ["--config", "configs/digits.yaml", *TINY, "train.steps=2", f"data.path={root}", "data.num_workers=1",
            f"output_dir={tmp_path / 'out'}", "--quiet"]
    res = forked("train.py", *args)
    lines = res.stderr.strip().splitlines()
    assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr[-1500:]
    assert len(lines) == 1 and lines[0].startswith("error: ") and str(bad) in lines[0], res.stderr


def weights(path):
    return load_file(str(path / "model" / "diffusion_pytorch_model.safetensors"))


def test_class_conditional_run_resumes_bitwise_with_workers(tmp_path):
    root = tmp_path / "imgs"
    classes(root)

    def config(out, *extra):
        return load_train_config("configs/digits.yaml", [*TINY, f"data.path={root}", "data.label_column=label",
                                                         "data.class_conditional=true", "data.random_flip=true",
                                                         f"output_dir={out}", *extra])

    straight = train(config(tmp_path / "a"), quiet=True)
    split_cfg = config(tmp_path / "b", "data.num_workers=2")
    train(split_cfg, quiet=True, stop_after=3)
    assert (tmp_path / "b/data_index.arrow").is_file()
    split = train(split_cfg, resume="latest", quiet=True)
    assert json.loads((split / "model/model_index.json").read_text())["num_classes"] == 3
    for sub in ("model", "model_ema"):
        a, b = weights(straight / sub), weights(split / sub)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), sub
