"""The one command-line convention of every ``softdiff`` command.

``softdiff COMMAND [--config FILE | --preset NAME] [key=value ...] [--output-dir DIR] [--quiet] [--no-ema]``:
the config file or the preset (a shipped config) gives a typed config, ``key=value`` pairs override any of its
keys, ``--output-dir`` sets where everything is written and ``--quiet`` silences progress bars. Each command
adds only its own few flags.

Every command is split in two: ``softdiff.commands.NAME`` parses and checks its arguments without the heavy
packages, and :func:`run_work` then hands them to ``softdiff.commands.work.NAME``, which does the work.
"""
from __future__ import annotations

import argparse
import importlib
import re
from dataclasses import asdict
from pathlib import Path
from typing import Sequence

from softdiff.cli import ArgumentParser
from softdiff.config import CONFIG_DIR, load_config, shipped_configs
from softdiff.errors import ConfigError
from softdiff.safe_io import check_output_dir

WORK_PACKAGE = "softdiff.commands.work"


def command_parser(prog: str, description: str, examples: Sequence[str], presets: str | None = None,
                   default_preset: str | None = None, config: bool = True,
                   output_help: str = "where the outputs go (default: the config's output_dir)") -> ArgumentParser:
    """The parser every command starts from; ``presets`` is the folder of this command's shipped configs
    (``"compare"``: ``--preset toy`` reads ``softdiff/configs/compare/toy.yaml``; ``""``: the training configs)."""
    epilog = "examples:\n" + "\n".join(f"  {line}" for line in examples)
    p = ArgumentParser(prog=prog, description=description, epilog=epilog,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    if config:
        source = p.add_mutually_exclusive_group()
        source.add_argument("--config", metavar="FILE", help="YAML config file")
        if presets is not None:
            names = shipped_configs(presets)
            source.add_argument("--preset", metavar="NAME", help=f"a shipped config: {', '.join(names)}"
                                + (f" (default: {default_preset})" if default_preset else ""))
    p.add_argument("--output-dir", metavar="DIR", help=output_help)
    p.add_argument("--quiet", action="store_true", help="no progress bars (for logs and CI)")
    return p


def add_overrides(p: ArgumentParser, example: str) -> None:
    """The trailing ``key=value`` overrides (added last, after the command's own arguments)."""
    p.add_argument("overrides", nargs="*", metavar="key=value", help=f"override any config key, e.g. {example}")


def parse(p: ArgumentParser, argv: Sequence[str]) -> argparse.Namespace:
    """Parse ``argv``; overrides may come before, between or after the options."""
    return p.parse_intermixed_args(list(argv))


def run_work(command: str, *job) -> int:
    """Do ``command``'s work: ``run(*job)`` of ``softdiff.commands.work.<command>``, whose heavy imports (torch,
    diffusers, matplotlib) sit at its top. It is imported by name only here, after the arguments are checked, so
    that ``--help`` and a config error answer before those packages load."""
    return importlib.import_module(f"{WORK_PACKAGE}.{command}").run(*job)


def config_path(args: argparse.Namespace, presets: str | None = None, default_preset: str | None = None) -> Path | None:
    """The YAML file that ``--config`` or ``--preset`` (else the default preset) names."""
    if getattr(args, "config", None):
        return Path(args.config)
    name = getattr(args, "preset", None) or default_preset
    if name is None:
        return None
    folder = presets or ""
    if name not in shipped_configs(folder):
        raise ConfigError(f"--preset {name!r} is not valid; choose one of: {', '.join(shipped_configs(folder))}.")
    return CONFIG_DIR / folder / f"{name}.yaml"


def overrides(args: argparse.Namespace, output_key: str = "output_dir") -> list[str]:
    """The ``key=value`` overrides, with ``--output-dir`` as the config's ``output_key`` (an empty one too: the
    output check refuses it rather than the default folder being used silently)."""
    given = getattr(args, "output_dir", None)
    extra = [] if given is None else [f"{output_key}={given}" if given else f"{output_key}=''"]
    return [*getattr(args, "overrides", []), *extra]


def output_folder(value: str | None, default) -> str:
    """The configured output folder, else ``default``; only an unset (None) one takes the default, so that an empty
    ``output_dir=''`` reaches the output check as the error it is."""
    return default if value is None else value


def split_positionals(values: Sequence[str]) -> tuple[list[str], list[str]]:
    """Positional words as ``(paths, key=value overrides)``, in any order: a word is an override when it starts
    with a config key and ``=`` (``steps=5``, ``eval.steps=5``); anything else (a folder) is a path."""
    key = re.compile(r"^[A-Za-z_][\w.]*=")
    return [v for v in values if not key.match(v)], [v for v in values if key.match(v)]


def load_with_output(args: argparse.Namespace, schema, presets: str, default_preset: str, default_output: str):
    """The typed ``schema`` config from ``--config`` / ``--preset`` and the overrides, and its output folder
    (``output_dir``, else ``default_output`` formatted with the config's fields), checked but not created."""
    cfg = load_config(schema, config_path(args, presets, default_preset), overrides(args))
    out = check_output_dir("--output-dir" if args.output_dir is not None else "output_dir",
                           output_folder(cfg.output_dir, default_output.format(**asdict(cfg))))
    return cfg, out
