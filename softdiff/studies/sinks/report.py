"""Mean +- std over seeds of the sink runs: the summary table, and the plots (over training; per head)."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from softdiff.safe_io import save_figure  # noqa: E402


def _by_norm(runs: list[dict]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for r in runs:
        out.setdefault(r["normalization"], []).append(r["history"])
    return out


def _stack(histories: list[dict], key: str) -> np.ndarray:
    """(seeds, records, ...) array of one recorded statistic."""
    return np.array([h[key] for h in histories], dtype=np.float64)


def _pm(x: np.ndarray) -> dict[str, float]:
    return {"mean": float(x.mean()), "std": float(x.std(ddof=1)) if x.size > 1 else 0.0}


def summarise(runs: list[dict]) -> dict[str, dict]:
    """Per normalisation, at the end of training: accuracy, and per layer the first-token mass (mean and max
    over heads), the readout row's max weight, the raw row mass and the massive-activation ratio, each as
    mean and std over seeds."""
    out = {}
    for norm, hs in _by_norm(runs).items():
        first, readout = _stack(hs, "first_mass")[:, -1], _stack(hs, "readout_max")[:, -1]  # (seeds, L, H)
        rows, massive = _stack(hs, "row_mass")[:, -1], _stack(hs, "massive")[:, -1]
        out[norm] = {"seeds": len(hs), "accuracy": _pm(_stack(hs, "accuracy")[:, -1]),
                     "layers": [{"first_mass": _pm(first[:, l].mean(-1)), "first_mass_max_head": _pm(first[:, l].max(-1)),
                                 "readout_max": _pm(readout[:, l].mean(-1)), "row_mass": _pm(rows[:, l].mean(-1)),
                                 "massive": _pm(massive[:, l])} for l in range(first.shape[1])]}
    return out


def table_rows(summary: dict[str, dict]) -> list[tuple[str, ...]]:
    f = lambda s, p=3: f"{s['mean']:.{p}f} +- {s['std']:.{p}f}"  # noqa: E731
    rows = []
    for norm, s in summary.items():
        for l, layer in enumerate(s["layers"]):
            rows.append((norm, str(l), f(s["accuracy"]) if l == 0 else "", f(layer["first_mass"]),
                         f(layer["first_mass_max_head"]), f(layer["readout_max"]), f(layer["row_mass"], 2),
                         f(layer["massive"], 1)))
    return rows


TABLE_HEAD = ("attention", "layer", "accuracy", "first-token mass", "max over heads", "readout max weight",
              "row mass", "massive (max/median |h|)")


def plot_training(runs: list[dict], path: Path, title: str) -> Path:
    """First-token mass per layer (mean over heads), accuracy and massive activation (last layer) against the
    step: mean over seeds with a +- std band, one colour per normalisation."""
    groups = _by_norm(runs)
    layers = len(next(iter(groups.values()))[0]["first_mass"][0])
    fig, axes = plt.subplots(1, layers + 2, figsize=(3.4 * (layers + 2), 3.2), squeeze=False)
    axes = axes[0]
    for color, (norm, hs) in zip(plt.cm.tab10.colors, groups.items()):
        steps = np.array(hs[0]["step"])
        series = [_stack(hs, "first_mass")[:, :, l].mean(-1) for l in range(layers)]
        series += [_stack(hs, "accuracy"), _stack(hs, "massive")[:, :, -1]]
        for ax, y in zip(axes, series):
            m, s = y.mean(0), y.std(0)
            ax.plot(steps, m, color=color, lw=1.6, label=norm)
            ax.fill_between(steps, m - s, m + s, color=color, alpha=0.2)
    names = [f"layer {l}: attention mass on token 0" for l in range(layers)] + \
        ["task accuracy", f"layer {layers - 1}: max / median |h|"]
    for ax, name in zip(axes, names):
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("training step", fontsize=8)
    axes[0].legend(fontsize=7)
    fig.suptitle(f"{title} (mean +- std over seeds)", fontsize=10)
    fig.tight_layout()
    save_figure(fig, path, dpi=110)
    plt.close(fig)
    return path


def plot_heads(runs: list[dict], path: Path, title: str) -> Path:
    """Final first-token mass per layer x head, seed mean, one panel per normalisation."""
    groups = _by_norm(runs)
    fig, axes = plt.subplots(1, len(groups), figsize=(3.0 * len(groups), 2.6), squeeze=False)
    for ax, (norm, hs) in zip(axes[0], groups.items()):
        grid = _stack(hs, "first_mass")[:, -1].mean(0)
        im = ax.imshow(grid, vmin=0, vmax=1, cmap="viridis")
        for (l, h), v in np.ndenumerate(grid):
            ax.text(h, l, f"{v:.2f}", ha="center", va="center", fontsize=7, color="w" if v < 0.6 else "k")
        ax.set_title(norm, fontsize=9)
        ax.set_xlabel("head", fontsize=8)
        ax.set_ylabel("layer", fontsize=8)
    fig.colorbar(im, ax=list(axes[0]), fraction=0.02)
    fig.suptitle(f"{title}: final attention mass on token 0 (seed mean)", fontsize=10)
    save_figure(fig, path, dpi=110)
    plt.close(fig)
    return path
