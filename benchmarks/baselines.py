"""The diffusers baselines the benchmarks compare against (run as ``python benchmarks/bench_*.py``)."""
from __future__ import annotations

from diffusers import UNet2DModel

# 28x28: three levels (28, 14, 7), attention at 7x7; "small" and "medium" differ in width only.
UNET_28 = {"small": (32, 64, 64), "medium": (64, 128, 128)}


def unet(size: str = "small", sample_size: int = 8) -> UNet2DModel:
    """diffusers' UNet2DModel. 8x8 digits: channels 32/64, one ResNet block per level, attention at 4x4. 28x28
    (``size`` in ``UNET_28``): one ResNet block per level, attention at the 7x7 level."""
    if sample_size == 8:
        return UNet2DModel(sample_size=8, in_channels=1, out_channels=1, block_out_channels=(32, 64),
                           layers_per_block=1, down_block_types=("DownBlock2D", "AttnDownBlock2D"),
                           up_block_types=("AttnUpBlock2D", "UpBlock2D"))
    if sample_size != 28 or size not in UNET_28:
        raise ValueError(f"no UNet baseline for {sample_size}x{sample_size} images of size {size!r}; "
                         f"28x28 sizes: {', '.join(UNET_28)}")
    return UNet2DModel(sample_size=28, in_channels=1, out_channels=1, block_out_channels=UNET_28[size],
                       layers_per_block=1, down_block_types=("DownBlock2D", "DownBlock2D", "AttnDownBlock2D"),
                       up_block_types=("AttnUpBlock2D", "UpBlock2D", "UpBlock2D"))
