"""``softdiff flow``'s work: run every case of the protocol, write results.json and the PNGs, print the table."""
from __future__ import annotations

import json
import time
from dataclasses import asdict

from softdiff.commands.flow import FlowConfig
from softdiff.safe_io import write_text
from softdiff.studies.value_flow.integrate import FlowIntegrationError
from softdiff.studies.value_flow.plots import plot_all
from softdiff.studies.value_flow.presets import preset_cases, run_case
from softdiff.studies.value_flow.summaries import SUMMARIES, endings
from softdiff.tables import print_table


def run(args, cfg: FlowConfig, out_dir) -> int:
    out_dir.mkdir(parents=True, exist_ok=True)
    histories, results, table = {}, {"config": asdict(cfg), "cases": {}}, []
    for case in preset_cases(cfg.protocol, cfg.seeds, cfg.seed, cfg.rng, cfg.spectrum):
        start = time.perf_counter()
        try:
            hist = run_case(case, steps=cfg.steps, lr=cfg.lr, method=cfg.method, device=cfg.device)
        except FlowIntegrationError as err:  # one stiff case (e.g. E2's l1 as an ODE) should not sink the rest
            print(f"{case.label}: skipped: {err}")
            results["cases"][case.label] = {"reference": case.reference, "error": str(err)}
            continue
        seconds = time.perf_counter() - start
        histories[case.label] = hist
        rows = SUMMARIES[cfg.protocol](case, hist)
        table += [(case.label, *row) for row in rows]
        results["cases"][case.label] = {"reference": case.reference, "seconds": seconds,
                                        "endings": endings(hist.s[-1]),
                                        "summary": [dict(zip(("quantity", "measured", "reference"), r)) for r in rows],
                                        "history": hist.to_dict()}
        if not args.quiet:
            print(f"{case.label}: {hist.meta.get('steps', hist.meta.get('t_max'))} "
                  f"{'steps' if cfg.method == 'gd' else 'time'} x {hist.meta['batch']} seeds in {seconds:.1f} s")
    if not histories:
        raise FlowIntegrationError(f"every case of {cfg.protocol} failed with method={cfg.method}; use method=gd.")
    write_text(out_dir / "results.json", json.dumps(results, allow_nan=False, default=str))
    pngs = plot_all(histories, out_dir, f"{cfg.protocol} ({cfg.method}, rng={cfg.rng})")
    print()
    print_table(("case", "quantity", "measured", "reference"), table)
    print(f"\nwrote {out_dir / 'results.json'} and {', '.join(p.name for p in pngs)}")
    return 0
