import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from softdiff.cli import main as softdiff_main
from softdiff.studies.compare.config import CompareConfig
from softdiff.config import load_config, to_yaml
from softdiff.studies.ntk.study import NTKStudyConfig
from softdiff.studies.softmax_regression.study import RegressConfig
from softdiff.errors import ConfigError
from softdiff.nets import NETS
from softdiff.training import TrainConfig

SHIPPED = sorted((Path(__file__).resolve().parents[1] / "softdiff" / "configs").rglob("*.yaml"))


@dataclass
class Inner:
    rate: float = 0.1
    name: str = "a"


@dataclass
class Schema:
    steps: int = 10
    inner: Inner = field(default_factory=Inner)

    def validate(self):
        if self.steps <= 0:
            raise ConfigError(f"steps={self.steps} must be positive.")


def test_layers_apply_in_order(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("steps: 20\ninner:\n  rate: 0.5\n")
    cfg = load_config(Schema, path, ["inner.name=b", "steps=30"])
    assert (cfg.steps, cfg.inner.rate, cfg.inner.name) == (30, 0.5, "b")
    assert load_config(Schema, None, []).steps == 10
    assert "rate: 0.5" in to_yaml(cfg)


@pytest.mark.parametrize("text,overrides,needle", [
    ("steps: 5\nbogus: 1\n", [], "unknown config key 'bogus'"),
    ("inner:\n  rat: 1\n", [], "valid keys there: rate, name"),
    ("steps: [1, 2]\n", [], "'steps'"),
    ("- 1\n- 2\n", [], "must hold a mapping"),
    ("steps: [1\n", [], "not valid YAML"),
    ("", ["steps"], "must look like key.sub=value"),
    ("", ["steps=-1"], "steps=-1 must be positive"),
])
def test_bad_configs_raise_one_sentence(tmp_path, text, overrides, needle):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_config(Schema, path, overrides)
    assert needle in str(err.value) and "\n" not in str(err.value)


def test_softdiff_command_dispatch(capsys):
    assert softdiff_main(["--help"]) == 0
    assert "compare" in capsys.readouterr().out
    assert softdiff_main(["nope"]) == 2
    assert "unknown command 'nope'" in capsys.readouterr().err
    assert softdiff_main(["train", "train.steps=0"]) == 2
    assert "train.steps=0 must be positive" in capsys.readouterr().err


def _flat(tree: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in tree.items():
        out.update(_flat(value, f"{prefix}{key}.") if isinstance(value, dict) else {f"{prefix}{key}": value})
    return out


def _get(cfg, dotted: str):
    for part in dotted.split("."):
        if isinstance(cfg, dict):  # the model section: a net's arguments, some under an older name (aliases)
            cfg = cfg[NETS[cfg["type"]].aliases.get(part, part) if "type" in cfg else part]
        else:
            cfg = getattr(cfg, part)
    return cfg


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_shipped_configs_load_the_values_they_set(path):
    from softdiff.studies.sinks.core import SinksConfig
    from softdiff.commands.flow import FlowConfig

    schema = {"compare": CompareConfig, "ntk": NTKStudyConfig, "regress": RegressConfig, "flow": FlowConfig,
              "sinks": SinksConfig}.get(path.parent.name, TrainConfig)
    cfg = load_config(schema, path)
    # Every key the file sets has the file's value (read here by plain YAML); every other key its default.
    written, loaded = _flat(yaml.safe_load(path.read_text())), _flat(dataclasses.asdict(cfg))
    defaults = _flat(dataclasses.asdict(schema()))
    if schema is TrainConfig:  # the model section's other keys take the net's own defaults
        entry = NETS[cfg.model["type"]]
        defaults.update({f"model.{k}": a.default for k, a in entry.config_arguments().items()})
        written = {f"model.{entry.aliases.get(k[6:], k[6:])}" if k.startswith("model.") else k: v
                   for k, v in written.items()}
    assert written and set(written) <= set(loaded)
    for key, value in loaded.items():
        assert value == (written[key] if key in written else defaults[key]), key
    if schema is CompareConfig:  # and the runs' training config carries each override
        base = cfg.base_train_config()
        for item in cfg.train_overrides:
            key, value = item.split("=", 1)
            assert _get(base, key) == yaml.safe_load(value), item


def test_shipped_configs_resolve_from_any_folder(tmp_path, monkeypatch):
    from softdiff.config import resolve_config_path

    monkeypatch.chdir(tmp_path)  # no configs/ here: the names resolve to the package's copies
    assert resolve_config_path("configs/digits.yaml") == SHIPPED[0].parents[0] / "digits.yaml"
    assert resolve_config_path("configs/compare/toy.yaml").read_text().startswith(
        (SHIPPED[0].parent / "compare" / "toy.yaml").read_text()[:40])
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "digits.yaml").write_text("train: {steps: 7}\n")  # a local file wins
    assert load_config(TrainConfig, "configs/digits.yaml").train.steps == 7
    with pytest.raises(ConfigError, match="configs/nope.yaml.*configs/digits.yaml"):
        resolve_config_path("configs/nope.yaml")


@pytest.mark.parametrize("command", ["train", "sample", "eval", "compare", "ntk", "regress", "flow", "sinks", "probe"])
def test_every_command_follows_the_one_convention(command, capsys):
    from softdiff.cli import COMMANDS

    assert command in COMMANDS
    with pytest.raises(SystemExit) as done:
        softdiff_main([command, "--help"])
    assert done.value.code == 0
    text = capsys.readouterr().out
    assert all(flag in text for flag in ("--output-dir", "--quiet", "examples:")), text


def test_mixed_precision_no_unquoted_means_no(tmp_path):
    """YAML reads `no` as false: `train.mixed_precision=no` (accelerate's spelling) on the command line or in a file
    is "no", not the invalid "False"."""
    from softdiff.training import load_train_config

    (tmp_path / "c.yaml").write_text("train:\n  mixed_precision: no\n")
    assert load_train_config(tmp_path / "c.yaml").train.mixed_precision == "no"
    assert load_train_config("configs/digits.yaml", ["train.mixed_precision=no"]).train.mixed_precision == "no"
