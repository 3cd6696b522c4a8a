"""Pictures of samples: image grids and 2-D scatter plots (training previews, ``softdiff sample``)."""
from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from torchvision.utils import save_image  # noqa: E402

from softdiff.safe_io import atomic_path, save_figure  # noqa: E402

MAX_GRID_IMAGES = 100


def save_picture(samples: torch.Tensor, path: Path, kind: str, data_range=(-4.0, 4.0), title: str = "",
                 reference: torch.Tensor | None = None) -> None:
    """An image grid of the first ``MAX_GRID_IMAGES`` (N, C, H, W in [0, 1]; images under 32 px enlarged) or a
    scatter plot (N, 2)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if kind == "image":
        samples = samples[:MAX_GRID_IMAGES].float()  # a readable picture however many samples were drawn
        if samples.shape[-1] < 32:  # enlarge tiny images (8x8 digits) so the grid is readable
            samples = torch.nn.functional.interpolate(samples, scale_factor=math.ceil(32 / samples.shape[-1]),
                                                      mode="nearest")
        with atomic_path(path) as tmp:
            save_image(samples, tmp, nrow=max(1, int(math.ceil(math.sqrt(len(samples))))), padding=2,
                       pad_value=0.5)
        return
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    if reference is not None:
        ax.scatter(reference[:, 0], reference[:, 1], s=2, alpha=0.3, c="tab:gray", label="data")
    ax.scatter(samples[:, 0], samples[:, 1], s=2, alpha=0.6, c="tab:blue", label="samples")
    lo, hi = data_range
    ax.set(xlim=(lo, hi), ylim=(lo, hi), aspect="equal", title=title or f"{len(samples)} samples",
           xlabel="$x_1$", ylabel="$x_2$")
    if reference is not None:
        ax.legend(loc="upper right", markerscale=4)
    fig.tight_layout()
    save_figure(fig, path, dpi=110)
    plt.close(fig)
