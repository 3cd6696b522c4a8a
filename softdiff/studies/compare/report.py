"""A comparison's ``report.md`` and ``results.json``: tables with bootstrap intervals, paired differences to the
best arm, winners, tuning, budgets, the scaling sweep and the runs."""
from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np

from softdiff.evaluation.run_eval import HIGHER_IS_BETTER
from softdiff.safe_io import finite_json, write_json, write_text
from softdiff.studies.compare.plots import plot_metric_vs_steps, plot_run_curves, plot_samples, plot_scaling
from softdiff.studies.compare.statistics import mean_std, paired_differences, summarize, winners
from softdiff.studies.probes.attention import PROBE_SUMMARY
from softdiff.tables import fmt

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
                  "(`callbacks.ntk_drift.every` of each run; the curves are in ntk_drift.png): "
                  + "; ".join(f"{a} {fmt(diagnostics[a]['final_ntk_drift']['mean'])} ± "
                              f"{fmt(diagnostics[a]['final_ntk_drift']['std'])}" for a in with_ntk) + ".", ""]
    return lines


def point_statistics(runs: list[dict], activations: list[str], metrics: list[str]) -> dict:
    """Summary (mean, std, interval), paired differences to the best arm, and winners of one set of runs."""
    summary = summarize(runs, activations, metrics)
    paired = paired_differences(runs, activations, metrics, summary, HIGHER_IS_BETTER)
    return {"summary": summary, "paired": paired, "winners": winners(summary, metrics, HIGHER_IS_BETTER, paired)}


def _interval(ci) -> str:
    return f"[{fmt(ci[0])}, {fmt(ci[1])}]"


def results_lines(activations: list[str], metrics: list[str], stats: dict, floors: dict) -> list[str]:
    """The mean ± std table with the noise floor, then the 95% intervals of the means and the paired differences."""
    summary, wins, paired = stats["summary"], stats["winners"], stats["paired"]
    arrows = {m: "↑" if m in HIGHER_IS_BETTER else "↓" for m in metrics}
    head = ["| activation | " + " | ".join(f"{m} {arrows[m]}" for m in metrics) + " |", "|---|" + "---|" * len(metrics)]
    lines = ["Mean ± std over seeds; the last row is the noise floor (the metric between two independent draws of "
             "the true data, i.e. what a perfect model would score at this sample size).", "", *head]
    for act in activations:
        cells = []
        for m in metrics:
            s = summary[act][m]
            cell = f"{fmt(s['mean'])} ± {fmt(s['std'])}"
            cells.append(f"**{cell}**" if wins.get(m, {}).get("winner") == act else cell)
        lines.append(f"| {act} | " + " | ".join(cells) + " |")
    lines.append("| *noise floor* | " + " | ".join(fmt(floors.get(m)) for m in metrics) + " |")
    n = max((summary[a][m]["n"] for a in activations for m in metrics), default=0)
    caveat = {1: "; one seed: no interval", 2: "; with 2 seeds an interval is the seeds' range",
              3: "; with 3 seeds an interval is the seeds' range, which covers the true mean about 75% of the time"}
    lines += ["", f"95% bootstrap intervals of the mean over {n} seed(s) (expanded percentile{caveat.get(n, '')}):",
              "", *head]
    for act in activations:
        lines.append(f"| {act} | " + " | ".join(_interval(summary[act][m]["ci95"]) for m in metrics) + " |")
    lines += ["", "Paired differences to the best arm (this arm minus the best, per shared seed): mean [95% bootstrap "
              "interval]; ✓ marks an interval that excludes zero, i.e. the best arm is clearly better.", "", *head]
    for act in activations:
        cells = []
        for m in metrics:
            p = paired[act].get(m)
            if p is None or not p["n"]:
                cells.append("n/a")
            elif p["against"] == act:
                cells.append("best")
            else:
                cells.append(f"{fmt(p['diff'])} {_interval(p['ci95'])}" + (" ✓" if p["clear"] else ""))
        lines.append(f"| {act} | " + " | ".join(cells) + " |")
    return lines


