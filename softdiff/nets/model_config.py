"""The model section of a training config: ``type`` plus that net's own constructor arguments, checked against
the net's registry entry and completed with the class's defaults. Imports no torch."""
from __future__ import annotations

import math
from typing import Any, Mapping

from softdiff.errors import ConfigError, check_choice
from softdiff.nets.registry import DATA_ARGUMENTS, NETS, NetEntry, Shape
from softdiff.nets.signature import Argument

# Before the registry, the model section was one flat schema, the union of every net's fields, and a run folder's
# config.yaml recorded all of them whatever the net. This is the one place that reads such a section: when it
# holds the fields every release wrote (FIRST_FLAT_KEYS) and no others than the flat ones, the fields of the
# other nets are dropped (the old builder ignored them too), and the net's keys go through its aliases as any
# config's do (num_layers -> ScoreMLP's num_blocks). Shipped and hand-written flat configs hold only their net's
# keys and need nothing else.
FLAT_KEYS = frozenset({"type", "activation", "attention_normalization", "hidden_size", "num_layers", "num_heads",
                       "patch_size", "width_mult", "num_registers", "long_skips", "conv_out", "conv_stem",
                       "conv_decoder", "conditioning", "dropout", "fourier_features", "fourier_scale", "width",
                       "sigma", "coupled"})
FIRST_FLAT_KEYS = frozenset({"type", "activation", "attention_normalization", "hidden_size", "num_layers",
                             "num_heads", "patch_size", "width_mult", "num_registers", "dropout", "fourier_features",
                             "fourier_scale", "width", "sigma", "coupled"})


def is_flat_record(section: Mapping[str, Any]) -> bool:
    """Whether ``section`` is the flat model section that a run's config.yaml recorded before the registry."""
    return FIRST_FLAT_KEYS <= set(section) <= FLAT_KEYS


def _own_keys(section: Mapping[str, Any], entry: NetEntry) -> dict[str, Any]:
    own = set(entry.config_arguments()) | set(entry.aliases)
    return {k: v for k, v in section.items() if k in own}


_KIND_WORDS = {"int": "an integer", "float": "a number", "bool": "true or false", "str": "a string"}


def _checked_value(key: str, value: Any, arg: Argument, net: str) -> Any:
    """``value`` as ``arg``'s kind (an integer is a valid float, and becomes one); ConfigError otherwise."""
    if value is None:
        if arg.optional:
            return None
        raise ConfigError(f"model.{key} must not be null for model.type={net}; set it to "
                          f"{_KIND_WORDS.get(arg.kind, 'a value')}.")
    is_bool, is_int = isinstance(value, bool), isinstance(value, int) and not isinstance(value, bool)
    ok = {"bool": is_bool, "int": is_int, "float": is_int or isinstance(value, float),
          "str": isinstance(value, str)}.get(arg.kind, isinstance(value, (bool, int, float, str)))
    if not ok:
        want = _KIND_WORDS.get(arg.kind, "a plain value (number, word, true or false)")
        raise ConfigError(f"model.{key}={value!r} must be {want} (an argument of model.type={net}).")
    if arg.kind == "float":
        value = float(value)
        if not math.isfinite(value):
            raise ConfigError(f"model.{key}={value} must be a finite number.")
    return value


def _unknown_key(key: str, entry: NetEntry) -> ConfigError:
    if key in entry.from_config:
        return ConfigError(f"model.{key} of model.type={entry.name} is set from {entry.from_config[key]}; set that "
                           f"instead and remove model.{key}.")
    if key in DATA_ARGUMENTS:
        return ConfigError(f"model.{key} is set from the data (data.name, data.image_size, data.channels, "
                           f"data.class_conditional); remove it.")
    valid = ", ".join(entry.config_arguments())
    return ConfigError(f"model.{key} is not an argument of model.type={entry.name}; valid keys: type, {valid}.")


def resolve_model_section(section: Mapping[str, Any], shape: Shape, data_name: str) -> dict[str, Any]:
    """``{"type": ..., <every argument a config sets>}`` in the net's argument order, from a model section as
    loaded (aliases renamed, defaults filled, values checked); ``shape``: one example's shape of the data
    ``data_name``. Raises ConfigError with one sentence."""
    name = section.get("type")
    check_choice("model.type", name, tuple(NETS))
    entry = NETS[name]
    given = _own_keys(section, entry) if is_flat_record(section) else {k: v for k, v in section.items()
                                                                        if k != "type"}
    args: dict[str, Any] = {}
    for key, value in given.items():
        arg_name = entry.aliases.get(key, key)
        if arg_name not in entry.config_arguments():
            raise _unknown_key(key, entry)
        if arg_name in args:
            alias = key if key != arg_name else next(a for a in given if entry.aliases.get(a) == arg_name)
            raise ConfigError(f"model.{alias} and model.{arg_name} both set {name}'s {arg_name} ({alias} is its older "
                              f"name); keep model.{arg_name}.")
        args[arg_name] = _checked_value(key, value, entry.config_arguments()[arg_name], name)
    for key, arg in entry.config_arguments().items():
        if key not in args:
            if arg.required:
                raise ConfigError(f"model.type={name} needs model.{key}.")
            args[key] = arg.default
        if key in entry.choices:
            check_choice(f"model.{key}", args[key], entry.choices[key])
    if entry.needs_images and len(shape) != 3:
        vector_nets = [n for n, e in NETS.items() if not e.needs_images]
        raise ConfigError(f"model.type={name} needs an image dataset, but data.name={data_name!r} is a 2-D toy set; "
                          f"use model.type={' or '.join(vector_nets)}.")
    if entry.check is not None:
        entry.check(args, shape)
    return {"type": name, **{k: args[k] for k in entry.config_arguments()}}
