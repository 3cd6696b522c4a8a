"""Typed configs: dataclass schemas, YAML files and dotted ``key.sub=value`` overrides, with clear errors.

Any dataclass works as a schema. ``load_config(Schema, path, overrides)`` returns an instance of it; unknown
keys, wrong types, bad override syntax and missing files raise :class:`ConfigError` with one sentence.
A schema may define ``validate(self)`` for value checks (choices, ranges); it is called after loading, and
``upgrade_keys(layer)`` to read the keys of its older versions (each file and override, as a plain dict).

The configs shipped with the package live in ``softdiff/configs/`` (package data, so they are there in any
install): ``--config configs/digits.yaml`` reads the local file when it exists and the shipped one otherwise.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Sequence, TypeVar

import yaml
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from softdiff.errors import ConfigError
from softdiff.safe_io import write_text

T = TypeVar("T")

CONFIG_DIR = Path(__file__).resolve().parent / "configs"


def shipped_configs(folder: str = "") -> list[str]:
    """Names (file stems) of the shipped configs in ``folder`` (``""``: training configs, ``"compare"``, ...)."""
    return sorted(p.stem for p in (CONFIG_DIR / folder).glob("*.yaml"))


def resolve_config_path(path: str | Path) -> Path:
    """``path`` itself when it is a file; else the shipped config it names (``configs/digits.yaml``,
    ``configs/compare/toy.yaml``); else a ConfigError listing the shipped configs."""
    path = Path(path)
    if path.is_file():
        return path
    parts = path.parts[1:] if path.parts[:1] == ("configs",) else path.parts
    shipped = CONFIG_DIR.joinpath(*parts) if parts and not path.is_absolute() else None
    if shipped is not None and shipped.suffix == ".yaml" and shipped.is_file():
        return shipped
    if shipped is not None and len(parts) == 1 and "_" in path.stem:  # the flat names of older releases
        folder_name, _, stem = path.stem.partition("_")              # configs/compare_toy.yaml -> compare/toy
        nested = CONFIG_DIR / folder_name / f"{stem}{path.suffix}"
        if path.suffix == ".yaml" and nested.is_file():
            return nested
    folder = CONFIG_DIR.joinpath(*parts[:-1]) if shipped is not None else CONFIG_DIR
    folder = folder if folder.is_dir() else CONFIG_DIR
    names = [str(p.relative_to(CONFIG_DIR.parent)) for p in sorted(folder.glob("*.yaml"))]
    raise ConfigError(f"config file '{path}' does not exist; pass an existing YAML file or a shipped config such "
                      f"as {', '.join(names)} (each command's --help lists its presets).")


def _sibling_keys(schema, full_key: str) -> str:
    """The valid keys beside ``full_key`` (e.g. the fields of ``train`` for ``train.stepz``)."""
    node = schema
    for part in full_key.split(".")[:-1]:
        factories = {f.name: f.default_factory for f in dataclasses.fields(node)}
        factory = factories.get(part)
        node = factory() if callable(factory) else None
        if not dataclasses.is_dataclass(node):
            return ""
    return ", ".join(f.name for f in dataclasses.fields(node))


def _omegaconf_message(err: OmegaConfBaseException, source: str, schema) -> str:
    key = getattr(err, "full_key", None) or getattr(err, "key", None)
    first = str(err).splitlines()[0] if str(err) else type(err).__name__
    if type(err).__name__ == "ConfigKeyError" and key:
        valid = _sibling_keys(schema, str(key))
        return f"unknown config key '{key}' in {source}" + (f"; valid keys there: {valid}" if valid else "")
    if key:
        return f"invalid value for config key '{key}' in {source}: {first}"
    return f"invalid config in {source}: {first}"


def _duplicate_key(text: str) -> tuple[str, int, int] | None:
    """The first key set twice in one mapping of the YAML ``text``, as (dotted key, first line, second line).
    ``yaml.compose`` builds nodes only (no tags run); shared (aliased) nodes are visited once."""
    seen: set[int] = set()

    def walk(node, prefix: str):
        if id(node) in seen:
            return None
        seen.add(id(node))
        if isinstance(node, yaml.MappingNode):
            lines: dict[str, int] = {}
            for key, value in node.value:
                name = f"{prefix}{key.value}" if isinstance(key, yaml.ScalarNode) else None
                if name is not None and name in lines:
                    return name, lines[name], key.start_mark.line + 1
                if name is not None:
                    lines[name] = key.start_mark.line + 1
                found = walk(value, f"{name}." if name is not None else prefix)
                if found:
                    return found
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                found = walk(item, f"{prefix.rstrip('.')}[{i}].")
                if found:
                    return found
        return None

    try:
        return walk(yaml.compose(text, Loader=yaml.SafeLoader), "")
    except yaml.YAMLError:
        return None


def _yaml_message(path: Path, err: Exception) -> str:
    problem = getattr(err, "problem", None) or ""
    if problem.startswith("found duplicate key"):
        try:
            found = _duplicate_key(path.read_text(errors="replace"))
        except OSError:
            found = None
        if found:
            key, first, second = found
            return (f"config file '{path}' sets the key '{key}' twice (lines {first} and {second}); keep one of "
                    "them.")
        return f"config file '{path}' sets a key twice ({problem}); keep one of them."
    return f"config file '{path}' is not valid YAML: {str(err).splitlines()[0]}."


def _container_message(cfg, layer, source: str, prefix: str = "") -> str | None:
    """One sentence naming the first key that ``layer`` sets to a list where ``cfg`` has a mapping (or the
    reverse); None if there is none."""
    from omegaconf import DictConfig, ListConfig

    if not isinstance(layer, DictConfig) or not isinstance(cfg, DictConfig):
        return None
    for key in layer.keys():
        if key not in cfg:
            continue
        ours, theirs = cfg._get_node(key), layer._get_node(key)
        if isinstance(ours, DictConfig) and isinstance(theirs, ListConfig):
            return (f"config key '{prefix}{key}' in {source} must be a mapping (key: value, e.g. "
                    f"{prefix}{key}.NAME=...), not a list.")
        if isinstance(ours, ListConfig) and isinstance(theirs, DictConfig):
            return f"config key '{prefix}{key}' in {source} must be a list, not a mapping."
        found = _container_message(ours, theirs, source, f"{prefix}{key}.")
        if found:
            return found
    return None


def load_config(schema: type[T], path: str | Path | None = None, overrides: Sequence[str] = ()) -> T:
    """Build ``schema`` from defaults, then the YAML file at ``path``, then dotted overrides."""
    base = OmegaConf.structured(schema)
    layers = []
    if path is not None:
        path = resolve_config_path(path)
        try:
            loaded = OmegaConf.load(path)
        except Exception as err:  # yaml.YAMLError and friends
            raise ConfigError(_yaml_message(path, err)) from None
        if not isinstance(loaded, type(OmegaConf.create({}))):
            raise ConfigError(f"config file '{path}' must hold a mapping of keys, not a list or a scalar.")
        layers.append((loaded, f"file '{path}'"))
    for item in overrides:
        if "=" not in item or item.startswith("="):
            raise ConfigError(f"override '{item}' must look like key.sub=value (e.g. train.steps=2000).")
        try:
            layers.append((OmegaConf.from_dotlist([item]), f"override '{item}'"))
        except (OmegaConfBaseException, yaml.YAMLError) as err:
            raise ConfigError(f"override '{item}' could not be parsed: {str(err).splitlines()[0]}.") from None
    upgrade = getattr(schema, "upgrade_keys", None)  # a schema that renamed keys reads its older configs
    if callable(upgrade):
        layers = [(OmegaConf.create(upgrade(OmegaConf.to_container(layer))), source) for layer, source in layers]
    cfg = base
    for layer, source in layers:
        try:
            cfg = OmegaConf.merge(cfg, layer)
        except OmegaConfBaseException as err:
            raise ConfigError(_omegaconf_message(err, source, schema) + ".") from None
        except TypeError as err:  # "Cannot merge incompatible container types": a list where a mapping belongs
            raise ConfigError(_container_message(cfg, layer, source) or f"invalid config in {source}: {err}.") \
                from None
    try:
        obj = OmegaConf.to_object(cfg)
    except OmegaConfBaseException as err:
        raise ConfigError(_omegaconf_message(err, "the config", schema) + ".") from None
    validate = getattr(obj, "validate", None)
    if callable(validate):
        validate()
    return obj


def to_yaml(obj: Any) -> str:
    """The fully resolved config as YAML text."""
    return OmegaConf.to_yaml(OmegaConf.structured(obj))


def save_config(obj: Any, path: str | Path) -> None:
    """Write the resolved config next to a run's outputs (atomically)."""
    write_text(path, to_yaml(obj))
