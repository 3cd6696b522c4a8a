"""FID / KID on Inception-v3 pool features, the standard ones for real image datasets (torchmetrics + torch-fidelity).

The network is torch-fidelity's port of the 2015-12-05 TensorFlow Inception that published FIDs use. Its weights
(about 100 MB) are fetched only when asked (``allow_download=True``); they live in torch's hub cache and are
read with ``torch.load(weights_only=True)``, so no code stored in the file can run.
"""
from __future__ import annotations

from pathlib import Path
from unittest import mock

import torch
from torch import Tensor, nn

from softdiff.errors import DataError
from softdiff.evaluation.metrics import fid_kid
from softdiff.devices import device_of

WEIGHTS_URL = ("https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/"
               "weights-inception-2015-12-05-6726825d.pth")
WEIGHTS_HASH_PREFIX = "6726825d"


def inception_weights_path() -> Path:
    """Where the Inception weights are looked for (and downloaded to): torch's hub checkpoint cache."""
    return Path(torch.hub.get_dir()) / "checkpoints" / WEIGHTS_URL.rsplit("/", 1)[1]


def inception_network(state_dict: dict[str, Tensor] | None = None, allow_download: bool = False) -> nn.Module:
    """torchmetrics' Inception-v3 (2048 pool features per image, uint8 RGB input) with the given or cached weights."""
    from torchmetrics.image.fid import NoTrainInceptionV3

    try:
        import torch_fidelity.feature_extractor_inceptionv3 as fidelity_inception
    except ImportError:
        raise DataError("Inception FID needs the torch-fidelity package: pip install torch-fidelity.") from None
    if state_dict is None:
        path = inception_weights_path()
        if not path.is_file():
            if not allow_download:
                raise DataError(f"the Inception-v3 weights for FID are not at '{path}'; allow the download "
                                f"(eval.inception_download=true, needs a network) or place {WEIGHTS_URL} there.")
            path.parent.mkdir(parents=True, exist_ok=True)
            torch.hub.download_url_to_file(WEIGHTS_URL, str(path), hash_prefix=WEIGHTS_HASH_PREFIX)
        try:
            state_dict = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # truncated or foreign file
            raise DataError(f"Inception weights '{path}' could not be read: {str(err).splitlines()[0]}") from None
    # torch-fidelity would unpickle the cached file itself (weights_only=False): hand it the safely read tensors.
    with mock.patch.object(fidelity_inception, "load_state_dict_from_url", lambda *args, **kwargs: state_dict):
        return NoTrainInceptionV3(name="inception-v3-compat", features_list=["2048"])


class InceptionFeatures(nn.Module):
    """Images in [0, 1] (N, 1 or 3, H, W) -> Inception pool features (N, 2048); grey images are repeated to RGB."""

    num_features = 2048  # read by torchmetrics for a custom feature extractor

    def __init__(self, network: nn.Module):
        super().__init__()
        self.network = network

    def forward(self, images: Tensor) -> Tensor:
        rgb = images.expand(-1, 3, -1, -1) if images.shape[1] == 1 else images
        return self.network((rgb.clamp(0, 1) * 255).round().to(torch.uint8))


@torch.no_grad()
def _features(features: InceptionFeatures, images: Tensor, name: str, batch_size: int) -> Tensor:
    if images.dim() != 4 or images.shape[1] not in (1, 3) or not torch.isfinite(images).all():
        raise DataError(f"{name} must be finite (N, 1 or 3, H, W) tensors in [0, 1], got {tuple(images.shape)}.")
    device = device_of(features)  # the images stay on the CPU; the network may be on a GPU
    return torch.cat([features(images[i:i + batch_size].float().to(device)).cpu()
                      for i in range(0, len(images), batch_size)])


@torch.no_grad()
def inception_fid_kid(real: Tensor, fake: Tensor, features: InceptionFeatures, kid_subset_size: int | None = None,
                      kid_subsets: int = 50, seed: int = 0, batch_size: int = 64) -> dict[str, float]:
    """FID and KID (mean, std) of ``fake`` vs ``real`` images in [0, 1] on Inception pool features."""
    real_f = _features(features, real, "real images", batch_size)
    fake_f = _features(features, fake, "fake images", batch_size)
    return fid_kid(real_f, fake_f, kid_subsets, kid_subset_size or min(len(real), len(fake), 1000), seed)
