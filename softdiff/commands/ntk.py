"""``softdiff ntk``: NTK width study: drift, kernel spectra and network-vs-kernel gap of two-layer softmax / relu / exp
networks as the width grows (theory: docs/theory.md, section 1)."""
from __future__ import annotations

import time
from typing import Sequence

import torch

from softdiff.command_line import add_overrides, command_parser, load_with_output, parse
from softdiff.config import save_config
from softdiff.studies.ntk.study import NTKStudyConfig, run_width_study

DEFAULT_PRESET = "default"


EXAMPLES = ["softdiff ntk                                      # widths 64..8192, a few minutes on CPU",
            "softdiff ntk --preset quick --output-dir runs/ntk_quick",
            "softdiff ntk 'widths=[64,256,1024]' steps=200 'activations=[softmax,relu]' --quiet"]


def build_parser():
    p = command_parser("softdiff ntk", " ".join(__doc__.split(": ", 1)[1].split()), EXAMPLES, "ntk", DEFAULT_PRESET)
    add_overrides(p, "steps=200")
    return p


def main(argv: Sequence[str]) -> int:
    args = parse(build_parser(), argv)
    cfg, out_dir = load_with_output(args, NTKStudyConfig, "ntk", DEFAULT_PRESET, "runs/ntk")
    from softdiff.studies.ntk.report import write_report  # matplotlib only once the config is valid

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
