"""``softdiff compare --preset toy|checkerboard|paper|digits``: does softmax beat ReLU (and GELU, exp) as a score-net
activation on this data at this budget? Trains every (activation, seed) with the same architecture and budget,
evaluates them identically, and writes ``report.md``, ``results.json`` and plots into one folder.

Runs go to ``OUTPUT/runs/<activation>-seed<k>/``; a run whose ``result.json`` matches the current settings is
not redone, and an interrupted training resumes from its latest checkpoint.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Sequence

from softdiff.config import load_config, to_yaml
from softdiff.errors import ConfigError, check_choice, check_positive
from softdiff.evaluation.run_eval import EvalSettings

DEFAULT_ACTIVATIONS = ["softmax", "relu", "gelu", "exp"]


@dataclass
class CompareConfig:
    title: str = "softmax vs ReLU / GELU / exp score nets"
    base_config: str = "configs/toy2d.yaml"    # the training config every run starts from
    train_overrides: list[str] = field(default_factory=list)  # dotted overrides applied to every run
    activations: list[str] = field(default_factory=lambda: list(DEFAULT_ACTIVATIONS))
    num_seeds: int = 3                          # seeds seed_offset .. seed_offset + num_seeds - 1
    seed_offset: int = 0
    output_dir: str = "runs/compare_toy"
    workers: int = 0                            # parallel processes (0: as many as cores allow)
    threads_per_worker: int = 1                 # torch threads in each process
    ntk_every: int = 0                          # record each run's NTK drift every this many steps (0: off)
    probes: bool = True                         # attention-sink probes of each trained run (attention models only)
    eval: EvalSettings = field(default_factory=EvalSettings)

    def validate(self) -> None:
        from softdiff.diffusion.schedulers import SCHEDULERS
        from softdiff.evaluation.run_eval import IMAGE_METRICS, INCEPTION_METRICS, VECTOR_METRICS

        if not self.activations:
            raise ConfigError("activations is empty; list at least one, e.g. [softmax, relu].")
        if len(set(self.activations)) != len(self.activations):
            raise ConfigError(f"activations={self.activations} lists an activation twice.")
        check_positive("num_seeds", self.num_seeds)
        check_positive("workers", self.workers, allow_zero=True)
        check_positive("threads_per_worker", self.threads_per_worker)
        check_positive("ntk_every", self.ntk_every, allow_zero=True)
        check_choice("eval.scheduler", self.eval.scheduler, SCHEDULERS)
        for key, value in [("eval.steps", self.eval.steps), ("eval.num_samples", self.eval.num_samples),
                           ("eval.likelihood_samples", self.eval.likelihood_samples),
                           ("eval.ode_tol", self.eval.ode_tol),
                           ("eval.ode_max_steps", self.eval.ode_max_steps)]:
            check_positive(key, value)
        if self.eval.num_samples < 2:
            raise ConfigError(f"eval.num_samples={self.eval.num_samples} must be at least 2 (MMD and FID need two).")
        check_positive("eval.every", self.eval.every, allow_zero=True)
        for name in self.eval.metrics:
            check_choice("eval.metrics", name, (*VECTOR_METRICS, *IMAGE_METRICS, *INCEPTION_METRICS))
        if not (math.isfinite(self.eval.ode_tol) and self.eval.ode_tol < 1):
            raise ConfigError(f"eval.ode_tol={self.eval.ode_tol} must be a finite number in (0, 1).")
        base = self.base_train_config()
        if self.eval.steps > base.diffusion.num_train_timesteps:
            raise ConfigError(f"eval.steps={self.eval.steps} must be at most the base config's "
                              f"diffusion.num_train_timesteps={base.diffusion.num_train_timesteps}.")
        allowed = _allowed_activations(base.model.type)
        for act in self.activations:
            if act not in allowed:
                raise ConfigError(f"activations: {act!r} is not valid for model.type={base.model.type}; choose "
                                  f"from: {', '.join(allowed)}.")

    def base_train_config(self):
        from softdiff.training import load_train_config

        return load_train_config(self.base_config, self.train_overrides)

    @property
    def seeds(self) -> list[int]:
        return list(range(self.seed_offset, self.seed_offset + self.num_seeds))


def _allowed_activations(model_type: str) -> tuple[str, ...]:
    from softdiff.nets import ACTIVATIONS
    from softdiff.nets.two_layer import TWO_LAYER_ACTIVATIONS

    return TWO_LAYER_ACTIVATIONS if model_type == "TwoLayerScoreNet" else tuple(ACTIVATIONS)


def run_overrides(cfg: CompareConfig, activation: str, seed: int, run_dir: Path) -> list[str]:
    """The overrides that turn the base config into one run: same everything but activation and seed."""
    extra = [f"model.activation={activation}", f"train.seed={seed}", f"output_dir={run_dir}"]
    if cfg.ntk_every:
        extra.append(f"diagnostics.ntk_every={cfg.ntk_every}")
    if cfg.eval.every:
        # Keep a checkpoint at every evaluation step (their EMA weights give the metric-vs-steps curves).
        steps = cfg.base_train_config().train.steps
        extra += [f"train.checkpoint_every={cfg.eval.every}",
                  f"train.checkpoints_total_limit={steps // cfg.eval.every + 1}"]
    return [*cfg.train_overrides, *extra]


def _fingerprint(train_yaml: str, settings: EvalSettings) -> str:
    return hashlib.sha256((train_yaml + json.dumps(asdict(settings), sort_keys=True)).encode()).hexdigest()[:16]


def _read_log(run_dir: Path, key: str) -> list[list[float]]:
    """``[[step, value], ...]`` of ``key`` from the run's metrics.jsonl (loss, ntk_drift, ...)."""
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return []
    records = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            records.append(json.loads(line))
        except ValueError:  # a line cut short by a kill
            continue
    return [[r["step"], r[key]] for r in records if isinstance(r, dict) and key in r and "step" in r]


