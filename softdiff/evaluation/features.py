"""FID / KID in a feature classifier's space (torchmetrics), and the classifier's confidence and class shares of
generated images, against each dataset's reference images (``softdiff.evaluation.classifiers`` owns the
classifiers)."""
from __future__ import annotations

import functools
import math
import weakref

import torch
from torch import Tensor

from softdiff.errors import DataError
from softdiff.evaluation import metrics
from softdiff.data.images import load_digits_images
from softdiff.evaluation.classifiers import FeatureClassifier, labelled_splits
from softdiff.devices import device_of


def _check_images(images: Tensor, name: str, shape: tuple[int, ...]) -> Tensor:
    if images.dim() != 4 or tuple(images.shape[1:]) != tuple(shape):
        raise DataError(f"{name} must have shape (N, {', '.join(map(str, shape))}), got {tuple(images.shape)}.")
    if len(images) == 0:
        raise DataError(f"{name} holds no images.")
    if not torch.isfinite(images).all():
        raise DataError(f"{name} holds NaN or inf values.")
    return images.float()


# classifier -> {id(images): (weak reference to images, their version, features)}: the 10,000 reference images
# pass through the classifier once per process, not once per FID (about 13 s each on two cores).
_MEMO: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


@torch.no_grad()
def image_features(classifier: FeatureClassifier, images: Tensor, name: str = "images") -> Tensor:
    """The classifier's penultimate features of ``images`` (N, F), 1,000 at a time; remembered while the same
    tensor lives unchanged."""
    memo = _MEMO.setdefault(classifier, {})
    hit = memo.get(id(images))
    if hit is not None and hit[0]() is images and hit[1] == images._version:
        return hit[2]
    checked = _check_images(images, name, classifier.image_shape)
    device = device_of(classifier)  # the images stay on the CPU; the classifier may be on a GPU
    features = torch.cat([classifier.features(chunk.to(device)).cpu() for chunk in checked.split(1000)])
    memo[id(images)] = (weakref.ref(images), images._version, features)
    weakref.finalize(images, memo.pop, id(images), None)
    return features


def _probabilities(classifier: FeatureClassifier, features: Tensor) -> Tensor:
    return torch.softmax(classifier.head(features.to(device_of(classifier))), -1).cpu()


@torch.no_grad()
def fid_kid(classifier: FeatureClassifier, real: Tensor, fake: Tensor, kid_subset_size: int | None = None,
            kid_subsets: int = 50, seed: int = 0) -> dict[str, float]:
    """FID and KID (mean, std over subsets) of ``fake`` vs ``real`` images in the classifier's feature space."""
    if min(len(real), len(fake)) < 2:
        raise DataError(f"FID needs at least 2 real and 2 generated images, got {len(real)} and {len(fake)}.")
    real_f = image_features(classifier, real, "real images")
    fake_f = image_features(classifier, fake, "fake images")
    return metrics.fid_kid(real_f, fake_f, kid_subsets, min(kid_subset_size or 500, len(real), len(fake)), seed)


def _scores(probs: Tensor) -> dict[str, float]:
    counts = torch.bincount(probs.argmax(-1), minlength=probs.shape[1]).double()
    freq = counts / counts.sum()
    entropy = -(freq[freq > 0] * freq[freq > 0].log()).sum()
    return {"confidence": float(probs.max(-1).values.mean()),
            "class_balance": float(entropy / math.log(probs.shape[1]))}


@torch.no_grad()
def classifier_scores(classifier: FeatureClassifier, images: Tensor) -> dict[str, float]:
    """``confidence``: mean top-class probability; ``class_balance``: entropy of the predicted-class histogram
    divided by log(#classes) (1 = every class equally often, 0 = one class only)."""
    return _scores(_probabilities(classifier, image_features(classifier, images)))


def _shares(probs: Tensor) -> list[float]:
    counts = torch.bincount(probs.argmax(-1), minlength=probs.shape[1])
    return [round(float(c) / len(probs), 4) for c in counts]


