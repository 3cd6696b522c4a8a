"""One registry entry per score net: the model section is ``type`` plus the net's own constructor arguments.

Oracles: the nets that softdiff built before the registry (recorded by tests/fixtures/record_flat_model_sections.py
with main at 059bade: config.json values, parameter counts, tensor names and shapes), ``inspect`` for the
source-read signatures, and a network defined here that is trained through ``softdiff.training.train``.
"""
import functools
import inspect
import json
import math
from pathlib import Path

import pytest
import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from safetensors.torch import load_file
from torch import nn

from fixtures.record_flat_model_sections import build_on_meta, net_record, shipped_train_configs
from softdiff.cli import run_main
from softdiff.config import save_config
from softdiff.commands.train import main as train_main
from softdiff.errors import ConfigError
from softdiff.nets import NETS, NetEntry, register_net
from softdiff.nets.embeddings import timestep_tensor
from softdiff.nets.signature import constructor_arguments
from softdiff.pipeline import SoftdiffPipeline
from softdiff.training import load_train_config, train
from softdiff.training.preflight import activation_bytes, count_parameters, size_keys

RECORDS = json.loads((Path(__file__).parent / "fixtures" / "flat_model_sections.json").read_text())
# The keys a config may set, per net: the constructor arguments that neither the data nor another section fills.
VALID_KEYS = {
    "ScoreMLP": "hidden_size, num_blocks, activation, width_mult, fourier_features, fourier_scale, dropout",
    "ScoreTransformer": "patch_size, hidden_size, num_layers, num_heads, activation, attention_normalization, "
                        "width_mult, num_registers, dropout, long_skips, conv_out, conv_stem, conv_decoder, "
                        "conditioning",
    "TwoLayerScoreNet": "width, sigma, coupled, activation",
}


@functools.lru_cache(maxsize=1)
def shipped() -> dict:
    """Every shipped training config and comparison base config, loaded with today's code."""
    return shipped_train_configs()


# --------------------------------------------------------------------------- configs from before the registry
def test_every_shipped_config_has_a_record():
    assert sorted(shipped()) == sorted(RECORDS)


@pytest.mark.parametrize("name", sorted(RECORDS))
def test_flat_config_yaml_of_a_run_builds_the_same_net(name, tmp_path):
    """A run folder's config.yaml written before the registry (every net's fields in one flat section) loads,
    keeps only its net's keys, and builds the identical net; resaved, it reloads to the same config."""
    record = RECORDS[name]
    path = tmp_path / "config.yaml"
    path.write_text(record["config_yaml"])
    cfg = load_train_config(path)
    assert net_record(build_on_meta(cfg)) == {k: v for k, v in record.items() if k != "config_yaml"}
    assert set(cfg.model) == {"type", *VALID_KEYS[record["class"]].split(", ")}
    save_config(cfg, tmp_path / "again.yaml")
    assert load_train_config(tmp_path / "again.yaml") == cfg


@pytest.mark.parametrize("name", sorted(RECORDS))
def test_shipped_config_builds_the_net_it_built_before(name):
    cfg = shipped()[name]
    assert net_record(build_on_meta(cfg)) == {k: v for k, v in RECORDS[name].items() if k != "config_yaml"}


