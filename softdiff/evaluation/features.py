"""A small digits classifier as a download-free feature extractor for FID / KID (torchmetrics), plus the
classifier's confidence and class-balance scores of generated images.

Train it once per dataset with ``softdiff eval --train-classifier`` (or let the first use train it);
the weights and the held-out accuracy are stored together in one safetensors file.
"""
from __future__ import annotations

import math
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from softdiff.errors import DataError, check_positive
from softdiff.evaluation import metrics

FEATURE_DATASETS = ("digits",)


class DigitsClassifier(nn.Module):
    """MLP on flattened 8x8 grey images in [0, 1]; ``features`` is the penultimate layer (FID / KID space)."""

    def __init__(self, in_dim: int = 64, hidden: int = 128, feature_dim: int = 64, num_classes: int = 10):
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(in_dim, hidden), nn.GELU(), nn.Linear(hidden, feature_dim),
                                  nn.GELU())
        self.head = nn.Linear(feature_dim, num_classes)
        self.num_features = feature_dim  # torchmetrics reads this attribute of a custom feature extractor

    def features(self, images: Tensor) -> Tensor:
        return self.body(images.to(self.head.weight.dtype))

    def forward(self, images: Tensor) -> Tensor:
        """Class logits."""
        return self.head(self.features(images))


class _FeatureView(nn.Module):
    """The classifier seen by torchmetrics: images -> penultimate features."""

    def __init__(self, classifier: DigitsClassifier):
        super().__init__()
        self.classifier = classifier
        self.num_features = classifier.num_features

    def forward(self, images: Tensor) -> Tensor:
        return self.classifier.features(images)


def digits_split(seed: int = 0, test_fraction: float = 0.25) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """sklearn's digits in [0, 1] as (N, 1, 8, 8), split by a stratified, seeded shuffle: x_tr, y_tr, x_te, y_te."""
    from sklearn.model_selection import train_test_split

    from softdiff.data.images import load_digits_images

    images, labels = load_digits_images()
    idx_tr, idx_te = train_test_split(torch.arange(len(labels)).numpy(), test_size=test_fraction,
                                      random_state=seed, stratify=labels.numpy())
    return images[idx_tr], labels[idx_tr], images[idx_te], labels[idx_te]


def train_classifier(seed: int = 0, epochs: int = 30, batch_size: int = 128, lr: float = 3e-3,
                     noise_std: float = 0.05) -> tuple[DigitsClassifier, float]:
    """Train the digits classifier reproducibly (no global RNG use); returns it and its held-out accuracy.

    Small Gaussian pixel noise during training keeps the features stable on imperfect generated images.
    """
    check_positive("epochs", epochs)
    check_positive("batch_size", batch_size)
    x_tr, y_tr, x_te, y_te = digits_split(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)  # nn.Linear draws its init from the global RNG; fork_rng restores it afterwards
        model = DigitsClassifier()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matmuls: threads only add overhead (measured 0.5 s vs 37 s on 2 busy cores)
    try:
        return _fit(model, x_tr, y_tr, x_te, y_te, seed, epochs, batch_size, lr, noise_std)
    finally:
        torch.set_num_threads(threads)


