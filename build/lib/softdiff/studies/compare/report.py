"""A comparison's summary statistics, winners, plots and ``report.md``."""
from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from torchvision.utils import make_grid  # noqa: E402

from softdiff.studies.probes.attention import PROBE_SUMMARY  # noqa: E402
from softdiff.evaluation.run_eval import HIGHER_IS_BETTER  # noqa: E402
from softdiff.safe_io import save_figure, write_text  # noqa: E402
from softdiff.tables import fmt  # noqa: E402

REPORT_SECTIONS = ("## Setup", "## Results", "## Winners", "## Plots", "## Runs")


def identical_activations(runs: list[dict]) -> list[str]:
    """Warnings for activations whose runs gave exactly the same metrics as another activation's with the same
    seed: the activation then cannot be reaching the trained model (e.g. a branch that never trains)."""
    warnings, by_seed = [], {}
    for r in runs:
        if r["metrics"] and not r.get("error"):
            by_seed.setdefault(r["seed"], []).append(r)
    for seed, group in sorted(by_seed.items()):
        for i, a in enumerate(group):
            for b in group[i + 1:]:
                if a["metrics"] == b["metrics"]:
                    warnings.append(f"seed {seed}: {a['activation']} and {b['activation']} gave bit-identical metrics, "
                                    "so the activation does not affect the trained model; check the architecture.")
    return warnings


def mean_std(values: list[float]) -> dict[str, float]:
    """Mean and sample standard deviation (0 for a single value) of the finite values; NaN if none."""
    finite = [v for v in values if v is not None and math.isfinite(v)]
    if not finite:
        return {"mean": math.nan, "std": math.nan, "n": 0}
    std = float(np.std(finite, ddof=1)) if len(finite) > 1 else 0.0
    return {"mean": float(np.mean(finite)), "std": std, "n": len(finite)}


def summarize(runs: list[dict], activations: list[str], metrics: list[str]) -> dict[str, dict[str, dict]]:
    """``{activation: {metric: {"mean", "std", "n"}}}`` over seeds."""
    return {act: {m: mean_std([r["metrics"].get(m, math.nan) for r in runs if r["activation"] == act])
                  for m in metrics} for act in activations}


def winners(summary: dict, metrics: list[str]) -> dict[str, dict]:
    """Per metric: the best activation, the runner-up, and whether the gap exceeds the seed spread.

    The gap counts as real when ``|mean_1 - mean_2| > std_1 + std_2`` (both over seeds); with one seed the
    spread is unknown and ``significant`` is None.
    """
    out = {}
    for m in metrics:
        ranked = [(a, s[m]) for a, s in summary.items() if math.isfinite(s[m]["mean"])]
        if not ranked:
            continue
        ranked.sort(key=lambda item: item[1]["mean"], reverse=m in HIGHER_IS_BETTER)
        best, stats = ranked[0]
        entry = {"winner": best, "higher_is_better": m in HIGHER_IS_BETTER, "runner_up": None, "gap": None,
                 "spread": None, "significant": None}
        if len(ranked) > 1:
            second, s2 = ranked[1]
            gap, spread = abs(stats["mean"] - s2["mean"]), stats["std"] + s2["std"]
            entry.update(runner_up=second, gap=gap, spread=spread,
                         significant=None if min(stats["n"], s2["n"]) < 2 else bool(gap > spread))
        out[m] = entry
    return out


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


def diagnostics_summary(runs: list[dict], activations: list[str]) -> dict[str, dict[str, dict]]:
    """``{activation: {stat: {"mean", "std", "n"}}}`` for the attention probes and the final NTK drift."""
    out: dict[str, dict[str, dict]] = {}
    for act in activations:
        mine = [r for r in runs if r["activation"] == act and not r.get("error")]
        stats = {}
        if any(r.get("probes") for r in mine):
            for k in (*PROBE_SUMMARY, "log_num_tokens"):
                stats[k] = mean_std([r["probes"][k] for r in mine if r.get("probes")])
        if any(r.get("ntk_drift") for r in mine):
            stats["final_ntk_drift"] = mean_std([r["ntk_drift"][-1][1] for r in mine if r.get("ntk_drift")])
        if stats:
            out[act] = stats
    return out


