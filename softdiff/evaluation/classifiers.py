"""Download-free feature classifiers, one per labelled dataset: trained on its training split, checked on its
held-out split, stored with that accuracy in one safetensors file. Their penultimate layer is the feature space
of FID / KID (``softdiff.evaluation.features``); their class probabilities give confidence and class shares.

Fashion-MNIST's classifier ships with softdiff (``weights/``): FID is only comparable between machines when the
features are the same, so every user scores in the same ones. Datasets without shipped weights train theirs on
first use and cache it under ``cache_dir()/features/`` (``SOFTDIFF_CACHE``, else ``$XDG_CACHE_HOME/softdiff``, else
``~/.cache/softdiff``); ``softdiff eval --train-classifier`` retrains one (into the cache, never over shipped weights).
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from softdiff.data import make_dataset
from softdiff.data.images import load_digits_images
from softdiff.errors import DataError, check_positive
from softdiff.safe_io import atomic_path, check_output_file


class FeatureClassifier(nn.Module):
    """``body`` maps images of ``image_shape`` to ``num_features`` features (the FID / KID space), ``head`` to
    class logits."""

    image_shape: tuple[int, int, int]
    body: nn.Module
    head: nn.Linear
    num_features: int  # torchmetrics reads this attribute of a custom feature extractor

    def features(self, images: Tensor) -> Tensor:
        return self.body(images.to(self.head.weight.dtype))

    def forward(self, images: Tensor) -> Tensor:
        """Class logits."""
        return self.head(self.features(images))


class DigitsClassifier(FeatureClassifier):
    """MLP on flattened 8x8 grey images in [0, 1]."""

    image_shape = (1, 8, 8)

    def __init__(self, in_dim: int = 64, hidden: int = 128, feature_dim: int = 64, num_classes: int = 10):
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(in_dim, hidden), nn.GELU(), nn.Linear(hidden, feature_dim),
                                  nn.GELU())
        self.head = nn.Linear(feature_dim, num_classes)
        self.num_features = feature_dim


class ConvClassifier(FeatureClassifier):
    """Two conv-BN-GELU-pool stages on 28x28 grey images in [0, 1], then a ``feature_dim`` GELU layer (the
    FID / KID space) and the class head."""

    image_shape = (1, 28, 28)

    def __init__(self, feature_dim: int = 128, num_classes: int = 10, channels: tuple[int, int] = (32, 64)):
        super().__init__()
        c1, c2 = channels
        self.body = nn.Sequential(
            nn.Conv2d(1, c1, 3, padding=1), nn.BatchNorm2d(c1), nn.GELU(), nn.MaxPool2d(2),
            nn.Conv2d(c1, c2, 3, padding=1), nn.BatchNorm2d(c2), nn.GELU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(c2 * 7 * 7, feature_dim), nn.GELU())
        self.head = nn.Linear(feature_dim, num_classes)
        self.num_features = feature_dim


@dataclass(frozen=True)
class ClassifierRecipe:
    """How one dataset's classifier is built and trained."""

    network: type[FeatureClassifier]
    epochs: int
    lr: float
    flips: bool          # left-right flips keep the label (clothes: yes; digits: no)
    warmup: bool = False  # one-cycle learning rate (a warm start, measured +0.5-1% on Fashion-MNIST) vs cosine


RECIPES = {
    "digits": ClassifierRecipe(DigitsClassifier, epochs=30, lr=3e-3, flips=False),
    "fashion_mnist": ClassifierRecipe(ConvClassifier, epochs=5, lr=4e-3, flips=True, warmup=True),
    "mnist": ClassifierRecipe(ConvClassifier, epochs=3, lr=4e-3, flips=False, warmup=True),
}
FEATURE_DATASETS = tuple(RECIPES)
NETWORKS = {cls.__name__: cls for cls in (DigitsClassifier, ConvClassifier)}