def _fit(model: DigitsClassifier, x_tr: Tensor, y_tr: Tensor, x_te: Tensor, y_te: Tensor, seed: int, epochs: int,
         batch_size: int, lr: float, noise_std: float) -> tuple[DigitsClassifier, float]:
    g = torch.Generator().manual_seed(seed + 1)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs * math.ceil(len(x_tr) / batch_size))
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(x_tr), generator=g)
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            x = x_tr[idx] + noise_std * torch.randn(x_tr[idx].shape, generator=g)
            loss = nn.functional.cross_entropy(model(x), y_tr[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    model.eval()
    return model, accuracy(model, x_te, y_te)


@torch.no_grad()
def accuracy(model: DigitsClassifier, images: Tensor, labels: Tensor) -> float:
    """Fraction of ``images`` classified as ``labels``."""
    return float((model(images).argmax(-1) == labels).float().mean())


def save_classifier(model: DigitsClassifier, path: str | Path, test_accuracy: float, dataset: str = "digits") -> None:
    """Weights plus metadata (dataset, held-out accuracy) in one safetensors file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {"dataset": dataset, "test_accuracy": f"{test_accuracy:.6f}",
            "feature_dim": str(model.num_features)}
    from softdiff.safe_io import atomic_path

    with atomic_path(path) as tmp:
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp), metadata=meta)


def load_classifier(path: str | Path) -> tuple[DigitsClassifier, dict]:
    """The classifier and its metadata from a file written by :func:`save_classifier`."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise DataError(f"feature classifier '{path}' does not exist; train it with "
                        f"`softdiff eval --train-classifier feature_classifier={path}`.")
    try:
        state = load_file(str(path))
        with safe_open(str(path), "pt") as f:
            meta = dict(f.metadata() or {})
        model = DigitsClassifier(feature_dim=int(meta.get("feature_dim", 64)))
        model.load_state_dict(state)
    except Exception as err:  # safetensors raises several types for corrupt files
        raise DataError(f"feature classifier '{path}' could not be loaded: {str(err).splitlines()[0]}") from None
    return model.eval(), meta


def ensure_classifier(path: str | Path, seed: int = 0) -> tuple[DigitsClassifier, dict]:
    """Load the classifier at ``path``, training and saving it first if the file is missing."""
    path = Path(path)
    if not path.is_file():
        model, acc = train_classifier(seed)
        save_classifier(model, path, acc)
    return load_classifier(path)


def _check_images(images: Tensor, name: str) -> Tensor:
    if images.dim() != 4 or tuple(images.shape[1:]) != (1, 8, 8):
        raise DataError(f"{name} must have shape (N, 1, 8, 8), got {tuple(images.shape)}.")
    if not torch.isfinite(images).all():
        raise DataError(f"{name} holds NaN or inf values.")
    return images.float()


@torch.no_grad()
def fid_kid(classifier: DigitsClassifier, real: Tensor, fake: Tensor, kid_subset_size: int | None = None,
            kid_subsets: int = 50, seed: int = 0) -> dict[str, float]:
    """FID and KID (mean, std over subsets) of ``fake`` vs ``real`` images in the classifier's feature space."""
    from torchmetrics.image.fid import FrechetInceptionDistance

    real, fake = _check_images(real, "real images"), _check_images(fake, "fake images")
    view = _FeatureView(classifier).eval()
    fid = FrechetInceptionDistance(feature=view, normalize=True, input_img_size=(1, 8, 8))
    fid.set_dtype(torch.float64)
    subset = kid_subset_size or min(len(real), len(fake), 500)
    return metrics.fid_kid(fid, view, real, fake, kid_subsets, subset, seed, normalize=True)


@torch.no_grad()
def classifier_scores(classifier: DigitsClassifier, images: Tensor) -> dict[str, float]:
    """``confidence``: mean top-class probability; ``class_balance``: entropy of the predicted-class histogram
    divided by log(#classes) (1 = every class equally often, 0 = one class only)."""
    images = _check_images(images, "images")
    probs = torch.softmax(classifier(images), dim=-1)
    counts = torch.bincount(probs.argmax(-1), minlength=probs.shape[1]).double()
    freq = counts / counts.sum()
    entropy = -(freq[freq > 0] * freq[freq > 0].log()).sum()
    return {"confidence": float(probs.max(-1).values.mean()),
            "class_balance": float(entropy / math.log(probs.shape[1]))}


@torch.no_grad()
def score_samples(classifier: DigitsClassifier, images: Tensor) -> dict:
    """Confidence, class balance, each class's share of the predictions, and FID / KID against the real digits."""
    from softdiff.data.images import load_digits_images

    images = _check_images(images, "samples")
    counts = torch.bincount(classifier(images).argmax(-1), minlength=10)
    return {"num_samples": len(images), **classifier_scores(classifier, images),
            "class_shares": [round(float(c) / len(images), 4) for c in counts],
            **fid_kid(classifier, load_digits_images()[0], images)}


def load_samples(path: str) -> Tensor:
    """The ``samples`` array of a ``softdiff sample`` .npz (no pickled objects are loaded)."""
    import numpy as np

    try:
        with np.load(path, allow_pickle=False) as data:  # no pickled objects: nothing in the file can run
            return torch.from_numpy(np.asarray(data["samples"], dtype=np.float32))
    except (OSError, ValueError, KeyError) as err:
        raise DataError(f"--score '{path}' is not a samples file from softdiff sample (.npz with key 'samples'): "
                        f"{str(err).splitlines()[0].rstrip('.') if str(err) else type(err).__name__}.") from None