def run_is_complete(run_dir: Path) -> bool:
    """Whether a training in ``run_dir`` finished and both saved models are intact (else resume or retrain)."""
    from softdiff.errors import DataError
    from softdiff.training.models import check_model_folder

    try:
        if not json.loads((run_dir / "train_summary.json").read_text()).get("finished"):
            return False
        for name in ("model", "model_ema"):
            check_model_folder(run_dir / name)
    except (OSError, ValueError, AttributeError, DataError):
        return False
    return True


def probe_summary(run_dir: Path) -> dict[str, float] | None:
    """The attention probes of a trained run averaged over timesteps, layers and heads (None without attention)."""
    from softdiff.studies.probes.attention import PROBE_SUMMARY, probe_run
    from softdiff.errors import DataError

    try:
        result = probe_run(run_dir, num_samples=64, seed=0)
    except DataError:  # no attention layers (ScoreMLP, TwoLayerScoreNet): nothing to probe
        return None
    layers = result.layer_table()
    out = {k: sum(row[k] for row in layers) / len(layers) for k in PROBE_SUMMARY}
    return {**out, "log_num_tokens": math.log(result.num_tokens)}


def run_one(job: dict) -> dict:
    """Train (or resume) one run and evaluate it; returns its result record (also saved as result.json)."""
    import numpy as np
    import torch

    torch.set_num_threads(job["threads"])
    from softdiff.data import make_dataset
    from softdiff.evaluation.run_eval import RunEvaluator, load_ema_weights
    from softdiff.safe_io import atomic_path, finite_json, write_json, write_text
    from softdiff.studies.ntk.drift import NTKDriftCallback
    from softdiff.training import load_train_config, train
    from softdiff.training.checkpoints import list_checkpoints
    from softdiff.training.models import load_trained
    from softdiff.training.trainer import TrainingError

    settings = EvalSettings(**job["eval"])
    run_dir = Path(job["run_dir"])
    cfg = load_train_config(job["base_config"], job["overrides"])
    train_yaml = to_yaml(cfg)
    fingerprint = _fingerprint(train_yaml + f"probes={job.get('probes', False)}", settings)
    result_path = run_dir / "result.json"
    if result_path.is_file():
        try:
            old = json.loads(result_path.read_text())
        except ValueError:  # damaged: evaluate again
            old = {}
        if isinstance(old, dict) and old.get("fingerprint") == fingerprint:
            return {**old, "reused": True}
    stamp, train_fp = run_dir / "train_fingerprint.txt", _fingerprint(train_yaml, EvalSettings())
    if run_dir.exists() and (not stamp.is_file() or stamp.read_text() != train_fp):
        shutil.rmtree(run_dir)  # made with other training settings: start afresh
    run_dir.mkdir(parents=True, exist_ok=True)
    write_text(stamp, train_fp)
    t0 = time.perf_counter()
    if not run_is_complete(run_dir):  # never run, interrupted, or its final save was torn: resume or retrain
        try:
            train(cfg, resume="auto" if list_checkpoints(run_dir / "checkpoints") else None, quiet=True,
                  callbacks=NTKDriftCallback.from_config(cfg))
        except TrainingError as err:  # e.g. a non-finite loss: a result in itself, recorded and reported
            record = {"activation": job["activation"], "seed": job["seed"], "run_dir": str(run_dir),
                      "fingerprint": fingerprint, "metrics": {}, "history": [], "loss": _read_log(run_dir, "loss"),
                      "error": str(err), "train_seconds": None, "total_seconds": time.perf_counter() - t0}
            write_json(result_path, finite_json(record), indent=2)
            return record
    summary = json.loads((run_dir / "train_summary.json").read_text())
    t1 = time.perf_counter()

    model, scheduler_config, _ = load_trained(run_dir / "model_ema")
    dataset = make_dataset(cfg.data.name, cfg.data.root, cfg.data.download, cfg.data.path, cfg.data.image_size,
                           cfg.data.channels)
    evaluator = RunEvaluator(dataset, settings, scheduler_config)
    history = []
    if settings.every:
        for step, checkpoint in sorted(list_checkpoints(run_dir / "checkpoints")):
            if step < cfg.train.steps:
                load_ema_weights(model, checkpoint)
                history.append({"step": step, **evaluator.evaluate(model, final=False)[0]})
        model = load_trained(run_dir / "model_ema")[0]
    metrics, samples = evaluator.evaluate(model, final=True)
    density = {"nll", "bpd", "score_error"}  # computed at the end only
    history.append({"step": cfg.train.steps, **{k: v for k, v in metrics.items()
                                                 if k in evaluator.metrics and k not in density}})
    keep = 64 if dataset.kind == "image" else 2000
    with atomic_path(run_dir / "eval_samples.npy") as tmp:
        np.save(tmp, samples[:keep].numpy())
    record = {"activation": job["activation"], "seed": job["seed"], "run_dir": str(run_dir),
              "fingerprint": fingerprint, "metrics": metrics, "history": history, "loss": _read_log(run_dir, "loss"),
              "ntk_drift": _read_log(run_dir, "ntk_drift"),
              "probes": probe_summary(run_dir) if job.get("probes") else None,
              "train_seconds": summary.get("wall_time"), "eval_seconds": time.perf_counter() - t1,
              "total_seconds": time.perf_counter() - t0}
    write_json(result_path, finite_json(record), indent=2)
    return record


