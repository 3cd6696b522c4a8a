"""Stand-in images of a torchvision set's shape, for benchmarks and tests on machines without its files (CIFAR-10
is not on the development machine).

Smooth random colour fields whose mean colour depends on the class: a net has structure to learn (a colour per
label, low frequencies), so its loss falls as it does on real images, unlike white noise, whose only learnable
part is its mean. Nothing here depends on softdiff, so the same stand-in serves code checked out at any commit.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

CIFAR10_SHAPE = (3, 32, 32)
CIFAR10_TRAIN = 50_000
_CHUNK = 5_000  # images made at a time: bounds the float intermediate (CIFAR-10's 50,000 would be 600 MB)


def standin_images(n: int, shape: tuple[int, int, int] = CIFAR10_SHAPE, seed: int = 0,
                   num_classes: int = 10) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` uint8 images (n, C, H, W) and their int64 labels, a pure function of the arguments."""
    c, h, w = shape
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, num_classes, (n,), generator=g)
    palette = torch.rand(num_classes, c, 1, 1, generator=g)
    images = torch.empty((n, c, h, w), dtype=torch.uint8)
    for lo in range(0, n, _CHUNK):
        hi = min(n, lo + _CHUNK)
        coarse = torch.rand(hi - lo, c, 4, 4, generator=g)
        field = F.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=False)
        images[lo:hi] = ((0.5 * palette[labels[lo:hi]] + 0.5 * field) * 255).round().to(torch.uint8)
    return images, labels


def standin_loader(n: int = CIFAR10_TRAIN):
    """A replacement for ``softdiff.data.load_torchvision`` (same signature) that returns ``n`` stand-in images of
    CIFAR-10's shape for the training split and ``n // 5`` for the test split."""

    def load_torchvision(name: str, root, download: bool, train: bool = True):
        if name != "cifar10":
            raise ValueError(f"the stand-in has CIFAR-10's shape only, not {name}'s")
        return standin_images(n if train else max(1, n // 5), seed=0 if train else 1)

    return load_torchvision