@torch.no_grad()
def class_shares(classifier: FeatureClassifier, images: Tensor) -> list[float]:
    """Each class's share of the classifier's predictions on ``images``."""
    return _shares(_probabilities(classifier, image_features(classifier, images)))


@functools.lru_cache(maxsize=2)  # the same tensors each call: their features are computed once (read-only)
def reference_images(dataset: str, root: str = "data", path: str | None = None) -> tuple[Tensor, Tensor | None]:
    """What samples of ``dataset`` are compared with, and other real images for the real-vs-real floor:
    digits: all 1,797 images and none; MNIST / Fashion-MNIST: the 10,000 test images and the training images."""
    if dataset == "digits":
        return load_digits_images()[0], None
    x_tr, _, x_te, _ = labelled_splits(dataset, root=root, path=path)
    return x_te, x_tr


@torch.no_grad()
def score_samples(classifier: FeatureClassifier, images: Tensor, reference: Tensor, floor_pool: Tensor | None = None,
                  seed: int = 0, labels: Tensor | None = None) -> dict:
    """Confidence, class balance and shares, FID / KID against ``reference``, the confidence of the reference
    images themselves, (with ``floor_pool``) the real-vs-real floors: as many real images from the pool as
    there are samples, scored against the same reference, and (with the requested ``labels``) the share of
    samples classified as the class they were asked for."""
    n = len(images)
    probs = _probabilities(classifier, image_features(classifier, images, "samples"))
    out = {"num_samples": n, **_scores(probs), "class_shares": _shares(probs),
           "real_confidence": _scores(_probabilities(classifier, image_features(classifier, reference)))["confidence"],
           **fid_kid(classifier, reference, images, seed=seed)}
    if labels is not None:
        out["requested_class_share"] = float((probs.argmax(-1) == labels).float().mean())
    if floor_pool is not None:
        real = floor_pool[torch.randperm(len(floor_pool), generator=torch.Generator().manual_seed(seed))[:n]]
        floor = fid_kid(classifier, reference, real, seed=seed)
        out.update(fid_floor=floor["fid"], kid_floor=floor["kid"], fid_over_floor=out["fid"] / floor["fid"])
    return out


def load_samples(path: str) -> tuple[Tensor, str | None, Tensor | None]:
    """The ``samples`` array of a ``softdiff sample`` .npz (at least two finite samples), the dataset it names
    and the class labels it was asked for, where it records them (no pickled objects are loaded)."""
    import numpy as np

    what = "softdiff sample's .npz, with key 'samples'"
    try:
        data = np.load(path, mmap_mode="r", allow_pickle=False)  # no pickles: nothing in the file can run
    except (OSError, ValueError) as err:
        raise DataError(f"--score '{path}' is not a samples file ({what}): "
                        f"{str(err).splitlines()[0].rstrip('.') if str(err) else type(err).__name__}.") from None
    if not isinstance(data, np.lib.npyio.NpzFile):  # a bare .npy array
        raise DataError(f"--score '{path}' holds a single .npy array, not a samples file ({what}); save it with "
                        "np.savez(FILE, samples=ARRAY).")
    try:
        with data:
            dataset = str(data["dataset"]) or None if "dataset" in data.files else None
            labels = torch.from_numpy(np.asarray(data["labels"], dtype=np.int64)) if "labels" in data.files else None
            samples = torch.from_numpy(np.asarray(data["samples"], dtype=np.float32))
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise DataError(f"--score '{path}' is not a samples file ({what}): "
                        f"{str(err).splitlines()[0].rstrip('.') if str(err) else type(err).__name__}.") from None
    count = len(samples) if samples.dim() else 0
    if count < 2:
        raise DataError(f"--score '{path}' holds {count} sample{'' if count == 1 else 's'}; scoring needs at least 2 "
                        "(FID and KID compare two sets of images).")
    if not bool(torch.isfinite(samples).all()):
        raise DataError(f"--score '{path}' holds samples with NaN or inf values; score finite samples only.")
    if labels is not None and labels.shape != samples.shape[:1]:
        raise DataError(f"--score '{path}' holds {labels.numel()} labels for {len(samples)} samples.")
    return samples, dataset, labels
