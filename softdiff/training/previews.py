"""Pictures of samples: image grids and 2-D scatter plots."""
from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from torchvision.utils import save_image  # noqa: E402

from softdiff.diffusion.sampling import sample  # noqa: E402
from softdiff.diffusion.schedulers import make_scheduler  # noqa: E402
from softdiff.safe_io import atomic_path, save_figure  # noqa: E402
from softdiff.training.checkpoints import ema_weights  # noqa: E402


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


@torch.no_grad()
def write_preview(model, ema, scheduler_config: dict, dataset, cfg, path: Path, device) -> None:
    """Sample with the EMA weights (restoring the live ones afterwards) and save the picture."""
    was_training = model.training
    model.eval()
    try:
        n = cfg.sample.num_samples if dataset.kind == "image" else max(cfg.sample.num_samples, 2000)
        labels = (torch.arange(n, device=device) % dataset.num_classes) if cfg.data.class_conditional else None
        with ema_weights(ema, model):
            x = sample(model, make_scheduler(cfg.sample.scheduler, scheduler_config), (n, *dataset.shape),
                       cfg.sample.steps, torch.Generator().manual_seed(cfg.train.seed), device, class_labels=labels,
                       guidance_scale=cfg.sample.guidance_scale if labels is not None else 1.0)
    finally:
        model.train(was_training)
    save_picture(dataset.from_model(x.cpu()), path, dataset.kind, dataset.data_range,
                 reference=dataset.data_tensor(2000, torch.Generator().manual_seed(0)) if dataset.kind == "vector"
                 else None)