def winner_lines(metrics: list[str], wins: dict) -> list[str]:
    """One verdict per metric: clear when the runner-up's paired interval excludes zero; the older rule (gap
    against the sum of the seed stds) in parentheses."""
    lines = []
    for m in metrics:
        w = wins.get(m)
        if w is None:
            lines.append(f"- {m}: no finite values")
            continue
        if w["runner_up"] is None:
            lines.append(f"- {m}: **{w['winner']}** (only one activation with finite values).")
            continue
        if w["gap"] == 0:
            lines.append(f"- {m}: tie between {w['winner']} and {w['runner_up']} (identical means).")
            continue
        if w["clear"] is None:
            verdict = "fewer than two shared seeds, so no interval"
        elif w["clear"]:
            verdict = f"clear: the paired difference's interval {_interval(w['paired_ci95'])} excludes zero"
        else:
            verdict = f"not clear: the paired difference's interval {_interval(w['paired_ci95'])} includes zero"
        if w["significant"] is not None:
            rule = "exceeds" if w["significant"] else "is within"
            verdict += f" (the gap {fmt(w['gap'])} {rule} the seed spread {fmt(w['spread'])})"
        lines.append(f"- {m}: **{w['winner']}** over {w['runner_up']}; {verdict}.")
    return lines


def tuning_lines(tuning: dict, activations: list[str], cfg) -> list[str]:
    """The chosen setting per arm and every trial's validation score."""
    first = tuning[activations[0]]
    metric, trials = first["metric"], first["trials"]
    better = "higher" if metric in HIGHER_IS_BETTER else "lower"
    lines = [f"Each arm trained every trial on {cfg.tune.budget:g} of the final budget with seed(s) "
             f"{', '.join(map(str, cfg.tune.seed_list))} and kept the setting with the best validation {metric} "
             f"({better} is better; mean over those seeds, scored on reference points apart from the final "
             f"evaluation's and sampled with seed {cfg.tune.sampling_seed}; a trial with a failed or non-finite seed "
             "is never chosen; exact ties go to the trial listed first).", "",
             "| trial | " + " | ".join(activations) + " |", "|---|" + "---|" * len(activations)]
    for i, trial in enumerate(trials):
        label = ", ".join(f"{k}={v}" for k, v in trial["settings"].items()) or "(shared)"
        cells = []
        for act in activations:
            t = tuning[act]["trials"][i]
            cell = fmt(t["score"]) + (" (failed)" if t["errors"] else "")
            cells.append(f"**{cell}**" if tuning[act]["best_trial"] == i else cell)
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines += ["", *edge_notes(tuning, activations, cfg.tune.grid), "Chosen: " + "; ".join(
        f"{act} " + (", ".join(f"{k}={v}" for k, v in tuning[act]["best"].items()) or "none finite: shared setting")
        for act in activations) + "."]
    return lines


