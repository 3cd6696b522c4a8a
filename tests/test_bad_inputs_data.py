"""Bad and unusual data inputs: images of every bit depth and mode decode to their values, a run folder's data
index is checked when it is read back (damaged, foreign or pointing elsewhere: one line saying how to rebuild it,
and data.rebuild_index=true rebuilds it), a symbolic link loop in an image folder and a metadata.csv without
rows are one line each."""
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from softdiff.data import make_dataset
from softdiff.data.images import load_folder
from softdiff.errors import DataError
from softdiff.training import load_train_config, train

TINY = ["data.image_size=8", "model.hidden_size=16", "model.num_layers=1", "model.num_heads=2",
        "train.batch_size=8", "train.steps=2", "train.warmup_steps=1", "train.checkpoint_every=1", "sample.every=0",
        "sample.steps=2", "sample.num_samples=4"]


def write_folder(root: Path, n: int = 12, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    for i in range(n):
        sub = root / ("a" if i < n // 2 else "b")
        sub.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(sub / f"{i:02d}.png")
    return root


def one_line_error(res, *needles):
    """Exit 2, one 'error:' line on stderr (no traceback, no progress bar) holding every needle."""
    lines = res.stderr.strip().splitlines()
    assert res.returncode == 2, (res.returncode, res.stderr[-1500:])
    assert "Traceback" not in res.stderr, res.stderr[-1500:]
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr[-1500:]
    assert all(n in lines[0] for n in needles), (needles, lines[0])
    return lines[0]


# ------------------------------------------------------------------------------------------------ decoding
def test_16_bit_ramp_decodes_to_its_values_on_every_path(tmp_path):
    """A 16-bit grey PNG (Pillow: I;16) is scaled from 0..65535, not clipped at 255 (which made it all white)."""
    ramp = np.linspace(0, 65535, 256).round().astype(np.uint16).reshape(16, 16)
    (tmp_path / "imgs").mkdir()
    Image.fromarray(ramp).save(tmp_path / "imgs" / "ramp16.png")
    assert Image.open(tmp_path / "imgs" / "ramp16.png").mode == "I;16"
    truth = torch.from_numpy(ramp / 65535.0).float()
    for name in ("folder", "hf"):
        for channels in (1, 3):
            ds = make_dataset(name, path=str(tmp_path / "imgs"), image_size=16, channels=channels)
            got = ds.data_tensor()[0]
            assert (got - truth).abs().max() <= 1 / 255, (name, channels)
    eager = load_folder(tmp_path / "imgs", 16, 1)[0, 0].float() / 255
    assert (eager - truth).abs().max() <= 1 / 255


def _mode_cases(rng):
    """(mode, Pillow image, file suffix, expected RGB values in 0..255 as float (H, W, 3))."""
    rgb = rng.integers(0, 256, (8, 8, 3)).astype(np.uint8)
    grey = rng.integers(0, 256, (8, 8)).astype(np.uint8)
    alpha = rng.integers(0, 256, (8, 8)).astype(np.uint8)
    bits = grey > 127
    cmyk = rng.integers(0, 256, (8, 8, 4)).astype(np.uint8)
    palette = Image.fromarray(rgb).quantize(16)
    lut = np.array(palette.getpalette()[:48]).reshape(16, 3)
    transparent = palette.copy()
    transparent.info["transparency"] = bytes([0] * 4 + [255] * 12)  # several entries: Pillow warns if converted
    wide = np.linspace(0, 65535, 64).round().astype(np.uint16).reshape(8, 8)
    unit = (grey / 255.0).astype(np.float32)
    as_rgb = lambda g: np.repeat(g[..., None].astype(np.float64), 3, axis=2)  # noqa: E731
    k = cmyk[..., 3:].astype(np.float64)
    return [
        ("1", Image.fromarray(bits).convert("1"), "png", as_rgb(bits * 255.0)),
        ("L", Image.fromarray(grey), "png", as_rgb(grey)),
        ("P", palette, "png", lut[np.asarray(palette)].astype(np.float64)),
        ("P+transparency", transparent, "png", lut[np.asarray(palette)].astype(np.float64)),
        ("RGB", Image.fromarray(rgb), "png", rgb.astype(np.float64)),
        ("RGBA", Image.fromarray(np.dstack([rgb, alpha]), "RGBA"), "png", rgb.astype(np.float64)),  # colour kept
        ("LA", Image.fromarray(np.dstack([grey, alpha]), "LA"), "png", as_rgb(grey)),
        ("CMYK", Image.fromarray(cmyk, "CMYK"), "tiff", (255 - cmyk[..., :3]) * (255 - k) / 255),
        ("I;16", Image.fromarray(wide), "png", as_rgb(wide / 65535 * 255)),
        ("I;16 tiff", Image.fromarray(wide), "tif", as_rgb(wide / 65535 * 255)),
        ("F", Image.fromarray(unit, "F"), "tiff", as_rgb(unit.astype(np.float64) * 255)),
    ]


def test_every_mode_and_bit_depth_decodes_to_its_values(tmp_path, recwarn):
    """Each mode, written to a file and read back as grey and as RGB, is within one level (1/255) of its values."""
    cases = _mode_cases(np.random.default_rng(0))
    for k, (mode, img, suffix, want) in enumerate(cases):
        folder = tmp_path / f"m{k}"
        folder.mkdir()
        img.save(folder / f"x.{suffix}")
        grey_want = want @ np.array([0.299, 0.587, 0.114])
        for channels, expected in ((3, want.transpose(2, 0, 1)), (1, grey_want[None])):
            got = make_dataset("folder", path=str(folder), image_size=8, channels=channels).decode(
                torch.tensor([0]))[0].numpy().astype(np.float64)
            err = np.abs(got - expected).max()
            assert err <= 1.0 + 1e-9, (mode, channels, err)
    assert not [w for w in recwarn if "Palette" in str(w.message)], "a palette image made Pillow warn"


def test_values_outside_the_bit_depth_are_one_line_naming_the_file(tmp_path):
    """A 32-bit float image is read as values in [0, 1]; others are refused, naming the file and the range."""
    Image.fromarray(np.full((8, 8), 7.5, np.float32), "F").save(tmp_path / "float.tiff")
    ds = make_dataset("folder", path=str(tmp_path), image_size=8, channels=1)
    with pytest.raises(DataError, match=r"float\.tiff' could not be read \(its 32-bit float values run from 7.5 to "
                                        r"7.5, outside 0 to 1\)"):
        ds.decode(torch.tensor([0]))


# ------------------------------------------------------------------------------------------------ run indexes
@pytest.fixture(scope="module")
def stopped_runs(tmp_path_factory):
    """A folder run and an hf run (an image folder read in place), each stopped after step 1 with a checkpoint and
    its data_index.json (and .arrow) written; plus the folders they read and another folder of images."""
    base = tmp_path_factory.mktemp("stopped")
    imgs, other = write_folder(base / "imgs"), write_folder(base / "other", seed=1)
    runs = {}
    for name in ("folder", "hf"):
        cfg = load_train_config("configs/digits.yaml", [*TINY, f"data.name={name}", f"data.path={imgs}",
                                                        f"output_dir={base / name}"])
        runs[name] = train(cfg, quiet=True, stop_after=1)
        assert (runs[name] / "data_index.json").is_file()
    return {"base": base, "imgs": imgs, "other": other, **runs}


def _arrow_of(dataset_folder: Path, where: Path) -> Path:
    """The data_index.arrow an hf run writes for ``dataset_folder`` (built beside ``where``)."""
    make_dataset("hf", path=str(dataset_folder), image_size=8, index=where / "data_index.json")
    return where / "data_index.arrow"


def _damage(kind: str, run: Path, runs: dict) -> None:
    index, arrow = run / "data_index.json", run / "data_index.arrow"
    data = json.loads(index.read_text())
    if kind == "truncated":
        index.write_text(index.read_text()[:30])
    elif kind == "garbage":
        index.write_bytes(b"\x00\x01 not an index at all \xff")
    elif kind == "not_an_object":
        index.write_text("[1, 2, 3]")
    elif kind == "other_folder":
        index.write_text(json.dumps({**data, "root": str(runs["other"])}))
    elif kind == "file_outside":
        index.write_text(json.dumps({**data, "files": ["../other/a/00.png", *data["files"][1:]]}))
    elif kind == "absolute_file":
        index.write_text(json.dumps({**data, "files": ["/etc/hostname", *data["files"][1:]]}))
    elif kind == "no_files":
        index.write_text(json.dumps({**data, "files": []}))
    elif kind == "hf_index_in_folder_run":
        index.write_text((runs["hf"] / "data_index.json").read_text())
    elif kind == "folder_index_in_hf_run":
        index.write_text((runs["folder"] / "data_index.json").read_text())
    elif kind == "arrow_truncated":
        arrow.write_bytes(arrow.read_bytes()[:200])
    elif kind == "arrow_garbage":
        arrow.write_bytes(b"garbage " * 40)
    elif kind == "arrow_foreign":
        import datasets
        import pyarrow as pa

        table = datasets.Dataset.from_dict({"x": [1, 2]})
        with pa.OSFile(str(arrow), "wb") as sink, pa.ipc.new_stream(sink, table.data.schema) as writer:
            writer.write_table(table.data.table)
    elif kind == "arrow_of_other_folder":  # the table of another image folder, its paths all outside data.path
        shutil.copy(_arrow_of(runs["other"], run.parent / "other_index"), arrow)
    elif kind == "arrow_elsewhere":
        stray = run.parent / "stray.arrow"
        shutil.copy(arrow, stray)
        index.write_text(json.dumps({**data, "arrow_files": [str(stray)]}))
    elif kind == "other_dataset":
        index.write_text(json.dumps({**data, "hf": {"path": str(runs["other"]), "split": "train"}}))
    else:
        raise AssertionError(kind)


def _contents(run: Path) -> dict:
    """Every file of a run folder and its bytes (the lock file, which records its last holder, left out)."""
    return {p.relative_to(run): p.read_bytes() for p in run.rglob("*") if p.is_file() and p.name != ".lock"}


INDEX_CASES = [  # (run, damage, what the one line must say)
    ("folder", "truncated", "is not valid JSON"),
    ("folder", "garbage", "is not valid JSON"),
    ("folder", "not_an_object", "not a JSON object"),
    ("folder", "other_folder", "lists the folder '{other}', not '{imgs}'"),
    ("folder", "file_outside", "names '../other/a/00.png', which is not inside the folder '{imgs}'"),
    ("folder", "absolute_file", "names '/etc/hostname', which is not inside"),
    ("folder", "no_files", "lists no files"),
    ("folder", "hf_index_in_folder_run", "pins a Hugging Face dataset"),
    ("hf", "truncated", "is not valid JSON"),
    ("hf", "folder_index_in_hf_run", "lists an image folder"),
    ("hf", "arrow_truncated", "names Arrow files that could not be read"),
    ("hf", "arrow_garbage", "names Arrow files that could not be read"),
    ("hf", "arrow_foreign", "names Arrow files of 2 rows (x), not the 12 rows"),
    ("hf", "arrow_of_other_folder", "names the image '{other}/a/00.png', which is not inside '{imgs}'"),
    ("hf", "arrow_elsewhere", "outside the run folder, the dataset folder and the datasets cache"),
    ("hf", "other_dataset", "pins the dataset '{other}' (split 'train'), not '{imgs}'"),
]


@pytest.mark.parametrize("run_name,kind,needle", INDEX_CASES, ids=[f"{r}-{k}" for r, k, _ in INDEX_CASES])
def test_damaged_or_foreign_index_on_resume_is_one_line_saying_how_to_rebuild(run_name, kind, needle, stopped_runs,
                                                                               tmp_path, forked):
    run = tmp_path / run_name
    shutil.copytree(stopped_runs[run_name], run)
    _damage(kind, run, stopped_runs)
    before = _contents(run)
    res = forked("train.py", "--config", "configs/digits.yaml", *TINY, f"data.name={run_name}",
                 f"data.path={stopped_runs['imgs']}", f"output_dir={run}", "--resume", "latest", "--quiet")
    line = one_line_error(res, f"data index '{run / 'data_index.json'}'",
                          needle.format(other=stopped_runs["other"], imgs=stopped_runs["imgs"]),
                          "data.rebuild_index=true")
    assert "holds no images" not in line
    assert _contents(run) == before, "a refused index must leave the run folder as it was"


@pytest.mark.parametrize("run_name", ["folder", "hf"])
def test_rebuild_index_lists_the_dataset_again_and_the_run_resumes(run_name, stopped_runs, tmp_path, forked):
    run = tmp_path / run_name
    shutil.copytree(stopped_runs[run_name], run)
    _damage("garbage", run, stopped_runs)
    args = ["--config", "configs/digits.yaml", *TINY, f"data.name={run_name}", f"data.path={stopped_runs['imgs']}",
            f"output_dir={run}", "--resume", "latest", "--quiet"]
    res = forked("train.py", *args, "data.rebuild_index=true")
    assert res.returncode == 0, res.stderr[-1500:]
    assert json.loads((run / "train_summary.json").read_text())["finished"]
    index = json.loads((run / "data_index.json").read_text())
    assert len(index["files"] if run_name == "folder" else make_dataset(
        "hf", path=str(stopped_runs["imgs"]), image_size=8, index=run / "data_index.json")) == 12
    # acts once: config.yaml records false, so a later resume reads the rebuilt index, not a new listing
    assert load_train_config(run / "config.yaml").data.rebuild_index is False


# ------------------------------------------------------------------------------------------------ folders, messages
@pytest.mark.parametrize("name", ["folder", "hf"])
@pytest.mark.parametrize("link,target", [("a/up", ".."), ("self", "self")], ids=["to_a_folder_above", "to_itself"])
def test_symbolic_link_loop_in_the_image_folder_is_one_line(name, link, target, tmp_path, forked):
    imgs = write_folder(tmp_path / "imgs")
    (imgs / link).symlink_to(target)
    if link == "a/up":  # a second loop: without loop detection the walk doubles at every level
        (imgs / "b" / "up").symlink_to("..")
    res = forked("train.py", "--config", "configs/digits.yaml", *TINY, f"data.name={name}", f"data.path={imgs}",
                 f"output_dir={tmp_path / 'out'}", "--quiet", timeout=60)
    one_line_error(res, f"'{link}' inside folder '{imgs}' is a symbolic link loop")


def test_a_link_to_a_folder_beside_it_is_followed_not_taken_for_a_loop(tmp_path):
    imgs = write_folder(tmp_path / "imgs")
    write_folder(tmp_path / "more", n=4, seed=2)
    (imgs / "more").symlink_to(tmp_path / "more")
    (imgs / "again").symlink_to("a")  # the same folder twice is no loop
    assert len(make_dataset("folder", path=str(imgs), image_size=8)) == 12 + 4 + 6


@pytest.mark.parametrize("content", ["file_name,label\n", ""], ids=["header_only", "empty"])
def test_metadata_csv_without_rows_is_one_line_naming_it(content, tmp_path, forked):
    imgs = write_folder(tmp_path / "imgs")
    (imgs / "metadata.csv").write_text(content)
    res = forked("train.py", "--config", "configs/digits.yaml", *TINY, "data.name=hf", f"data.path={imgs}",
                 f"output_dir={tmp_path / 'out'}", "--quiet")
    line = one_line_error(res, f"metadata file '{imgs / 'metadata.csv'}' has no rows")
    assert "list index out of range" not in line
