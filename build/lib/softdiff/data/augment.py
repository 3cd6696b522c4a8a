"""Augmentation drawn from each micro-batch's (seed, step) stream, so that resume stays exact."""
from __future__ import annotations

import numpy as np
import torch
from torch import Tensor


def flip_mask(seed: int, step: int, micro: int, n: int) -> Tensor:
    """Which of the global batch's ``n`` examples are flipped left-right: words 2-3 of the same SeedSequence
    whose words 0-1 seed the batch's indices and noise, so turning the flip on changes no other draw."""
    state = np.random.SeedSequence([seed, step, micro]).generate_state(4)
    g = torch.Generator().manual_seed(int(state[2]) << 32 | int(state[3]))
    return torch.rand(n, generator=g) < 0.5


def flip(x: Tensor, mask: Tensor) -> Tensor:
    """``x`` (n, C, H, W) with the examples where ``mask`` is true mirrored left-right."""
    return torch.where(mask.view(-1, *[1] * (x.dim() - 1)), x.flip(-1), x)
