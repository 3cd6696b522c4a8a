"""``softdiff ntk``: the NTK width study of two-layer softmax / relu / exp networks (configs/ntk_*.yaml)."""
from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Sequence

import torch

from softdiff.cli import ArgumentParser
from softdiff.config import load_config, save_config
from softdiff.studies.ntk.report import write_report
from softdiff.studies.ntk.study import NTKStudyConfig, run_width_study
from softdiff.safe_io import check_output_dir

from softdiff.config import CONFIG_DIR


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(prog="softdiff ntk", description=__doc__.splitlines()[0])
    parser.add_argument("--config", help="YAML config (default configs/ntk/default.yaml)")
    parser.add_argument("--quick", action="store_true", help="the small config configs/ntk/quick.yaml")
    parser.add_argument("--output-dir", "--out", dest="out", help="output folder (overrides out_dir)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.add_argument("overrides", nargs="*", help="dotted overrides such as steps=200 widths=[64,256]")
    return parser


def main(argv: Sequence[str]) -> int:
    args = build_parser().parse_args(list(argv))
    path = args.config or CONFIG_DIR / "ntk" / ("quick.yaml" if args.quick else "default.yaml")
    overrides = list(args.overrides) + ([f"out_dir={args.out}"] if args.out else [])
    cfg = load_config(NTKStudyConfig, path, overrides)
    check_output_dir("--output-dir" if args.out else "out_dir", cfg.out_dir)
    torch.set_num_threads(min(torch.get_num_threads(), 2))
    start = time.perf_counter()
    results = run_width_study(cfg, progress=not args.no_progress)
    out_dir = Path(cfg.out_dir)
    paths = write_report(results, out_dir)
    save_config(cfg, out_dir / "config.yaml")
    print(f"ntk width study finished in {time.perf_counter() - start:.1f} s")
    for task, by_act in results["summary"].items():
        for act, s in by_act.items():
            print(f"  {task:<10} {act:<8} drift slope {s['drift_slope']:+.2f}  "
                  f"(theory ~ -0.5), init lambda_min at m={cfg.widths[-1]}: "
                  f"{results['runs'][task][act][-1]['lambda_min']:.3g}")
    print("wrote " + ", ".join(str(p) for p in paths + [out_dir / "config.yaml"]))
    return 0
