"""``softdiff ntk``'s work: run the width study, write its report and config, print the drift slopes."""
from __future__ import annotations

import time

import torch

from softdiff.config import save_config
from softdiff.studies.ntk.report import write_report
from softdiff.studies.ntk.study import NTKStudyConfig, run_width_study


def run(args, cfg: NTKStudyConfig, out_dir) -> int:
    torch.set_num_threads(min(torch.get_num_threads(), 2))
    start = time.perf_counter()
    results = run_width_study(cfg, progress=not args.quiet)
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
