"""Outputs of the NTK width study: results.json, report.md and PNG plots (matplotlib, Agg)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (backend must be chosen first)
import numpy as np  # noqa: E402

from softdiff.safe_io import save_figure, write_text  # noqa: E402
from softdiff.tables import fmt  # noqa: E402


def plot_drift(results: dict, path: Path) -> None:
    """Kernel drift and Monte-Carlo kernel error vs width, log-log, one panel per task, with an m^-1/2 guide."""
    cfg, tasks = results["config"], list(results["runs"])
    widths = np.array(cfg["widths"], dtype=float)
    fig, axes = plt.subplots(1, len(tasks), figsize=(5.5 * len(tasks), 4.2), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        for act, rows in results["runs"][task].items():
            drift = [r["kernel_drift"] for r in rows]
            slope = results["summary"][task][act]["drift_slope"]
            line, = ax.plot(widths, drift, "o-", label=f"{act} drift (slope {slope:.2f})")
            conv = results["summary"][task][act]["kernel_convergence"]
            ax.plot(widths[:-1], conv[:-1], "s--", color=line.get_color(), alpha=0.6,
                    label=f"{act} ||K_m - K_inf||/||K_inf|| at init")
        ref = [r["kernel_drift"] for r in next(iter(results["runs"][task].values()))]
        ax.plot(widths, ref[0] * (widths / widths[0]) ** -0.5, "k:", label="m^-1/2 guide")
        ax.set(xscale="log", yscale="log", xlabel="width m", ylabel="relative kernel change",
               title=f"{task}: NTK drift after {cfg['steps']} GD steps")
        ax.legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, path, dpi=120)
    plt.close(fig)


def _task_activation_panels(results: dict, path: Path, draw: Callable[[plt.Axes, str, str], None]) -> None:
    """One panel per task (rows) and activation (columns), filled by ``draw(ax, task, activation)``."""
    tasks, acts = list(results["runs"]), results["config"]["activations"]
    fig, axes = plt.subplots(len(tasks), len(acts), figsize=(4.5 * len(acts), 3.6 * len(tasks)), squeeze=False)
    for i, task in enumerate(tasks):
        for j, act in enumerate(acts):
            draw(axes[i][j], task, act)
    fig.tight_layout()
    save_figure(fig, path, dpi=120)
    plt.close(fig)


def plot_loss(results: dict, path: Path) -> None:
    """Loss vs step (measured, linearised prediction, recalled bound envelope) for the smallest and largest width."""

    def draw(ax, task: str, act: str) -> None:
        rows = results["runs"][task][act]
        for row, colour in ((rows[0], "tab:red"), (rows[-1], "tab:blue")):
            steps = np.arange(len(row["loss"]))
            ax.plot(steps, row["loss"], color=colour, label=f"m={row['width']} measured")
            ax.plot(steps, row["loss_linearised"], "--", color=colour, label=f"m={row['width']} kernel")
            ax.plot(steps, row["loss"][0] * row["rate_bound"] ** steps, ":", color=colour,
                    label=f"m={row['width']} bound (1-c*eta*kappa*lambda)^t")
        ax.set(yscale="log", xlabel="GD step", ylabel="1/2 ||F - Y||^2", title=f"{task}, {act}")
        ax.legend(fontsize=6)

    _task_activation_panels(results, path, draw)


def plot_spectra(results: dict, path: Path) -> None:
    """Sorted NTK eigenvalues at init for every width (darker = wider), one panel per task and activation."""
    shades = plt.cm.viridis(np.linspace(0.9, 0.1, len(results["config"]["widths"])))

    def draw(ax, task: str, act: str) -> None:
        for row, shade in zip(results["runs"][task][act], shades):
            evals = np.sort(np.clip(row["eigenvalues"], 1e-16, None))[::-1]
            ax.plot(np.arange(1, len(evals) + 1), evals, color=shade, label=f"m={row['width']}")
        ax.set(yscale="log", xlabel="index", ylabel="eigenvalue of H(0)", title=f"{task}, {act}")
        ax.legend(fontsize=6, ncol=2)

    _task_activation_panels(results, path, draw)


def write_report(results: dict, out_dir: Path) -> list[Path]:
    """Write results.json, report.md and the three plots into ``out_dir``; returns the paths written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / "results.json", out_dir / "report.md", out_dir / "drift_vs_width.png",
             out_dir / "loss_vs_step.png", out_dir / "spectra.png"]
    write_text(paths[0], json.dumps(results, indent=1))
    plot_drift(results, paths[2])
    plot_loss(results, paths[3])
    plot_spectra(results, paths[4])
    write_text(paths[1], report_markdown(results))
    return paths


def report_markdown(results: dict) -> str:
    """The study as a Markdown report (tables per task, slopes, conventions)."""
    cfg = results["config"]
    lines = [
        "# NTK width study", "",
        f"Full-batch GD for {cfg['steps']} steps on `1/2 ||F - Y||^2`, step `eta = {cfg['lr_fraction']} * "
        "2 / (kappa * lambda_max(H(0)))`, coupled init (F = 0 at init), sigma = "
        f"{cfg['sigma']}, n_train = {cfg['n_train']}, n_test = {cfg['n_test']}, seed = {cfg['seed']}.",
        "Kernel `H = J J^T / kappa` (W only): kappa = m for softmax, 1 for relu/exp (both O(1) in width).",
        "Rates are per-step loss contraction `(L_T / L_0)^(1/T)`: measured, linearised (`gd_dynamics` from H(0)),"
        f" and the recalled bound `1 - c * eta * kappa * lambda_min` with c = {cfg['rate_constant']} [recalled].",
        "Gaps are relative to the function change: train `||F_T - F_lin_T|| / ||F_lin_T - F_0||`, test likewise "
        "with the kernel prediction `f_test(0) - H_test H^-1 (r(0) - r(T))`.",
        "Drift = `||H(W_T) - H(W_0)||_F / ||H(W_0)||_F`; movement = `||W_T - W_0||_F / ||W_0||_F`.", "",
        "![drift](drift_vs_width.png)", "", "![loss](loss_vs_step.png)", "", "![spectra](spectra.png)", ""]
    for task, by_act in results["runs"].items():
        lines += [f"## Task: {task}", "",
                  "| activation | width | lambda_min | cond | eff. rank | alignment | drift | movement | "
                  "rate meas. | rate lin. | rate bound | train gap | test gap | test mse net | test mse kernel |",
                  "| --- " * 15 + "|"]
        for act, rows in by_act.items():
            for r in rows:
                lines.append("| " + " | ".join([act, str(r["width"])] + [fmt(r[k]) for k in (
                    "lambda_min", "condition_number", "effective_rank", "alignment", "kernel_drift",
                    "weight_movement", "rate_measured", "rate_linearised", "rate_bound", "train_gap", "test_gap",
                    "test_mse_net", "test_mse_kernel")]) + " |")
        lines += ["", "| activation | drift slope (theory ~ -1/2) | movement slope | MC kernel error slope |",
                  "| --- | --- | --- | --- |"]
        for act, s in results["summary"][task].items():
            lines.append(f"| {act} | {fmt(s['drift_slope'])} | {fmt(s['weight_movement_slope'])} | "
                         f"{fmt(s['kernel_convergence_slope'])} |")
        lines.append("")
    lines.append("MC kernel error: mean over inits of `||K_m - K_inf|| / ||K_inf||` at init, with `K_inf` estimated by "
                 "the mean kernel at the largest width (slope fitted without that width).")
    return "\n".join(lines) + "\n"