def diagnostics_lines(diagnostics: dict[str, dict[str, dict]]) -> list[str]:
    """The report's "## Diagnostics" section (empty when no run has probes or NTK drift)."""
    if not diagnostics:
        return []
    lines = ["## Diagnostics", ""]
    with_probes = [a for a, s in diagnostics.items() if "entropy" in s]
    if with_probes:
        log_n = diagnostics[with_probes[0]]["log_num_tokens"]["mean"]
        lines += [f"Attention probes of each trained run (`softdiff probe`; EMA weights, 64 noised data points at "
                  f"t = 50, 250, 500, 750), averaged over timesteps, layers and heads; mean ± std over seeds. Uniform "
                  f"attention has entropy log N = {fmt(log_n)}; a head is a sink head when its sink score exceeds "
                  "0.9.", "",
                  "| activation | " + " | ".join(PROBE_SUMMARY.values()) + " |", "|---|" + "---|" * len(PROBE_SUMMARY)]
        for act in with_probes:
            s = diagnostics[act]
            lines.append(f"| {act} | " + " | ".join(f"{fmt(s[k]['mean'])} ± {fmt(s[k]['std'])}"
                                                     for k in PROBE_SUMMARY) + " |")
        lines.append("")
    with_ntk = [a for a, s in diagnostics.items() if "final_ntk_drift" in s]
    if with_ntk:
        lines += ["Relative NTK drift `||K_t - K_0||_F / ||K_0||_F` on a fixed probe batch at the end of training "
                  "(`diagnostics.ntk_every`; the curves are in ntk_drift.png): "
                  + "; ".join(f"{a} {fmt(diagnostics[a]['final_ntk_drift']['mean'])} ± "
                              f"{fmt(diagnostics[a]['final_ntk_drift']['std'])}" for a in with_ntk) + ".", ""]
    return lines


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


def write_report(path: Path, title: str, setup: dict, activations: list[str], metrics: list[str], summary: dict,
                 floors: dict, wins: dict, plots: list[str], runs: list[dict],
                 diagnostics: list[str] = ()) -> None:
    """``report.md``: setup, the mean ± std table with the noise floor, winners, plots and the run list."""
    lines = [f"# {title}", "", "## Setup", ""]
    lines += [f"- {k}: {v}" for k, v in setup.items()]
    lines += ["", "## Results", "", "Mean ± std over seeds; the last row is the noise floor (the metric between two "
              "independent draws of the true data, i.e. what a perfect model would score at this sample size).", ""]
    arrows = {m: "↑" if m in HIGHER_IS_BETTER else "↓" for m in metrics}
    lines.append("| activation | " + " | ".join(f"{m} {arrows[m]}" for m in metrics) + " |")
    lines.append("|---|" + "---|" * len(metrics))
    for act in activations:
        cells = []
        for m in metrics:
            s = summary[act][m]
            cell = f"{fmt(s['mean'])} ± {fmt(s['std'])}"
            cells.append(f"**{cell}**" if wins.get(m, {}).get("winner") == act else cell)
        lines.append(f"| {act} | " + " | ".join(cells) + " |")
    lines.append("| *noise floor* | " + " | ".join(fmt(floors.get(m)) for m in metrics) + " |")
    alerts = identical_activations(runs)
    if alerts:
        lines += ["", "**Warning:** the comparison is void where activations made no difference:", ""]
        lines += [f"- {a}" for a in alerts]
    lines += ["", "## Winners", ""]
    for m in metrics:
        w = wins.get(m)
        if w is None:
            lines.append(f"- {m}: no finite values")
            continue
        if w["runner_up"] is None:
            verdict = "only one activation"
        elif w["gap"] == 0:
            lines.append(f"- {m}: tie between {w['winner']} and {w['runner_up']} (identical means).")
            continue
        elif w["significant"] is None:
            verdict = "one seed, so the seed spread is unknown"
        elif w["significant"]:
            verdict = f"the gap {fmt(w['gap'])} exceeds the seed spread {fmt(w['spread'])}"
        else:
            verdict = f"the gap {fmt(w['gap'])} is within the seed spread {fmt(w['spread'])}: not a clear win"
        runner = f" over {w['runner_up']}" if w["runner_up"] else ""
        lines.append(f"- {m}: **{w['winner']}**{runner}; {verdict}.")
    lines += ["", *diagnostics, "## Plots", ""]
    lines += [f"![{Path(p).stem}]({p})" for p in plots]
    lines += ["", "## Runs", "", "| activation | seed | final loss | train s | run dir | status |",
              "|---|---|---|---|---|---|"]
    for r in runs:
        final_loss = r["loss"][-1][1] if r["loss"] else math.nan
        status = f"failed: {r['error']}" if r.get("error") else "ok"
        lines.append(f"| {r['activation']} | {r['seed']} | {fmt(final_loss)} | {fmt(r.get('train_seconds'))} | "
                     f"{r['run_dir']} | {status} |")
    write_text(path, "\n".join(lines) + "\n")
