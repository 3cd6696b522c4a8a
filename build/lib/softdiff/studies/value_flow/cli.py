"""``softdiff flow --preset E1 [--output-dir DIR] [key=value ...]``: run a docs/theory.md 3 protocol, report, plot.

Writes ``results.json`` (config, per-case histories, summary rows) and ``shares.png``, ``entropy.png``,
``projections.png`` into the output directory, and prints the measured outcome next to the reference outcome of docs/theory.md 3.2.
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from typing import Optional, Sequence

import torch

from softdiff.config import load_config
from softdiff.studies.value_flow.plots import plot_all
from softdiff.studies.value_flow.dynamics import (
    PRESETS, FlowCase, FlowHistory, FlowIntegrationError, preset_cases, run_case,
)
from softdiff.cli import ArgumentParser
from softdiff.errors import ConfigError, check_choice, check_device, check_finite, check_positive
from softdiff.safe_io import check_output_dir, write_text
from softdiff.tables import print_table


@dataclass
class FlowConfig:
    preset: str = "E1"              # protocol of docs/theory.md 3: E1 .. E5
    seeds: int = 1                  # initialisations run together as one batch
    seed: int = 0                   # first seed of the batch
    steps: Optional[int] = None     # GD steps (None: the protocol's); with method=flow, t_max = steps * lr
    lr: Optional[float] = None      # step size (None: the protocol's)
    method: str = "gd"              # gd (the protocols) or flow (torchdiffeq ODE)
    device: str = "cpu"
    output_dir: Optional[str] = None  # default runs/flow/<preset>

    def validate(self) -> None:
        check_choice("preset", self.preset, list(PRESETS))
        check_choice("method", self.method, ["gd", "flow"])
        check_positive("seeds", self.seeds)
        if self.steps is not None:
            check_positive("steps", self.steps)
        if self.lr is not None:
            check_positive("lr", self.lr)
            check_finite("lr", self.lr)
        if not 0 <= self.seed < 2**32 - self.seeds:
            raise ConfigError(f"seed={self.seed} must be in [0, 2**32 - seeds).")
        if self.seeds > 100_000:
            raise ConfigError(f"seeds={self.seeds} must be at most 100000 (they run as one batch).")
        check_device("device", self.device)


def _mean(x: torch.Tensor) -> float:
    return float(x.double().mean())


def _at_step(hist: FlowHistory, field: str, step: int) -> torch.Tensor | None:
    """The record at GD step ``step`` (for the flow: the record nearest time ``step * lr``, within 5%)."""
    t = step * hist.meta["lr"]
    if not 0 < t <= float(hist.times[-1]) * 1.05:
        return None
    i = int((hist.times[1:].log() - torch.log(torch.tensor(t, dtype=hist.times.dtype))).abs().argmin()) + 1
    return getattr(hist, field)[i] if abs(float(hist.times[i]) / t - 1) < 0.05 else None


def _e1_rows(case: FlowCase, hist: FlowHistory) -> list[tuple[str, str, str]]:
    ref = case.reference
    rows = [("max share at step 0", f"{_mean(hist.max_share[0]):.3f}", ref["max_share"][0])]
    for step, share in ref["max_share"].items():
        value = _at_step(hist, "max_share", step) if step else None
        if value is not None:
            rows.append((f"max share at step {step:.0e}", f"{_mean(value):.3f}", share))
    rows += [("entropy start -> end", f"{_mean(hist.entropy[0]):.2f} -> {_mean(hist.entropy[-1]):.2f}",
              ref["entropy"]),
             ("loss start -> end", f"{_mean(hist.loss[0]):.2f} -> {_mean(hist.loss[-1]):.1e}", ref["loss"])]
    winner = hist.winner[-1]
    proj = hist.projections.gather(-1, winner.expand(hist.projections.shape[:-1]).unsqueeze(-1)).squeeze(-1)
    rows.append(("winner <v, beta*> start -> end", f"{_mean(proj[0]):.2f} -> {_mean(proj[-1]):.2f}",
                 ref["winner_projection"]))
    steps = hist.steps.double()
    late = steps >= steps[-1] / 100  # the last two decades
    if late.sum() >= 2 and steps[-1] >= 1000:
        x = torch.log10(steps[late])
        y = proj[late].reshape(int(late.sum()), -1).mean(-1)
        slope = float(((x - x.mean()) * (y - y.mean())).sum() / ((x - x.mean()) ** 2).sum())
        rows.append(("winner <v, beta*> gain per decade (last 2)", f"{slope:.2f}", f"about {ref['gain_per_decade']}"))
    agree = (winner == hist.projections[0].argmax(-1)).double()
    rows.append(("winner = argmax_i <v_i(0), beta*>", f"{int(agree.sum())}/{agree.numel()} seeds", "rich-get-richer"))
    return rows


def _e2_rows(case: FlowCase, hist: FlowHistory) -> list[tuple[str, str, str]]:
    share_sum = hist.s[-1].sum(-1)
    return [("max share / min share / sum of shares (end)",
             f"{_mean(hist.max_share[-1]):.3f} / {_mean(hist.s[-1].min(-1).values):.3f} / {_mean(share_sum):.3f}",
             case.reference["outcome"]),
            ("seeds one-hot (max share > 0.99)",
             f"{int((hist.max_share[-1] > 0.99).sum())}/{hist.max_share[-1].numel()}", ""),
            ("entropy end, loss end", f"{_mean(hist.entropy[-1]):.2f}, {_mean(hist.loss[-1]):.1e}", "")]


def _e3_rows(case: FlowCase, hist: FlowHistory) -> list[tuple[str, str, str]]:
    median, ref = hist.value_norms[-1].median(-1).values, case.reference
    return [("max share (end)", f"{_mean(hist.max_share[-1]):.4f}", ref["max_share"]),
            ("dominant column norm start -> end", f"{_mean(hist.dominant_norm[0]):.2f} -> "
                                                 f"{_mean(hist.dominant_norm[-1]):.2f}", ref["dominant_norm"]),
            ("median column norm (end)", f"{_mean(median):.2f}", ref["median_norm"])]


def _e4_rows(case: FlowCase, hist: FlowHistory) -> list[tuple[str, str, str]]:
    ent = hist.entropy[-1].reshape(-1)
    return [("final entropy (log 20 = 3.00), mean [min, max] over seeds",
             f"{_mean(ent):.2f} [{float(ent.min()):.2f}, {float(ent.max()):.2f}]", case.reference["entropy"]),
            ("final loss", f"{_mean(hist.loss[-1]):.1e}", "")]


def _e5_rows(case: FlowCase, hist: FlowHistory) -> list[tuple[str, str, str]]:
    return [("KL(p* || softmax(beta)) (end)", f"{_mean(hist.loss[-1]):.1e}", case.reference["kl"]),
            ("max share (end)", f"{_mean(hist.max_share[-1]):.3f}", case.reference["max_share"])]


SUMMARIES = {"E1": _e1_rows, "E2": _e2_rows, "E3": _e3_rows, "E4": _e4_rows, "E5": _e5_rows}


def main(argv: Sequence[str]) -> int:
    parser = ArgumentParser(prog="softdiff flow", description=__doc__.splitlines()[0])
    parser.add_argument("--preset", help="protocol E1..E5 (docs/theory.md 3)")
    parser.add_argument("--output-dir", help="where results.json and the PNGs go (default runs/flow/<preset>)")
    parser.add_argument("overrides", nargs="*", help="key=value: seeds, seed, steps, lr, method, device")
    args = parser.parse_args(argv)
    overrides = list(args.overrides)
    if args.preset is not None:
        overrides.append(f"preset={args.preset}")
    if args.output_dir is not None:
        overrides.append(f"output_dir={args.output_dir}")
    cfg = load_config(FlowConfig, None, overrides)
    out_dir = check_output_dir("--output-dir" if args.output_dir else "output_dir",
                               cfg.output_dir or f"runs/flow/{cfg.preset}")
    out_dir.mkdir(parents=True, exist_ok=True)

    histories, results, table = {}, {"config": asdict(cfg), "cases": {}}, []
    for case in preset_cases(cfg.preset, cfg.seeds, cfg.seed):
        start = time.perf_counter()
        try:
            hist = run_case(case, steps=cfg.steps, lr=cfg.lr, method=cfg.method, device=cfg.device)
        except FlowIntegrationError as err:  # one stiff case (e.g. E2's l1 as an ODE) should not sink the rest
            print(f"{case.label}: skipped: {err}")
            results["cases"][case.label] = {"expected": case.expected, "error": str(err)}
            continue
        seconds = time.perf_counter() - start
        histories[case.label] = hist
        rows = SUMMARIES[cfg.preset](case, hist)
        table += [(case.label, *row) for row in rows]
        results["cases"][case.label] = {"expected": case.expected, "seconds": seconds,
                                        "summary": [dict(zip(("quantity", "measured", "theory"), r)) for r in rows],
                                        "history": hist.to_dict()}
        print(f"{case.label}: {hist.meta.get('steps', hist.meta.get('t_max'))} "
              f"{'steps' if cfg.method == 'gd' else 'time'} x {hist.meta['batch']} seeds in {seconds:.1f} s")
    if not histories:
        raise FlowIntegrationError(f"every case of {cfg.preset} failed with method={cfg.method}; use method=gd.")
    write_text(out_dir / "results.json", json.dumps(results, allow_nan=False))
    pngs = plot_all(histories, out_dir, f"{cfg.preset} ({cfg.method})")
    print()
    print_table(("case", "quantity", "measured", "reference"), table)
    print(f"\nwrote {out_dir / 'results.json'} and {', '.join(p.name for p in pngs)}")
    return 0
