"""The training loop on accelerate: one CPU, one GPU, or many with ``accelerate launch`` / ``torchrun``."""
from __future__ import annotations

import json
import time
import warnings
from dataclasses import asdict, replace
from pathlib import Path
from typing import Callable, Sequence, TypeVar

import numpy as np
import torch
from accelerate import Accelerator, PartialState
from accelerate.utils import ProjectConfiguration
from diffusers.optimization import get_scheduler
from diffusers.training_utils import EMAModel
from tqdm.auto import tqdm

from softdiff.config import save_config
from softdiff.data import Dataset, dataset_from_config
from softdiff.data.augment import flip, flip_mask
from softdiff.data.loader import BatchStream, check_batch_fits, draw_indices, take_slice
from softdiff.diffusion.objective import Objective
from softdiff.diffusion.sampling import NULL_LABEL
from softdiff.errors import ConfigError, SoftdiffError, first_line
from softdiff.pipeline.pipeline import SoftdiffPipeline
from softdiff.safe_io import NewEntries, is_disk_full, write_json, write_text
from softdiff.training.checkpoints import Checkpoints, DiskFullError, ema_weights, list_checkpoints
from softdiff.training.config import TrainConfig
from softdiff.training.models import build_model
from softdiff.training.preflight import effective_mixed_precision, out_of_memory_message, preflight
from softdiff.training.callbacks import TrainerCallback, TrainState, unclaimed_keys
from softdiff.training.previews import PreviewCallback
from softdiff.training.run_lock import lock_run_folder

MAX_CONSECUTIVE_SKIPS = 10

T = TypeVar("T")


class TrainingError(SoftdiffError):
    """The run cannot go on (non-finite loss); nothing corrupt was saved."""

    exit_code = 1


def step_generator(seed: int, step: int, micro: int, device: str | torch.device = "cpu") -> torch.Generator:
    """The RNG of one micro-batch, a pure function of (seed, step): resume and data parallelism stay exact.

    ``device``: where its draws land (a CUDA generator draws on the GPU, with no host work or copy)."""
    state = np.random.SeedSequence([seed, step, micro]).generate_state(2)
    return torch.Generator(device).manual_seed(int(state[0]) << 32 | int(state[1]))


def dropout_seed(seed: int, rank: int) -> int:
    """The global RNG's seed on process ``rank`` once the model is built (dropout draws from it): ``seed`` on rank 0."""
    if rank == 0:
        return seed
    state = np.random.SeedSequence(seed, spawn_key=(rank,)).generate_state(2)
    return int(state[0]) << 32 | int(state[1])


def draw_batch(dataset: Dataset, objective: Objective, cfg: TrainConfig, step: int, micro: int, rank: int,
               world: int, batches: BatchStream | None = None, device: str | torch.device = "cpu"):
    """The global batch of one micro-step (identical on every process), and this process's slice of it, on
    ``device``: noisy inputs, model timesteps, targets, loss weights and (class-conditional runs) labels,
    NULL_LABEL where dropped. Lazy sets decode only this slice (through ``batches``' workers when given).

    The data indices come from the micro-step's CPU generator. On the CPU the timesteps, noise and label dropout
    follow from the same generator (the draws of every run so far); on an accelerator they come from a generator
    on the device seeded alike, so that no noise is drawn on the host or copied per step."""
    device = torch.device(device)
    g = step_generator(cfg.train.seed, step, micro)
    draws = g if device.type == "cpu" else step_generator(cfg.train.seed, step, micro, device)
    size = cfg.train.batch_size
    # Images: the batch's indices (the same first draw as Dataset.sample), only this process's slice decoded
    # below; 2-D sets: the points themselves.
    if dataset.kind == "image":
        indices_or_points = draw_indices(len(dataset), size, g)
        labels = dataset.labels[indices_or_points] if dataset.labels is not None else None
    else:
        indices_or_points, labels = dataset.sample(size, g)
    # Every process draws the global batch's timesteps, noise and dropout and keeps its slice: the numbers each
    # example gets do not depend on the process count (runs on 1 and 2 processes stay equal).
    t = objective.draw_timesteps(size, draws)
    noise = torch.randn((size, *dataset.shape), generator=draws, device=draws.device)
    use_labels = labels is not None and cfg.data.class_conditional
    if use_labels and cfg.train.label_dropout:  # classifier-free guidance learns the unconditional model too
        dropped = torch.rand(size, generator=draws, device=draws.device) < cfg.train.label_dropout
        labels = torch.where(dropped, NULL_LABEL, to_device(labels, draws.device))
    lo, hi = rank * size // world, (rank + 1) * size // world
    x0 = take_slice(dataset, indices_or_points, lo, hi, cfg.data.skip_bad_files, batches, step, micro)
    if cfg.data.random_flip:
        x0 = flip(x0, flip_mask(cfg.train.seed, step, micro, size)[lo:hi])
    x0, t, noise = to_device(x0, device), t[lo:hi], noise[lo:hi]
    labels = to_device(labels[lo:hi], device) if use_labels else None
    x_t, target, weight = objective.noised(x0, noise, t)
    return x_t, t, target, weight, labels