# ------------------------------------------------------------------------------------------ keys a net refuses
def _train_error(capsys, tmp_path, *argv) -> str:
    out = tmp_path / "out"
    assert run_main(train_main, [*argv, f"output_dir={out}"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    assert not out.exists()
    return err


@pytest.mark.parametrize("config, key, net", [
    ("configs/digits.yaml", "width", "ScoreTransformer"),        # TwoLayerScoreNet's key
    ("configs/digits.yaml", "fourier_features", "ScoreTransformer"),  # ScoreMLP's key
    ("configs/digits.yaml", "hidden_sise", "ScoreTransformer"),  # a typo
    ("configs/toy2d.yaml", "num_heads", "ScoreMLP"),             # ScoreTransformer's key
    ("configs/toy2d.yaml", "sigma", "ScoreMLP"),
    ("configs/toy2d_paper.yaml", "hidden_size", "TwoLayerScoreNet"),
    ("configs/toy2d_paper.yaml", "num_layers", "TwoLayerScoreNet"),  # the alias is ScoreMLP's only
])
def test_a_key_the_net_does_not_take_is_one_line_naming_the_valid_keys(config, key, net, capsys, tmp_path):
    err = _train_error(capsys, tmp_path, "--config", config, f"model.{key}=3")
    assert err.strip() == (f"error: model.{key} is not an argument of model.type={net}; valid keys: type, "
                           f"{VALID_KEYS[net]}.")


def test_the_valid_keys_are_the_constructor_arguments_less_the_filled_ones():
    filled = {"dim", "sample_size", "in_channels", "out_channels", "num_class_embeds",  # from the data
              "t_min", "t_max", "num_train_timesteps", "seed"}                        # TwoLayerScoreNet: other keys
    assert list(NETS) == list(VALID_KEYS)
    for name, entry in NETS.items():
        own = [k for k in inspect.signature(entry.net_class()).parameters if k not in filled]
        assert ", ".join(own) == VALID_KEYS[name]


@pytest.mark.parametrize("argv, needle", [
    (["--config", "configs/toy2d.yaml", "model.dim=3"], "model.dim is set from the data"),
    (["--config", "configs/digits.yaml", "model.in_channels=3"], "model.in_channels is set from the data"),
    (["--config", "configs/toy2d_paper.yaml", "model.seed=3"], "is set from train.seed"),
    (["--config", "configs/toy2d_paper.yaml", "model.t_max=2"], "is set from diffusion.ou_t_max"),
    (["--config", "configs/toy2d.yaml", "model.num_blocks=2", "model.num_layers=2"],
     "model.num_layers and model.num_blocks both set"),
    (["model.hidden_size=abc"], "model.hidden_size='abc' must be an integer"),
    (["model.conv_out=3"], "model.conv_out=3 must be true or false"),
    (["model.dropout=[1]"], "model.dropout=[1] must be a number"),
    (["model.type=Nope"], "model.type='Nope' is not valid; choose one of: ScoreMLP, ScoreTransformer"),
    (["data.name=moons"], "model.type=ScoreTransformer needs an image dataset"),
])
def test_bad_model_values_are_one_line(argv, needle, capsys, tmp_path):
    assert needle in _train_error(capsys, tmp_path, *argv)


def test_an_alias_is_renamed_and_defaults_are_filled(tmp_path):
    cfg = load_train_config(None, ["data.name=moons", "model.type=ScoreMLP", "model.num_layers=2", "model.dropout=0"])
    assert cfg.model == {"type": "ScoreMLP", "hidden_size": 128, "num_blocks": 2, "activation": "softmax",
                         "width_mult": 4, "fourier_features": 0, "fourier_scale": 1.0, "dropout": 0.0}
    assert isinstance(cfg.model["dropout"], float)


# --------------------------------------------------------------------------- signatures read without importing
def test_source_read_signature_matches_inspect():
    assert list(NETS) == ["ScoreMLP", "ScoreTransformer", "TwoLayerScoreNet"]
    for name, entry in NETS.items():
        assert isinstance(entry.target, str), name  # shipped nets load on first build
        assert constructor_arguments(entry.target) == constructor_arguments(entry.net_class()), name


# ------------------------------------------------------------------- adding a net: one class, one registry line
class TinyScoreNet(ModelMixin, ConfigMixin):
    """A net defined outside softdiff: one hidden layer over (x, t)."""

    @register_to_config
    def __init__(self, dim: int = 2, hidden: int = 8, num_class_embeds: int | None = None):
        super().__init__()
        self.inp = nn.Linear(dim + 1, hidden)
        self.out = nn.Linear(hidden, dim)

    def forward(self, sample, timestep, class_labels=None):
        x = sample.reshape(sample.shape[0], -1)
        t = timestep_tensor(timestep, sample.shape[0], sample.device)[:, None].to(x.dtype) / 1000
        return self.out(torch.tanh(self.inp(torch.cat([x, t], dim=-1)))).reshape(sample.shape)


@pytest.fixture
def tiny_net():
    entry = register_net(NetEntry(TinyScoreNet, activation_floats=lambda args, shape: 2 * args["hidden"],
                                  size_keys=("hidden",)))
    yield entry
    del NETS[entry.name]


def test_a_net_added_with_one_registry_line_trains_and_is_sized(tiny_net, tmp_path, capsys):
    overrides = ["data.name=8gaussians", "model.type=TinyScoreNet", "model.hidden=6", "train.steps=6",
                 "train.batch_size=16", "train.warmup_steps=1", "train.checkpoint_every=3", "train.log_every=3",
                 "sample.every=0", "sample.steps=2", "sample.num_samples=4", f"output_dir={tmp_path / 'run'}"]
    cfg = load_train_config(None, overrides)
    assert cfg.model == {"type": "TinyScoreNet", "hidden": 6}
    # the preflight sizes it: the parameter count of the meta build, the entry's activation estimate, its keys
    expected = (2 + 1) * 6 + 6 + 6 * 2 + 2
    assert count_parameters(cfg) == expected
    assert activation_bytes(cfg) == 4 * 16 * 2 * 6
    assert size_keys(cfg, batch=True) == "train.batch_size=16, model.hidden=6"

    out = train(cfg, quiet=True)
    saved = json.loads((out / "model" / "model" / "config.json").read_text())
    assert (saved["_class_name"], saved["hidden"], saved["dim"]) == ("TinyScoreNet", 6, 2)
    trained = load_file(str(out / "model" / "model" / "diffusion_pytorch_model.safetensors"))
    assert sum(t.numel() for t in trained.values()) == expected
    torch.manual_seed(cfg.train.seed)  # the trainer's init draw
    init = TinyScoreNet(dim=2, hidden=6).state_dict()
    assert set(init) == set(trained) and not all(torch.equal(init[k], trained[k]) for k in init)
    # the loaders find it in the registry too
    live = SoftdiffPipeline.from_pretrained(out, use_ema=False).model
    assert type(live) is TinyScoreNet and all(torch.equal(p, trained[k]) for k, p in live.state_dict().items())
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [3, 6] and all(math.isfinite(r["loss"]) for r in records)
    assert load_train_config(out / "config.yaml") == cfg

    # and refuses what it does not take, naming its own keys
    with pytest.raises(ConfigError, match=r"^model.width is not an argument of model.type=TinyScoreNet; "
                                          r"valid keys: type, hidden.$"):
        load_train_config(None, [*overrides, "model.width=4"])
