"""A small pre-LayerNorm transformer built from :class:`SelfAttention` (the authors' ``TransformerLM``
shape: token embedding, optional positional embedding added or concatenated, blocks, final LayerNorm, linear head)."""
from __future__ import annotations

import torch
from torch import Tensor, nn

from softdiff.nets.attention import SelfAttention

POSITIONAL = ("concat", "add", "no")


class Block(nn.Module):
    def __init__(self, dim: int, heads: int, mlp_ratio: float, normalization: str, causal: bool):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = SelfAttention(dim, heads, normalization, causal=causal)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class SinkTransformer(nn.Module):
    """Logits (B, N, out_dim) for tokens (B, N); ``layers`` are the blocks (the probes hook their outputs)."""

    def __init__(self, vocab_size: int, out_dim: int, dim: int = 128, num_layers: int = 2, num_heads: int = 4,
                 mlp_ratio: float = 4.0, normalization: str = "softmax", causal: bool = True,
                 positional: str = "concat", max_len: int = 64):
        super().__init__()
        if positional not in POSITIONAL:
            raise ValueError(f"positional={positional!r} must be one of: {', '.join(POSITIONAL)}")
        self.positional = positional
        tok_dim = dim // 2 if positional == "concat" else dim
        self.embed = nn.Embedding(vocab_size, tok_dim)
        self.pos = nn.Embedding(max_len, dim - tok_dim if positional == "concat" else dim) \
            if positional != "no" else None
        self.layers = nn.ModuleList(Block(dim, num_heads, mlp_ratio, normalization, causal) for _ in range(num_layers))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, out_dim)

    def forward(self, tokens: Tensor) -> Tensor:
        x = self.embed(tokens)
        if self.pos is not None:
            p = self.pos(torch.arange(tokens.shape[1], device=tokens.device)).expand(len(tokens), -1, -1)
            x = torch.cat([x, p], -1) if self.positional == "concat" else x + p
        for block in self.layers:
            x = block(x)
        return self.head(self.norm(x))
