"""Time to quality on digits: softdiff's default vs diffusers' UNet2DModel of similar size, in one run, over seeds.

Arms, each trained with the package's own batch draws, objective, density and weighting for its recipe:
  softdiff default             configs/digits.yaml as it is (network and recipe)
  UNet, diffusers recipe (a)   UNet2DModel (channels 32/64, attention at 4x4); epsilon, uniform t, plain MSE,
                               AdamW 1e-3 constant, batch 128, EMA 0.995 (diffusers' unconditional recipe)
  UNet, softdiff recipe (b)    the same UNet under configs/digits.yaml's recipe, at its own lr (--lr-unet)
Every --eval-every steps, until both FID bars are reached, the EMA weights draw 512 samples with the recipe's
sampler and FID against the real digits is computed in the feature space of softdiff's digits classifier. Every
arm trains for the default's training seconds (equal wall time); its final EMA weights then draw 500 samples that
the classifier scores (mean top-class probability, smallest class share). Training seconds exclude evaluation.

    python benchmarks/bench_time_to_quality.py [--seeds 0 1 2] [--eval-every 50] [--bars 10 5]
"""
from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
from diffusers.optimization import get_scheduler
from diffusers.training_utils import EMAModel

from softdiff.data import make_dataset
from softdiff.diffusion import make_scheduler, sample
from softdiff.diffusion.sampling import model_output
from softdiff.diffusion.objectives import diffusion_loss
from softdiff.diffusion.process import ForwardProcess
from softdiff.evaluation.classifiers import ensure_classifier
from softdiff.evaluation.features import fid_kid, score_samples
from softdiff.training import load_train_config
from softdiff.training.checkpoints import ema_weights
from softdiff.training.models import build_model
from softdiff.training.trainer import draw_batch, scheduler_config_of

from baselines import unet  # noqa: E402 (same folder)

DIFFUSERS_RECIPE = ["diffusion.objective=diffusion", "diffusion.prediction_type=epsilon",
                    "diffusion.timestep_density=uniform", "diffusion.loss_weighting=none", "train.lr=1e-3",
                    "train.lr_schedule=constant", "train.warmup_steps=0", "train.batch_size=128",
                    "train.ema_decay=0.995", "train.weight_decay=0.0", "sample.scheduler=dpm++sde", "sample.steps=20"]


class Arm:
    """One (network, recipe) pair: its optimizer, EMA, lr schedule and training step."""

    def __init__(self, name: str, model, cfg, dataset):
        self.name, self.model, self.cfg, self.dataset = name, model, cfg, dataset
        self.scheduler_config = scheduler_config_of(cfg)
        self.process = ForwardProcess(self.scheduler_config)
        t = cfg.train
        self.optimizer = torch.optim.AdamW(model.parameters(), lr=t.lr, weight_decay=t.weight_decay)
        self.lr_schedule = get_scheduler(t.lr_schedule, self.optimizer, num_warmup_steps=t.warmup_steps,
                                         num_training_steps=t.steps)
        self.ema = EMAModel(model.parameters(), decay=t.ema_decay)
        self.step, self.seconds = 0, 0.0

    def train_step(self) -> None:
        start = time.perf_counter()
        x_t, t, target, weight, _ = draw_batch(self.dataset, self.process, self.cfg, self.step, 0, 0, 1)
        loss = diffusion_loss(model_output(self.model(x_t, t)), target, weight).mean()
        loss.backward()
        if self.cfg.train.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.train.grad_clip)
        self.optimizer.step()
        self.lr_schedule.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.ema.step(self.model.parameters())
        self.seconds += time.perf_counter() - start
        self.step += 1

    @torch.no_grad()
    def samples(self, n: int, seed: int) -> torch.Tensor:
        sched = make_scheduler(self.cfg.sample.scheduler, self.scheduler_config)
        self.model.eval()
        with ema_weights(self.ema, self.model):
            x = sample(self.model, sched, (n, *self.dataset.shape), self.cfg.sample.steps,
                       torch.Generator().manual_seed(seed))
        self.model.train()
        return self.dataset.from_model(x)


def run_arm(arm: Arm, steps: int, bars: list[float], eval_every: int, classifier, real, log,
            seconds: float = float("inf")) -> dict:
    """Train ``steps`` steps or ``seconds`` training seconds, whichever comes first; FID every ``eval_every`` steps
    until every bar is reached; final classifier scores."""
    reached: dict[float, tuple[int, float]] = {}
    history = []
    while arm.step < steps and arm.seconds < seconds:
        for _ in range(min(eval_every, steps - arm.step)):
            arm.train_step()
            if arm.seconds >= seconds:
                break
        if len(reached) < len(bars):
            fid = fid_kid(classifier, real, arm.samples(512, 0))["fid"]
            history.append((arm.step, arm.seconds, fid))
            log(f"    {arm.name}: step {arm.step:5d}  train {arm.seconds:6.1f} s  FID {fid:6.2f}")
            for bar in bars:
                if fid <= bar and bar not in reached:
                    reached[bar] = (arm.step, arm.seconds)
    final = score_samples(classifier, arm.samples(500, 1), real)
    out = {"steps": arm.step, "seconds": arm.seconds, "reached": reached, "history": history,
           "fid": final["fid"], "confidence": final["confidence"], "min_class_share": min(final["class_shares"]),
           "samples_per_s": arm.step * arm.cfg.train.batch_size / arm.seconds}
    log(f"    {arm.name}: {arm.step} steps, {arm.seconds:.1f} s: FID {out['fid']:.2f}, confidence "
        f"{out['confidence']:.3f}, smallest class {out['min_class_share']:.3f}")
    return out