def cache_dir() -> Path:
    """Where softdiff caches what it trains for evaluation (``SOFTDIFF_CACHE`` > ``XDG_CACHE_HOME`` > ~/.cache)."""
    if os.environ.get("SOFTDIFF_CACHE"):
        return Path(os.environ["SOFTDIFF_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "softdiff"


SHIPPED = Path(__file__).with_name("weights")  # classifiers trained once by `softdiff eval --train-classifier`


def shipped_classifier(dataset: str) -> Path | None:
    """The classifier file softdiff ships for ``dataset``, if it ships one."""
    path = SHIPPED / f"{dataset}_classifier.safetensors"
    return path if path.is_file() else None


def cached_classifier(dataset: str) -> Path:
    """Where ``dataset``'s classifier is cached when trained on this machine."""
    return cache_dir() / "features" / f"{dataset}_classifier.safetensors"


def classifier_path(dataset: str, path: str | Path | None = None) -> Path:
    """``path`` when given, else the classifier shipped for ``dataset``, else the cached one."""
    return Path(path) if path else shipped_classifier(dataset) or cached_classifier(dataset)


def digits_split(seed: int = 0, test_fraction: float = 0.25) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """sklearn's digits in [0, 1] as (N, 1, 8, 8), split by a stratified, seeded shuffle: x_tr, y_tr, x_te, y_te."""
    from sklearn.model_selection import train_test_split

    images, labels = load_digits_images()
    idx_tr, idx_te = train_test_split(torch.arange(len(labels)).numpy(), test_size=test_fraction,
                                      random_state=seed, stratify=labels.numpy())
    return images[idx_tr], labels[idx_tr], images[idx_te], labels[idx_te]


def labelled_splits(dataset: str, seed: int = 0, root: str | Path = "data",
                    path: str | None = None) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Training and held-out images (float in [0, 1]) and labels of ``dataset``: x_tr, y_tr, x_te, y_te
    (digits: a seeded split of the 1,797 images; MNIST / Fashion-MNIST: their train and test files)."""
    if dataset == "digits":
        return digits_split(seed)
    train, test = (make_dataset(dataset, root=root, path=path, split=s) for s in ("train", "test"))
    return train.data_tensor(), train.labels, test.data_tensor(), test.labels


def train_classifier(seed: int = 0, epochs: int | None = None, batch_size: int = 128, lr: float | None = None,
                     noise_std: float = 0.05, dataset: str = "digits",
                     splits: tuple[Tensor, Tensor, Tensor, Tensor] | None = None) -> tuple[FeatureClassifier, float]:
    """Train ``dataset``'s classifier reproducibly (no global RNG use); returns it and its held-out accuracy.

    Small Gaussian pixel noise during training keeps the features stable on imperfect generated images.
    ``splits``: the data (``labelled_splits(dataset)`` when None).
    """
    if dataset not in RECIPES:
        raise DataError(f"no feature classifier for dataset '{dataset}'; choose one of: {', '.join(RECIPES)}.")
    recipe = RECIPES[dataset]
    epochs, lr = epochs or recipe.epochs, lr or recipe.lr
    check_positive("epochs", epochs)
    check_positive("batch_size", batch_size)
    x_tr, y_tr, x_te, y_te = splits if splits is not None else labelled_splits(dataset, seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)  # layers draw their init from the global RNG; fork_rng restores it afterwards
        model = recipe.network()
    threads = torch.get_num_threads()
    if recipe.network is DigitsClassifier:
        torch.set_num_threads(1)  # tiny matmuls: threads only add overhead (measured 0.5 s vs 37 s on 2 busy cores)
    try:
        _fit(model, x_tr, y_tr, seed, epochs, batch_size, lr, noise_std, recipe.flips, recipe.warmup)
    finally:
        torch.set_num_threads(threads)
    return model, accuracy(model, x_te, y_te)


def _fit(model: FeatureClassifier, x_tr: Tensor, y_tr: Tensor, seed: int, epochs: int, batch_size: int, lr: float,
         noise_std: float, flips: bool, warmup: bool) -> None:
    g = torch.Generator().manual_seed(seed + 1)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    total = epochs * math.ceil(len(x_tr) / batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, lr, total_steps=total) if warmup \
        else torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(x_tr), generator=g)
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            x = x_tr[idx].float() + noise_std * torch.randn(x_tr[idx].shape, generator=g)
            if flips:
                x = torch.where((torch.rand(len(idx), generator=g) < 0.5)[:, None, None, None], x.flip(-1), x)
            loss = nn.functional.cross_entropy(model(x), y_tr[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    model.eval()


@torch.no_grad()
def predict_proba(model: FeatureClassifier, images: Tensor, chunk: int = 1000) -> Tensor:
    """Class probabilities of ``images``, ``chunk`` at a time (bounded memory for 10^4+ images)."""
    return torch.cat([torch.softmax(model(images[i:i + chunk]), -1) for i in range(0, len(images), chunk)])


def accuracy(model: FeatureClassifier, images: Tensor, labels: Tensor) -> float:
    """Fraction of ``images`` classified as ``labels``."""
    return float((predict_proba(model, images).argmax(-1) == labels).float().mean())


def save_classifier(model: FeatureClassifier, path: str | Path, test_accuracy: float, dataset: str = "digits") -> None:
    """Weights plus metadata (dataset, network, held-out accuracy) in one safetensors file, written atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {"dataset": dataset, "test_accuracy": f"{test_accuracy:.6f}", "feature_dim": str(model.num_features),
            "network": type(model).__name__}
    with atomic_path(path) as tmp:
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp), metadata=meta)


def load_classifier(path: str | Path, dataset: str | None = None) -> tuple[FeatureClassifier, dict]:
    """The classifier and its metadata from a file written by :func:`save_classifier` (checked to be
    ``dataset``'s when that is given)."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise DataError(f"feature classifier '{path}' does not exist; train it with "
                        f"`softdiff eval --train-classifier feature_classifier={path}`.")
    try:
        with safe_open(str(path), "pt") as f:
            meta = dict(f.metadata() or {})
        network = NETWORKS.get(meta.get("network", "DigitsClassifier"))
        if network is None:
            raise ValueError(f"unknown network {meta['network']!r}")
        model = network(feature_dim=int(meta.get("feature_dim", 64)))
        model.load_state_dict(load_file(str(path)))
    except Exception as err:  # safetensors raises several types for corrupt files
        raise DataError(f"feature classifier '{path}' could not be loaded: {str(err).splitlines()[0]}") from None
    if dataset is not None and meta.get("dataset", "digits") != dataset:
        raise DataError(f"feature classifier '{path}' was trained on '{meta.get('dataset', 'digits')}', not on "
                        f"'{dataset}'; point feature_classifier at a {dataset} classifier or leave it unset.")
    return model.eval(), meta


def check_classifier_writable(path: str | Path, key: str = "feature_classifier") -> None:
    """ConfigError unless a classifier can be saved at ``path`` (its folder tried by a real write), so a bad path
    is found before minutes of training."""
    check_output_file(key, Path(path))


def ensure_classifier(path: str | Path | None = None, seed: int = 0, dataset: str = "digits",
                      splits: tuple[Tensor, Tensor, Tensor, Tensor] | None = None) -> tuple[FeatureClassifier, dict]:
    """``dataset``'s classifier at ``path`` (default: the cache), training and saving it first if missing."""
    path = classifier_path(dataset, path)
    if not path.is_file():
        check_classifier_writable(path)
        model, acc = train_classifier(seed, dataset=dataset, splits=splits)
        save_classifier(model, path, acc, dataset)
    return load_classifier(path, dataset)
