"""``softdiff compare --preset toy|checkerboard|paper|digits``: does softmax beat ReLU (and GELU, exp) as a score-net
activation on this data at this budget? Trains every (activation, seed) with the same architecture and budget,
evaluates them identically, and writes ``report.md``, ``results.json`` and plots into one folder.

With a ``tune`` section each activation first trains every trial setting on a short budget and keeps its best
one (on a validation metric); with ``budget.mode=time`` every arm trains for the same seconds; with a ``sweep``
all of it is repeated at each value of one training key.

Runs go to ``OUTPUT/runs/<activation>-seed<k>/`` (tuning trials to ``OUTPUT/tune/<activation>/``, shared-setting
runs to ``OUTPUT/runs_shared/``, sweep points to ``OUTPUT/points/<key>=<value>/``); a run whose ``result.json``
matches the current settings is not redone, and an interrupted training resumes from its latest checkpoint.
"""
from __future__ import annotations

import ctypes
import hashlib
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict
from multiprocessing import get_context
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from softdiff import training
from softdiff.config import to_yaml
from softdiff.data import dataset_from_config
from softdiff.devices import visible_devices_for, worker_devices
from softdiff.diffusion.objective import Objective
from softdiff.errors import ConfigError, DataError, SoftdiffError
from softdiff.evaluation.run_eval import HIGHER_IS_BETTER, EvalSettings, RunEvaluator, applicable_metrics, evaluate_run
from softdiff.pipeline.folders import RUN_MODELS, read_folder
from softdiff.safe_io import NewEntries, atomic_path, check_output_dir, finite_json, write_json, write_text
from softdiff.studies.compare.budget import StepBudget
from softdiff.studies.compare.config import CompareConfig, setting_overrides
from softdiff.studies.compare.report import write_outputs
from softdiff.studies.compare.tuning import select_best, trial_name, trial_score, validation_settings
from softdiff.studies.probes.attention import PROBE_SUMMARY
from softdiff.studies.probes.run_folder import probe_run
from softdiff.studies.training_callbacks import callbacks_from_config
from softdiff.training.checkpoints import list_checkpoints
from softdiff.training.config import load_train_config
from softdiff.training.run_lock import RunLock
from softdiff.training.trainer import TrainingError


def run_overrides(cfg: CompareConfig, activation: str, seed: int, run_dir: Path, point: Sequence[str],
                  settings: dict | None, steps: int, eval_every: int | None = None) -> list[str]:
    """The overrides that turn the base config into one run: the sweep point, the arm's settings, its step
    budget (from ``StepBudget``), then activation and seed; everything else is the same for every run."""
    every = cfg.eval.every if eval_every is None else eval_every
    extra = [f"train.steps={steps}", f"model.activation={activation}", f"train.seed={seed}", f"output_dir={run_dir}"]
    if cfg.ntk_every:
        extra.append(f"callbacks.ntk_drift.every={cfg.ntk_every}")
    if every:
        # Keep a checkpoint at every evaluation step (their EMA weights give the metric-vs-steps curves).
        extra += [f"train.checkpoint_every={every}", f"train.checkpoints_total_limit={steps // every + 1}"]
    return [*cfg.train_overrides, *point, *setting_overrides(settings), *extra]


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
    try:
        if not json.loads((run_dir / "train_summary.json").read_text()).get("finished"):
            return False
        for name in RUN_MODELS:
            read_folder(run_dir / name)  # every file checked, the net loaded
    except (OSError, ValueError, AttributeError):  # ValueError: also softdiff's ConfigError and DataError
        return False
    return True


def probe_summary(run_dir: Path) -> dict[str, float] | None:
    """The attention probes of a trained run averaged over timesteps, layers and heads (None without attention)."""
    try:
        result = probe_run(run_dir, num_samples=64, seed=0)
    except DataError:  # no attention layers (ScoreMLP, TwoLayerScoreNet): nothing to probe
        return None
    layers = result.layer_table()
    out = {k: sum(row[k] for row in layers) / len(layers) for k in PROBE_SUMMARY}
    return {**out, "log_num_tokens": math.log(result.num_tokens)}


