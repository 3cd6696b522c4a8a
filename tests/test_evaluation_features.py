import json

import numpy as np
import pytest
import scipy.linalg
import torch

from softdiff.cli import run_main
from softdiff.commands.evaluate import main
from softdiff.errors import DataError
from softdiff.evaluation.classifiers import digits_split, load_classifier, save_classifier, train_classifier
from softdiff.evaluation.features import classifier_scores, fid_kid


@pytest.fixture(scope="module")
def trained():
    return train_classifier(seed=0)


def test_heldout_accuracy_above_095_and_training_is_reproducible(trained):
    model, acc = trained
    assert acc > 0.95
    x_tr, y_tr, x_te, y_te = digits_split(0)
    assert set(y_te.tolist()) == set(range(10)) and len(x_te) + len(x_tr) == 1797
    # Same seed, same weights after one epoch (no global RNG use): the global RNG state is untouched too.
    state, threads = torch.get_rng_state(), torch.get_num_threads()
    a, _ = train_classifier(seed=3, epochs=1)
    b, _ = train_classifier(seed=3, epochs=1)
    assert torch.equal(state, torch.get_rng_state()) and torch.get_num_threads() == threads
    assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))


def test_save_load_round_trip_keeps_weights_and_accuracy(trained, tmp_path):
    model, acc = trained
    save_classifier(model, tmp_path / "clf.safetensors", acc)
    loaded, meta = load_classifier(tmp_path / "clf.safetensors")
    assert float(meta["test_accuracy"]) == pytest.approx(acc, abs=1e-6) and meta["dataset"] == "digits"
    x = digits_split(0)[2][:20]
    assert torch.equal(loaded(x), model(x))


def test_fid_and_kid_match_closed_forms_in_feature_space(trained):
    model, _ = trained
    x_tr, _, x_te, y_te = digits_split(0)
    real, fake = x_tr[:300], x_te[y_te < 5][:150]
    out = fid_kid(model, real, fake, kid_subset_size=150, kid_subsets=3)
    with torch.no_grad():
        fr, ff = model.features(real).double().numpy(), model.features(fake).double().numpy()
    c1, c2 = np.cov(fr, rowvar=False), np.cov(ff, rowvar=False)
    covmean = scipy.linalg.sqrtm(c1 @ c2).real
    fid = ((fr.mean(0) - ff.mean(0)) ** 2).sum() + np.trace(c1 + c2 - 2 * covmean)
    assert out["fid"] == pytest.approx(fid, rel=1e-3)
    # Same-distribution images score far lower than half the classes or noise.
    same = fid_kid(model, real, x_te[:300], kid_subset_size=150, kid_subsets=5)
    noise = fid_kid(model, real, torch.rand(300, 1, 8, 8, generator=torch.Generator().manual_seed(0)),
                    kid_subset_size=150, kid_subsets=5)
    assert same["fid"] < out["fid"] / 3 < noise["fid"] and same["kid"] < out["kid"] < noise["kid"]
    # KID with one subset of all the fakes is the unbiased polynomial-kernel MMD (k = (x.y/d + 1)^3).
    one = fid_kid(model, real[:150], fake, kid_subset_size=150, kid_subsets=1, seed=0)
    d = fr.shape[1]
    k = lambda a, b: (a @ b.T / d + 1) ** 3
    kxx, kyy, kxy = k(fr[:150], fr[:150]), k(ff, ff), k(fr[:150], ff)
    n = 150
    mmd = ((kxx.sum() - np.trace(kxx)) + (kyy.sum() - np.trace(kyy))) / (n * (n - 1)) - 2 * kxy.mean()
    assert one["kid"] == pytest.approx(mmd, rel=1e-4)


def test_confidence_and_class_balance_closed_form():
    class Fixed(torch.nn.Module):
        image_shape = (1, 8, 8)
        head = torch.nn.Identity()  # the "features" are the logits

        def features(self, images):
            logits = torch.full((len(images), 10), -1e9)
            logits[:, 0] = 0.0
            logits[len(images) // 2:, 0] = -1e9
            logits[len(images) // 2:, 1] = 0.0
            logits[:, 2] = -torch.log(torch.tensor(3.0))  # class 0/1 prob 3/4, class 2 prob 1/4
            return logits

    scores = classifier_scores(Fixed(), torch.zeros(8, 1, 8, 8))
    assert scores["confidence"] == pytest.approx(0.75, rel=1e-6)
    assert scores["class_balance"] == pytest.approx(np.log(2) / np.log(10), rel=1e-9)


def test_scores_on_real_digits(trained):
    model, _ = trained
    _, _, x_te, y_te = digits_split(0)
    everything, threes = classifier_scores(model, x_te), classifier_scores(model, x_te[y_te == 3])
    assert everything["class_balance"] > 0.99 and threes["class_balance"] < 0.15 and everything["confidence"] > 0.8


def test_command_writes_file_and_reports_accuracy(tmp_path, capsys):
    out = tmp_path / "f.safetensors"
    assert run_main(main, ["--train-classifier", f"feature_classifier={out}", "epochs=1", "--quiet"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert float(load_classifier(out)[1]["test_accuracy"]) == pytest.approx(printed["test_accuracy"], abs=1e-4)
    assert run_main(main, ["--train-classifier", "dataset=cifar10"]) == 2
    assert "dataset='cifar10' is not valid" in capsys.readouterr().err


def test_bad_inputs(trained, tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_classifier(tmp_path / "missing.safetensors")
    (tmp_path / "bad.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(DataError, match="could not be loaded"):
        load_classifier(tmp_path / "bad.safetensors")
    with pytest.raises(DataError, match=r"\(N, 1, 8, 8\)"):
        classifier_scores(trained[0], torch.zeros(3, 64))
