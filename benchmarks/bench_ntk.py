"""Closed-form two-layer NTK vs torch.func empirical NTK (both implementations), same run, medians.

    PYTHONPATH=. python benchmarks/bench_ntk.py [--n 256 --d-in 16 --d-out 4 --width 4096 --repeats 3]
"""
from __future__ import annotations

import argparse

import torch

from softdiff.studies.ntk import empirical_ntk, ntk_as_matrix, ntk_scale, two_layer_ntk
from softdiff.nets import TwoLayerNet
from timing import median_time  # benchmarks/timing.py: this folder is on the path when run as a script


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=256)
    parser.add_argument("--d-in", type=int, default=16)
    parser.add_argument("--d-out", type=int, default=4)
    parser.add_argument("--width", type=int, default=4096)
    parser.add_argument("--activation", default="softmax", choices=["softmax", "relu", "exp"])
    parser.add_argument("--repeats", type=int, default=3, help="closed-form repeats")
    parser.add_argument("--autograd-repeats", type=int, default=1)
    parser.add_argument("--chunk-size", type=int, default=64, help="vmap chunk for the autograd paths")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    gen = torch.Generator().manual_seed(0)
    net = TwoLayerNet(args.d_in, args.d_out, args.width, coupled=False, activation=args.activation,
                          seed=0).double()
    x = torch.randn(args.n, args.d_in, generator=gen, dtype=torch.float64)
    x = x / x.norm(dim=1, keepdim=True)
    kappa = ntk_scale(net)

    t_closed, closed = median_time(lambda: two_layer_ntk(net, x) * kappa, args.repeats)
    rows = [("closed form (float64)", t_closed, 0.0)]
    for impl in ("jacobian", "ntk_vp"):
        t, full = median_time(lambda: empirical_ntk(net, ["W"], x, implementation=impl,
                                                    chunk_size=args.chunk_size), args.autograd_repeats)
        err = float((ntk_as_matrix(full) - closed).abs().max() / closed.abs().max())
        rows.append((f"empirical_ntk {impl} (float64)", t, err))
        del full
    fastest_autograd = min(t for _, t, _ in rows[1:])
    print(f"n={args.n} d_in={args.d_in} d_out={args.d_out} m={args.width} activation={args.activation} "
          f"threads={torch.get_num_threads()} repeats={args.repeats}/{args.autograd_repeats}")
    print("| method | median s | x slower than closed form | max rel. diff vs closed form |")
    print("| --- | --- | --- | --- |")
    for name, t, err in rows:
        print(f"| {name} | {t:.3f} | {t / t_closed:.1f} | {err:.1e} |")
    print(f"closed form speed-up over the fastest autograd path: {fastest_autograd / t_closed:.1f}x")


if __name__ == "__main__":
    main()
