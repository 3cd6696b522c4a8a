"""The plots of a comparison: training curves, metrics against steps, samples per arm, metrics against a swept
key."""
from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from torchvision.utils import make_grid  # noqa: E402

from softdiff.evaluation.run_eval import HIGHER_IS_BETTER  # noqa: E402
from softdiff.safe_io import save_figure  # noqa: E402


def _band(ax, steps, values, label):
    arr = np.array(values, dtype=float)
    mean, std = np.nanmean(arr, 0), (np.nanstd(arr, 0, ddof=1) if len(arr) > 1 else np.zeros(arr.shape[1]))
    (line,) = ax.plot(steps, mean, label=label)
    ax.fill_between(steps, mean - std, mean + std, alpha=0.25, color=line.get_color())


def plot_run_curves(runs: list[dict], activations: list[str], path: Path, key: str = "loss",
                    ylabel: str = "training loss (mean over log window)",
                    title: str = "training loss, mean ± std over seeds", yscale: str = "log") -> bool:
    """A per-step record of every run (``run[key]`` = [[step, value], ...]), mean ± std over seeds, one line per
    activation; False if no run has it."""
    fig, ax = plt.subplots(figsize=(6, 4))
    drawn = False
    for act in activations:
        curves = [r[key] for r in runs if r["activation"] == act and r.get(key)]
        if not curves:
            continue
        n = min(len(c) for c in curves)
        steps = [s for s, _ in curves[0][:n]]
        _band(ax, steps, [[v for _, v in c[:n]] for c in curves], act)
        drawn = True
    if drawn:
        ax.set(xlabel="step", ylabel=ylabel, yscale=yscale, title=title)
        ax.legend()
        fig.tight_layout()
        save_figure(fig, path, dpi=110)
    plt.close(fig)
    return drawn


def plot_metric_vs_steps(runs: list[dict], activations: list[str], metrics: list[str], path: Path,
                         floors: dict[str, float] | None = None) -> bool:
    """Each sample metric at each evaluated checkpoint, mean +- std over seeds, with the noise floor as a
    dashed line; False if nothing to plot."""
    shown = [m for m in metrics if any(len([h for h in r["history"] if m in h]) > 1 for r in runs)]
    if not shown:
        return False
    fig, axes = plt.subplots(1, len(shown), figsize=(4.2 * len(shown), 3.6), squeeze=False)
    for ax, m in zip(axes[0], shown):
        for act in activations:
            hists = [[h for h in r["history"] if m in h] for r in runs if r["activation"] == act]
            hists = [h for h in hists if h]
            if not hists:
                continue
            n = min(len(h) for h in hists)
            _band(ax, [h["step"] for h in hists[0][:n]], [[h[m] for h in hist[:n]] for hist in hists], act)
        floor = (floors or {}).get(m)
        if floor is not None and math.isfinite(floor):
            ax.axhline(floor, color="k", ls="--", lw=1, label="noise floor")
        values = [h[m] for r in runs for h in r["history"] if m in h and math.isfinite(h[m])]
        positive = all(v > 0 for v in values + ([floor] if floor is not None and math.isfinite(floor) else []))
        ax.set(xlabel="step", ylabel=m, title=f"{m} ({'higher' if m in HIGHER_IS_BETTER else 'lower'} is better)",
               yscale="log" if positive else "linear")
    axes[0][0].legend()
    fig.tight_layout()
    save_figure(fig, path, dpi=110)
    plt.close(fig)
    return True


def plot_samples(samples: dict[str, np.ndarray], kind: str, path: Path, reference: np.ndarray | None = None,
                 data_range=(-4.0, 4.0)) -> None:
    """One panel per activation: a scatter over the true data (2-D) or an image grid."""
    acts = list(samples)
    fig, axes = plt.subplots(1, len(acts), figsize=(3.6 * len(acts), 3.8), squeeze=False)
    for ax, act in zip(axes[0], acts):
        x = samples[act]
        if kind == "image":
            imgs = torch.as_tensor(np.asarray(x[:64, :1], dtype=np.float32))  # first channel, in gray
            grid = make_grid(imgs, nrow=int(math.ceil(math.sqrt(len(imgs)))), padding=1, pad_value=0.5)
            ax.imshow(grid[0].numpy(), cmap="gray", vmin=0, vmax=1)
            ax.set_xticks([]), ax.set_yticks([])
        else:
            if reference is not None:
                ax.scatter(reference[:, 0], reference[:, 1], s=2, c="tab:gray", alpha=0.3, label="data")
            ax.scatter(x[:, 0], x[:, 1], s=2, c="tab:blue", alpha=0.6, label="samples")
            ax.set(xlim=data_range, ylim=data_range, aspect="equal", xlabel="$x_1$", ylabel="$x_2$")
        ax.set_title(act)
    if kind != "image" and reference is not None:
        axes[0][0].legend(loc="upper right", markerscale=4, fontsize=7)
    fig.tight_layout()
    save_figure(fig, path, dpi=110)
    plt.close(fig)


def plot_scaling(key: str, values: list, summaries: list[dict], activations: list[str], metrics: list[str],
                 path: Path, floors: list[dict] | None = None) -> bool:
    """Each metric against the swept value, one line per activation: the mean over seeds with its 95% bootstrap
    interval as a band, and each point's noise floor dashed; False if nothing is finite."""
    shown = [m for m in metrics if any(math.isfinite(s.get(a, {}).get(m, {}).get("mean", math.nan))
                                       for s in summaries for a in activations)]
    if not shown:
        return False
    numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
    xs = np.asarray(values, dtype=float) if numeric else np.arange(len(values), dtype=float)
    cols = min(3, len(shown))
    rows = math.ceil(len(shown) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.4 * rows), squeeze=False)
    for ax in axes.flat[len(shown):]:
        ax.set_visible(False)
    for ax, m in zip(axes.flat, shown):
        for act in activations:
            cells = [s.get(act, {}).get(m, {}) for s in summaries]
            mean = np.array([c.get("mean", math.nan) for c in cells], dtype=float)
            lo = np.array([(c.get("ci95") or [math.nan] * 2)[0] for c in cells], dtype=float)
            hi = np.array([(c.get("ci95") or [math.nan] * 2)[1] for c in cells], dtype=float)
            (line,) = ax.plot(xs, mean, marker="o", label=act)
            ax.fill_between(xs, lo, hi, alpha=0.2, color=line.get_color())
        floor = np.array([(f or {}).get(m, math.nan) for f in (floors or [{}] * len(xs))], dtype=float)
        if np.isfinite(floor).any():
            ax.plot(xs, floor, "k--", lw=1, label="noise floor")
        finite = [v for s in summaries for a in activations
                  for v in [s.get(a, {}).get(m, {}).get("mean", math.nan)] if math.isfinite(v)]
        ax.set(xlabel=key, ylabel=m, title=f"{m} ({'higher' if m in HIGHER_IS_BETTER else 'lower'} is better)",
               yscale="log" if finite and min(finite) > 0 and max(finite) / min(finite) > 20 else "linear")
        if numeric and min(xs) > 0 and max(xs) / min(xs) >= 8:
            ax.set_xscale("log", base=2)
        if not numeric:
            ax.set_xticks(xs, [str(v) for v in values])
    axes.flat[0].legend()
    fig.suptitle("mean over seeds, band: 95% bootstrap interval", fontsize=9)
    fig.tight_layout()
    save_figure(fig, path, dpi=110)
    plt.close(fig)
    return True
