"""MNIST / Fashion-MNIST read straight from IDX files: exact round trips, one-line errors naming the file, the
folders searched in order, the test split, and (where Debian's dataset-fashion-mnist is installed) the same pixels
and labels as torchvision's parser."""
import gzip
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from softdiff.data import idx, make_dataset
from softdiff.data.idx import check_idx_dataset, idx_shape, load_idx_dataset, read_idx, write_idx
from softdiff.errors import ConfigError, DataError
from softdiff.training import load_train_config

from conftest import FASHION, needs_fashion

NAMES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
         "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}


@pytest.fixture(autouse=True)
def empty_system_folders(tmp_path, monkeypatch):
    """The system folders point at an empty folder: no test depends on what this machine has installed."""
    empty = tmp_path / "system-empty"
    empty.mkdir()
    for name in idx.SYSTEM_FOLDERS:
        monkeypatch.setitem(idx.SYSTEM_FOLDERS, name, str(empty))


def _images(n, value=None, seed=0):
    if value is not None:
        return np.full((n, 28, 28), value, dtype=np.uint8)
    return np.random.default_rng(seed).integers(0, 256, (n, 28, 28), dtype=np.uint8)


def _write_split(folder, split="train", n=6, value=None, gz=True, labels=None):
    """The split's two IDX files in ``folder``; images all ``value`` (random when None)."""
    images_name, labels_name = NAMES[split]
    suffix = ".gz" if gz else ""
    write_idx(Path(folder) / (images_name + suffix), _images(n, value))
    write_idx(Path(folder) / (labels_name + suffix), np.arange(n) % 10 if labels is None else labels)
    return Path(folder) / (images_name + suffix), Path(folder) / (labels_name + suffix)


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("shape", [(7, 28, 28), (5, 3, 4), (11,), (0,)])
def test_write_read_round_trip_is_exact(tmp_path, gz, shape):
    array = np.random.default_rng(1).integers(0, 256, shape, dtype=np.uint8)
    path = tmp_path / ("f.idx.gz" if gz else "f.idx")
    write_idx(path, array)
    raw = path.read_bytes()
    assert (raw[:2] == b"\x1f\x8b") == gz
    raw = gzip.decompress(raw) if gz else raw
    header = bytes([0, 0, 8, len(shape)]) + b"".join(d.to_bytes(4, "big") for d in shape)
    assert raw[:len(header)] == header and raw[len(header):] == array.tobytes()
    back = read_idx(path)
    assert idx_shape(path) == shape
    assert back.dtype == torch.uint8 and tuple(back.shape) == shape and np.array_equal(back.numpy(), array)


def test_gzip_is_detected_by_content_not_suffix(tmp_path):
    array = _images(3)
    write_idx(tmp_path / "a.gz", array)
    write_idx(tmp_path / "b", array)
    (tmp_path / "a.gz").rename(tmp_path / "gzipped-without-suffix")
    (tmp_path / "b").rename(tmp_path / "plain.gz")
    assert np.array_equal(read_idx(tmp_path / "gzipped-without-suffix").numpy(), array)
    assert np.array_equal(read_idx(tmp_path / "plain.gz").numpy(), array)


def _damage(path, how):
    raw = gzip.decompress(path.read_bytes())
    if how == "truncated":
        path.write_bytes(gzip.compress(raw[:1000]))
    elif how == "truncated_gzip":
        path.write_bytes(path.read_bytes()[:200])
    elif how == "truncated_header":
        path.write_bytes(raw[:9])
    elif how == "wrong_magic":
        path.write_bytes(b"\x00\x00\x0d\x03" + raw[4:])  # 0x0D: float data
    elif how == "four_dims":
        path.write_bytes(b"\x00\x00\x08\x04" + raw[4:])
    elif how == "trailing":
        path.write_bytes(raw + b"\x00" * 7)
    elif how == "empty":
        path.write_bytes(b"")


@pytest.mark.parametrize("how,needle", [
    ("truncated", "is truncated: its header promises 6 images of 28x28 (4704 bytes) but it holds 984 bytes"),
    ("truncated_gzip", "could not be decompressed"),
    ("truncated_header", "is truncated: its header needs 16 bytes"),
    ("wrong_magic", "expected 0x00000803 (images) or 0x00000801 (labels), found 0x00000D03"),
    ("four_dims", "found 0x00000804"),
    ("trailing", "has 7 bytes of trailing data after the 6 images of 28x28"),
    ("empty", "found only 0 bytes"),
])
def test_damaged_file_is_one_line_naming_it(tmp_path, how, needle):
    images, _ = _write_split(tmp_path)
    _damage(images, how)
    for call in (lambda: read_idx(images), lambda: idx_shape(images),  # idx_shape: the run's preflight
                 lambda: check_idx_dataset("fashion_mnist", path=str(tmp_path)),
                 lambda: make_dataset("fashion_mnist", path=str(tmp_path))):
        with pytest.raises(DataError) as err:
            call()
        message = str(err.value)
        assert f"IDX file '{images}'" in message and needle in message and "\n" not in message


def test_count_mismatch_names_both_files(tmp_path):
    images, labels = _write_split(tmp_path, n=6, labels=np.arange(5) % 10)
    for check in (load_idx_dataset, check_idx_dataset):
        with pytest.raises(DataError, match="6 images but 5 labels") as err:
            check("mnist", path=str(tmp_path))
        assert str(images) in str(err.value) and str(labels) in str(err.value)