def to_device(x: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``x`` on ``device``; from the CPU to CUDA through pinned memory without blocking, so the copy overlaps the
    host's work (only host tensors can be pinned: one drawn on the device stays as it is)."""
    if device.type != "cuda" or x.device.type != "cpu":
        return x.to(device)
    return x.pin_memory().to(device, non_blocking=True)


def batch_stream(dataset: Dataset, cfg: TrainConfig, start: int, end: int, rank: int, world: int):
    """Lazy sets: this process's slices of steps ``start`` to ``end``, decoded ahead by ``data.num_workers``."""
    if not dataset.lazy:
        return None
    size = cfg.train.batch_size
    keys = [(s, m) for s in range(start, end) for m in range(cfg.train.grad_accum)]
    indices_of = lambda s, m: draw_indices(len(dataset), size, step_generator(cfg.train.seed, s, m))  # noqa: E731
    return BatchStream(dataset, cfg.data, keys, indices_of, rank * size // world, (rank + 1) * size // world)


def optimization(model: torch.nn.Module, cfg: TrainConfig, device: torch.device):
    """(AdamW, the lr schedule, the EMA of ``model``) as the config asks, for a model that will run on ``device``:
    what training steps, and what a benchmark that steps by hand builds too."""
    t = cfg.train
    # foreach: one kernel per step over all parameters instead of one per parameter; fused AdamW likewise on CUDA.
    ema = EMAModel(model.parameters(), decay=t.ema_decay, foreach=True, model_cls=type(model),
                   model_config=getattr(model, "config", None))
    optimizer = torch.optim.AdamW(model.parameters(), lr=t.lr, weight_decay=t.weight_decay,
                                  fused=device.type == "cuda")
    lr_scheduler = get_scheduler(t.lr_schedule, optimizer, num_warmup_steps=t.warmup_steps, num_training_steps=t.steps)
    return optimizer, lr_scheduler, ema


class MetricsLog:
    """``metrics.jsonl``: one JSON object per logged step; on resume, lines past the resumed step are dropped,
    and so is a line torn by a kill mid-write (the file is rewritten atomically)."""

    def __init__(self, path: Path, resume_step: int, enabled: bool):
        self.path, self.enabled = path, enabled
        if enabled and path.exists():
            keep, torn = [], 0
            for line in path.read_text(errors="replace").splitlines():
                try:
                    record = json.loads(line)
                except ValueError:
                    torn += bool(line.strip())
                    continue
                if isinstance(record, dict) and record.get("step", 0) <= resume_step:
                    keep.append(line)
            if torn:
                warnings.warn(f"dropped {torn} unreadable line(s) of '{path}' (a write cut short)", stacklevel=2)
            write_text(path, "".join(line + "\n" for line in keep))

    def write(self, record: dict) -> None:
        if self.enabled:
            with self.path.open("a") as f:
                f.write(json.dumps(record) + "\n")


def _make_accelerator(cfg: TrainConfig, out: Path) -> Accelerator:
    if torch.cuda.is_available():  # TF32 matmuls and convolutions for float32 work (as DiT's train.py): far faster
        torch.backends.cuda.matmul.allow_tf32 = True  # on Ampere and later, 10-bit mantissa inputs, fp32 sums
        torch.backends.cudnn.allow_tf32 = True
    project = ProjectConfiguration(project_dir=str(out), logging_dir=str(out / "logs"))
    log_with = None
    try:  # TensorBoard logs only where tensorboard is installed
        import tensorboard  # noqa: F401
        log_with = "tensorboard"
    except ImportError:
        pass
    # cpu=True when there is no GPU: then torchrun's processes form a real gloo process group (multi-CPU DDP).
    # step_scheduler_with_optimizer=False: the LR schedule counts optimizer steps, whatever the process count
    # (accelerate would otherwise step it once per process and warm up twice as fast on two processes).
    return Accelerator(mixed_precision=cfg.train.mixed_precision, gradient_accumulation_steps=cfg.train.grad_accum,
                       project_config=project, log_with=log_with, cpu=not torch.cuda.is_available(),
                       step_scheduler_with_optimizer=False)


def in_turn(state, build: Callable[[], T]) -> T:
    """``build()`` on every process of ``state`` (an accelerate ``PartialState``), one writer at a time: the main
    process first, then each node's local main (a node that does not share the run folder builds its own
    ``data_index.json`` or download), then the others, who find the files made. An error stays with its process
    until every turn is over, so none waits forever at a barrier."""
    done, result, error = False, None, None
    for turn in (state.is_main_process, state.is_local_main_process, True):
        if turn and not done:
            done = True
            try:
                result = build()
            except Exception as err:  # raised after the last barrier
                error = err
        if state.num_processes > 1:
            state.wait_for_everyone()
    if error is not None:
        raise error
    return result


def _param_checksum(model) -> float:
    """A float64 fingerprint of the weights, compared across processes at the end of a run."""
    return float(sum((p.detach().double() * (i + 1)).sum() for i, p in enumerate(model.parameters())))


def train(cfg: TrainConfig, resume: str | None = None, quiet: bool = False, stop_after: int = 0,
          callbacks: Sequence[TrainerCallback] = ()) -> Path:
    """Train the run described by ``cfg`` into ``cfg.output_dir`` and return that folder.

    ``callbacks`` (:mod:`softdiff.training.callbacks`) run on the main process besides the preview pictures,
    one for each section of ``cfg.callbacks`` (``softdiff.studies.training_callbacks.callbacks_from_config``
    builds them).

    ``stop_after`` > 0 ends this invocation (with a checkpoint) after that many steps, e.g. to split a run
    over jobs with a time limit; ``resume="latest"`` continues it exactly (``"auto"``: or starts from step 0
    when no checkpoint loads). Inputs are checked first; the folder is locked for the whole run (a second run
    into it stops at once); a full disk or an allocation failure becomes one sentence; an input error found once
    the folder is locked takes back what the run created there (unless a checkpoint was saved).
    """
    out = Path(cfg.output_dir)
    # an explicit mixed_precision to Accelerator overrides the launcher's; config.yaml records the one in effect
    cfg = replace(cfg, train=replace(cfg.train, mixed_precision=effective_mixed_precision(cfg)))
    preflight(cfg, resume)
    callbacks = [PreviewCallback(cfg.sample.every, cfg.train.steps), *callbacks]
    if unclaimed := unclaimed_keys(cfg, callbacks):
        raise ConfigError(f"{unclaimed[0]} is set but no callback carries it out; pass the callback to train() "
                          "(softdiff.studies.training_callbacks.callbacks_from_config builds it; softdiff train and "
                          "softdiff compare do), or remove the section.")
    state = PartialState(cpu=not torch.cuda.is_available())
    created = NewEntries(out)  # taken back if an input error ends the run before it saved anything
    lock = lock_run_folder(out, state)
    try:
        return _train_or_explain(cfg, resume, quiet, stop_after, callbacks)
    except SoftdiffError as err:
        if state.is_main_process and getattr(err, "exit_code", 2) == 2:
            created.remove()
        raise
    finally:
        lock.release()


def _train_or_explain(cfg: TrainConfig, resume: str | None, quiet: bool, stop_after: int,
                      callbacks: Sequence[TrainerCallback]) -> Path:
    """``_train``, with a full disk or an allocation failure turned into one sentence."""
    out = Path(cfg.output_dir)
    try:
        return _train(cfg, resume, quiet, stop_after, callbacks)
    except SoftdiffError:
        raise
    except Exception as err:
        if is_disk_full(err, out):
            saved = [p.name for _, p in list_checkpoints(out / "checkpoints")]
            intact = f"the newest checkpoint '{saved[0]}' is intact" if saved else "no checkpoint was saved yet"
            where = getattr(err, "filename", None) or first_line(err)
            raise DiskFullError(f"no space left on device while writing into '{out}' ({where}); {intact}. Free "
                                "space, then continue with --resume latest.") from None
        message = out_of_memory_message(cfg, err) if isinstance(err, (MemoryError, RuntimeError)) else None
        if message is None:
            raise
        raise ConfigError(message) from None


def _train(cfg: TrainConfig, resume: str | None, quiet: bool, stop_after: int,
           callbacks: Sequence[TrainerCallback]) -> Path:
    out = Path(cfg.output_dir)
    # The run's file list (resume reads the same), written by one process at a time; rebuilt by each node's
    # first process only, the others read what it wrote.
    rebuild = cfg.data.rebuild_index and PartialState().is_local_main_process
    dataset = in_turn(PartialState(), lambda: dataset_from_config(cfg.data, out / "data_index.json", rebuild))
    check_batch_fits(dataset, cfg.train.batch_size)
    if cfg.data.class_conditional and dataset.num_classes is None:
        raise ConfigError(f"data.class_conditional=true but dataset '{cfg.data.name}' has no labels.")
    accelerator = _make_accelerator(cfg, out)
    world, rank = accelerator.num_processes, accelerator.process_index
    if cfg.train.batch_size % world:
        raise ConfigError(f"train.batch_size={cfg.train.batch_size} must be divisible by the {world} processes.")
    objective = Objective.from_config(cfg.diffusion)
    scheduler_config = objective.scheduler_config

    torch.manual_seed(cfg.train.seed)  # model init (and dropout) draw from the global RNG; accelerate saves it
    model = build_model(cfg, dataset)
    if rank:  # the same init everywhere, then each process its own dropout masks (rank 0 goes on as one process)
        torch.manual_seed(dropout_seed(cfg.train.seed, rank))
    optimizer, lr_scheduler, ema = optimization(model, cfg, accelerator.device)
    model, optimizer, lr_scheduler = accelerator.prepare(model, optimizer, lr_scheduler)
    ema.to(accelerator.device)  # saved by Checkpoints as safetensors + JSON (not accelerate's pickle path)
    forward = torch.compile(model) if cfg.train.compile else model

    checkpoint_dir = out / "checkpoints"
    checkpoints = Checkpoints(accelerator, checkpoint_dir, cfg.train.checkpoints_total_limit, model, optimizer,
                              lr_scheduler, ema)
    start = checkpoints.resume(resume, quiet)
    if start > cfg.train.steps:
        raise ConfigError(f"the checkpoint resumed from is at step {start}, past train.steps={cfg.train.steps}; "
                          f"set train.steps to at least {start}.")
    if accelerator.is_main_process:
        (out / "samples").mkdir(parents=True, exist_ok=True)
        # data.rebuild_index acts once: a later resume of this config.yaml reads the index rebuilt now
        save_config(replace(cfg, data=replace(cfg.data, rebuild_index=False)), out / "config.yaml")
        write_json(out / "train_summary.json", {"step": start, "finished": False}, indent=2)
    if accelerator.log_with:
        accelerator.init_trackers("softdiff", config={k: str(v) for k, v in asdict(cfg).items()})
    log = MetricsLog(out / "metrics.jsonl", start, accelerator.is_main_process)
    state = TrainState(cfg, dataset, objective.process, scheduler_config, out, accelerator.device, start, start,
                       accelerator.unwrap_model(model), ema)
    if accelerator.is_main_process:
        for callback in callbacks:
            if record := callback.on_train_begin(state):
                log.write({"step": start, **record})

    bar = tqdm(total=cfg.train.steps, initial=start, disable=quiet or not accelerator.is_local_main_process,
               desc="training", dynamic_ncols=True)
    # The loss, and in stop mode its finiteness, stay on the device until a log step reads them back: no host sync
    # per step. Skip mode must know before optimizer.step(), so it reads the finiteness of every micro-batch.
    device, skip_mode = accelerator.device, cfg.train.on_nonfinite == "skip"
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    first_nonfinite = torch.zeros((), dtype=torch.long, device=device)  # the first non-finite step, 0: none yet
    logged, skips, t_last, t0 = 0, 0, time.perf_counter(), time.perf_counter()

    def nonfinite_error(at: int) -> TrainingError:
        bar.close()
        return TrainingError(f"the loss became non-finite at step {at} (train.lr={cfg.train.lr}); nothing was saved "
                             f"after the last checkpoint in '{checkpoint_dir}'. Lower train.lr, or set "
                             "train.on_nonfinite=skip to skip such steps.")

    model.train()
    end = min(cfg.train.steps, start + stop_after) if stop_after else cfg.train.steps
    batches = batch_stream(dataset, cfg, start, end, rank, world)
    for step in range(start, end):
        step_loss, finite = torch.zeros((), device=device), True
        for micro in range(cfg.train.grad_accum):
            x_t, t, target, weight, labels = draw_batch(dataset, objective, cfg, step, micro, rank, world, batches,
                                                        device)
            kwargs = {"class_labels": labels} if labels is not None else {}
            with accelerator.accumulate(model), accelerator.autocast():
                loss = objective.loss(forward(x_t, t, **kwargs), target, weight).mean()
                if skip_mode:  # accelerate's reduce knows sum and mean: finite everywhere iff the count is the world
                    finite = accelerator.reduce(torch.isfinite(loss).float(), reduction="sum").item() == world
                    if not finite:
                        break
                else:
                    bad = ~torch.isfinite(loss.detach()) & (first_nonfinite == 0)
                    first_nonfinite = torch.where(bad, step + 1, first_nonfinite)
                accelerator.backward(loss)
                if accelerator.sync_gradients and cfg.train.grad_clip:
                    accelerator.clip_grad_norm_(model.parameters(), cfg.train.grad_clip)
                step_loss += loss.detach() / cfg.train.grad_accum
        if not finite:
            # accumulate() counts every entry: a step cut short restarts its count, or the optimizer never steps
            # again; the prepared optimizer's zero_grad does nothing mid-accumulation, so clear the model's.
            accelerator.step = 0
            model.zero_grad(set_to_none=True)
            skips += 1
            if skips > MAX_CONSECUTIVE_SKIPS:
                raise nonfinite_error(step + 1)
            continue
        skips = 0
        optimizer.step()
        lr_scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        ema.step(model.parameters())
        done = step + 1
        loss_sum += step_loss.double()
        logged += 1
        bar.update(1)
        log_due = done % cfg.train.log_every == 0 or done == cfg.train.steps
        checkpoint_due = done % cfg.train.checkpoint_every == 0 or done == end
        due = [callback for callback in callbacks if callback.due(done)]
        if not skip_mode and (log_due or checkpoint_due or due):
            # Stop mode learns of a non-finite loss here, before anything is logged or saved: the weights it
            # broke since are dropped, and the message names the step where it happened.
            flags = accelerator.gather(first_nonfinite.reshape(1))
            if bool((flags > 0).any()):
                raise nonfinite_error(int(flags[flags > 0].min()))
        if log_due:
            mean_loss = float(accelerator.reduce(loss_sum, reduction="mean")) / logged  # equal slices: mean of means
            now = time.perf_counter()  # after the read-back, so the interval covers the device's work
            record = {"step": done, "loss": mean_loss, "lr": lr_scheduler.get_last_lr()[0],
                      "samples_per_s": logged * cfg.train.batch_size * cfg.train.grad_accum / (now - t_last),
                      "wall_time": now - t0}
            if batches is not None and batches.skipped:
                record["skipped_files"] = len(batches.skipped)
            log.write(record)
            accelerator.log({k: v for k, v in record.items() if k != "step"}, step=done)
            bar.set_postfix(loss=f"{record['loss']:.4f}")
            loss_sum, logged, t_last = torch.zeros_like(loss_sum), 0, now
        if checkpoint_due:
            checkpoints.save(done)
        if due:
            if accelerator.is_main_process:
                state.step = done
                for callback in due:
                    if record := callback.on_step_end(state):
                        log.write({"step": done, **record})
            accelerator.wait_for_everyone()
    bar.close()
    if batches is not None:
        batches.close()
    checksums = accelerator.gather(torch.tensor([_param_checksum(model)], dtype=torch.float64,
                                                device=accelerator.device)).tolist()
    if end == cfg.train.steps and accelerator.is_main_process:  # each folder appears complete or not at all
        # A run saves pipelines (diffusers' convention), sampled with the sampler its config names.
        pipe = SoftdiffPipeline.for_training_run(accelerator.unwrap_model(model), dataset, scheduler_config,
                                                 cfg.sample.scheduler)
        pipe.save_pretrained(out / "model")
        with ema_weights(ema, pipe.model):
            pipe.save_pretrained(out / "model_ema")
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:  # written last: "finished" means the saved models are complete
        summary = {"step": end, "finished": end == cfg.train.steps, "num_processes": world,
                   "rank_weight_checksums": checksums, "wall_time": time.perf_counter() - t0}
        write_json(out / "train_summary.json", summary, indent=2)
    accelerator.end_training()
    return out
