"""PNG plots of value-softmax flow histories: shares (log-log), entropy, value projections, gradient norms."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Callable, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from softdiff.studies.value_flow.history import FlowHistory  # noqa: E402
from softdiff.safe_io import save_figure  # noqa: E402


def _series(hist: FlowHistory, name: str, seed_index: int = 0) -> np.ndarray:
    """Field ``name`` for one seed: (R, N) for per-token fields, (R,) for scalars."""
    arr = getattr(hist, name).detach().cpu().numpy()
    batched = hist.V.ndim == 3
    return arr[:, seed_index] if batched else arr


def _grid(n: int, max_cols: int = 6) -> tuple[int, int]:
    cols = min(n, max_cols)
    return math.ceil(n / cols), cols


def _x(hist: FlowHistory) -> tuple[np.ndarray, slice]:
    """Steps without the 0 record (log x axes), and the matching slice."""
    return hist.steps.cpu().numpy()[1:], slice(1, None)


def _xlabel(hist: FlowHistory) -> str:
    return "time t" if hist.meta.get("method") == "flow" else "GD step"


def _finish(fig, path: Path) -> Path:
    fig.tight_layout()
    save_figure(fig, path, dpi=110)
    plt.close(fig)
    return path


def _case_panels(histories: dict[str, FlowHistory], path: Path, title: str,
                 draw: Callable[[plt.Axes, FlowHistory], None]) -> Path:
    """One panel per case against the step (log x), filled by ``draw(ax, hist)``; spare grid cells hidden."""
    rows, cols = _grid(len(histories))
    fig, axes = plt.subplots(rows, cols, figsize=(max(6.0, 3.2 * cols), 2.8 * rows + 0.6), squeeze=False)
    for ax, (label, hist) in zip(axes.flat, histories.items()):
        draw(ax, hist)
        ax.set_xscale("log")
        ax.set_title(label, fontsize=9)
        ax.set_xlabel(_xlabel(hist), fontsize=8)
    for ax in list(axes.flat)[len(histories):]:
        ax.axis("off")
    fig.suptitle(title, fontsize=10)
    return _finish(fig, path)


def plot_shares(histories: dict[str, FlowHistory], path: Path, title: str, seed_index: int = 0) -> Path:
    """Each token's share ``s_i`` against the step, log-log (symlog y where a map leaves the positive orthant)."""

    def draw(ax, hist: FlowHistory) -> None:
        x, keep = _x(hist)
        s = _series(hist, "s", seed_index)[keep]
        ax.plot(x, s, lw=1)
        finite = s[np.isfinite(s)]
        if finite.size and finite.min() > 0:
            ax.set_yscale("log")
        else:
            ax.set_yscale("symlog", linthresh=1e-2)
        ax.set_ylabel("share s_i", fontsize=8)

    return _case_panels(histories, path, f"{title}: attention shares per token (seed {seed_index})", draw)


def plot_entropy(histories: dict[str, FlowHistory], path: Path, title: str) -> Path:
    """Entropy of ``|s| / sum |s|`` against the step: the mean over seeds per case, thin lines for single seeds."""
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    colors = plt.cm.viridis(np.linspace(0, 0.9, len(histories)))
    for color, (label, hist) in zip(colors, histories.items()):
        x, keep = _x(hist)
        ent = hist.entropy.detach().cpu().numpy()[keep]
        ent = ent if ent.ndim == 2 else ent[:, None]
        ax.plot(x, ent, color=color, lw=0.5, alpha=0.35)
        ax.plot(x, ent.mean(1), color=color, lw=2, label=label)
    n = hist.s.shape[-1]
    ax.axhline(math.log(n), color="grey", ls=":", lw=1, label=f"log N = {math.log(n):.2f}")
    ax.set_xscale("log")
    ax.set_xlabel(_xlabel(hist))
    ax.set_ylabel("attention entropy (nats)")
    ax.set_title(f"{title}: entropy (bold: mean over seeds)")
    ax.legend(fontsize=7, ncol=2)
    return _finish(fig, path)


def plot_projections(histories: dict[str, FlowHistory], path: Path, title: str, seed_index: int = 0) -> Path:
    """Each value's projection ``<v_i, d>`` on the loss's reference direction against the step; winner bold."""

    def draw(ax, hist: FlowHistory) -> None:
        x, keep = _x(hist)
        proj = _series(hist, "projections", seed_index)[keep]
        winner = int(_series(hist, "winner", seed_index)[-1])
        ax.plot(x, proj, lw=0.8, alpha=0.7)
        ax.plot(x, proj[:, winner], color="black", lw=2, label=f"winner (token {winner})")
        ax.set_ylabel("<v_i, d>", fontsize=8)
        ax.legend(fontsize=7)

    return _case_panels(histories, path, f"{title}: value projections (seed {seed_index})", draw)


def plot_gradients(histories: dict[str, FlowHistory], path: Path, title: str) -> Path:
    """``||grad V||`` and ``||grad a||`` against the step, log-log: the seed mean bold, single seeds thin."""

    def draw(ax, hist: FlowHistory) -> None:
        x, keep = _x(hist)
        for name, label, color in (("grad_norm_V", "||grad V||", "tab:blue"), ("grad_norm_a", "||grad a||", "tab:green")):
            g = getattr(hist, name).detach().cpu().numpy()[keep]
            g = g if g.ndim == 2 else g[:, None]
            ax.plot(x, g, color=color, lw=0.5, alpha=0.3)
            ax.plot(x, g.mean(1), color=color, lw=1.8, label=label)
        ax.set_yscale("log")
        ax.set_ylabel("gradient norm", fontsize=8)
        ax.legend(fontsize=7)

    return _case_panels(histories, path, f"{title}: gradient norms (bold: mean over seeds)", draw)


def plot_all(histories: dict[str, FlowHistory], out_dir: Path, title: str) -> Sequence[Path]:
    """Write shares.png, entropy.png, projections.png and gradients.png into ``out_dir``."""
    return [plot_shares(histories, out_dir / "shares.png", title),
            plot_entropy(histories, out_dir / "entropy.png", title),
            plot_projections(histories, out_dir / "projections.png", title),
            plot_gradients(histories, out_dir / "gradients.png", title)]
