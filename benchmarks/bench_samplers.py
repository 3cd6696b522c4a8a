"""The sampler table of a trained run: FID (in its dataset's feature classifier), FID over the real-vs-real floor
and mean top-class probability for each sampler the model supports at a given number of network evaluations.

NFE is counted, not assumed: a forward hook counts the network's calls (Heun evaluates twice per step but once
on the last one, so it gets ``(NFE + 1) // 2`` steps). Each cell is the median over ``--seeds`` of ``--num-samples``
samples, scored against the dataset's reference images with the floor at the same sample count. A
class-conditional model draws the classes in turn, with ``--guidance-scale`` (both halves of a guided step run in
one batch: one evaluation).

    python benchmarks/bench_samplers.py runs/fashion [--nfe 5 10 20 50] [--num-samples 1000] [--seeds 0] \
        [--guidance-scale 1.5]
"""
from __future__ import annotations

import argparse
import statistics

import torch

from softdiff.diffusion.schedulers import FLOW_SCHEDULERS, SCHEDULERS, is_flow_config
from softdiff.evaluation.classifiers import ensure_classifier
from softdiff.evaluation.features import reference_images, score_samples
from softdiff.pipeline import SoftdiffPipeline


def steps_for(sampler: str, nfe: int) -> int:
    return (nfe + 1) // 2 if sampler == "heun" else nfe


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run", help="a training run folder (its EMA weights are sampled)")
    p.add_argument("--nfe", type=int, nargs="+", default=[5, 10, 20, 50])
    p.add_argument("--samplers", nargs="+", default=None, help="default: every sampler the model supports")
    p.add_argument("--num-samples", type=int, default=1000)
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--guidance-scale", type=float, default=1.0, help="class-conditional models (1: none)")
    args = p.parse_args()
    if not args.guidance_scale >= 0:
        p.error(f"--guidance-scale {args.guidance_scale:g} must be non-negative (1: no guidance)")
    if args.threads:
        torch.set_num_threads(args.threads)
    pipe = SoftdiffPipeline.from_pretrained(args.run)
    dataset = pipe.config.dataset
    classifier, _ = ensure_classifier(dataset=dataset)
    reference, pool = reference_images(dataset)
    supported = FLOW_SCHEDULERS if is_flow_config(pipe.forward_process) else SCHEDULERS
    samplers = args.samplers or list(supported)
    calls = [0]
    pipe.model.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    print(f"run={args.run} dataset={dataset} samples={args.num_samples} seeds={args.seeds} "
          f"guidance={args.guidance_scale:g} threads={torch.get_num_threads()}; cells: FID / FID over floor / confidence (median over seeds)")
    print("| sampler | " + " | ".join(f"NFE {n}" for n in args.nfe) + " |")
    print("| --- " * (len(args.nfe) + 1) + "|")
    for name in samplers:
        pipe.set_scheduler(name)
        cells = []
        for nfe in args.nfe:
            scores = []
            for seed in args.seeds:
                calls[0] = 0
                x = pipe(batch_size=args.num_samples, num_inference_steps=steps_for(name, nfe),
                         generator=torch.Generator().manual_seed(seed), guidance_scale=args.guidance_scale,
                         progress=False).samples
                counted = calls[0]
                scores.append(score_samples(classifier, x, reference, pool, seed=seed))
            med = {k: statistics.median(s[k] for s in scores) for k in ("fid", "fid_over_floor", "confidence")}
            cells.append(f"{med['fid']:.1f} / {med['fid_over_floor']:.1f}x / {med['confidence']:.3f}"
                         + ("" if counted == nfe else f" (NFE {counted})"))
        print(f"| {name} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
