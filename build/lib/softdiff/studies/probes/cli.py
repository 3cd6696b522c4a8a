"""``softdiff probe RUN_DIR [RUN_DIR2]``: attention sink / massive-activation probes of trained runs.

Prints one row per layer (entropy, sparsity, sink score, sink-head fraction, register share, row mass,
massive-activation ratio; averaged over heads and timesteps), the runs side by side, and writes
``probe.json`` plus ``probe_heatmaps.png`` (layer x head maps per run) into the output directory.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from softdiff.studies.probes.attention import SINK_THRESHOLD, ProbeResult, probe_run  # noqa: E402
from softdiff.cli import ArgumentParser  # noqa: E402
from softdiff.errors import ConfigError, check_finite, check_positive  # noqa: E402
from softdiff import tables  # noqa: E402
from softdiff.safe_io import check_output_dir, save_figure, write_text  # noqa: E402

COLUMNS = (("entropy", "entropy", "{:.2f}"), ("sparsity", "sparsity", "{:.3f}"), ("sink", "sink", "{:.3f}"),
           ("sink_heads", "sink heads", "{:.2f}"), ("register_share", "reg. share", "{:.3f}"),
           ("row_mass", "row mass", "{:.2f}"), ("massive", "max/median |h|", "{:.1f}"))


def _label(result: ProbeResult, index: int) -> str:
    return f"run{index + 1} ({result.normalization})"


def print_table(results: Sequence[ProbeResult]) -> None:
    """One line per (layer, run) with the per-layer probe scores."""
    head = ["layer", "run"] + [name for _, name, _ in COLUMNS]
    rows = []
    for layer in range(max(r.entropy.shape[1] for r in results)):
        for i, result in enumerate(results):
            table = result.layer_table()
            if layer < len(table):
                rows.append([str(layer), _label(result, i)] + [fmt.format(table[layer][key]) for key, _, fmt in COLUMNS])
    tables.print_table(head, rows, right_from=2)
    for i, result in enumerate(results):
        print(f"{_label(result, i)}: {result.meta.get('run_dir')}, N = {result.num_tokens} tokens "
              f"(log N = {np.log(result.num_tokens):.2f}, {result.num_special} registers), timesteps "
              f"{result.timesteps}, sink head = sink score > {result.threshold}")


def plot_heatmaps(results: Sequence[ProbeResult], path: Path) -> Path:
    """Layer x head maps of entropy / log N, sparsity and sink score (averaged over timesteps), one row per run."""
    panels = (("entropy", "entropy / log N"), ("sparsity", "sparsity (mean max weight)"), ("sink", "sink score"))
    fig, axes = plt.subplots(len(results), 3, figsize=(11, 3.2 * len(results)), squeeze=False)
    for index, (row, result) in enumerate(zip(axes, results)):
        for ax, (key, title) in zip(row, panels):
            data = getattr(result, key).mean(0)
            if key == "entropy":
                data = data / np.log(result.num_tokens)
            im = ax.imshow(data, vmin=0, vmax=1, cmap="magma", aspect="auto")
            ax.set_xlabel("head")
            ax.set_ylabel("layer")
            ax.set_xticks(range(data.shape[1]))
            ax.set_yticks(range(data.shape[0]))
            ax.set_title(f"{_label(result, index)}: {title}", fontsize=9)
            fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    save_figure(fig, path, dpi=110)
    plt.close(fig)
    return path


def main(argv: Sequence[str]) -> int:
    parser = ArgumentParser(prog="softdiff probe", description=__doc__.splitlines()[0])
    parser.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="one or two trained run folders")
    parser.add_argument("--output-dir", help="where probe.json and probe_heatmaps.png go (default: RUN_DIR/probe)")
    parser.add_argument("--timesteps", type=int, nargs="+", default=[50, 250, 500, 750],
                        help="diffusion timesteps at which inputs are noised")
    parser.add_argument("--num-samples", type=int, default=64, help="data examples per timestep")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--live", action="store_true", help="probe model/ instead of the EMA weights model_ema/")
    parser.add_argument("--data-root", default="data", help="root of torchvision datasets (as in training)")
    parser.add_argument("--threshold", type=float, default=SINK_THRESHOLD, help="sink-head threshold")
    args = parser.parse_args(argv)
    if len(args.run_dirs) > 2:
        raise ConfigError(f"got {len(args.run_dirs)} run folders; pass one or two (to compare side by side).")
    check_positive("--num-samples", args.num_samples)
    check_finite("--threshold", args.threshold)
    if not 0 < args.threshold < 1:
        raise ConfigError(f"--threshold={args.threshold} must lie strictly between 0 and 1.")
    if args.num_samples > 100_000:
        raise ConfigError(f"--num-samples {args.num_samples} is more than the 100000 examples a probe can use.")
    out_dir = check_output_dir("--output-dir", args.output_dir or Path(args.run_dirs[0]) / "probe")
    results = [probe_run(d, args.timesteps, args.num_samples, args.seed, ema=not args.live,
                         data_root=args.data_root, threshold=args.threshold) for d in args.run_dirs]
    out_dir.mkdir(parents=True, exist_ok=True)
    write_text(out_dir / "probe.json", json.dumps({"runs": [r.to_dict() for r in results]}))
    png = plot_heatmaps(results, out_dir / "probe_heatmaps.png")
    print_table(results)
    print(f"\nwrote {out_dir / 'probe.json'} and {png}")
    return 0
