"""``softdiff probe RUN_DIR [RUN_DIR2] [key=value ...]``: attention sink / massive-activation probes of trained runs.

Prints one row per layer (entropy, sparsity, sink score, sink-head fraction, register share, row mass,
massive-activation ratio; averaged over heads and timesteps), the runs side by side, and writes
``probe.json`` plus ``probe_heatmaps.png`` (layer x head maps per run) into the output directory.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from softdiff.studies import probes
from softdiff.studies.probes.attention import SINK_THRESHOLD, ProbeResult
from softdiff.command_line import (add_overrides, command_parser, config_path, output_folder, overrides, parse,
                                   split_positionals)
from softdiff.config import load_config
from softdiff.errors import ConfigError, check_device, check_finite, check_positive
from softdiff import tables
from softdiff.safe_io import check_output_dir, save_figure, write_text

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
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # only when writing the picture, not for --help

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


@dataclass
class ProbeConfig:
    """What ``softdiff probe`` measures (every key can be set as ``key=value``)."""

    timesteps: list[int] = field(default_factory=lambda: [50, 250, 500, 750])  # where inputs are noised
    num_samples: int = 64           # data examples per timestep
    seed: int = 0
    ema: bool = True                # the EMA weights (model_ema/) or the live ones (model/)
    data_root: str = "data"         # root of torchvision datasets (as in training)
    threshold: float = SINK_THRESHOLD  # a head whose sink score exceeds this is a sink head
    device: str = "cpu"
    output_dir: Optional[str] = None  # probe.json and probe_heatmaps.png (default: RUN_DIR/probe)

    def validate(self) -> None:
        check_positive("num_samples", self.num_samples)
        if self.num_samples > 100_000:
            raise ConfigError(f"num_samples={self.num_samples} is more than the 100000 examples a probe can use.")
        check_positive("seed", self.seed, allow_zero=True)
        check_finite("threshold", self.threshold)
        if not 0 < self.threshold < 1:
            raise ConfigError(f"threshold={self.threshold} must lie strictly between 0 and 1.")
        if not self.timesteps:
            raise ConfigError("timesteps=[] is empty; give at least one diffusion timestep, e.g. timesteps=[50,500].")
        check_device("device", self.device)


EXAMPLES = ["softdiff probe runs/digits                      # writes runs/digits/probe/",
            "softdiff probe runs/softmax runs/sigmoid --output-dir probes num_samples=128",
            "softdiff probe runs/digits --no-ema timesteps=[10,500,900] --quiet"]


def parser():
    p = command_parser("softdiff probe", "Attention sink / massive-activation probes of one or two trained runs.",
                       EXAMPLES, output_help="where probe.json and probe_heatmaps.png go (default: RUN_DIR/probe)")
    p.add_argument("runs", nargs="*", metavar="RUN_DIR", help="one or two trained run folders")
    p.add_argument("--no-ema", action="store_true", help="probe the live weights model/ instead of model_ema/")
    p.add_argument("--timesteps", type=int, nargs="+", help="same as timesteps=[...]")
    for flag, kind in (("--num-samples", int), ("--seed", int), ("--threshold", float), ("--data-root", str)):
        p.add_argument(flag, type=kind, help=f"same as {flag[2:].replace('-', '_')}=...")
    add_overrides(p, "num_samples=128")
    return p


def load_probe_config(args) -> tuple[list[str], ProbeConfig]:
    """The run folders and the config: file, convenience flags, then ``key=value`` overrides."""
    runs, extra = split_positionals([*args.runs, *args.overrides])
    flags = [f"{key}={getattr(args, key)}" for key in ("num_samples", "seed", "threshold", "data_root")
             if getattr(args, key) is not None]
    if args.timesteps:
        flags.append(f"timesteps=[{','.join(map(str, args.timesteps))}]")
    cfg = load_config(ProbeConfig, config_path(args), [*flags, *extra, *overrides(args),
                                                       *(["ema=false"] if args.no_ema else [])])
    if not 1 <= len(runs) <= 2:
        raise ConfigError(f"got {len(runs)} run folders; pass one or two (to compare side by side).")
    return runs, cfg


def main(argv: Sequence[str]) -> int:
    runs, cfg = load_probe_config(parse(parser(), argv))
    out_dir = check_output_dir("--output-dir", output_folder(cfg.output_dir, Path(runs[0]) / "probe"))
    results = [probes.probe_run(d, cfg.timesteps, cfg.num_samples, cfg.seed, ema=cfg.ema, data_root=cfg.data_root,
                                device=cfg.device, threshold=cfg.threshold) for d in runs]
    out_dir.mkdir(parents=True, exist_ok=True)
    write_text(out_dir / "probe.json", json.dumps({"runs": [r.to_dict() for r in results]}))
    png = plot_heatmaps(results, out_dir / "probe_heatmaps.png")
    print_table(results)
    print(f"\nwrote {out_dir / 'probe.json'} and {png}")
    return 0