def steps_for_seconds(trial: Arm, seconds: float, warmup: int = 5, probe: int = 30) -> int:
    """How many steps fit in ``seconds``, timed on ``probe`` steps of a throw-away ``trial`` arm after ``warmup``
    untimed ones (the first steps allocate and are slower, which would cut the baseline's budget short)."""
    for _ in range(warmup):
        trial.train_step()
    trial.seconds = 0.0
    for _ in range(probe):
        trial.train_step()
    return max(1, round(seconds / (trial.seconds / probe)))


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--bars", type=float, nargs="+", default=[10.0, 5.0], help="FID bars (classifier features)")
    p.add_argument("--eval-every", type=int, default=50)
    p.add_argument("--lr-unet", type=float, default=1e-3, help="the UNet's lr under softdiff's recipe (b)")
    p.add_argument("--config", default="configs/digits.yaml")
    p.add_argument("--classifier", default=None, help="digits classifier file (default: the cached one)")
    p.add_argument("--threads", type=int, default=0)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    classifier = ensure_classifier(args.classifier)[0]
    dataset = make_dataset("digits")
    real = dataset.data_tensor()
    log = lambda line: print(line, flush=True)
    results: dict[str, list[dict]] = {}
    for seed in args.seeds:
        log(f"seed {seed}")
        ours_cfg = load_train_config(args.config, [f"train.seed={seed}"])
        torch.manual_seed(seed)
        ours = Arm("softdiff default", build_model(ours_cfg, dataset), ours_cfg, dataset)
        res = run_arm(ours, ours_cfg.train.steps, args.bars, args.eval_every, classifier, real, log)
        results.setdefault(ours.name, []).append(res)
        budget = res["seconds"]
        for name, overrides in [("UNet, diffusers recipe (a)", DIFFUSERS_RECIPE),
                                ("UNet, softdiff recipe (b)", [f"train.lr={args.lr_unet}"])]:
            cfg = load_train_config(args.config, [f"train.seed={seed}", *overrides])
            steps = steps_for_seconds(Arm(name, unet(), cfg, dataset), budget)
            cfg.train.steps = steps  # a decaying lr schedule spans the steps estimated to fit in the budget
            torch.manual_seed(seed)
            arm = Arm(name, unet(), cfg, dataset)
            # A constant lr needs no step count: train for exactly the budget's seconds.
            constant = cfg.train.lr_schedule == "constant"
            results.setdefault(name, []).append(run_arm(arm, 10**9 if constant else steps, args.bars,
                                                        args.eval_every, classifier, real, log, budget))
    print(f"\nthreads={torch.get_num_threads()} seeds={args.seeds} eval_every={args.eval_every} "
          f"config={args.config}; medians over seeds")
    head = " | ".join(f"steps / s to FID <= {b:g}" for b in args.bars)
    print(f"| arm | {head} | train samples/s | steps at equal time | FID | confidence | smallest class |")
    print("| --- " * (len(args.bars) + 6) + "|")
    for name, runs in results.items():
        cells = []
        for bar in args.bars:
            steps = median([r["reached"].get(bar, (None, None))[0] for r in runs])
            secs = median([r["reached"].get(bar, (None, None))[1] for r in runs])
            missed = sum(bar not in r["reached"] for r in runs)
            cell = "-" if steps is None else f"{steps:.0f} / {secs:.1f}"
            cells.append(cell + (f" ({missed} missed)" if missed and steps is not None else ""))
        m = {k: median([r[k] for r in runs]) for k in ("samples_per_s", "steps", "fid", "confidence",
                                                       "min_class_share")}
        print(f"| {name} | {' | '.join(cells)} | {m['samples_per_s']:.0f} | {m['steps']:.0f} | {m['fid']:.2f} | "
              f"{m['confidence']:.3f} | {m['min_class_share']:.3f} |")
    ours = results["softdiff default"]
    for name in [n for n in results if n != "softdiff default"]:
        for bar in args.bars:
            ratios = [a["reached"][bar][1] / b["reached"][bar][1] for a, b in zip(ours, results[name])
                      if bar in a["reached"] and bar in b["reached"]]
            if ratios:
                print(f"seconds to FID <= {bar:g}, softdiff default / {name}: median {median(ratios):.2f} "
                      f"(per seed: {', '.join(f'{r:.2f}' for r in ratios)})")


if __name__ == "__main__":
    main()
