"""One entry per score network: the config's ``model.type`` names it; the entry says where the class lives, which
config keys are older names of its arguments, which values its string arguments take, further checks of its
arguments, and what the training preflight needs to size it.

The model section of a training config is ``type`` plus the class's own constructor arguments (read from its
``__init__``: softdiff.nets.signature); the builder fills the arguments that come from the data
(:data:`DATA_ARGUMENTS`) and those an entry takes from other config sections (``from_config``). Adding a network
is its file plus one :func:`register_net` line (docs/library.md shows one).

Imports no torch: a config is checked against these entries before the training stack loads; the class itself is
imported when a net is built.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import import_module
from typing import Any, Callable, Mapping

from softdiff.choices import ACTIVATIONS, ATTENTION_NORMALIZATIONS, CONDITIONINGS, TWO_LAYER_ACTIVATIONS
from softdiff.errors import ConfigError, check_positive
from softdiff.nets.signature import Argument, constructor_arguments

Shape = tuple[int, ...]
# Arguments a net takes from the data (one example's shape, the class count), by their diffusers names; a config
# never sets them. out_channels stays at the nets' default: a score has the sample's channels.
DATA_ARGUMENTS = ("dim", "sample_size", "in_channels", "out_channels", "num_class_embeds")
IMAGE_ARGUMENTS = ("sample_size", "in_channels")  # a net taking these needs image data


@dataclass(frozen=True)
class NetEntry:
    target: str | type                  # "package.module:Class" (imported when first built) or the class
    # floats one example keeps for the backward pass, from the net's arguments and one example's shape: the
    # preflight's activation estimate (the parameter count comes from building the net on the meta device)
    activation_floats: Callable[[Mapping[str, Any], Shape], int]
    size_keys: tuple[str, ...] = ()     # the arguments that set the net's memory, named when it does not fit
    aliases: Mapping[str, str] = field(default_factory=dict)     # config key -> argument (older names)
    choices: Mapping[str, tuple] = field(default_factory=dict)   # argument -> its valid values
    check: Callable[[Mapping[str, Any], Shape], None] | None = None  # ranges, divisibility (ConfigError)
    from_config: Mapping[str, str] = field(default_factory=dict)  # argument -> dotted training-config key

    @property
    def name(self) -> str:
        """The ``model.type`` of this net: its class name (also ``_class_name`` in a saved ``config.json``)."""
        return self.target.rpartition(":")[2] if isinstance(self.target, str) else self.target.__name__

    def net_class(self) -> type:
        if not isinstance(self.target, str):
            return self.target
        module, _, name = self.target.partition(":")
        return getattr(import_module(module), name)

    def arguments(self) -> dict[str, Argument]:
        return _arguments(self.target)

    def config_arguments(self) -> dict[str, Argument]:
        """The arguments a config sets: all but those from the data and from other sections."""
        return {k: a for k, a in self.arguments().items() if k not in DATA_ARGUMENTS and k not in self.from_config}

    @property
    def needs_images(self) -> bool:
        return any(k in self.arguments() for k in IMAGE_ARGUMENTS)


@lru_cache(maxsize=None)
def _arguments(target: str | type) -> dict[str, Argument]:
    return constructor_arguments(target)


NETS: dict[str, NetEntry] = {}


def register_net(entry: NetEntry) -> NetEntry:
    """Make ``entry`` a ``model.type`` (replacing a net of the same name)."""
    NETS[entry.name] = entry
    return entry


def net_entry(name: str) -> NetEntry:
    """The entry of ``model.type=name``; a ConfigError listing the registered names when there is none."""
    if name not in NETS:
        raise ConfigError(f"model.type={name!r} is not valid; choose one of: {', '.join(NETS)}.")
    return NETS[name]


def data_arguments(shape: Shape, num_classes: int | None) -> dict[str, Any]:
    """The value of each of :data:`DATA_ARGUMENTS` for data of one example's ``shape`` (C, H, W) or (D,)."""
    values = {"dim": math.prod(shape), "num_class_embeds": num_classes}
    if len(shape) == 3:
        values.update(in_channels=shape[0], sample_size=shape[1], out_channels=None)
    return values


def model_arguments(section: Mapping[str, Any]) -> dict[str, Any]:
    """A model section's arguments (all but ``type``)."""
    return {k: v for k, v in section.items() if k != "type"}