def run_one(job: dict) -> dict:
    """Train (or resume) one run and evaluate it; returns its result record (also saved as result.json)."""
    torch.set_num_threads(job["threads"])
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
            # softdiff.training.train looked up at each call, so that a replaced train (tests) is the one used
            training.train(cfg, resume="auto" if list_checkpoints(run_dir / "checkpoints") else None, quiet=True,
                           callbacks=callbacks_from_config(cfg))
        except TrainingError as err:  # e.g. a non-finite loss: a result in itself, recorded and reported
            record = {"activation": job["activation"], "seed": job["seed"], "run_dir": str(run_dir),
                      "settings": job.get("settings") or {}, "steps": cfg.train.steps,
                      "fingerprint": fingerprint, "metrics": {}, "history": [], "loss": _read_log(run_dir, "loss"),
                      "error": str(err), "train_seconds": None, "total_seconds": time.perf_counter() - t0}
            write_json(result_path, finite_json(record), indent=2)
            return record
    summary = json.loads((run_dir / "train_summary.json").read_text())
    t1 = time.perf_counter()

    evaluation, samples = evaluate_run(run_dir, settings, data=cfg.data, floors=False)
    metrics, history = evaluation["metrics"], evaluation["history"]
    keep = 64 if samples.dim() > 2 else 2000  # pictures for the report: a panel of images, a cloud of points
    with atomic_path(run_dir / "eval_samples.npy") as tmp:
        np.save(tmp, samples[:keep].numpy())
    record = {"activation": job["activation"], "seed": job["seed"], "run_dir": str(run_dir),
              "settings": job.get("settings") or {}, "steps": cfg.train.steps, "fingerprint": fingerprint,
              "metrics": metrics, "history": history, "loss": _read_log(run_dir, "loss"),
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
    try:
        out = subprocess.run(["git", "describe", "--always", "--dirty", "--abbrev=7"], capture_output=True, text=True,
                             timeout=10)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


class WorkerDied(SoftdiffError):
    """A pool worker process ended without a result (killed, e.g. by the out-of-memory killer)."""

    exit_code = 1


def run_comparison(cfg: CompareConfig, command: str = "", log=print) -> Path:
    """Run (or resume) every job of ``cfg``, then write the report folder; returns it. The folder is locked
    while this runs (a second comparison into it stops at once); an input error found after that takes back
    what this comparison created (unless a run finished or saved a checkpoint)."""
    t0, commit = time.perf_counter(), _git_commit()  # the code that runs, not the one at the end
    if cfg.tune.enabled and cfg.tune.metric:
        check_selection_metric(cfg)
    out = check_output_dir("output_dir", cfg.output_dir)
    created = NewEntries(out)
    with RunLock(out, "compare folder"):
        try:
            return _run_comparison(cfg, command, log, t0, commit, out)
        except SoftdiffError as err:
            if getattr(err, "exit_code", 2) == 2:
                created.remove()
            raise


def check_selection_metric(cfg: CompareConfig) -> None:
    """``tune.metric`` must be one the evaluation computes on the data of every sweep point."""
    for point in cfg.sweep_points():
        d = cfg.base_train_config(point).data
        applicable = applicable_metrics(dataset_from_config(d), cfg.eval)
        if cfg.tune.metric not in applicable:
            raise ConfigError(f"tune.metric={cfg.tune.metric} does not apply to data.name={d.name} with these "
                              f"eval.metrics; choose from: {', '.join(applicable)}.")


def _gpu_count() -> int:
    return torch.cuda.device_count()


def _end_with_parent() -> None:
    """Pool workers end when the comparison process ends, however it ends: a killed comparison leaves no worker
    training on (and holding its run folder's lock) behind it. Linux only (prctl PR_SET_PDEATHSIG)."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGTERM), 0, 0, 0)


def _start_worker(devices: list[str], started) -> None:
    """A pool worker's start: it ends with the parent and takes its device, ``devices[i]`` for the i-th worker to
    start (``started`` counts them across processes); a GPU worker sees only its GPU (set before CUDA starts in
    it), so its training and its evaluation both run there."""
    _end_with_parent()
    with started.get_lock():
        index, started.value = started.value, started.value + 1
    visible = visible_devices_for(devices[index % len(devices)], os.environ.get("CUDA_VISIBLE_DEVICES"))
    if visible is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = visible


def execute(jobs: list[dict], workers: int, log, what: str = "runs", work=None,
            devices: Sequence[str] | None = None) -> list[dict]:
    """Run every job (``work(job)``, default ``run_one``, in ``workers`` processes), logging each as it ends; the
    records in job order. ``devices``: one per worker process (default: the visible GPUs round-robin, else the
    CPU). A worker process that dies is one sentence (:class:`WorkerDied`), the finished runs kept."""
    if not jobs:
        return []
    work = work or run_one  # looked up now, so that a replaced run_one (tests) is the one used
    results: list[dict] = []

    def done(record: dict) -> None:
        results.append(_none_to_nan(record))
        shown = ", ".join(f"{k}={v:.4g}" for k, v in record["metrics"].items() if "@" not in k)
        state = "reused" if record.get("reused") else f"{record['total_seconds']:.0f} s"
        shown = f"FAILED: {record['error']}" if record.get("error") else shown
        label = record["activation"] + (f" {record['trial']}" if record.get("trial") else "")
        log(f"[{what} {len(results)}/{len(jobs)}] {label} seed {record['seed']} ({state}): {shown}")

    workers = max(1, min(workers, len(jobs)))
    if workers == 1:
        for job in jobs:
            done({**work(job), "trial": job.get("trial")})
    else:
        context = get_context("spawn")
        devices = list(devices or worker_devices(workers, _gpu_count()))
        with ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_start_worker,
                                 initargs=(devices, context.Value("i", 0))) as pool:
            try:
                for job, record in zip(jobs, pool.map(work, jobs)):
                    done({**record, "trial": job.get("trial")})
            except BrokenProcessPool:
                # Each finished run kept its result.json and an interrupted one its checkpoints: a rerun resumes.
                raise WorkerDied(f"a worker process died with {len(results)} of {len(jobs)} {what} done (killed, "
                                 "often by the out-of-memory killer: lower workers= or the runs' size); finished "
                                 "runs are kept, so run the same command again to resume.") from None
    return results


def _job(cfg: CompareConfig, activation: str, seed: int, run_dir: Path, point, settings, steps, eval_settings,
         probes: bool, eval_every: int | None = None, trial: str | None = None) -> dict:
    return {"activation": activation, "seed": seed, "run_dir": str(run_dir), "base_config": cfg.base_config,
            "overrides": run_overrides(cfg, activation, seed, run_dir, point, settings, steps, eval_every),
            "eval": asdict(eval_settings), "threads": cfg.threads_per_worker, "probes": probes,
            "settings": settings or {}, "trial": trial}


def tune_arms(cfg: CompareConfig, folder: Path, point, budget, metric: str, higher_is_better: bool, workers: int,
              log) -> dict[str, dict]:
    """Train and score every trial of every arm; ``{activation: {"best": settings, "trials": [...]}}``."""
    tune = cfg.tune
    settings_list = tune.trials()
    validation = validation_settings(cfg.eval, tune, metric)
    jobs = []
    for act in cfg.activations:
        for settings in settings_list:
            name = trial_name(settings)
            steps = budget.steps(act, settings, share=tune.budget)
            for seed in tune.seed_list:
                run_dir = folder / "tune" / act / f"{name}-seed{seed}"
                jobs.append(_job(cfg, act, seed, run_dir, point, settings, steps, validation, probes=False,
                                 eval_every=0, trial=name))
    log(f"tune: {len(settings_list)} trial(s) x {len(cfg.activations)} arm(s) x {tune.seeds} seed(s) on "
        f"{tune.budget:g} of the budget, selected on validation {metric}")
    records = execute(jobs, workers, log, what="tune")
    out = {}
    for act in cfg.activations:
        trials = []
        for settings in settings_list:
            mine = [r for r in records if r["activation"] == act and r["trial"] == trial_name(settings)]
            trials.append({"name": trial_name(settings), "settings": settings, "score": trial_score(mine, metric),
                           "seeds": {r["seed"]: r["metrics"].get(metric, math.nan) for r in mine},
                           "steps": mine[0]["steps"] if mine else None,
                           "errors": [r["error"] for r in mine if r.get("error")]})
        best = select_best([t["score"] for t in trials], higher_is_better)
        if best is None:
            log(f"tune: every trial of {act} failed or scored NaN; its final runs use the shared setting")
        out[act] = {"best": settings_list[best] if best is not None else {}, "best_trial": best, "metric": metric,
                    "trials": trials}
    return out


def point_evaluator(base, settings):
    """The evaluator of a comparison point: its data read as its runs read it (split, columns) and the forward
    process they train (the objective training builds, flow included), so floors and NLLs use that process."""
    objective = Objective.from_config(base.diffusion)
    return RunEvaluator(dataset_from_config(base.data), settings, objective.scheduler_config)


def run_point(cfg: CompareConfig, folder: Path, point: Sequence[str], workers: int, log) -> dict:
    """One comparison at one sweep point (or the only one): budget, tuning, final and shared-setting runs."""
    base = cfg.base_train_config(point)
    evaluator = point_evaluator(base, cfg.eval)  # trains the feature classifier if missing
    metric = cfg.tune.metric or evaluator.metrics[0]
    budget = StepBudget(cfg, folder, point, log)
    tuning = (tune_arms(cfg, folder, point, budget, metric, metric in HIGHER_IS_BETTER, workers, log)
              if cfg.tune.enabled else None)
    best = {act: (tuning[act]["best"] if tuning else {}) for act in cfg.activations}
    shared_yaml = to_yaml(cfg.base_train_config(point))
    # An arm whose best setting is the shared one has its final runs serve as its shared-setting runs too.
    at_shared = {act: to_yaml(cfg.base_train_config(point, best[act])) == shared_yaml for act in cfg.activations}
    jobs, shared_jobs = [], []
    for act in cfg.activations:
        steps = budget.steps(act, best[act])
        for seed in cfg.seeds:
            jobs.append(_job(cfg, act, seed, folder / "runs" / f"{act}-seed{seed}", point, best[act], steps,
                             cfg.eval, cfg.probes))
            if tuning and cfg.tune.report_shared and not at_shared[act]:
                shared_jobs.append(_job(cfg, act, seed, folder / "runs_shared" / f"{act}-seed{seed}", point, {},
                                        budget.steps(act), cfg.eval, cfg.probes))
    log(f"compare: {len(jobs) + len(shared_jobs)} runs ({', '.join(cfg.activations)} x {cfg.num_seeds} seeds"
        f"{', tuned and at the shared setting' if shared_jobs else ''}) on {workers} process(es) -> {folder}")
    records = execute(jobs + shared_jobs, workers, log)
    runs, shared = records[:len(jobs)], records[len(jobs):]
    if tuning and cfg.tune.report_shared:
        tuned_at_shared = [r for r in runs if at_shared[r["activation"]]]
        shared = sorted(shared + tuned_at_shared, key=lambda r: (cfg.activations.index(r["activation"]), r["seed"]))
    return {"point": list(point), "folder": folder, "dataset": evaluator.dataset, "evaluator": evaluator,
            "floors": evaluator.noise_floors(), "runs": runs, "shared_runs": shared if cfg.tune.report_shared else None,
            "tuning": tuning, "budget": budget.table() if cfg.budget.mode == "time" else None}


def _run_comparison(cfg: CompareConfig, command, log, t0: float, commit: str, out: Path) -> Path:
    write_text(out / "compare_config.yaml", to_yaml(cfg))
    workers = cfg.workers or max(1, (os.cpu_count() or 1) // cfg.threads_per_worker)  # execute() caps it per batch
    points = []
    for point in cfg.sweep_points():
        folder = out / "points" / point[0] if point else out
        if point:
            log(f"sweep: {point[0]}")
        points.append(run_point(cfg, folder, point, workers, log))
    write_outputs(cfg, out, points, command, commit, t0, log)
    return out