def _none_to_nan(record: dict) -> dict:
    record["metrics"] = {k: (math.nan if v is None else v) for k, v in record["metrics"].items()}
    record["history"] = [{k: (math.nan if v is None else v) for k, v in h.items()} for h in record["history"]]
    return record


def _git_commit() -> str:
    import subprocess

    try:
        out = subprocess.run(["git", "describe", "--always", "--dirty", "--abbrev=7"], capture_output=True, text=True,
                             timeout=10)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def load_compare_config(path: str | Path | None, overrides: Sequence[str] = ()) -> CompareConfig:
    """Defaults, then the YAML file, then dotted overrides; validated (including the base training config)."""
    return load_config(CompareConfig, path, overrides)


def run_comparison(cfg: CompareConfig, command: str = "", log=print) -> Path:
    """Run (or resume) every job of ``cfg``, then write the report folder; returns it. The folder is locked
    while this runs (a second comparison into it stops at once)."""
    from softdiff.safe_io import check_output_dir
    from softdiff.training.run_lock import RunLock

    t0, commit = time.perf_counter(), _git_commit()  # the code that runs, not the one at the end
    out = check_output_dir("output_dir", cfg.output_dir)
    with RunLock(out, "compare folder"):
        return _run_comparison(cfg, command, log, t0, commit, out)


def objective_summary(d) -> str:
    """The training objective in words, e.g. "rectified flow, t ~ logit_normal (std 0.8), loss weighting none"."""
    what = ("rectified flow" if d.objective == "flow"
            else f"{d.prediction_type} prediction, {d.beta_schedule} betas")
    density = d.timestep_density + (f" (std {d.density_std})" if d.density_std is not None else "")
    return f"{what}, t ~ {density}, loss weighting {d.loss_weighting}"


