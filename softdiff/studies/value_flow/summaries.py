"""Per-protocol summary rows ``(quantity, measured, reference)``: means over seeds of a :class:`FlowHistory`."""
from __future__ import annotations

import torch
from torch import Tensor

from softdiff.studies.value_flow.history import FlowHistory, shares_distribution
from softdiff.studies.value_flow.presets import FlowCase

ONE_HOT = 0.99  # a share above this counts as all the mass (one-hot); two shares summing above it, two-sparse


def median(x: Tensor, dim: int = -1) -> Tensor:
    """The median along ``dim``, the mean of the two middle values for an even length (``torch.median``
    returns the lower one)."""
    s = x.sort(dim).values
    n = s.shape[dim]
    return 0.5 * (s.select(dim, (n - 1) // 2) + s.select(dim, n // 2))


def endings(s: Tensor) -> dict[str, int]:
    """How many seeds end one-hot, two-sparse or otherwise, judged on ``|s| / sum |s|`` (so a map that leaves
    the simplex is not one-hot because one share exceeds 1)."""
    top2 = shares_distribution(s.reshape(-1, s.shape[-1])).topk(min(2, s.shape[-1]), -1).values
    one_hot = top2[:, 0] > ONE_HOT
    two = ~one_hot & (top2.sum(-1) > ONE_HOT)
    return {"one-hot": int(one_hot.sum()), "two-sparse": int(two.sum()), "other": int((~one_hot & ~two).sum())}


def _endings_text(s: Tensor) -> str:
    return " / ".join(f"{v} {k}" for k, v in endings(s).items())


def _mean(x: Tensor) -> float:
    return float(x.double().mean())


def _at_step(hist: FlowHistory, field: str, step: int) -> Tensor | None:
    """The record at GD step ``step`` (for the flow: the record nearest time ``step * lr``, within 5%)."""
    t = step * hist.meta["lr"]
    if not 0 < t <= float(hist.times[-1]) * 1.05:
        return None
    i = int((hist.times[1:].log() - torch.log(torch.tensor(t, dtype=hist.times.dtype))).abs().argmin()) + 1
    return getattr(hist, field)[i] if abs(float(hist.times[i]) / t - 1) < 0.05 else None


def _arrow(pair) -> str:
    return f"{pair[0]:g} -> {pair[1]:g}"


def _e1(case: FlowCase, hist: FlowHistory) -> list[tuple[str, str, str]]:
    ref = case.reference
    rows = [("max share at step 0", f"{_mean(hist.max_share[0]):.3f}", f"{ref['max_share'][0]:g}")]
    for step, share in ref["max_share"].items():
        value = _at_step(hist, "max_share", step) if step else None
        if value is not None:
            rows.append((f"max share at step {step:.0e}", f"{_mean(value):.3f}", f"{share:g}"))
    rows += [("entropy start -> end", f"{_mean(hist.entropy[0]):.2f} -> {_mean(hist.entropy[-1]):.2f}",
              _arrow(ref["entropy"])),
             ("loss start -> end", f"{_mean(hist.loss[0]):.2f} -> {_mean(hist.loss[-1]):.1e}", _arrow(ref["loss"]))]
    winner = hist.winner[-1]
    proj = hist.projections.gather(-1, winner.expand(hist.projections.shape[:-1]).unsqueeze(-1)).squeeze(-1)
    rows.append(("winner <v, beta*> start -> end", f"{_mean(proj[0]):.2f} -> {_mean(proj[-1]):.2f}",
                 _arrow(ref["winner_projection"])))
    steps = hist.steps.double()
    late = steps >= steps[-1] / 100  # the last two decades
    if late.sum() >= 2 and steps[-1] >= 1000:
        x = torch.log10(steps[late])
        y = proj[late].reshape(int(late.sum()), -1).mean(-1)
        slope = float(((x - x.mean()) * (y - y.mean())).sum() / ((x - x.mean()) ** 2).sum())
        rows.append(("winner <v, beta*> gain per decade (last 2)", f"{slope:.2f}", f"about +{ref['gain_per_decade']}"))
    agree = (winner == hist.projections[0].argmax(-1)).double()
    rows.append(("winner = argmax_i <v_i(0), beta*>", f"{int(agree.sum())}/{agree.numel()} seeds", "rich-get-richer"))
    return rows


def _e2(case: FlowCase, hist: FlowHistory) -> list[tuple[str, str, str]]:
    s = hist.s[-1]
    return [("max share / min share / sum of shares (end)",
             f"{_mean(hist.max_share[-1]):.3f} / {_mean(s.min(-1).values):.3f} / {_mean(s.sum(-1)):.3f}",
             case.reference),
            ("endings (on |s| / sum |s|)", _endings_text(s), ""),
            ("entropy end, loss end", f"{_mean(hist.entropy[-1]):.2f}, {_mean(hist.loss[-1]):.1e}", "")]


def _e3(case: FlowCase, hist: FlowHistory) -> list[tuple[str, str, str]]:
    ref = case.reference
    return [("max share (end)", f"{_mean(hist.max_share[-1]):.4f}", f"{ref['max_share'][0]} .. {ref['max_share'][1]}"),
            ("dominant column norm start -> end", f"{_mean(hist.dominant_norm[0]):.2f} -> "
                                                 f"{_mean(hist.dominant_norm[-1]):.2f}", _arrow(ref["dominant_norm"])),
            ("median column norm (end)", f"{_mean(median(hist.value_norms[-1])):.3f}", f"~{ref['median_norm']:g}")]


def _e4(case: FlowCase, hist: FlowHistory) -> list[tuple[str, str, str]]:
    ent = hist.entropy[-1].reshape(-1)
    return [("final entropy (log 20 = 3.00), mean [min, max] over seeds",
             f"{_mean(ent):.2f} [{float(ent.min()):.2f}, {float(ent.max()):.2f}]", f"{case.reference['entropy']:.2f}"),
            ("final loss", f"{_mean(hist.loss[-1]):.1e}", "")]


def _e5(case: FlowCase, hist: FlowHistory) -> list[tuple[str, str, str]]:
    return [("KL(p* || softmax(beta)) (end)", f"{_mean(hist.loss[-1]):.1e}", f"~{case.reference['kl']:.0e}"),
            ("max share (end)", f"{_mean(hist.max_share[-1]):.3f}", f"~{case.reference['max_share']:g}")]


SUMMARIES = {"E1": _e1, "E2": _e2, "E3": _e3, "E4": _e4, "E5": _e5}
