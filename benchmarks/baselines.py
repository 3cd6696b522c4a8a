"""The diffusers baselines the benchmarks compare against (run as ``python benchmarks/bench_*.py``)."""
from __future__ import annotations

import torch
from diffusers import UNet2DModel

# 28x28: three levels (28, 14, 7), attention at 7x7; "small" and "medium" differ in width only.
UNET_28 = {"small": (32, 64, 64), "medium": (64, 128, 128)}


def unet(size: str = "small", sample_size: int = 8, num_classes: int | None = None):
    """diffusers' UNet2DModel. 8x8 digits: channels 32/64, one ResNet block per level, attention at 4x4. 28x28
    (``size`` in ``UNET_28``): one ResNet block per level, attention at the 7x7 level. With ``num_classes``, the
    UNet's own class embedding (added to the time embedding) conditions it, behind ``LabelledUNet``."""
    extra = {"num_class_embeds": num_classes + 1} if num_classes else {}  # one more row: the dropped label
    if sample_size == 8:
        net = UNet2DModel(sample_size=8, in_channels=1, out_channels=1, block_out_channels=(32, 64),
                          layers_per_block=1, down_block_types=("DownBlock2D", "AttnDownBlock2D"),
                          up_block_types=("AttnUpBlock2D", "UpBlock2D"), **extra)
    elif sample_size != 28 or size not in UNET_28:
        raise ValueError(f"no UNet baseline for {sample_size}x{sample_size} images of size {size!r}; "
                         f"28x28 sizes: {', '.join(UNET_28)}")
    else:
        net = UNet2DModel(sample_size=28, in_channels=1, out_channels=1, block_out_channels=UNET_28[size],
                          layers_per_block=1, down_block_types=("DownBlock2D", "DownBlock2D", "AttnDownBlock2D"),
                          up_block_types=("AttnUpBlock2D", "UpBlock2D", "UpBlock2D"), **extra)
    return LabelledUNet(net, num_classes) if num_classes else net


class LabelledUNet(torch.nn.Module):
    """A class-conditional UNet2DModel that takes softdiff's labels: NULL_LABEL (-1, a dropped label, and no
    labels at all) is the extra embedding row ``num_classes``, which label dropout trains as "no class"."""

    def __init__(self, net: UNet2DModel, num_classes: int):
        super().__init__()
        self.net, self.num_classes = net, num_classes

    def forward(self, sample, timestep, class_labels=None):
        if class_labels is None:
            class_labels = torch.full((sample.shape[0],), -1, dtype=torch.long, device=sample.device)
        return self.net(sample, timestep, class_labels=torch.where(class_labels < 0, self.num_classes, class_labels))
