import math

import numpy as np
import pytest
import torch
from scipy.stats import multivariate_normal

from softdiff.data import DATASETS, IMAGE_DATASETS, GaussianMixture, make_dataset
from softdiff.errors import DataError

TOY = [n for n in DATASETS if n not in IMAGE_DATASETS]


@pytest.mark.parametrize("name", TOY)
def test_toy_sets_are_deterministic_and_2d(name):
    ds = make_dataset(name)
    a, _ = ds.sample(500, torch.Generator().manual_seed(0))
    b, _ = ds.sample(500, torch.Generator().manual_seed(0))
    c, _ = ds.sample(500, torch.Generator().manual_seed(1))
    assert a.shape == (500, 2) and torch.equal(a, b) and not torch.equal(a, c)
    lo, hi = ds.data_range
    assert a.abs().max() < max(abs(lo), abs(hi)) + 1 and a.std() > 0.3


def test_digits_shapes_ranges_and_round_trip():
    ds = make_dataset("digits")
    assert len(ds) == 1797 and ds.shape == (1, 8, 8) and ds.num_classes == 10
    x, y = ds.sample(64, torch.Generator().manual_seed(0))
    assert x.shape == (64, 1, 8, 8) and x.min() >= -1 and x.max() <= 1 and y.shape == (64,)
    assert x.min() == -1 and x.max() == 1
    data = ds.data_tensor()
    assert data.min() == 0 and data.max() == 1
    assert torch.allclose(ds.from_model(ds.to_model(data)), data)


def test_gaussian_mixture_log_prob_and_score_are_exact():
    mix = GaussianMixture([[0.0, 1.0], [2.0, -1.0]], [0.5, 1.5], [0.3, 0.7])
    x = mix.sample(50, torch.Generator().manual_seed(0)).double()
    ref = np.log(0.3 * multivariate_normal([0, 1], 0.25 * np.eye(2)).pdf(x.numpy())
                 + 0.7 * multivariate_normal([2, -1], 2.25 * np.eye(2)).pdf(x.numpy()))
    assert np.allclose(mix.log_prob(x).numpy(), ref, atol=1e-10)
    xr = x.clone().requires_grad_()
    (auto,) = torch.autograd.grad(mix.log_prob(xr).sum(), xr)
    assert torch.allclose(mix.score(x), auto, atol=1e-10)


def test_gaussian_mixture_noised_is_the_diffused_law():
    mix = GaussianMixture([[3.0, 0.0]], 0.5)
    noised = mix.noised(alpha=0.6, sigma=0.8)
    assert torch.allclose(noised.means, torch.tensor([[1.8, 0.0]], dtype=torch.float64))
    assert math.isclose(noised.stds.item(), math.sqrt(0.36 * 0.25 + 0.64))
    g = torch.Generator().manual_seed(0)
    samples = 0.6 * mix.sample(20000, g) + 0.8 * torch.randn(20000, 2, generator=g)
    assert abs(samples.std(0).mean().item() - noised.stds.item()) < 0.02


def test_missing_mnist_gives_clear_error(tmp_path, monkeypatch):
    from softdiff.data import idx

    monkeypatch.setitem(idx.SYSTEM_FOLDERS, "mnist", str(tmp_path / "system"))  # not this machine's packages
    with pytest.raises(DataError, match=r"dataset 'mnist' \(train split: .* was not found in .*; install a Debian "
                                        r"package .*, set data.path=FOLDER .*, or set data.download=true"):
        make_dataset("mnist", root=tmp_path)


def test_unknown_dataset_and_bad_folder(tmp_path):
    with pytest.raises(DataError, match="8gaussians"):
        make_dataset("imagenet")
    with pytest.raises(DataError, match="no images"):
        make_dataset("folder", path=str(tmp_path))


def test_image_folder_loads_and_resizes(tmp_path):
    from PIL import Image

    for i in range(3):
        Image.fromarray(np.full((10, 12, 3), 40 * i, dtype=np.uint8)).save(tmp_path / f"{i}.png")
    ds = make_dataset("folder", path=str(tmp_path), image_size=8, channels=3)
    assert ds.lazy and len(ds) == 3 and ds.shape == (3, 8, 8)
    images = ds.decode(torch.arange(3))
    assert images.shape == (3, 3, 8, 8) and images.dtype == torch.uint8
    assert ds.data_tensor().max().item() == pytest.approx(80 / 255)
