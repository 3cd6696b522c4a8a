"""Classifier-free guidance end to end: label dropout in training, guided class-conditional digits."""
import pytest
import torch

from softdiff.diffusion import generate
from softdiff.evaluation.features import ensure_classifier
from softdiff.training import load_train_config, train


@pytest.mark.slow
def test_guided_digits_show_the_requested_class(tmp_path):
    cfg = load_train_config("configs/digits.yaml", [
        f"output_dir={tmp_path / 'run'}", "data.class_conditional=true", "train.label_dropout=0.1",
        "train.steps=400", "sample.every=0", "sample.num_samples=10", "train.checkpoint_every=400"])
    run = train(cfg, quiet=True)
    classifier, _ = ensure_classifier(tmp_path / "digits_classifier.safetensors")
    hits = {0.0: 0, 3.0: 0}
    for scale in hits:
        for k in range(10):
            x = generate(run / "model_ema", scheduler="dpm++sde", steps=20, num_samples=10, seed=k, class_label=k,
                         guidance_scale=scale)
            hits[scale] += int((classifier(x).argmax(-1) == k).sum())
    assert hits[3.0] >= 90, hits            # guided: the requested digit in at least 90% of 100 samples
    assert hits[0.0] <= 50, hits            # scale 0 is the unconditional model: about 1 in 10 by chance
