"""``SoftdiffPipeline``: a diffusers pipeline around a softdiff score net, its sampler and its data space."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import PIL.Image
import torch
from diffusers import DiffusionPipeline
from diffusers.utils import BaseOutput

from softdiff.checkpoint_ema import load_ema_weights
from softdiff.choices import DEFAULT_SAMPLER
from softdiff.data import from_model_space
from softdiff.diffusion.process import ForwardProcess
from softdiff.diffusion.sampling import sample
from softdiff.diffusion.schedulers import SCHEDULERS, make_scheduler
from softdiff.errors import ConfigError, check_finite, check_positive
from softdiff.pipeline.folders import read_folder
from softdiff.safe_io import atomic_dir

OUTPUT_TYPES = ("pt", "np", "pil")


@dataclass
class SoftdiffPipelineOutput(BaseOutput):
    """``samples``: data space, ``(N, D)`` vectors or ``(N, C, H, W)`` images in [0, 1] (a tensor for
    ``output_type="pt"``, else a NumPy array); ``images``: PIL images (``output_type="pil"``, image data only)."""

    samples: torch.Tensor | np.ndarray
    images: list[PIL.Image.Image] | None = None


class SoftdiffPipeline(DiffusionPipeline):
    """Sampling from a softdiff score model.

    Components: ``model`` (a ``ScoreTransformer``, ``ScoreMLP`` or ``TwoLayerScoreNet``) and ``scheduler`` (the
    diffusers sampler). Config: the data space (``kind`` "vector" or "image", ``sample_shape`` of one example
    in model space, ``num_classes`` for class-conditional models, ``data_range``, ``dataset``) and
    ``forward_process``, the training noise schedule the model was trained under (every sampler is built from
    it: see :meth:`set_scheduler`).
    """

    model_cpu_offload_seq = "model"

    def __init__(self, model, scheduler, kind: str = "vector", sample_shape: Sequence[int] = (2,),
                 num_classes: int | None = None, data_range: Sequence[float] = (-4.0, 4.0), dataset: str = "",
                 forward_process: dict | None = None):
        super().__init__()
        if kind not in ("vector", "image"):
            raise ConfigError(f"kind={kind!r} is not valid; choose one of: vector, image.")
        if forward_process is None:  # the scheduler given is the training one
            forward_process = {"_class_name": type(scheduler).__name__, **scheduler.config}
        self.register_modules(model=model, scheduler=scheduler)
        self.register_to_config(kind=kind, sample_shape=[int(s) for s in sample_shape], num_classes=num_classes,
                                data_range=[float(v) for v in data_range], dataset=dataset,
                                forward_process={k: v for k, v in forward_process.items() if k != "_diffusers_version"})
        self.source_dir: Path | None = None  # the folder the weights were read from

    # ------------------------------------------------------------------------------------------- loading
    @classmethod
    def from_pretrained(cls, path: str | Path, use_ema: bool | None = None, scheduler: str | None = None,
                        checkpoint: str | Path | None = None) -> "SoftdiffPipeline":
        """Load a pipeline folder (what :meth:`save_pretrained` and training write), a training run folder
        (``model_ema/``, or ``model/`` with ``use_ema=False``), or a model folder of the legacy layout.

        ``use_ema`` True / False turns ``RUN_DIR/model`` and ``RUN_DIR/model_ema`` into the EMA / live one (what
        the commands' ``--no-ema`` asks); None loads the folder given. ``scheduler``: a sampler name
        (``softdiff.diffusion.schedulers.SCHEDULERS``); default: the saved sampler (a legacy folder saved none:
        ``dpm++sde``). ``checkpoint``: a training checkpoint folder whose EMA weights replace the model's. Only
        JSON and safetensors files are read; a bad folder is a one-sentence ConfigError or DataError.
        """
        read = read_folder(path, use_ema)
        pipe = cls(**read.parts)
        if scheduler is None and not read.saved_sampler:
            scheduler = DEFAULT_SAMPLER
        if scheduler is not None:
            pipe.set_scheduler(scheduler)
        if checkpoint is not None:
            load_ema_weights(pipe.model, Path(checkpoint))
        pipe.source_dir = read.folder
        return pipe

    @classmethod
    def for_training_run(cls, model, dataset, scheduler_config: dict, sampler: str = DEFAULT_SAMPLER
                         ) -> "SoftdiffPipeline":
        """The pipeline a training run saves: ``model`` trained on ``dataset`` (a softdiff.data.Dataset) under
        the forward process ``scheduler_config`` (softdiff.diffusion.schedulers.training_scheduler_config),
        sampled with ``sampler``."""
        # The forward process as the full diffusers config of its scheduler, as the legacy layout saved it in
        # scheduler_config.json: samplers built from it are the same whichever layout a model was read from.
        process = json.loads(ForwardProcess(scheduler_config).scheduler().to_json_string())
        try:
            sampling = make_scheduler(sampler, process)
        except ValueError as err:  # a diffusion-only sampler for a flow-matching model
            raise ConfigError(f"{err}.") from None
        return cls(model, sampling, kind=dataset.kind, sample_shape=dataset.shape, num_classes=dataset.num_classes,
                   data_range=dataset.data_range, dataset=dataset.name, forward_process=process)

    def save_pretrained(self, save_directory: str | Path, **kwargs) -> None:
        """Write ``model_index.json``, ``model/`` and ``scheduler/`` (safetensors and JSON only); the folder is
        filled aside and renamed when complete."""
        kwargs["safe_serialization"] = True
        with atomic_dir(save_directory) as tmp:
            super().save_pretrained(tmp, **kwargs)

    def set_scheduler(self, name: str) -> None:
        """Sample with the sampler called ``name``, built for this model's forward process."""
        if name not in SCHEDULERS:
            raise ConfigError(f"scheduler {name!r} is not valid; choose one of: {', '.join(SCHEDULERS)}.")
        try:
            self.scheduler = make_scheduler(name, self.forward_process)
        except ValueError as err:  # a diffusion-only sampler for a flow-matching model
            raise ConfigError(f"{err}.") from None

    # ---------------------------------------------------------------------------------------- properties
    @property
    def forward_process(self) -> dict:
        """The training noise schedule (a fresh dict: the scheduler config saved beside a trained model)."""
        return dict(self.config.forward_process)

    @property
    def num_train_timesteps(self) -> int:
        return int(self.config.forward_process["num_train_timesteps"])

    @property
    def conditional_classes(self) -> int | None:
        """The number of classes of a class-conditional model, None for an unconditional one."""
        config = getattr(self.model, "config", None) or {}  # any torch module may be the model, not only a net
        return self.config.num_classes if config.get("num_class_embeds") else None

    # --------------------------------------------------------------------------------------------- calling
    def check_inputs(self, batch_size: int, num_inference_steps: int, class_labels, guidance_scale: float,
                     output_type: str, max_batch_size: int | None = None,
                     names: dict[str, str] | None = None) -> torch.Tensor | None:
        """ConfigError (one sentence) for a bad argument, before any work; returns the class labels to draw
        (``None`` for an unconditional model). ``names`` renames arguments in messages (a command's keys)."""
        name = lambda key: (names or {}).get(key, key)
        check_positive(name("batch_size"), batch_size)
        check_positive(name("num_inference_steps"), num_inference_steps)
        if max_batch_size is not None:
            check_positive(name("max_batch_size"), max_batch_size)
        check_finite(name("guidance_scale"), guidance_scale)
        check_positive(name("guidance_scale"), guidance_scale, allow_zero=True)
        if num_inference_steps > self.num_train_timesteps:
            raise ConfigError(f"{name('num_inference_steps')}={num_inference_steps} must be at most this model's "
                              f"num_train_timesteps ({self.num_train_timesteps}).")
        if output_type not in OUTPUT_TYPES:
            raise ConfigError(f"output_type={output_type!r} is not valid; choose one of: {', '.join(OUTPUT_TYPES)}.")
        if output_type == "pil" and self.config.kind != "image":
            raise ConfigError("output_type='pil' needs image data; this model draws vectors (use 'pt' or 'np').")
        classes = self.conditional_classes
        if guidance_scale != 1.0 and not classes:
            raise ConfigError(f"{name('guidance_scale')}={guidance_scale} needs a class-conditional model; this one "
                              "is unconditional (use 1).")
        if not classes:
            if class_labels is not None:
                raise ConfigError(f"{name('class_labels')}={class_labels} is not valid for this model (it is "
                                  "unconditional).")
            return None
        bad = ConfigError(f"{name('class_labels')}={class_labels} is not valid for this model (labels "
                          f"0..{classes - 1}: one label, or one per sample).")
        if class_labels is None:
            return torch.arange(batch_size) % classes  # the classes in turn
        try:
            labels = torch.as_tensor(class_labels).reshape(-1)
        except (TypeError, ValueError, RuntimeError):
            raise bad from None
        if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
            raise bad
        labels = labels.long().expand(batch_size) if labels.numel() == 1 else labels.long()
        if labels.shape != (batch_size,) or not bool(((labels >= 0) & (labels < classes)).all()):
            raise bad
        return labels

    @torch.no_grad()
    def __call__(self, batch_size: int = 1, num_inference_steps: int = 20, generator: torch.Generator | None = None,
                 class_labels: int | Sequence[int] | torch.Tensor | None = None, guidance_scale: float = 1.0,
                 output_type: str = "pt", return_dict: bool = True, progress: bool = True,
                 max_batch_size: int | None = None) -> SoftdiffPipelineOutput | tuple:
        """Draw ``batch_size`` samples with ``num_inference_steps`` steps of the pipeline's sampler.

        ``generator``: a CPU ``torch.Generator`` makes the draw deterministic (the initial noise and every
        stochastic step come from it). ``class_labels`` (class-conditional models): one label, one per sample,
        or None for the classes in turn; ``guidance_scale``: classifier-free guidance (1: the conditional model
        as it is, 0: the unconditional one; others need a model trained with label dropout).
        ``max_batch_size`` draws in chunks of at most that many samples (one after the other from
        ``generator``). ``output_type``: "pt" (tensor), "np" (NumPy) or "pil" (also ``.images``).
        """
        labels = self.check_inputs(batch_size, num_inference_steps, class_labels, guidance_scale, output_type,
                                   max_batch_size)
        # The model's own device and dtype: diffusers' device lookup needs its ModelMixin, any torch module works here.
        weight = next(self.model.parameters(), torch.empty(0))
        device, dtype = weight.device, weight.dtype
        shape, step = tuple(self.config.sample_shape), max_batch_size or batch_size
        chunks = []
        for start in range(0, batch_size, step):
            n = min(step, batch_size - start)
            chunk_labels = None if labels is None else labels[start:start + n].to(device)
            chunks.append(sample(self.model, self.scheduler, (n, *shape), num_inference_steps, generator, device,
                                 dtype, chunk_labels, guidance_scale, progress).cpu())
        x = from_model_space(torch.cat(chunks), self.config.kind)
        images = None
        if output_type == "pil":
            images = self.numpy_to_pil(x.permute(0, 2, 3, 1).float().numpy())
        samples = x if output_type == "pt" else x.numpy()
        self.maybe_free_model_hooks()
        if not return_dict:
            return (samples,) if images is None else (samples, images)
        return SoftdiffPipelineOutput(samples=samples, images=images)