def edge_notes(tuning: dict, activations: list[str], grid: dict) -> list[str]:
    """A warning per numeric grid key whose chosen value is the smallest or largest listed: the best setting may
    lie outside the grid."""
    notes = []
    for key, values in grid.items():
        numeric = [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
        if len(numeric) < 2 or len(numeric) != len(values):
            continue
        for act in activations:
            chosen = tuning[act]["best"].get(key)
            if chosen is not None and chosen in (min(numeric), max(numeric)):
                side = "largest" if chosen == max(numeric) else "smallest"
                notes.append(f"- **Note:** {act} chose the {side} {key} of the grid ({chosen}); its best setting may "
                             "lie beyond it, so widen the grid on that side.")
    return [*notes, ""] if notes else []


def budget_lines(cfg, budget: dict | None, runs: list[dict], activations: list[str]) -> list[str]:
    """Steps and measured training seconds per arm (and, with budget.mode=time, the timed seconds per step)."""
    lines = ["| activation | steps | s / step (timed) | training s per run (mean ± std) |", "|---|---|---|---|"]
    for act in activations:
        mine = [r for r in runs if r["activation"] == act]
        steps = sorted({r.get("steps") for r in mine if r.get("steps")})
        seconds = mean_std([r.get("train_seconds") for r in mine])
        per_step = (budget or {}).get(act, {}).get("seconds_per_step")
        lines.append(f"| {act} | {', '.join(map(str, steps)) or 'n/a'} | "
                     f"{fmt(per_step) if per_step else '—'} | {fmt(seconds['mean'])} ± {fmt(seconds['std'])} |")
    if cfg.budget.mode == "time":
        lines = [f"Equal time: every final run was sized to train {fmt(cfg.budget.seconds)} s: its steps are the "
                 f"budget over its arm's seconds per step, timed on {cfg.budget.probe_steps} steps after as many "
                 "warm-up steps with the same threads a run gets. Runs in parallel processes share the cores, so "
                 "their measured seconds can exceed the budget alike for every arm.", "", *lines]
    return lines


def run_lines(runs: list[dict]) -> list[str]:
    lines = ["| activation | seed | settings | steps | final loss | train s | run dir | status |",
             "|---|---|---|---|---|---|---|---|"]
    for r in runs:
        final_loss = r["loss"][-1][1] if r["loss"] else math.nan
        status = f"failed: {r['error']}" if r.get("error") else "ok"
        settings = ", ".join(f"{k}={v}" for k, v in (r.get("settings") or {}).items()) or "shared"
        lines.append(f"| {r['activation']} | {r['seed']} | {settings} | {r.get('steps', 'n/a')} | {fmt(final_loss)} | "
                     f"{fmt(r.get('train_seconds'))} | {r['run_dir']} | {status} |")
    return lines


def _point_plots(cfg, point: dict, metrics: list[str], out: Path) -> list[str]:
    """The plots of one point, written into its folder; their paths relative to ``out``."""
    folder, runs, acts = point["folder"], point["runs"], cfg.activations
    made = []
    if plot_run_curves(runs, acts, folder / "loss_curves.png"):
        made.append(folder / "loss_curves.png")
    if plot_metric_vs_steps(runs, acts, metrics, folder / "metric_vs_steps.png", point["floors"]):
        made.append(folder / "metric_vs_steps.png")
    if plot_run_curves(runs, acts, folder / "ntk_drift.png", key="ntk_drift", ylabel="relative NTK drift",
                       yscale="linear", title="NTK drift on a fixed probe batch, mean ± std over seeds"):
        made.append(folder / "ntk_drift.png")
    panel = {}
    for act in acts:
        first = next((r for r in runs if r["activation"] == act and not r.get("error")), None)
        if first is not None:
            panel[act] = np.load(Path(first["run_dir"]) / "eval_samples.npy", allow_pickle=False)
    dataset = point["dataset"]
    if panel:
        reference = point["evaluator"].reference.numpy() if dataset.kind == "vector" else None
        plot_samples(panel, dataset.kind, folder / "samples.png", reference, dataset.data_range)
        made.append(folder / "samples.png")
    return [str(p.relative_to(out)) for p in made]


def objective_summary(d) -> str:
    """The training objective in words, e.g. "rectified flow, t ~ logit_normal (std 0.8), loss weighting none"."""
    what = ("rectified flow" if d.objective == "flow"
            else f"{d.prediction_type} prediction, {d.beta_schedule} betas")
    density = d.timestep_density + (f" (std {d.density_std})" if d.density_std is not None else "")
    return f"{what}, t ~ {density}, loss weighting {d.loss_weighting}"


def _setup(cfg, command: str, commit: str, t0: float) -> dict:
    b = cfg.base_train_config(cfg.sweep_points()[-1])
    budget = (f"{fmt(cfg.budget.seconds)} s of training per run (steps sized per arm)" if cfg.budget.mode == "time"
              else f"{b.train.steps} steps")
    setup = {"command": f"`{command}`" if command else "(library call)", "commit": commit, "data": b.data.name,
             "model": f"{b.model['type']} (base config {cfg.base_config})",
             "train overrides": ", ".join(cfg.train_overrides) or "none",
             "budget": f"{budget}, batch {b.train.batch_size}, lr {b.train.lr}"
                       f"{' (the shared setting; tuned per arm)' if cfg.tune.enabled else ''}, AdamW, "
                       f"EMA {b.train.ema_decay}, {objective_summary(b.diffusion)}",
             "evaluation": f"{cfg.eval.scheduler} with {cfg.eval.steps} steps, {cfg.eval.num_samples} samples "
                           f"(sampling seed {cfg.eval.seed}), EMA weights",
             "seeds": ", ".join(map(str, cfg.seeds))}
    if cfg.tune.enabled:
        space = [f"{k} in {list(v)}" for k, v in cfg.tune.grid.items()]
        space += [f"{k} log-uniform in {list(v)} ({cfg.tune.draws} draws)" for k, v in cfg.tune.log_uniform.items()]
        setup["tuning"] = (f"{len(cfg.tune.trials())} trials per arm ({'; '.join(space)}), {cfg.tune.budget:g} of "
                           f"the budget, {cfg.tune.seeds} seed(s)")
    if cfg.sweep.key:
        setup["sweep"] = f"{cfg.sweep.key} over {list(cfg.sweep.values)}"
    setup["wall time"] = f"{time.perf_counter() - t0:.0f} s"
    return setup


def _point_payload(cfg, point: dict, metrics: list[str]) -> dict:
    """What results.json records of one point (its runs are listed once, at the top level)."""
    stats = point_statistics(point["runs"], cfg.activations, metrics)
    payload = {**stats, "noise_floor": point["floors"],
               "diagnostics": diagnostics_summary(point["runs"], cfg.activations)}
    if point["tuning"] is not None:
        payload["tuning"] = point["tuning"]
    if point["shared_runs"] is not None:
        payload["shared"] = point_statistics(point["shared_runs"], cfg.activations, metrics)
    if point["budget"] is not None:
        payload["budget"] = point["budget"]
    return payload


def write_outputs(cfg, out: Path, points: list[dict], command: str, commit: str, t0: float, log=print) -> None:
    """``report.md``, ``results.json`` and the plots of a finished comparison."""
    metrics = points[-1]["evaluator"].metrics
    payloads = [_point_payload(cfg, p, metrics) for p in points]
    setup = _setup(cfg, command, commit, t0)
    sweep = bool(cfg.sweep.key)
    lines = [f"# {cfg.title}", "", "## Setup", "", *[f"- {k}: {v}" for k, v in setup.items()], "", "## Results", ""]
    plots = []
    for point, payload in zip(points, payloads):
        acts = cfg.activations
        if sweep:
            lines += [f"### {point['point'][0]}", ""]
        lines += results_lines(acts, metrics, payload, point["floors"])
        alerts = identical_activations(point["runs"])
        if alerts:
            lines += ["", "**Warning:** the comparison is void where activations made no difference:", ""]
            lines += [f"- {a}" for a in alerts]
        if point["shared_runs"] is not None:
            lines += ["", "At the shared setting (every arm at the base config's values, the same seeds):", ""]
            lines += results_lines(acts, metrics, payload["shared"], point["floors"])[:len(acts) + 5]
        lines += [""]
        plots += _point_plots(cfg, point, metrics, out)
    if sweep and plot_scaling(cfg.sweep.key, list(cfg.sweep.values), [p["summary"] for p in payloads],
                              cfg.activations, metrics, out / "scaling.png", [p["floors"] for p in points]):
        plots.insert(0, "scaling.png")
    lines += ["## Winners", ""]
    for point, payload in zip(points, payloads):
        lines += ([f"{point['point'][0]}:", ""] if sweep else []) + winner_lines(metrics, payload["winners"]) + [""]
        if point["shared_runs"] is not None:
            lines += ["At the shared setting:", ""] + winner_lines(metrics, payload["shared"]["winners"]) + [""]
    if any(p["tuning"] for p in points):
        lines += ["## Tuning", ""]
        for point in points:
            lines += ([f"{point['point'][0]}:", ""] if sweep else []) + tuning_lines(point["tuning"], cfg.activations,
                                                                                     cfg) + [""]
    lines += ["## Budget", ""]
    for point in points:
        lines += ([f"{point['point'][0]}:", ""] if sweep else []) + budget_lines(cfg, point["budget"], point["runs"],
                                                                                 cfg.activations) + [""]
    lines += diagnostics_lines(payloads[-1]["diagnostics"])
    lines += ["## Plots", "", *[f"![{Path(p).stem}]({p})" for p in plots], "", "## Runs", ""]
    all_runs = [r for p in points for r in p["runs"]]
    lines += run_lines(all_runs)
    write_text(out / "report.md", "\n".join(lines) + "\n")

    last = payloads[-1]
    result = {"runs": [{**r, **({"sweep_point": p["point"][0]} if sweep else {})} for p in points for r in p["runs"]],
              **{k: v for k, v in last.items() if k not in ("shared",)}, "setup": setup}
    if "shared" in last:
        result["shared"] = {**last["shared"], "runs": points[-1]["shared_runs"]}
    if sweep:
        result["sweep"] = {"key": cfg.sweep.key, "values": list(cfg.sweep.values),
                           "points": [{"value": v, **pl} for v, pl in zip(cfg.sweep.values, payloads)]}
    write_json(out / "results.json", finite_json(result), indent=2)
    log(f"wrote {out / 'report.md'}, {out / 'results.json'} and {len(plots)} plots")
