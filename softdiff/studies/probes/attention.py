"""Attention-sink and massive-activation probes (docs/theory.md 3.3) for trained score transformers.

The maths works on plain tensors: attention weights ``probs`` (B, heads, N_query, N_key) and residual streams
(B, N, dim). Scores are computed on each query row renormalised to sum 1 (a no-op for softmax and relu_norm)
so that unnormalised maps such as sigmoid attention sit on the same 1/N .. 1 scale; ``row_mass`` keeps the
raw total weight per row. Only non-special queries (positions ``num_special..N-1``) are scored. The hook layer
(:class:`AttentionRecorder`, :func:`probe_model`) feeds these functions from a model; ``probe_run`` of a
trained run folder is in :mod:`softdiff.studies.probes.run_folder`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from softdiff.nets.activations import EPS
from softdiff.nets.attention import SelfAttention

SINK_THRESHOLD = 0.9  # a head whose sink score exceeds this is a sink head (docs/theory.md 3.3)
# The per-run summary the comparison runner keeps and reports (keys of ProbeResult.layer_table), with labels.
PROBE_SUMMARY = {"entropy": "attention entropy (nats)", "sparsity": "mean max weight", "sink": "sink score",
                 "sink_heads": "sink-head fraction", "massive": "massive activation (max / median)"}


# ----------------------------------------------------------------------------------- maths on plain tensors
def _rows(probs: Tensor, num_special: int = 0) -> Tensor:
    """Non-special query rows renormalised to sum 1: (B, heads, Nq - R, Nk)."""
    if probs.ndim != 4:
        raise ValueError(f"attention weights must have shape (B, heads, N, N), got {tuple(probs.shape)}")
    p = probs[:, :, num_special:].abs().double()
    return p / (p.sum(-1, keepdim=True) + EPS)


def attention_entropy(probs: Tensor, num_special: int = 0) -> Tensor:
    """Mean entropy (nats) of the query rows, per head: (heads,); ``log N`` for uniform attention."""
    p = _rows(probs, num_special)
    return -torch.xlogy(p, p).sum(-1).mean((0, 2))


def sparsity_score(probs: Tensor, num_special: int = 0) -> Tensor:
    """Mean over queries of the largest attention weight, per head: (heads,); 1 one-hot, 1/N uniform."""
    return _rows(probs, num_special).max(-1).values.mean((0, 2))


def key_shares(probs: Tensor, num_special: int = 0) -> Tensor:
    """Average share of attention each key receives from the non-special queries: (heads, N_key)."""
    return _rows(probs, num_special).mean((0, 2))


def sink_score(probs: Tensor, num_special: int = 0) -> tuple[Tensor, Tensor]:
    """Share of attention on the most-attended key position, and that position, per head: ((heads,), (heads,))."""
    shares = key_shares(probs, num_special)
    best = shares.max(-1)
    return best.values, best.indices


def register_share(probs: Tensor, num_special: int) -> Tensor:
    """Share of attention the non-special queries put on any register token (positions 0..R-1), per head."""
    if num_special == 0:
        return torch.zeros(probs.shape[1], dtype=torch.float64)
    return key_shares(probs, num_special)[:, :num_special].sum(-1)


def row_mass(probs: Tensor, num_special: int = 0) -> Tensor:
    """Mean raw total weight per query row, per head (1 for normalised maps, free for sigmoid)."""
    return probs[:, :, num_special:].double().sum(-1).mean((0, 2))


def massive_activation(hidden: Tensor) -> tuple[float, int]:
    """Largest |activation| over the median |activation| of a residual stream (B, N, dim), and the token holding it."""
    if hidden.ndim != 3:
        raise ValueError(f"residual stream must have shape (B, N, dim), got {tuple(hidden.shape)}")
    mag = hidden.detach().abs().double()
    flat_max = int(mag.argmax())
    token = (flat_max // mag.shape[-1]) % mag.shape[1]
    return float(mag.max() / (mag.median() + EPS)), int(token)


# ------------------------------------------------------------------------------------------- hook layer
def attention_layers(model: nn.Module) -> list[nn.Module]:
    """Every value-softmax attention module of ``model``, in forward order."""
    return [m for m in model.modules() if isinstance(m, SelfAttention)]


class AttentionRecorder:
    """Context manager: record every attention layer's weights and every ``model.layers[i]`` output per forward."""

    def __init__(self, model: nn.Module):
        self.model = model
        self.attn = attention_layers(model)
        if not self.attn:
            raise ValueError(f"{type(model).__name__} has no SelfAttention layer to probe")
        self.blocks = list(getattr(model, "layers", []))
        self.probs: list[Tensor | None] = [None] * len(self.attn)
        self.hidden: list[Tensor | None] = [None] * len(self.blocks)
        self._handles: list[Any] = []
        self._saved: list[bool] = []

    def __enter__(self) -> "AttentionRecorder":
        self._saved = [m.record_probs for m in self.attn]
        for i, m in enumerate(self.attn):
            m.record_probs = True
            self._handles.append(m.register_forward_hook(self._keep_probs(i)))
        for i, block in enumerate(self.blocks):
            self._handles.append(block.register_forward_hook(self._keep_hidden(i)))
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        for m, saved in zip(self.attn, self._saved):
            m.record_probs = saved
            m.last_probs = None
        self._handles = []

    def _keep_probs(self, i: int):
        def hook(module, inputs, output):
            self.probs[i] = module.last_probs
        return hook

    def _keep_hidden(self, i: int):
        def hook(module, inputs, output):
            self.hidden[i] = (output[0] if isinstance(output, tuple) else output).detach()
        return hook


