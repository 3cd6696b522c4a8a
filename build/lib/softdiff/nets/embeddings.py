"""Embeddings of float diffusion times and of input coordinates."""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn


def timestep_tensor(timestep, batch: int, device, dtype=torch.float32) -> Tensor:
    """Float timesteps of shape (batch,) from a number, 0-d or 1-d tensor (fractional values allowed)."""
    t = torch.as_tensor(timestep, device=device)
    if not torch.is_floating_point(t):
        t = t.to(dtype)
    t = t.to(dtype).reshape(-1)
    return t.expand(batch) if t.numel() == 1 else t


def class_embedding(embedding: nn.Embedding, labels: Tensor) -> Tensor:
    """Embeddings of class labels; a negative label (the "no class" of classifier-free guidance) embeds as zero."""
    return embedding(labels.clamp(min=0)) * (labels >= 0).unsqueeze(-1).to(embedding.weight.dtype)


class SinusoidalTimeEmbedding(nn.Module):
    """Sinusoidal features of a float time, then a 2-layer MLP (the DDPM/transformer convention)."""

    def __init__(self, dim: int, freq_dim: int = 64, max_period: float = 10000.0):
        super().__init__()
        self.freq_dim, self.max_period = freq_dim, max_period
        self.mlp = nn.Sequential(nn.Linear(freq_dim, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, t: Tensor) -> Tensor:
        half = self.freq_dim // 2
        freqs = torch.exp(-math.log(self.max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
        args = t.float()[:, None] * freqs[None]
        emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
        return self.mlp(emb.to(self.mlp[0].weight.dtype))


class FourierFeatures(nn.Module):
    """Random Fourier features ``[x, sin(2 pi B x), cos(2 pi B x)]`` of input coordinates (fixed ``B``)."""

    def __init__(self, dim: int, num_features: int, scale: float = 1.0, seed: int = 0):
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        self.register_buffer("B", torch.randn(dim, num_features, generator=gen) * scale)
        self.out_dim = dim + 2 * num_features

    def forward(self, x: Tensor) -> Tensor:
        proj = 2 * math.pi * x @ self.B.to(x.dtype)
        return torch.cat([x, torch.sin(proj), torch.cos(proj)], dim=-1)
