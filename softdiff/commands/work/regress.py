"""``softdiff regress``'s work: run every solver on every instance and write the report."""
from __future__ import annotations

from softdiff.studies.softmax_regression.study import RegressConfig, run_study


def run(args, cfg: RegressConfig, command: str) -> int:
    out = run_study(cfg, command, **({"log": lambda *_: None} if args.quiet else {}))
    if args.quiet:
        print(f"wrote {out / 'report.md'} and {out / 'results.json'}")
    return 0