@dataclass
class ProbeResult:
    """Per diffusion timestep, layer and head: arrays (T, L, H); massive activations (T, L)."""

    timesteps: list[int]
    entropy: np.ndarray
    sparsity: np.ndarray
    sink: np.ndarray
    sink_key: np.ndarray
    register_share: np.ndarray
    row_mass: np.ndarray
    massive: np.ndarray
    massive_token: np.ndarray
    num_tokens: int
    num_special: int
    normalization: str
    threshold: float = SINK_THRESHOLD
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def sink_head_fraction(self) -> np.ndarray:
        """Fraction of heads per (timestep, layer) whose sink score exceeds ``threshold``: (T, L)."""
        return (self.sink > self.threshold).mean(-1)

    def layer_table(self) -> list[dict[str, float]]:
        """One row per layer, averaged over timesteps and heads."""
        return [{"layer": layer, "entropy": float(self.entropy[:, layer].mean()),
                 "sparsity": float(self.sparsity[:, layer].mean()), "sink": float(self.sink[:, layer].mean()),
                 "sink_heads": float(self.sink_head_fraction[:, layer].mean()),
                 "register_share": float(self.register_share[:, layer].mean()),
                 "row_mass": float(self.row_mass[:, layer].mean()),
                 "massive": float(self.massive[:, layer].mean())} for layer in range(self.entropy.shape[1])]

    def to_dict(self) -> dict[str, Any]:
        out = {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in self.__dict__.items()}
        out["sink_head_fraction"] = self.sink_head_fraction.tolist()
        out["layers"] = self.layer_table()
        out["log_num_tokens"] = math.log(self.num_tokens)
        return out


@torch.no_grad()
def probe_model(model: nn.Module, x0: Tensor, timesteps: Sequence[int], process,
                generator: torch.Generator | None = None, class_labels: Tensor | None = None,
                threshold: float = SINK_THRESHOLD) -> ProbeResult:
    """Probe ``model`` on ``x_t = alpha_t x0 + sigma_t eps`` at each timestep of ``process``
    (a ``softdiff.diffusion.process.ForwardProcess``)."""
    model.eval()
    rec = AttentionRecorder(model)
    R = int(getattr(rec.attn[0], "num_special_tokens", 0))
    stats: dict[str, list] = {k: [] for k in ("entropy", "sparsity", "sink", "sink_key", "register_share",
                                              "row_mass", "massive", "massive_token")}
    num_tokens = 0
    with rec:
        for t in timesteps:
            tt = torch.full((len(x0),), int(t), device=x0.device)
            noise = torch.randn(x0.shape, generator=generator, dtype=x0.dtype).to(x0.device)
            model(process.add_noise(x0, noise, tt), tt, class_labels)
            per_layer = {k: [] for k in stats}
            for probs in rec.probs:
                num_tokens = probs.shape[-1]
                score, key = sink_score(probs, R)
                per_layer["entropy"].append(attention_entropy(probs, R))
                per_layer["sparsity"].append(sparsity_score(probs, R))
                per_layer["sink"].append(score)
                per_layer["sink_key"].append(key)
                per_layer["register_share"].append(register_share(probs, R))
                per_layer["row_mass"].append(row_mass(probs, R))
            for hidden in rec.hidden:
                ratio, token = massive_activation(hidden)
                per_layer["massive"].append(ratio)
                per_layer["massive_token"].append(token)
            for k, values in per_layer.items():
                stats[k].append(torch.stack(values).cpu().numpy() if values and isinstance(values[0], Tensor)
                                else np.asarray(values))
    arrays = {k: np.stack(v) for k, v in stats.items()}
    norm = getattr(rec.attn[0], "normalization", "softmax")
    return ProbeResult(timesteps=[int(t) for t in timesteps], num_tokens=num_tokens, num_special=R,
                       normalization=norm, threshold=threshold, **arrays)