def build_net(section: Mapping[str, Any], shape: Shape, num_classes: int | None, cfg) -> Any:
    """The net a checked model section (``type`` plus arguments) describes, for data of one example's ``shape``
    (``num_classes``: None for an unconditional net); ``cfg``: the training config ``from_config`` reads."""
    entry = net_entry(section["type"])
    args = model_arguments(section)
    takes = entry.arguments()
    args.update({k: v for k, v in data_arguments(shape, num_classes).items() if k in takes})
    args.update({k: _dotted(cfg, path) for k, path in entry.from_config.items()})
    return entry.net_class()(**args)


def _dotted(obj, path: str):
    for part in path.split("."):
        obj = getattr(obj, part)
    return obj


# --- the shipped nets: checks and sizes ------------------------------------------------------------------------

def _at_least(args: Mapping[str, Any], lows: Mapping[str, int]) -> None:
    for key, low in lows.items():
        if args[key] < low:
            raise ConfigError(f"model.{key}={args[key]} must be at least {low}.")


def _check_dropout(args: Mapping[str, Any]) -> None:
    check_positive("model.dropout", args["dropout"], allow_zero=True)
    if not args["dropout"] < 1:
        raise ConfigError(f"model.dropout={args['dropout']} must be in [0, 1).")


def _check_transformer(args: Mapping[str, Any], shape: Shape) -> None:
    for key in ("hidden_size", "num_layers", "num_heads"):
        check_positive(f"model.{key}", args[key])
    for key in ("conv_stem", "conv_decoder"):
        check_positive(f"model.{key}", args[key], allow_zero=True)
    _check_dropout(args)
    _at_least(args, {"width_mult": 1, "patch_size": 1, "num_registers": 0})
    size, patch = shape[-1], args["patch_size"]
    if size % patch:
        raise ConfigError(f"model.patch_size={patch} must divide the image size ({size}, set by the data section); "
                          f"try {', '.join(str(p) for p in (1, 2, 4, 7, 8) if size % p == 0)}.")
    if args["hidden_size"] % args["num_heads"]:
        raise ConfigError(f"model.num_heads={args['num_heads']} must divide model.hidden_size={args['hidden_size']}.")


def _check_mlp(args: Mapping[str, Any], shape: Shape) -> None:
    for key in ("hidden_size", "num_blocks"):
        check_positive(f"model.{key}", args[key])
    _check_dropout(args)
    _at_least(args, {"width_mult": 1, "fourier_features": 0})


def _check_two_layer(args: Mapping[str, Any], shape: Shape) -> None:
    check_positive("model.width", args["width"])
    if args["coupled"] and args["width"] % 2:
        raise ConfigError(f"model.width={args['width']} must be even with model.coupled=true.")


def _transformer_floats(args: Mapping[str, Any], shape: Shape) -> int:
    tokens = (shape[-1] // args["patch_size"]) ** 2 + args["num_registers"]
    return tokens * args["hidden_size"] * args["num_layers"] * (2 + args["width_mult"])


register_net(NetEntry(
    "softdiff.nets.score_mlp:ScoreMLP",
    activation_floats=lambda a, shape: a["hidden_size"] * a["num_blocks"] * (2 + a["width_mult"]),
    size_keys=("hidden_size", "num_blocks", "width_mult", "fourier_features"),
    aliases={"num_layers": "num_blocks"},  # the flat config's name for both nets' depth
    choices={"activation": ACTIVATIONS}, check=_check_mlp))
register_net(NetEntry(
    "softdiff.nets.score_transformer:ScoreTransformer", activation_floats=_transformer_floats,
    size_keys=("hidden_size", "num_layers", "width_mult"),
    choices={"activation": ACTIVATIONS, "attention_normalization": ATTENTION_NORMALIZATIONS,
             "conditioning": CONDITIONINGS}, check=_check_transformer))
register_net(NetEntry(
    "softdiff.nets.score_mlp:TwoLayerScoreNet", activation_floats=lambda a, shape: 2 * a["width"],
    size_keys=("width",), choices={"activation": TWO_LAYER_ACTIVATIONS}, check=_check_two_layer,
    from_config={"t_min": "diffusion.ou_t_min", "t_max": "diffusion.ou_t_max",
                 "num_train_timesteps": "diffusion.num_train_timesteps", "seed": "train.seed"}))
