"""``softdiff compare``'s work: train, evaluate and report every (activation, seed)."""
from __future__ import annotations

from softdiff.studies.compare.runner import run_comparison


def run(args, cfg, command: str) -> int:
    out = run_comparison(cfg, command, log=(lambda *_: None) if args.quiet else print)
    if args.quiet:
        print(f"wrote {out / 'report.md'} and {out / 'results.json'}")
    return 0