def _run_comparison(cfg: CompareConfig, command, log, t0: float, commit: str, out: Path) -> Path:
    import numpy as np

    from softdiff.data import make_dataset
    from softdiff.diffusion.schedulers import training_scheduler_config
    from softdiff.studies.compare.report import (
        diagnostics_lines,
        diagnostics_summary,
        plot_metric_vs_steps,
        plot_run_curves,
        plot_samples,
        summarize,
        winners,
        write_report,
    )
    from softdiff.evaluation.run_eval import RunEvaluator
    from softdiff.safe_io import finite_json, write_json, write_text

    write_text(out / "compare_config.yaml", to_yaml(cfg))
    base = cfg.base_train_config()
    dataset = make_dataset(base.data.name, base.data.root, base.data.download, base.data.path, base.data.image_size,
                           base.data.channels)
    d = base.diffusion
    scheduler_config = training_scheduler_config(d.beta_schedule, d.prediction_type, d.num_train_timesteps,
                                                 d.ou_t_min, d.ou_t_max)
    evaluator = RunEvaluator(dataset, cfg.eval, scheduler_config)  # trains the feature classifier if missing
    floors = evaluator.noise_floors()

    jobs = []
    for act in cfg.activations:
        for seed in cfg.seeds:
            run_dir = out / "runs" / f"{act}-seed{seed}"
            jobs.append({"activation": act, "seed": seed, "run_dir": str(run_dir), "base_config": cfg.base_config,
                         "overrides": run_overrides(cfg, act, seed, run_dir), "eval": asdict(cfg.eval),
                         "threads": cfg.threads_per_worker, "probes": cfg.probes})
    workers = cfg.workers or max(1, min(len(jobs), (os.cpu_count() or 1) // cfg.threads_per_worker))
    log(f"compare: {len(jobs)} runs ({', '.join(cfg.activations)} x {cfg.num_seeds} seeds) on {workers} "
        f"process(es) -> {out}")
    results: list[dict] = []

    def done(record: dict) -> None:
        results.append(_none_to_nan(record))
        shown = ", ".join(f"{k}={v:.4g}" for k, v in record["metrics"].items() if "@" not in k)
        state = "reused" if record.get("reused") else f"{record['total_seconds']:.0f} s"
        shown = f"FAILED: {record['error']}" if record.get("error") else shown
        log(f"[{len(results)}/{len(jobs)}] {record['activation']} seed {record['seed']} ({state}): {shown}")

    if workers == 1:
        for job in jobs:
            done(run_one(job))
    else:
        with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn")) as pool:
            for record in pool.map(run_one, jobs):
                done(record)
    order = {(j["activation"], j["seed"]): i for i, j in enumerate(jobs)}
    results.sort(key=lambda r: order[(r["activation"], r["seed"])])

    metrics = evaluator.metrics
    summary = summarize(results, cfg.activations, metrics)
    wins = winners(summary, metrics)
    plots = ["loss_curves.png"]
    plot_run_curves(results, cfg.activations, out / "loss_curves.png")  # the training loss by default
    if plot_metric_vs_steps(results, cfg.activations, metrics, out / "metric_vs_steps.png", floors):
        plots.append("metric_vs_steps.png")
    if plot_run_curves(results, cfg.activations, out / "ntk_drift.png", key="ntk_drift",
                       ylabel="relative NTK drift", yscale="linear",
                       title="NTK drift on a fixed probe batch, mean ± std over seeds"):
        plots.append("ntk_drift.png")
    diagnostics = diagnostics_summary(results, cfg.activations)
    panel = {}
    for act in cfg.activations:
        first = next((r for r in results if r["activation"] == act and not r.get("error")), None)
        if first is not None:
            panel[act] = np.load(Path(first["run_dir"]) / "eval_samples.npy", allow_pickle=False)
    reference = evaluator.reference.numpy() if dataset.kind == "vector" else None
    if panel:
        plot_samples(panel, dataset.kind, out / "samples.png", reference, dataset.data_range)
        plots.append("samples.png")

    b = base
    setup = {"command": f"`{command}`" if command else "(library call)", "commit": commit,
             "data": b.data.name, "model": f"{b.model.type} (base config {cfg.base_config})",
             "train overrides": ", ".join(cfg.train_overrides) or "none",
             "budget": f"{b.train.steps} steps, batch {b.train.batch_size}, lr {b.train.lr}, AdamW, "
                       f"EMA {b.train.ema_decay}, {objective_summary(b.diffusion)}",
             "evaluation": f"{cfg.eval.scheduler} with {cfg.eval.steps} steps, {cfg.eval.num_samples} samples "
                           f"(sampling seed {cfg.eval.seed}), EMA weights",
             "seeds": ", ".join(map(str, cfg.seeds)), "wall time": f"{time.perf_counter() - t0:.0f} s"}
    write_report(out / "report.md", cfg.title, setup, cfg.activations, metrics, summary, floors, wins, plots,
                 results, diagnostics_lines(diagnostics))
    payload = {"runs": results, "summary": {a: {m: {"mean": s["mean"], "std": s["std"]} for m, s in ms.items()}
                                            for a, ms in summary.items()},
               "noise_floor": floors, "winners": wins, "diagnostics": diagnostics, "setup": setup}
    write_json(out / "results.json", finite_json(payload), indent=2)
    log(f"wrote {out / 'report.md'}, {out / 'results.json'} and {len(plots)} plots")
    return out
