"""Evaluation on real data: the Fashion-MNIST feature classifier (trained on the training files, checked on the
test files), FID / KID against the 10,000 test images with the real-vs-real floor at the same sample count, and
``softdiff eval --score`` on it."""
import json

import numpy as np
import pytest
import torch

from softdiff.cli import run_main
from softdiff.data import make_dataset
from softdiff.evaluation.classifiers import (accuracy, cached_classifier, classifier_path, labelled_splits,
                                            load_classifier, shipped_classifier, train_classifier)
from softdiff.commands.evaluate import main
from softdiff.evaluation.features import classifier_scores, fid_kid, reference_images, score_samples
from softdiff.evaluation.run_eval import EvalSettings, RunEvaluator
from softdiff.diffusion.schedulers import training_scheduler_config

from conftest import needs_fashion

pytestmark = [needs_fashion, pytest.mark.slow]


def test_shipped_classifier_reaches_90_percent_on_the_test_files(fashion_classifier):
    model, meta = fashion_classifier
    path = classifier_path("fashion_mnist")
    assert path == shipped_classifier("fashion_mnist") and path.is_file()      # shipped weights before any cache
    assert meta["dataset"] == "fashion_mnist" and meta["network"] == "ConvClassifier"
    test = make_dataset("fashion_mnist", split="test")
    measured = accuracy(model, test.data_tensor(), test.labels)
    assert measured >= 0.90 and measured == pytest.approx(float(meta["test_accuracy"]), abs=2e-4)  # the real figure
    with pytest.raises(Exception, match="trained on 'fashion_mnist', not on 'digits'"):
        load_classifier(path, "digits")


def test_fashion_recipe_learns_and_retraining_never_touches_the_shipped_file(softdiff_cache, monkeypatch, capsys):
    """The recipe the shipped file was made with, on a fifth of the data for one epoch, and the command's target."""
    x_tr, y_tr, x_te, y_te = labelled_splits("fashion_mnist")
    g = torch.Generator().manual_seed(0)
    sub, held = torch.randperm(60_000, generator=g)[:12_000], torch.randperm(10_000, generator=g)[:2_000]
    model, acc = train_classifier(0, epochs=1, dataset="fashion_mnist", splits=(x_tr[sub], y_tr[sub], x_te[held],
                                                                             y_te[held]))
    assert acc >= 0.80 and accuracy(model, x_te[held], y_te[held]) == acc
    shipped = shipped_classifier("fashion_mnist").read_bytes()
    monkeypatch.setattr("softdiff.evaluation.classifiers.train_classifier", lambda *a, **k: (model, acc))
    assert run_main(main, ["--train-classifier", "dataset=fashion_mnist", "--quiet"]) == 0
    assert json.loads(capsys.readouterr().out)["output"] == str(cached_classifier("fashion_mnist"))
    assert softdiff_cache in cached_classifier("fashion_mnist").parents
    assert shipped_classifier("fashion_mnist").read_bytes() == shipped
    assert classifier_path("fashion_mnist") == shipped_classifier("fashion_mnist")


def test_training_images_score_at_the_floor_and_noise_far_above(fashion_classifier):
    model, _ = fashion_classifier
    reference, pool = reference_images("fashion_mnist")
    assert reference.shape == (10_000, 1, 28, 28) and pool.shape == (60_000, 1, 28, 28)
    g = torch.Generator().manual_seed(5)
    real = pool[torch.randperm(len(pool), generator=g)[:1000]]
    same = score_samples(model, real, reference, pool, seed=1)
    # Other training images than the floor's: FID within a factor of 2 of the floor, balanced, confident.
    assert 0.5 < same["fid_over_floor"] < 2 and min(same["class_shares"]) > 0.05
    assert same["confidence"] == pytest.approx(same["real_confidence"], abs=0.03)
    noise = score_samples(model, torch.rand(1000, 1, 28, 28, generator=g), reference, seed=1)
    assert noise["fid"] > 50 * same["fid_floor"] and "fid_floor" not in noise
    # One class only (sneakers): confident, but unbalanced and far from the reference.
    tops = pool[make_dataset("fashion_mnist").labels == 7][:1000]
    one = score_samples(model, tops, reference, seed=1)
    assert one["class_shares"][7] > 0.9 and one["fid"] > 10 * same["fid_floor"]
    assert classifier_scores(model, tops)["class_balance"] < 0.2


def test_score_command_names_the_dataset_and_reports_floors(fashion_classifier, tmp_path, capsys):
    train = make_dataset("fashion_mnist")
    idx = torch.randperm(len(train), generator=torch.Generator().manual_seed(0))[:600]
    pool, labels = train.data_tensor()[idx], train.labels[idx]
    np.savez(tmp_path / "named.npz", samples=pool.numpy(), dataset=np.str_("fashion_mnist"),
             labels=labels.numpy())
    np.savez(tmp_path / "bare.npz", samples=pool.numpy())
    assert run_main(main, ["--score", str(tmp_path / "named.npz"), "--output-dir", str(tmp_path / "o")]) == 0
    report = json.loads((tmp_path / "o" / "score.json").read_text())
    assert report["dataset"] == "fashion_mnist" and report["num_samples"] == 600
    assert report["fid_over_floor"] < 2 and report["classifier_test_accuracy"] >= 0.9
    # The labels the images were asked for: real images carry their own, so the share is the accuracy there.
    assert report["requested_class_share"] >= 0.88
    np.savez(tmp_path / "shifted.npz", samples=pool.numpy(), dataset=np.str_("fashion_mnist"),
             labels=((labels + 1) % 10).numpy())
    assert run_main(main, ["--score", str(tmp_path / "shifted.npz"), "--output-dir", str(tmp_path / "s")]) == 0
    assert json.loads((tmp_path / "s" / "score.json").read_text())["requested_class_share"] < 0.1
    np.savez(tmp_path / "torn.npz", samples=pool.numpy(), labels=labels[:5].numpy())
    capsys.readouterr()
    assert run_main(main, ["--score", str(tmp_path / "torn.npz"), "dataset=fashion_mnist"]) == 2
    assert "holds 5 labels for 600 samples" in capsys.readouterr().err
    capsys.readouterr()
    assert run_main(main, ["--score", str(tmp_path / "bare.npz")]) == 2
    assert "does not name its dataset; add dataset=NAME" in capsys.readouterr().err
    assert run_main(main, ["--score", str(tmp_path / "bare.npz"), "dataset=digits"]) == 2
    assert "shape (1, 28, 28), but digits images are (1, 8, 8)" in capsys.readouterr().err


def test_run_evaluator_compares_with_the_test_split(fashion_classifier):
    dataset = make_dataset("fashion_mnist")
    settings = EvalSettings(num_samples=500, metrics=["fid", "confidence"])
    evaluator = RunEvaluator(dataset, settings, training_scheduler_config())
    test = make_dataset("fashion_mnist", split="test").data_tensor()
    assert torch.equal(evaluator.reference, test)
    assert len(evaluator.second_half) == 60_000                 # the floor's images come from the training split
    floors = evaluator.noise_floors()  # 500 training images against the 10,000 test images
    expected = fid_kid(evaluator.classifier, evaluator.reference, evaluator.second_half[:500], kid_subset_size=500, kid_subsets=20)
    assert set(floors) == {"fid", "confidence"} and floors["fid"] == pytest.approx(expected["fid"], rel=1e-6)
    assert 0 < floors["fid"] < 30                              # the FID bias of 500 samples (6.2 at 1,000, 3.1 at 2,000)
