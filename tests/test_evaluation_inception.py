"""Inception FID / KID wiring, offline: a randomly initialised network of the real architecture."""
import math
from unittest import mock

import pytest
import torch

from softdiff.errors import DataError
from softdiff.evaluation import inception
from softdiff.evaluation.inception import InceptionFeatures, inception_fid_kid, inception_network


@pytest.fixture(scope="module")
def random_features():
    with mock.patch.object(torch.nn.Module, "load_state_dict", lambda self, *a, **k: None):
        skeleton = inception_network(state_dict={})  # the architecture only
    g = torch.Generator().manual_seed(0)
    state = {}
    for key, value in skeleton.state_dict().items():
        if not value.is_floating_point():
            state[key] = value
        elif key.endswith(("running_var", "bn.weight")):
            state[key] = torch.ones_like(value)
        elif value.dim() > 1:  # He-initialised convolutions and the classifier
            state[key] = torch.randn(value.shape, generator=g) * math.sqrt(2 / value[0].numel())
        else:
            state[key] = torch.zeros_like(value)
    network = inception_network(state_dict=state)
    network.INPUT_IMAGE_SIZE = 75  # the smallest input the network accepts: 16x cheaper than 299 for the test
    return InceptionFeatures(network)


def test_identical_sets_give_zero_and_shifted_sets_more(random_features):
    g = torch.Generator().manual_seed(1)
    real = torch.rand(8, 1, 8, 8, generator=g)
    same = inception_fid_kid(real, real.clone(), random_features, kid_subset_size=4, kid_subsets=5)
    shifted = inception_fid_kid(real, real * 0.5 + 0.5, random_features, kid_subset_size=4, kid_subsets=5)
    assert abs(same["fid"]) < 1e-4 and abs(same["kid"]) < 1e-3
    assert shifted["fid"] > 100 * max(abs(same["fid"]), 1e-6) and shifted["fid"] > 1e-3


def test_missing_weights_give_one_line_without_download(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))

    def no_network(*args, **kwargs):
        raise AssertionError("nothing may be downloaded without allow_download")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    with pytest.raises(DataError, match="inception_download=true") as err:
        inception_network()
    assert "\n" not in str(err.value) and str(tmp_path) in str(err.value)


def test_cached_weights_are_read_without_unpickling(tmp_path, monkeypatch):
    # A cached file that is a pickle with code in it must be refused by weights_only loading.
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    path = inception.inception_weights_path()
    path.parent.mkdir(parents=True)
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    torch.save({"x": Payload()}, path)
    with pytest.raises(DataError, match="could not be read"):
        inception_network()
    assert not marker.exists()


def test_bad_image_shapes_are_named(random_features):
    with pytest.raises(DataError, match="fake images"):
        inception_fid_kid(torch.rand(4, 1, 8, 8), torch.rand(4, 8, 8), random_features)
