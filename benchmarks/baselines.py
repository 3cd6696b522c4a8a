"""The diffusers baseline the digits benchmarks compare against (run as ``python benchmarks/bench_*.py``)."""
from __future__ import annotations

from diffusers import UNet2DModel


def unet() -> UNet2DModel:
    """diffusers' UNet2DModel for 8x8 digits: channels 32/64, one ResNet block per level, attention at 4x4."""
    return UNet2DModel(sample_size=8, in_channels=1, out_channels=1, block_out_channels=(32, 64), layers_per_block=1,
                       down_block_types=("DownBlock2D", "AttnDownBlock2D"),
                       up_block_types=("AttnUpBlock2D", "UpBlock2D"))
