"""What data preparation costs per training step, as a share of the whole step, in softdiff's own training loop
(configs/cifar10.yaml by default), on CPU.

The real loop (softdiff.training.train) runs with trainer.draw_batch and trainer.to_device wrapped in timers.
Data preparation = their time per step: the index draw, gather, conversion to floats, flip, noise and
timesteps, target and weights, and the host->device copy (nothing to copy on CPU). The step = the time from one
draw_batch call to the next: data, forward, backward, clipping, optimizer, EMA, the loop's bookkeeping. Both are
medians over the steps after --warmup (compiling falls in the first), in wall time and in the CPU time of the
loop's thread (time.thread_time: with one thread per process, as here, the thread that does all the loop's work
on CPU): the CPU share holds on a machine shared with other work, where wall times stretch with the load. With --processes 2 the loop runs as two
real processes (torchrun, gloo), each timed on its own: in-memory slicing changed that case (each process used
to gather and convert the whole global batch, and now only its slice).

CIFAR-10 stands in where torchvision's files are absent: a tensor of its shape and size (benchmarks/standin.py).
KEY=VALUE arguments override the config (e.g. a smaller net on CPU: model.hidden_size=128 model.num_layers=4).
--batch-only: no training; draw_batch alone at the config's own batch, in one process and as rank 0 of 2 (CPU
time, median of 20 draws), for what the loop's host work would be at that batch on a GPU.

Before and after a change: the same script against a checkout of the older code (PYTHONPATH comes first):

    git worktree add --detach /tmp/before 3d5a5a7^        # the parent of the in-memory slicing commit
    PYTHONPATH=/tmp/before python benchmarks/bench_data_prep.py --processes 2 [KEY=VALUE ...]
    PYTHONPATH=. python benchmarks/bench_data_prep.py --processes 2 [KEY=VALUE ...]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

OUT_ENV = "BENCH_DATA_PREP_OUT"  # where each process writes its timings (set by the launching process)


def fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


def timed_run(config: str, overrides: list[str], out: Path) -> dict:
    """Train with the timers in place (this process); its timings per step."""
    import torch

    import softdiff.data
    import softdiff.training.trainer as trainer
    from softdiff.training import load_train_config, train

    from standin import standin_loader

    cfg = load_train_config(config, [*overrides, f"output_dir={out / 'run'}"])
    if cfg.data.name == "cifar10" and not (Path(cfg.data.root) / "cifar-10-batches-py").is_dir():
        softdiff.data.load_torchvision = standin_loader()
    starts, prep = [], []  # (wall, CPU) pairs
    draw, copy = trainer.draw_batch, getattr(trainer, "to_device", None)

    def clocks() -> tuple[float, float]:
        return time.perf_counter(), time.thread_time()

    def since(start: tuple[float, float]) -> tuple[float, float]:
        now = clocks()
        return now[0] - start[0], now[1] - start[1]

    def timed_draw(*args, **kwargs):
        start = clocks()
        starts.append(start)
        batch = draw(*args, **kwargs)
        prep.append(since(start))
        return batch

    def timed_copy(*args, **kwargs):
        start = clocks()
        moved = copy(*args, **kwargs)
        wall, cpu = since(start)
        prep[-1] = (prep[-1][0] + wall, prep[-1][1] + cpu)
        return moved

    trainer.draw_batch = timed_draw
    if copy is not None:  # older code copied inline (a no-op on CPU)
        trainer.to_device = timed_copy
    train(cfg, quiet=True)
    steps = [(b[0] - a[0], b[1] - a[1]) for a, b in zip(starts, starts[1:])]
    return {"step": steps, "prep": prep[:-1],
            "batch": cfg.train.batch_size, "threads": torch.get_num_threads(),
            "rank": int(os.environ.get("RANK", 0)), "code": str(Path(trainer.__file__).parents[2])}


def batch_only(config: str, overrides: list[str], draws: int = 20) -> None:
    import torch  # noqa: F401 (before softdiff: the same import order as the loop)

    import softdiff.data
    from softdiff.data import dataset_from_config
    from softdiff.diffusion.objective import Objective
    from softdiff.training import load_train_config
    from softdiff.training.trainer import draw_batch

    from standin import standin_loader

    cfg = load_train_config(config, overrides)
    if cfg.data.name == "cifar10" and not (Path(cfg.data.root) / "cifar-10-batches-py").is_dir():
        softdiff.data.load_torchvision = standin_loader()
    dataset, objective = dataset_from_config(cfg.data), Objective.from_config(cfg.diffusion)
    print(f"draw_batch alone, {config} {' '.join(overrides)}: batch {cfg.train.batch_size}, CPU time, median of "
          f"{draws} draws\n| processes (this one's rank) | ms |\n| --- | --- |")
    for world in (1, 2):
        times = []
        for step in range(draws):
            start = time.thread_time()
            draw_batch(dataset, objective, cfg, step, 0, 0, world)
            times.append(time.thread_time() - start)
        print(f"| {world} (0) | {1e3 * statistics.median(times):.2f} |")


def worker(config: str, overrides: list[str]) -> None:
    out = Path(os.environ[OUT_ENV])
    timings = timed_run(config, overrides, out)
    (out / f"rank{timings['rank']}.json").write_text(json.dumps(timings))


def launch(processes: int, config: str, overrides: list[str], out: Path) -> None:
    env = {**os.environ, OUT_ENV: str(out)}
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", "--config", config, *overrides]
    if processes > 1:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes),
               *cmd[1:]]
    res = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if res.returncode:
        sys.exit(f"the timed run failed:\n{res.stderr[-3000:]}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides")
    p.add_argument("--config", default="configs/cifar10.yaml")
    p.add_argument("--processes", type=int, default=1, help="processes (torchrun on CPU when more than 1)")
    p.add_argument("--steps", type=int, default=20, help="timed steps (the medians' samples)")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps first (compiling included)")
    p.add_argument("--batch-only", action="store_true", help="time draw_batch alone at the config's batch")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        return worker(args.config, args.overrides)
    for key, value, low in (("--processes", args.processes, 1), ("--steps", args.steps, 2),
                            ("--warmup", args.warmup, 1)):
        if value < low:
            fail(f"{key}={value} must be at least {low}.")
    if bad := [o for o in args.overrides if "=" not in o]:
        fail(f"'{bad[0]}' is not a KEY=VALUE override.")
    if args.batch_only:
        return batch_only(args.config, args.overrides)
    steps = args.warmup + args.steps + 1  # +1: the last draw only closes the last timed step
    overrides = [*args.overrides, f"train.steps={steps}", f"train.checkpoint_every={steps}", "sample.every=0",
                 "sample.num_samples=2", "sample.steps=2", f"train.log_every={steps}"]
    with tempfile.TemporaryDirectory() as tmp:
        launch(args.processes, args.config, overrides, Path(tmp))
        ranks = [json.loads(f.read_text()) for f in sorted(Path(tmp).glob("rank*.json"))]
    print(f"code: {ranks[0]['code']}; config: {args.config} {' '.join(args.overrides)}; global batch "
          f"{ranks[0]['batch']}; {args.processes} process(es) x {ranks[0]['threads']} thread(s); medians of "
          f"{args.steps} steps after {args.warmup}")
    print("| process | clock | data preparation (ms) | step (ms) | share of the step |\n| --- | --- | --- | --- | --- |")
    for r in ranks:
        for clock, i in (("wall", 0), ("CPU", 1)):
            prep = statistics.median(p[i] for p in r["prep"][args.warmup:])
            step = statistics.median(s[i] for s in r["step"][args.warmup:])
            print(f"| {r['rank']} | {clock} | {1e3 * prep:.2f} | {1e3 * step:.1f} | {100 * prep / step:.2f}% |")


if __name__ == "__main__":
    main()
