"""Multi-head value-softmax self-attention ``V softmax(Q K^T / sqrt(d))`` with alternative normalisations."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from softdiff.nets.activations import EPS, relu_normalize


def _softmax(logits: Tensor) -> Tensor:
    return torch.softmax(logits, dim=-1)


def _sigmoid(logits: Tensor) -> Tensor:
    # Unnormalised; the -log(N) bias keeps the total weight O(1) at init (sigmoid-attention practice).
    return torch.sigmoid(logits - math.log(logits.shape[-1]))


def _sigmoid_norm(logits: Tensor) -> Tensor:
    s = torch.sigmoid(logits)
    return s / (s.sum(-1, keepdim=True) + EPS)


# relu_norm is unscaled here (rows on the simplex, like softmax); the activation of the same name is m times it.
# Masked logits are -inf, which every map sends to weight 0.
ATTENTION_NORMALIZATIONS = {"softmax": _softmax, "sigmoid": _sigmoid, "sigmoid_norm": _sigmoid_norm,
                            "relu_norm": relu_normalize}


class SelfAttention(nn.Module):
    """Self-attention over tokens (B, N, dim) with ``num_heads`` heads and a choice of score normalisation.

    ``softmax`` without probabilities requested runs ``F.scaled_dot_product_attention`` (the fused path); the
    other maps run in chunks of ``query_chunk`` queries beyond that many tokens (memory O(chunk x N));
    ``forward(x, return_probs=True)`` or ``record_probs = True`` computes the probabilities explicitly
    (the probes read ``last_probs``). ``num_special_tokens`` marks register/sink tokens at positions 0..R-1.
    ``causal=True`` lets query ``i`` see keys ``0..i`` only (weight exactly 0 on later keys, for every map).
    """

    def __init__(self, dim: int, num_heads: int = 4, normalization: str = "softmax", qkv_bias: bool = True,
                 dropout: float = 0.0, causal: bool = False):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim={dim} must be divisible by num_heads={num_heads}")
        if normalization not in ATTENTION_NORMALIZATIONS:
            raise ValueError(f"unknown attention normalization {normalization!r}; "
                             f"choose one of: {', '.join(ATTENTION_NORMALIZATIONS)}")
        self.num_heads, self.head_dim, self.normalization = num_heads, dim // num_heads, normalization
        self.causal = causal
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.dropout = dropout
        self.record_probs = False
        self.last_probs: Tensor | None = None
        self.num_special_tokens = 0
        # Non-softmax maps have no fused kernel: beyond this many tokens they run in query chunks (``_chunked``);
        # at or below it (every shipped config: 49-65 tokens) the (B, heads, N, N) matrix is formed at once.
        self.query_chunk = 1024

    def attention_probs(self, q: Tensor, k: Tensor, first_query: int = 0) -> Tensor:
        """Normalised attention weights (B, heads, N_q, N_k) from per-head queries and keys; the queries are rows
        ``first_query ..`` of the sequence (for the causal mask of a chunk of them)."""
        logits = q @ k.transpose(-2, -1) / math.sqrt(self.head_dim)
        if self.causal:
            n_q, n_k = logits.shape[-2:]
            later = torch.ones(n_q, n_k, dtype=torch.bool, device=logits.device).triu(1 + first_query)
            logits = logits.masked_fill(later, float("-inf"))
        return ATTENTION_NORMALIZATIONS[self.normalization](logits)

    def _chunked(self, q: Tensor, k: Tensor, v: Tensor, drop: float) -> Tensor:
        """``probs @ v`` a chunk of ``query_chunk`` queries at a time, each chunk recomputed in the backward pass
        (activation checkpointing): memory O(chunk x N) instead of O(N^2). Every normalisation is row-wise, so the
        rows of a chunk are those of the whole matrix."""
        from torch.utils.checkpoint import checkpoint

        def rows(qc: Tensor, k: Tensor, v: Tensor, first: int) -> Tensor:
            return F.dropout(self.attention_probs(qc, k, first), drop, self.training) @ v

        outs = []
        for first in range(0, q.shape[-2], self.query_chunk):
            qc = q[..., first:first + self.query_chunk, :]
            outs.append(checkpoint(rows, qc, k, v, first, use_reentrant=False) if torch.is_grad_enabled()
                        else rows(qc, k, v, first))
        return torch.cat(outs, dim=-2)

    def forward(self, x: Tensor, return_probs: bool = False) -> Tensor | tuple[Tensor, Tensor]:
        q, k, v = rearrange(self.qkv(x), "b n (three h d) -> three b h n d", three=3, h=self.num_heads)
        drop = self.dropout if self.training else 0.0
        if self.normalization == "softmax" and not (return_probs or self.record_probs):
            out, probs = F.scaled_dot_product_attention(q, k, v, dropout_p=drop, is_causal=self.causal), None
        elif not (return_probs or self.record_probs) and q.shape[-2] > self.query_chunk:
            out, probs = self._chunked(q, k, v, drop), None
        else:
            probs = self.attention_probs(q, k)
            out = F.dropout(probs, drop, self.training) @ v
        if self.record_probs:
            self.last_probs = probs.detach()
        out = self.proj(rearrange(out, "b h n d -> b n (h d)"))
        return (out, probs) if return_probs else out


# The theory's name (value-softmax attention, docs/theory.md 3), kept for code that knows it by that name.
ValueSoftmaxAttention = SelfAttention
