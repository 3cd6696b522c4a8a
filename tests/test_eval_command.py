"""``softdiff eval RUN_DIR``: the metrics of a run's final model and of its checkpoints, drawn through the
pipeline."""
import json

import numpy as np
import torch

from softdiff.cli import run_main
from softdiff.commands.evaluate import main
from softdiff.pipeline import SoftdiffPipeline
from softdiff.training import load_train_config, train

TOY = ["data.name=8gaussians", "model.type=ScoreMLP", "model.hidden_size=16", "model.num_layers=1",
       "train.batch_size=32", "train.steps=4", "train.warmup_steps=1", "train.checkpoint_every=2",
       "train.checkpoints_total_limit=5", "sample.every=0", "sample.steps=2", "sample.num_samples=8"]


def test_eval_writes_metrics_floors_history_and_the_pipeline_samples(tmp_path, capsys):
    run = train(load_train_config("configs/toy2d.yaml", [*TOY, f"output_dir={tmp_path / 'run'}"]), quiet=True)
    assert run_main(main, [str(run), "num_samples=40", "steps=3", "seed=2", "every=2", "metrics=[w2,mmd]",
                           "--quiet"]) == 0
    report = json.loads((run / "eval" / "eval.json").read_text())
    assert set(report["metrics"]) == {"w2", "mmd"} and set(report["noise_floors"]) == {"w2", "mmd"}
    assert [h["step"] for h in report["history"]] == [2, 4]
    assert report["history"][1]["w2"] == report["metrics"]["w2"]  # checkpoint-4's EMA is the final EMA
    assert report["history"][0]["w2"] != report["metrics"]["w2"]
    pipe = SoftdiffPipeline.from_pretrained(run, scheduler="dpm++")  # the evaluation's default sampler
    drawn = pipe(batch_size=40, num_inference_steps=3, generator=torch.Generator().manual_seed(2), progress=False)
    assert np.array_equal(np.load(run / "eval" / "eval_samples.npz")["samples"], drawn.samples.numpy())
    capsys.readouterr()
    assert run_main(main, [str(run), "--no-ema", "num_samples=40", "steps=3", "seed=2", "metrics=[w2]",
                           "--output-dir", str(tmp_path / "live")]) == 0
    live = json.loads((tmp_path / "live" / "eval.json").read_text())
    assert live["model_dir"].endswith("model") and live["metrics"]["w2"] != report["metrics"]["w2"]
