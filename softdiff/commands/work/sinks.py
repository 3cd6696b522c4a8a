"""``softdiff sinks``'s work: train every (normalisation, seed), write results.json and the PNGs, print the table."""
from __future__ import annotations

import json
import time
from dataclasses import asdict

from softdiff.safe_io import write_text
from softdiff.studies.sinks.core import SinksConfig, run_study
from softdiff.studies.sinks.report import TABLE_HEAD, plot_heads, plot_training, summarise, table_rows
from softdiff.tables import print_table


def run(args, cfg: SinksConfig, out_dir) -> int:
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
