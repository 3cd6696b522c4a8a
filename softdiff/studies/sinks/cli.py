"""``softdiff sinks``: train small transformers on the induction or classification task per attention
normalisation and seed, and report whether an attention sink forms on the first (BOS / CLS) token.

Writes ``results.json`` (config, summary, every run's history), ``sinks.png`` (over training) and
``heads.png`` (final mass per layer and head) into the output directory.
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict
from typing import Sequence

from softdiff.command_line import add_overrides, command_parser, config_path, overrides, parse
from softdiff.config import load_config
from softdiff.safe_io import check_output_dir, write_text
from softdiff.studies.sinks.core import SinksConfig
from softdiff.tables import print_table

DEFAULT_PRESET = "induction"


def parser():
    p = command_parser(
        "softdiff sinks", "Attention sinks in small transformers: induction / classification tasks per attention "
        "normalisation and seed.",
        ["softdiff sinks --preset induction",
         "softdiff sinks --preset classification seeds=5 --output-dir runs/sinks/cls",
         "softdiff sinks --preset induction attentions=[softmax,sigmoid] steps=300 --quiet"],
        presets="sinks", default_preset=DEFAULT_PRESET, output_help="where results.json and the PNGs go")
    add_overrides(p, "steps=300")
    return p


def main(argv: Sequence[str]) -> int:
    args = parse(parser(), argv)
    cfg = load_config(SinksConfig, config_path(args, "sinks", DEFAULT_PRESET), overrides(args))
    out_dir = check_output_dir("--output-dir" if args.output_dir else "output_dir",
                               cfg.output_dir or f"runs/sinks/{cfg.task}")
    from softdiff.studies.sinks.core import run_study  # torch-heavy imports only once the config is valid
    from softdiff.studies.sinks.report import TABLE_HEAD, plot_heads, plot_training, summarise, table_rows

    out_dir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    runs = run_study(cfg, progress=None if args.quiet else print)
    summary = summarise(runs)
    seconds = time.perf_counter() - start
    write_text(out_dir / "results.json", json.dumps({"config": asdict(cfg), "seconds": seconds,
                                                     "summary": summary, "runs": runs}, allow_nan=False))
    title = f"{cfg.task}, {cfg.seeds} seeds"
    pngs = [plot_training(runs, out_dir / "sinks.png", title), plot_heads(runs, out_dir / "heads.png", title)]
    print(f"\n{cfg.task}: {len(runs)} runs in {seconds:.1f} s; end of training, mean +- std over {cfg.seeds} seeds "
          "(first-token mass: mean over heads)")
    print_table(TABLE_HEAD, table_rows(summary))
    print(f"\nwrote {out_dir / 'results.json'} and {', '.join(p.name for p in pngs)}")
    return 0
