"""Evaluate one trained run (its final EMA model, or the EMA weights of any checkpoint) with the same
samplers, sample counts and metrics for every run of a comparison."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from softdiff.data import Dataset, dataset_from_config, make_dataset
from softdiff.devices import resolve_device
from softdiff.diffusion.schedulers import make_scheduler
from softdiff.evaluation.classifiers import FEATURE_DATASETS, ensure_classifier
from softdiff.evaluation.features import classifier_scores, fid_kid
from softdiff.evaluation.inception import InceptionFeatures, inception_fid_kid, inception_network
from softdiff.evaluation.likelihood import (
    bits_per_dim, log_likelihood, model_field_fn, model_score_fn, process_from_scheduler_config,
)
from softdiff.evaluation.metrics import (
    SAMPLE_METRICS,
    median_bandwidth,
    mixture_log_likelihood,
    mmd_rbf,
    noise_floor,
    score_error,
)
from softdiff.evaluation.settings import (  # noqa: F401 (re-exported)
    HELD_OUT_SEED, HIGHER_IS_BETTER, IMAGE_METRICS, INCEPTION_METRICS, VECTOR_METRICS, EvalSettings,
)
from softdiff.pipeline import SoftdiffPipeline
from softdiff.pipeline.folders import RUN_MODELS
from softdiff.safe_io import atomic_path
from softdiff.training.checkpoints import list_checkpoints
from softdiff.training.config import load_train_config

DENSITY_METRICS = ("nll", "bpd", "score_error")  # computed for the final model only


def applicable_metrics(dataset: Dataset, settings: EvalSettings) -> list[str]:
    """The metrics of ``settings`` that apply to ``dataset`` (exact-density ones only for analytic sets)."""
    if dataset.kind == "image":
        allowed = IMAGE_METRICS if dataset.name in FEATURE_DATASETS else ("bpd",)
    else:
        allowed = VECTOR_METRICS if dataset.analytic is not None else ("w2", "sliced_w2", "mmd", "nll")
    wanted = settings.metrics or list(allowed)
    inception = INCEPTION_METRICS if dataset.kind == "image" else ()
    return [m for m in wanted if m in allowed or m in inception]


def draw_samples(model, scheduler_config: dict, dataset: Dataset, settings: EvalSettings) -> Tensor:
    """``settings.num_samples`` samples in data space, with a fixed generator (class-conditional models draw the
    classes in turn)."""
    pipe = SoftdiffPipeline(model, make_scheduler(settings.scheduler, scheduler_config), kind=dataset.kind,
                            sample_shape=dataset.shape, num_classes=dataset.num_classes,
                            data_range=dataset.data_range, dataset=dataset.name, forward_process=scheduler_config)
    return pipe(batch_size=settings.num_samples, num_inference_steps=settings.steps,
                generator=torch.Generator().manual_seed(settings.seed), max_batch_size=500, progress=False).samples


class RunEvaluator:
    """Reference data, floors and metric functions for one dataset, shared by every run and checkpoint."""

    def __init__(self, dataset: Dataset, settings: EvalSettings, scheduler_config: dict, device=None):
        self.dataset, self.settings, self.scheduler_config = dataset, settings, scheduler_config
        self.device = torch.device("cpu" if device is None else device)  # the model's and the feature networks'
        self.process = process_from_scheduler_config(scheduler_config)
        self.metrics = applicable_metrics(dataset, settings)
        n = settings.num_samples
        g = torch.Generator().manual_seed(settings.reference_seed)
        if dataset.kind == "vector":
            self.reference = dataset.sample(n, g)[0]
            self.held_out = dataset.sample(settings.likelihood_samples, g)[0]
            # One MMD bandwidth for every run and the floor (median heuristic on true data only), so that
            # outliers of a bad model cannot widen the kernel and hide themselves.
            self.bandwidth = median_bandwidth(self.reference, dataset.sample(n, g)[0])
        else:
            images = dataset.data_tensor(len(dataset), g)  # shuffled
            test = dataset.split("test")
            if test is not None:  # the test images are the reference; training images give the real-vs-real floor
                self.reference, self.second_half = test.data_tensor(), images
                self.held_out = self.reference[:settings.likelihood_samples]
            else:  # one set: split in two halves
                half = len(images) // 2
                self.reference, self.second_half = images[:half], images[half:]
                self.held_out = self.second_half[:settings.likelihood_samples]
            needs_features = dataset.name in FEATURE_DATASETS and set(self.metrics) - {"bpd", *INCEPTION_METRICS}
            self.classifier = ensure_classifier(settings.feature_classifier or None, dataset=dataset.name)[0] \
                .to(self.device) if needs_features else None
            self.inception = None
            if set(INCEPTION_METRICS) & set(self.metrics):  # fails here, before any training, if weights are missing
                self.inception = InceptionFeatures(inception_network(allow_download=settings.inception_download)) \
                    .to(self.device)

    def _sample_metric(self, name: str, x: Tensor, y: Tensor) -> float:
        if name == "mmd":
            return mmd_rbf(x, y, bandwidth=self.bandwidth)
        return SAMPLE_METRICS[name](x, y)

    def noise_floors(self) -> dict[str, float]:
        """Each sample metric between two independent true draws of the same size (a perfect model's score),
        averaged over 3 pairs of draws."""
        floors: dict[str, float] = {}
        if self.dataset.kind == "vector":
            n = len(self.reference)
            sampler = lambda k, g: self.dataset.sample(k, g)[0]
            for name in self.metrics:
                if name in SAMPLE_METRICS:
                    floors[name] = noise_floor(lambda a, b: self._sample_metric(name, a, b), sampler, n,
                                               seed=self.settings.reference_seed + 1, repeats=3)
            mix = self.dataset.analytic
            if mix is not None and "mixture_loglik" in self.metrics:
                floors["mixture_loglik"] = mixture_log_likelihood(mix, self.reference)
            if mix is not None and "nll" in self.metrics:
                # The exact NLL of the held-out points under the true density at the ODE's start time.
                alpha, sigma = self.process.alpha_sigma(torch.tensor([self.process.t_min], dtype=torch.float64))
                floors["nll"] = -float(mix.noised(float(alpha), float(sigma)).log_prob(self.held_out).mean())
        elif self.classifier is not None or self.inception is not None:
            fake = self.second_half[:min(self.settings.num_samples, len(self.second_half))]
            floors.update(self._image_scores(fake))
        return {k: v for k, v in floors.items() if k in self.metrics}

    def _image_scores(self, fake: Tensor) -> dict[str, float]:
        out: dict[str, float] = {}
        if {"fid", "kid"} & set(self.metrics):
            n = min(len(self.reference), len(fake))
            res = fid_kid(self.classifier, self.reference, fake, kid_subset_size=min(n, 500), kid_subsets=20,
                          seed=self.settings.seed)
            out.update(fid=res["fid"], kid=res["kid"])
        if {"confidence", "class_balance"} & set(self.metrics):
            out.update(classifier_scores(self.classifier, fake))
        if self.inception is not None:
            n = min(len(self.reference), len(fake))
            res = inception_fid_kid(self.reference, fake, self.inception, kid_subset_size=min(n, 1000),
                                    kid_subsets=20, seed=self.settings.seed)
            out.update(inception_fid=res["fid"], inception_kid=res["kid"])
        return out

    def evaluate(self, model, final: bool) -> tuple[dict[str, float], Tensor]:
        """Metrics of ``model`` (likelihood and score errors only when ``final``), and its samples (data space)."""
        model.eval().to(self.device)
        x = draw_samples(model, self.scheduler_config, self.dataset, self.settings)
        out: dict[str, float] = {}
        if not torch.isfinite(x).all():
            return {name: math.nan for name in self.metrics}, x
        if self.dataset.kind == "vector":
            for name in self.metrics:
                if name in SAMPLE_METRICS:
                    out[name] = self._sample_metric(name, x, self.reference)
            if "mixture_loglik" in self.metrics:
                out["mixture_loglik"] = mixture_log_likelihood(self.dataset.analytic, x)
        elif self.classifier is not None or self.inception is not None:
            out.update(self._image_scores(x))
        if final:
            out.update(self._density_metrics(model))
        return {k: v for k, v in out.items() if k in self.metrics or k.startswith("score_error@")}, x

    def _density_metrics(self, model) -> dict[str, float]:
        out: dict[str, float] = {}
        field, process = model_field_fn(model, self.scheduler_config), self.process
        ode = {"rtol": self.settings.ode_tol, "atol": self.settings.ode_tol,
               "options": {"max_num_steps": self.settings.ode_max_steps}}
        try:
            if "nll" in self.metrics:
                out["nll"] = -float(log_likelihood(field, process, self.held_out.float(), **ode).mean())
            if "bpd" in self.metrics:
                out["bpd"] = float(bits_per_dim(field, process, self.held_out.float(), num_levels=17,
                                                seed=self.settings.seed, **ode).mean())
        except AssertionError as err:  # torchdiffeq gives up on a stiff field: "max_num_steps" / "underflow in dt"
            if "max_num_steps" not in str(err) and "underflow" not in str(err):
                raise
            out.update({name: math.nan for name in ("nll", "bpd") if name in self.metrics and name not in out})
        if "score_error" in self.metrics:
            ts = torch.tensor(self.settings.score_timesteps, dtype=torch.float64)
            alphas, sigmas = process.alpha_sigma(ts)
            score = model_score_fn(model, self.scheduler_config)
            errs = score_error(lambda x, t: score(x.float(), t.float()), self.dataset.analytic, alphas, sigmas, ts,
                               n=512, seed=self.settings.reference_seed + 2)
            # Times sigma^2: the epsilon-prediction error |eps_hat - eps*|^2 / D, comparable across noise levels.
            scaled = errs * sigmas**2
            out["score_error"] = float(scaled.mean())
            out.update({f"score_error@{int(t)}": float(e) for t, e in zip(ts.tolist(), scaled.tolist())})
        return out


def training_run_folder(path: str | Path) -> Path | None:
    """The training run folder that ``path`` names: itself, or the run holding the ``model/`` or ``model_ema/``
    folder it names; None for a bare model folder or a saved pipeline (no run around it)."""
    path = Path(path)
    for folder in (path, path.parent if path.name in RUN_MODELS else None):
        if folder is not None and (folder / "config.yaml").is_file():
            return folder
    return None


def run_dataset(run_dir: Path, data=None) -> Dataset:
    """The data the run in ``run_dir`` trained on, read as its training read it: ``data`` (a ``DataConfig``;
    default: the run's ``config.yaml``) with the run's file index (split, columns and file list included)."""
    if data is None:
        data = load_train_config(run_dir / "config.yaml").data
    index = run_dir / "data_index.json"
    return dataset_from_config(data, index if index.is_file() else None)


def _final_step(run_dir: Path | None) -> int | None:
    """The step of a run's final model (its ``train_summary.json``), None when unknown."""
    try:
        step = json.loads((run_dir / "train_summary.json").read_text()).get("step")
    except (TypeError, OSError, ValueError, AttributeError):  # no run folder, no summary, or a damaged one
        return None
    return step if isinstance(step, int) else None


def evaluate_run(run: str | Path, settings: EvalSettings, use_ema: bool = True,
                 output_dir: str | Path | None = None, *, data=None, floors: bool = True,
                 device=None) -> tuple[dict, Tensor]:
    """The metrics of a trained run's final model, its samples (data space; also written to
    ``output_dir/eval_samples.npz``) and, with ``floors``, the noise floors.

    ``history`` holds the metrics of the EMA weights of the checkpoints every ``settings.every`` steps before the
    final step, then the final model's sample metrics at that step (the metric-vs-steps curve; density metrics
    only at the end). ``data``: the run's ``DataConfig`` when the caller has it (else read from the run folder);
    ``device``: where the model and the feature networks run (default: a GPU when there is one)."""
    pipe = SoftdiffPipeline.from_pretrained(run, use_ema=use_ema, scheduler=settings.scheduler)
    pipe.check_inputs(settings.num_samples, settings.steps, None, 1.0, "pt",
                      names={"batch_size": "num_samples", "num_inference_steps": "steps"})
    run_dir = training_run_folder(run)
    dataset = run_dataset(run_dir, data) if run_dir is not None else make_dataset(pipe.config.dataset)
    device = device if isinstance(device, torch.device) else resolve_device("device", device)
    evaluator = RunEvaluator(dataset, settings, pipe.forward_process, device)
    final_step, history = _final_step(run_dir), []
    if settings.every and run_dir is not None:
        for step, checkpoint in sorted(list_checkpoints(run_dir / "checkpoints")):
            if step % settings.every == 0 and (final_step is None or step < final_step):
                model = SoftdiffPipeline.from_pretrained(run, checkpoint=checkpoint).model
                history.append({"step": step, **evaluator.evaluate(model, final=False)[0]})
    metrics, samples = evaluator.evaluate(pipe.model, final=True)
    if final_step is not None:  # the curve ends at the final model (density metrics are its alone)
        history.append({"step": final_step, **{k: v for k, v in metrics.items()
                                               if k in evaluator.metrics and k not in DENSITY_METRICS}})
    if output_dir is not None:
        with atomic_path(Path(output_dir) / "eval_samples.npz") as tmp:
            np.savez(tmp, samples=samples.numpy())
    report = {"run": str(run), "model_dir": str(pipe.source_dir), "ema": use_ema, "metrics": metrics,
              **({"noise_floors": evaluator.noise_floors()} if floors else {}), "history": history}
    return report, samples
