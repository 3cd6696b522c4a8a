"""``softdiff probe``'s work: probe every run, write probe.json and the heatmaps, print the per-layer table."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (backend must be chosen first)
import numpy as np  # noqa: E402

from softdiff import tables  # noqa: E402
from softdiff.commands.probe import ProbeConfig  # noqa: E402
from softdiff.safe_io import save_figure, write_text  # noqa: E402
from softdiff.studies.probes.attention import ProbeResult  # noqa: E402
from softdiff.studies.probes.run_folder import probe_run  # noqa: E402

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


def run(runs: Sequence[str], cfg: ProbeConfig, out_dir: Path) -> int:
    results = [probe_run(d, cfg.timesteps, cfg.num_samples, cfg.seed, ema=cfg.ema, data_root=cfg.data_root,
                         device=cfg.device, threshold=cfg.threshold) for d in runs]
    out_dir.mkdir(parents=True, exist_ok=True)
    write_text(out_dir / "probe.json", json.dumps({"runs": [r.to_dict() for r in results]}))
    png = plot_heatmaps(results, out_dir / "probe_heatmaps.png")
    print_table(results)
    print(f"\nwrote {out_dir / 'probe.json'} and {png}")
    return 0
