"""Evaluation on real data: the Fashion-MNIST feature classifier (trained on the training files, checked on the
test files), FID / KID against the 10,000 test images with the real-vs-real floor at the same sample count, and
``softdiff eval --score`` on it."""
import json

import numpy as np
import pytest
import torch

from softdiff.cli import run_main
from softdiff.data import make_dataset
from softdiff.evaluation.classifiers import classifier_path, load_classifier
from softdiff.evaluation.cli import main
from softdiff.evaluation.features import classifier_scores, fid_kid, reference_images, score_samples
from softdiff.evaluation.run_eval import EvalSettings, RunEvaluator
from softdiff.diffusion.schedulers import training_scheduler_config

from conftest import needs_fashion

pytestmark = [needs_fashion, pytest.mark.slow]


def test_classifier_reaches_90_percent_on_the_test_files_and_is_cached(fashion_classifier, softdiff_cache):
    model, meta = fashion_classifier
    assert meta["dataset"] == "fashion_mnist" and meta["network"] == "ConvClassifier"
    assert float(meta["test_accuracy"]) >= 0.90
    path = classifier_path("fashion_mnist")
    assert path.is_file() and softdiff_cache in path.parents
    test = make_dataset("fashion_mnist", split="test")
    pred = model(test.data_tensor()[:2000]).argmax(-1)
    assert float((pred == test.labels[:2000]).float().mean()) >= 0.88   # the stored figure is the real one
    with pytest.raises(Exception, match="trained on 'fashion_mnist', not on 'digits'"):
        load_classifier(path, "digits")


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
    expected = fid_kid(evaluator.classifier, test, evaluator.second_half[:500], kid_subset_size=500, kid_subsets=20)
    assert set(floors) == {"fid", "confidence"} and floors["fid"] == pytest.approx(expected["fid"], rel=1e-6)
    assert 0 < floors["fid"] < 30                              # the FID bias of 500 samples (6.2 at 1,000, 3.1 at 2,000)
