"""Time to quality: a softdiff config vs diffusers' UNet2DModel, in one run, over seeds (digits or 28x28 data).

Arms, each trained with the package's own batch draws, objective, density and weighting for its recipe:
  softdiff                     the config as it is (network and recipe; --steps shortens it, lr schedule and warm-up
                               included, the warm-up keeping its share of the steps)
  UNet <size>, diffusers (a)   UNet2DModel; epsilon, uniform t, plain MSE, AdamW 1e-3 constant, batch 128,
                               EMA 0.995 (diffusers' unconditional recipe)
  UNet <size>, softdiff (b)    the same UNet under the config's recipe, at its own lr (--lr-unet)
8x8 digits have one UNet size; 28x28 data try --unet-sizes (small, medium) under diffusers' recipe on the first
seed, and the size with the lower final FID there is the UNet of every other arm (said in the output).
Every --eval-every steps (or --eval-seconds training seconds), until every FID bar is reached, the EMA weights
draw --eval-samples samples with the recipe's sampler and FID against the dataset's reference images (digits: all
1,797; MNIST / Fashion-MNIST: the 10,000 test images) is computed in its feature classifier. Every arm trains for
the softdiff arm's training seconds (equal wall time); its final EMA weights then draw --final-samples (500)
samples that the classifier scores (FID, mean top-class probability, smallest class share). Training seconds exclude evaluation.
--png writes FID against training seconds, one line per arm and seed.
A class-conditional config (configs/fashion.yaml) makes every arm class-conditional: the UNets through their own
class embedding (``baselines.LabelledUNet``), each arm with the config's label dropout and guidance scale, samples
asking for the classes in turn (the final scores add the share classified as the class asked for);
--unconditional drops the labels from every arm.

    python benchmarks/bench_time_to_quality.py [--seeds 0 1 2] [--eval-every 50] [--bars 10 5]
    python benchmarks/bench_time_to_quality.py --config configs/fashion.yaml --steps 200 --eval-seconds 60 \
        --eval-samples 128 --final-samples 200 --bars 550 450 --threads 1 --png docs/images/time_to_quality_fashion.png
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from softdiff.data import make_dataset
from softdiff.diffusion import make_scheduler, sample
from softdiff.diffusion.sampling import model_output
from softdiff.diffusion.objective import Objective
from softdiff.evaluation.classifiers import ensure_classifier
from softdiff.evaluation.features import fid_kid, reference_images, score_samples
from softdiff.training import load_train_config
from softdiff.training.checkpoints import ema_weights
from softdiff.training.models import build_model
from softdiff.training.trainer import draw_batch

from baselines import unet  # noqa: E402 (same folder)
from hand_step import HandStep  # noqa: E402

DIFFUSERS_RECIPE = ["diffusion.objective=diffusion", "diffusion.prediction_type=epsilon",
                    "diffusion.timestep_density=uniform", "diffusion.loss_weighting=none", "train.lr=1e-3",
                    "train.lr_schedule=constant", "train.warmup_steps=0", "train.batch_size=128",
                    "train.ema_decay=0.995", "train.weight_decay=0.0", "sample.scheduler=dpm++sde", "sample.steps=20"]


class Arm:
    """One (network, recipe) pair: its optimizer, EMA, lr schedule and training step."""

    def __init__(self, name: str, model, cfg, dataset):
        self.name, self.model, self.cfg, self.dataset = name, model, cfg, dataset
        self.objective = Objective.from_config(cfg.diffusion)
        self.scheduler_config = self.objective.scheduler_config
        self.update = HandStep(model, cfg)
        self.step, self.seconds = 0, 0.0

    def train_step(self) -> None:
        start = time.perf_counter()
        x_t, t, target, weight, labels = draw_batch(self.dataset, self.objective, self.cfg, self.step, 0, 0, 1)
        kwargs = {"class_labels": labels} if labels is not None else {}
        self.update.step(self.objective.loss(model_output(self.model(x_t, t, **kwargs)), target, weight).mean())
        self.seconds += time.perf_counter() - start
        self.step += 1

    def requested(self, n: int) -> torch.Tensor | None:
        """The classes asked of ``n`` samples of a class-conditional arm, in turn (None: unconditional)."""
        return torch.arange(n) % self.dataset.num_classes if self.cfg.data.class_conditional else None

    @torch.no_grad()
    def samples(self, n: int, seed: int) -> torch.Tensor:
        sched = make_scheduler(self.cfg.sample.scheduler, self.scheduler_config)
        self.model.eval()
        with ema_weights(self.update.ema, self.model):
            x = sample(self.model, sched, (n, *self.dataset.shape), self.cfg.sample.steps,
                       torch.Generator().manual_seed(seed), class_labels=self.requested(n),
                       guidance_scale=self.cfg.sample.guidance_scale)
        self.model.train()
        return self.dataset.from_model(x)


def run_arm(arm: Arm, steps: int, bars: list[float], evaluate, classifier, real, log,
            seconds: float = float("inf"), eval_samples: int = 512, final_samples: int = 500,
            full_curve: bool = False, stop_at_bars: bool = False) -> dict:
    """Train ``steps`` steps or ``seconds`` training seconds, whichever comes first (``stop_at_bars``: or until
    every bar is reached); FID whenever ``evaluate(arm)`` says so, until every bar is reached (``full_curve``: to
    the end); final classifier scores."""
    reached: dict[float, tuple[int, float]] = {}
    history = []
    while arm.step < steps and arm.seconds < seconds:
        arm.train_step()
        last = arm.step >= steps or arm.seconds >= seconds
        if (full_curve or len(reached) < len(bars)) and (evaluate(arm) or last):
            fid = fid_kid(classifier, real, arm.samples(eval_samples, 0))["fid"]
            history.append((arm.step, arm.seconds, fid))
            log(f"    {arm.name}: step {arm.step:5d}  train {arm.seconds:6.1f} s  FID {fid:6.2f}")
            for bar in bars:
                if fid <= bar and bar not in reached:
                    reached[bar] = (arm.step, arm.seconds)
            if stop_at_bars and len(reached) == len(bars):
                break
    final = score_samples(classifier, arm.samples(final_samples, 1), real, labels=arm.requested(final_samples))
    out = {"steps": arm.step, "seconds": arm.seconds, "reached": reached, "history": history,
           "fid": final["fid"], "confidence": final["confidence"], "min_class_share": min(final["class_shares"]),
           "requested_class_share": final.get("requested_class_share"),
           "samples_per_s": arm.step * arm.cfg.train.batch_size / arm.seconds}
    log(f"    {arm.name}: {arm.step} steps, {arm.seconds:.1f} s: FID {out['fid']:.2f}, confidence "
        f"{out['confidence']:.3f}, smallest class {out['min_class_share']:.3f}")
    return out


def every(steps: int | None, seconds: float | None):
    """When to evaluate: every ``steps`` steps, or whenever another ``seconds`` of training have passed."""
    if seconds:
        marks: dict[int, float] = {}

        def due(arm: Arm) -> bool:
            if arm.seconds >= marks.get(id(arm), seconds):
                marks[id(arm)] = arm.seconds - arm.seconds % seconds + seconds
                return True
            return False
        return due
    return lambda arm: arm.step % steps == 0


def steps_for_seconds(trial: Arm, seconds: float, warmup: int = 3, probe: int = 30, probe_seconds: float = 15.0) -> int:
    """How many steps fit in ``seconds``, timed on up to ``probe`` steps (at least 3, at most about
    ``probe_seconds``) of a throw-away ``trial`` arm after ``warmup`` untimed ones (the first steps allocate and
    are slower, which would cut the baseline's budget short)."""
    for _ in range(warmup):
        trial.train_step()
    trial.seconds, timed = 0.0, 0
    while timed < probe and (timed < 3 or trial.seconds < probe_seconds):
        trial.train_step()
        timed += 1
    return max(1, round(seconds / (trial.seconds / timed)))


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def plot(results: dict[str, list[dict]], path: str, title: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for color, (name, runs) in zip(plt.rcParams["axes.prop_cycle"].by_key()["color"], results.items()):
        for i, run in enumerate(runs):
            _, secs, fids = zip(*run["history"]) if run["history"] else ((), (), ())
            ax.plot(secs, fids, "o-", color=color, alpha=0.8, ms=3, label=name if i == 0 else None)
    ax.set(xlabel="training seconds", ylabel="FID (classifier features)", yscale="log", title=title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--bars", type=float, nargs="+", default=[10.0, 5.0], help="FID bars (classifier features)")
    p.add_argument("--eval-every", type=int, default=50, help="evaluate every this many steps")
    p.add_argument("--eval-seconds", type=float, default=None, help="evaluate every this many training seconds")
    p.add_argument("--eval-samples", type=int, default=512, help="samples per FID during training")
    p.add_argument("--final-samples", type=int, default=500, help="samples of the final scores")
    p.add_argument("--lr-unet", type=float, default=1e-3, help="the UNet's lr under softdiff's recipe (b)")
    p.add_argument("--config", default="configs/digits.yaml")
    p.add_argument("--steps", type=int, default=None, help="shorten the softdiff arm (and so the budget)")
    p.add_argument("--unet-sizes", nargs="+", default=["small", "medium"], help="28x28 data only")
    p.add_argument("--classifier", default=None, help="feature classifier file (default: the dataset's)")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--png", default=None, help="write FID against training seconds here")
    p.add_argument("--unconditional", action="store_true", help="drop a class-conditional config's labels")
    p.add_argument("--full-curves", action="store_true", help="evaluate to the end, past the last bar")
    p.add_argument("--recipes", default="ab", choices=["ab", "a", "b"], help="the UNet arms: diffusers' recipe (a), "
                   "softdiff's (b), or both")
    p.add_argument("--json", default=None, help="write every arm's results (curves included) here")
    p.add_argument("--time-to-bars", type=float, default=None, metavar="SECONDS",
                   help="instead of equal time: every arm's lr schedule spans the steps that fit in SECONDS, and "
                   "each arm stops once it reaches every bar (or at SECONDS)")
    args = p.parse_args()
    if args.time_to_bars is not None and not 0 < args.time_to_bars < float("inf"):
        p.error(f"--time-to-bars {args.time_to_bars:g} must be a positive, finite number of seconds")
    if args.threads:
        torch.set_num_threads(args.threads)
    full = load_train_config(args.config).train
    # A class-conditional config makes every arm class-conditional (the UNets through their own class embedding),
    # with the config's label dropout and guidance; --unconditional drops the labels from every arm.
    base = ["data.class_conditional=false", "train.label_dropout=0"] if args.unconditional else []
    base += [f"train.steps={args.steps}"] if args.steps else []
    # --steps shortens the schedule, warm-up included: the same share of it as in the config.
    warmup_for = lambda steps: round(full.warmup_steps * steps / full.steps)  # noqa: E731
    name_of_data = load_train_config(args.config, base).data.name
    classifier = ensure_classifier(args.classifier, dataset=name_of_data)[0]
    dataset = make_dataset(name_of_data)
    real = reference_images(name_of_data)[0]
    side = dataset.shape[-1]
    sizes = ["small"] if side == 8 else args.unet_sizes
    classes = dataset.num_classes if load_train_config(args.config, base).data.class_conditional else None
    evaluate = every(args.eval_every, args.eval_seconds)
    log = lambda line: print(line, flush=True)
    results: dict[str, list[dict]] = {}
    best = sizes[0]  # the UNet size of every arm after seed 0's trial of the sizes
    cap = args.time_to_bars
    for n, seed in enumerate(args.seeds):
        log(f"seed {seed}")
        ours_cfg = load_train_config(args.config, [*base, f"train.seed={seed}", "train.compile=false"])
        ours_cfg.train.warmup_steps = warmup_for(ours_cfg.train.steps)
        torch.manual_seed(seed)
        if cap:  # the schedule spans the steps that fit in the cap, warm-up keeping its share
            ours_cfg.train.steps = steps_for_seconds(Arm("softdiff", build_model(ours_cfg, dataset), ours_cfg,
                                                         dataset), cap)
            ours_cfg.train.warmup_steps = warmup_for(ours_cfg.train.steps)
        torch.manual_seed(seed)
        ours = Arm("softdiff", build_model(ours_cfg, dataset), ours_cfg, dataset)
        res = run_arm(ours, ours_cfg.train.steps, args.bars, evaluate, classifier, real, log, cap or float("inf"),
                      args.eval_samples, args.final_samples, args.full_curves, stop_at_bars=bool(cap))
        results.setdefault(ours.name, []).append(res)
        budget = cap or res["seconds"]
        recipes = [("diffusers (a)", DIFFUSERS_RECIPE), ("softdiff (b)", [f"train.lr={args.lr_unet}"])]
        for recipe, overrides in [r for r in recipes if r[0][-2] in args.recipes]:
            tried = sizes if n == 0 and recipe == "diffusers (a)" and not cap else [best]
            for size in tried:
                name = f"UNet {size}, {recipe}" if side != 8 else f"UNet, {recipe}"
                cfg = load_train_config(args.config, [*base, f"train.seed={seed}", *overrides])
                steps = steps_for_seconds(Arm(name, unet(size, side, classes), cfg, dataset), budget)
                cfg.train.steps = steps  # a decaying lr schedule spans the steps estimated to fit in the budget
                if cfg.train.warmup_steps:
                    cfg.train.warmup_steps = warmup_for(steps)
                torch.manual_seed(seed)
                arm = Arm(name, unet(size, side, classes), cfg, dataset)
                # A constant lr needs no step count: train for exactly the budget's seconds.
                constant = cfg.train.lr_schedule == "constant"
                results.setdefault(name, []).append(run_arm(arm, 10**9 if constant else steps, args.bars, evaluate,
                                                            classifier, real, log, budget, args.eval_samples,
                                                            args.final_samples, args.full_curves,
                                                            stop_at_bars=bool(cap)))
            if n == 0 and recipe == "diffusers (a)" and not cap:
                best = min(sizes, key=lambda s: results[f"UNet {s}, {recipe}" if side != 8 else
                                                        f"UNet, {recipe}"][0]["fid"])
                if len(sizes) > 1:
                    log(f"UNet size with the lower final FID on seed {seed} under diffusers' recipe, used from now on: "
                        f"{best}")
    mode = f"time to bars, every arm capped at {cap:g} s" if cap else "equal time"
    print(f"\n{mode}: threads={torch.get_num_threads()} seeds={args.seeds} config={args.config} "
          f"steps={args.steps or 'config'} "
          f"eval={'every %g s' % args.eval_seconds if args.eval_seconds else 'every %d steps' % args.eval_every} "
          f"eval_samples={args.eval_samples}; medians over seeds")
    head = " | ".join(f"steps / s to FID <= {b:g}" for b in args.bars)
    print(f"| arm | seeds | {head} | train samples/s | steps trained | FID | confidence | smallest class | "
          f"requested class |")
    print("| --- " * (len(args.bars) + 8) + "|")
    for name, runs in results.items():
        cells = []
        for bar in args.bars:
            steps = median([r["reached"].get(bar, (None, None))[0] for r in runs])
            secs = median([r["reached"].get(bar, (None, None))[1] for r in runs])
            missed = sum(bar not in r["reached"] for r in runs)
            cell = "-" if steps is None else f"{steps:.0f} / {secs:.1f}"
            cells.append(cell + (f" ({missed} missed)" if missed and steps is not None else ""))
        m = {k: median([r[k] for r in runs]) for k in ("samples_per_s", "steps", "fid", "confidence",
                                                       "min_class_share", "requested_class_share")}
        asked = "-" if m["requested_class_share"] is None else f"{m['requested_class_share']:.3f}"
        print(f"| {name} | {len(runs)} | {' | '.join(cells)} | {m['samples_per_s']:.0f} | {m['steps']:.0f} | "
              f"{m['fid']:.2f} | {m['confidence']:.3f} | {m['min_class_share']:.3f} | {asked} |")
    ours = results["softdiff"]
    for name in [n for n in results if n != "softdiff"]:
        for bar in args.bars:
            pairs = list(zip(ours, results[name])) if len(results[name]) == len(ours) else \
                list(zip(ours[:1], results[name]))
            ratios = [a["reached"][bar][1] / b["reached"][bar][1] for a, b in pairs
                      if bar in a["reached"] and bar in b["reached"]]
            if ratios:
                print(f"seconds to FID <= {bar:g}, softdiff / {name}: median {median(ratios):.2f} "
                      f"(per seed: {', '.join(f'{r:.2f}' for r in ratios)})")
            # A baseline that never reached the bar took longer than it trained: the ratio is at most this.
            bounds = [a["reached"][bar][1] / b["seconds"] for a, b in pairs
                      if bar in a["reached"] and bar not in b["reached"]]
            if bounds:
                print(f"seconds to FID <= {bar:g}, softdiff / {name}: below {', '.join(f'{r:.2f}' for r in bounds)} "
                      f"on the {len(bounds)} seed(s) where {name} did not reach it in the seconds it trained")
        if not cap:
            lower = sum(a["fid"] < b["fid"] for a, b in zip(ours, results[name]))
            print(f"final FID at equal time, softdiff lower than {name} on {lower} of {len(results[name])} seeds")
    if args.json:
        Path(args.json).write_text(json.dumps({name: [{**r, "reached": {str(b): v for b, v in r["reached"].items()}}
                                                      for r in runs] for name, runs in results.items()}, indent=1))
    if args.png:
        threads = torch.get_num_threads()
        plot(results, args.png, f"{name_of_data}: FID against training seconds ({threads} thread{'s' * (threads > 1)})")


if __name__ == "__main__":
    main()
