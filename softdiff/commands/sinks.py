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

from softdiff.command_line import add_overrides, command_parser, load_with_output, parse
from softdiff.safe_io import write_text
from softdiff.studies.sinks.core import SinksConfig, run_study
from softdiff.tables import print_table

DEFAULT_PRESET = "induction"


EXAMPLES = ["softdiff sinks --preset induction",
            "softdiff sinks --preset classification seeds=5 --output-dir runs/sinks/cls",
            "softdiff sinks --preset induction attentions=[softmax,sigmoid] steps=300 --quiet"]


def main(argv: Sequence[str]) -> int:
    p = command_parser("softdiff sinks", __doc__.splitlines()[0].split(": ", 1)[1] + " ...", EXAMPLES,
                       presets="sinks", default_preset=DEFAULT_PRESET, output_help="where results.json and the PNGs go")
    add_overrides(p, "steps=300")
    args = parse(p, argv)
    cfg, out_dir = load_with_output(args, SinksConfig, "sinks", DEFAULT_PRESET, "runs/sinks/{task}")
    # matplotlib only once the config is valid
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