@pytest.mark.parametrize("case,needle", [
    ("label_10", "holds label 10; mnist labels are 0 to 9"),
    ("labels_as_images", "should hold mnist labels"),
    ("images_14x14", "should hold mnist images of 28x28"),
    ("only_images", "but not 'train-labels-idx1-ubyte'"),
])
def test_wrong_contents_are_one_line(tmp_path, case, needle):
    images, labels = _write_split(tmp_path, n=4)
    if case == "label_10":
        write_idx(labels, np.array([0, 1, 10, 2]))
    elif case == "labels_as_images":
        write_idx(labels, _images(4))
    elif case == "images_14x14":
        write_idx(images, np.zeros((4, 14, 14)))
    elif case == "only_images":
        labels.unlink()
    for check in (load_idx_dataset, check_idx_dataset):
        with pytest.raises(DataError, match=needle) as err:
            check("mnist", path=str(tmp_path))
        assert str(tmp_path) in str(err.value) and "\n" not in str(err.value)


def test_search_order_path_then_root_then_system(tmp_path, monkeypatch):
    given, root, system = tmp_path / "given", tmp_path / "root", tmp_path / "system"
    for folder in (given, root / "FashionMNIST" / "raw", system):
        folder.mkdir(parents=True)
    monkeypatch.setitem(idx.SYSTEM_FOLDERS, "fashion_mnist", str(system))
    _write_split(given, value=1)
    _write_split(root / "FashionMNIST" / "raw", value=2, gz=False)  # torchvision keeps them unpacked
    _write_split(system, value=3)

    def value(**kwargs):
        ds = make_dataset("fashion_mnist", **kwargs)
        assert ds.images.dtype == torch.uint8 and ds.shape == (1, 28, 28) and ds.num_classes == 10
        assert ds.labels.dtype == torch.int64 and torch.equal(ds.labels, torch.arange(6) % 10)
        return set(ds.images.unique().tolist())

    assert value(root=str(root), path=str(given)) == {1}
    assert value(root=str(root)) == {2}
    shutil.rmtree(root / "FashionMNIST")
    _write_split(root, value=4)  # the files directly in data.root
    assert value(root=str(root)) == {4}
    shutil.rmtree(root)
    assert value(root=str(root)) == {3}
    with pytest.raises(DataError, match="not a folder"):  # a data.path given is the only place looked at
        make_dataset("fashion_mnist", root=str(root), path=str(tmp_path / "nope"))


def test_split_test_reads_t10k(tmp_path):
    _write_split(tmp_path, "train", n=6, value=1)
    _write_split(tmp_path, "test", n=3, value=9, gz=False)
    train = make_dataset("mnist", path=str(tmp_path))
    test = make_dataset("mnist", path=str(tmp_path), split="test")
    assert len(train) == 6 and train.images.unique().tolist() == [1]
    assert len(test) == 3 and test.images.unique().tolist() == [9] and test.images.shape == (3, 1, 28, 28)


def test_bad_split_is_one_line(tmp_path):
    _write_split(tmp_path)
    with pytest.raises(DataError, match=r"data.split='val' is not valid .*choose one of: train, test"):
        load_idx_dataset("fashion_mnist", path=str(tmp_path), split="val")
    with pytest.raises(ConfigError, match=r"data.split='val' is not valid; choose one of: train, test"):
        load_train_config(None, ["data.name=mnist", "data.split=val"])
    assert load_train_config(None, ["data.name=mnist", "data.split=test"]).data.split == "test"


@pytest.mark.parametrize("name,install", [
    ("fashion_mnist", "apt-get install dataset-fashion-mnist"),
    ("mnist", "install a Debian package that places them under"),
])
def test_missing_data_names_every_way_and_every_place(tmp_path, name, install):
    root = tmp_path / "root"
    with pytest.raises(DataError) as err:
        make_dataset(name, root=str(root))
    message = str(err.value)
    for needle in (install, "data.path=FOLDER", "data.download=true", str(root / idx.TORCHVISION_FOLDERS[name] / "raw"),
                   f"'{root}'", idx.SYSTEM_FOLDERS[name], "train-images-idx3-ubyte"):
        assert needle in message, (needle, message)
    assert "\n" not in message


def test_bad_idx_file_on_the_command_line_is_one_line_and_exit_2(tmp_path, forked):
    data = tmp_path / "data"
    images, _ = _write_split(data, n=6)
    _damage(images, "truncated")
    out = tmp_path / "out"
    res = forked("train.py", "data.name=fashion_mnist", f"data.path={data}", "model.hidden_size=16",
                 "model.num_layers=1", "model.num_heads=2", "train.steps=1", f"output_dir={out}", timeout=120)
    lines = res.stderr.strip().splitlines()
    assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr[-1500:]
    assert len(lines) == 1 and lines[0].startswith("error: ") and str(images) in lines[0], res.stderr
    assert not out.exists()




@needs_fashion
@pytest.mark.parametrize("split,count", [("train", 60000), ("test", 10000)])
def test_real_fashion_mnist_matches_torchvision(tmp_path, monkeypatch, split, count):
    from torchvision.datasets.mnist import read_image_file, read_label_file

    monkeypatch.setitem(idx.SYSTEM_FOLDERS, "fashion_mnist", str(FASHION))
    images, labels = load_idx_dataset("fashion_mnist", root=str(tmp_path / "none"), split=split)
    assert images.shape == (count, 1, 28, 28) and images.dtype == torch.uint8 and labels.dtype == torch.int64
    assert torch.bincount(labels, minlength=10).tolist() == [count // 10] * 10
    unpacked = []
    for name in NAMES[split]:  # torchvision's parser reads unpacked files only
        (tmp_path / name).write_bytes(gzip.decompress((FASHION / f"{name}.gz").read_bytes()))
        unpacked.append(str(tmp_path / name))
    assert torch.equal(images[:, 0], read_image_file(unpacked[0]))
    assert torch.equal(labels, read_label_file(unpacked[1]))
