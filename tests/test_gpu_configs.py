"""The GPU configs (configs/mnist.yaml, cifar10.yaml, fashion_gpu.yaml) train on CPU: 200 steps of the shipped
recipe (objective, time density, conv stem and decoder, long skips, patch size, labels with dropout, flips, EMA,
lr schedule) and the loss falls.

What shrinks is the budget: steps, batch, warm-up, previews, the net's width and depth (the full CIFAR-10 net
is 17.6 TFLOP a step), and the GPU speed settings: fp32 instead of bf16 (the development CPU has no bf16 units:
autocast ran a step 4-5x slower than fp32) and no torch.compile (compiling took longer than the 200 steps).
benchmarks/bench_gpu.py times the full cifar10 net in bf16 and compiled. Data stands in where the real files are
absent: MNIST reads Fashion-MNIST's IDX files (the same 28x28 shape and file names), CIFAR-10 a tensor of its
shape (benchmarks/standin.py). Each run is its own process, as a user's would be.
"""
import json
from pathlib import Path

import pytest

from conftest import FASHION, ROOT

SMALL_NET = ["model.hidden_size=32", "model.num_layers=2", "model.num_heads=2", "model.conv_stem=8",
             "model.conv_decoder=8"]
BUDGET = ["train.steps=200", "train.batch_size=16", "train.warmup_steps=10", "train.log_every=5",
          "train.checkpoint_every=200", "sample.every=0", "sample.num_samples=2", "sample.steps=2",
          "train.mixed_precision=no", "train.compile=false"]
MNIST_SYSTEM = Path("/usr/share/datasets/mnist")

# The child's code: CIFAR-10 from the stand-in where torchvision's files are absent, then an ordinary run.
TRAIN = f"""
import sys
from pathlib import Path
sys.path.insert(0, {str(ROOT / "benchmarks")!r})
import softdiff.data
from softdiff.training import load_train_config, train
cfg = load_train_config(sys.argv[1], sys.argv[2:])
if cfg.data.name == "cifar10" and not (Path(cfg.data.root) / "cifar-10-batches-py").is_dir():
    from standin import standin_loader
    softdiff.data.load_torchvision = standin_loader(2000)
train(cfg, quiet=True)
"""


def data_overrides(config: str) -> list[str]:
    if config == "cifar10":
        return []
    if config == "mnist" and MNIST_SYSTEM.is_dir():
        return []
    if not FASHION.is_dir():
        pytest.skip("neither MNIST's nor Fashion-MNIST's IDX files are installed (apt-get install "
                    "dataset-fashion-mnist)")
    return [f"data.path={FASHION}"] if config == "mnist" else []


@pytest.mark.slow
@pytest.mark.parametrize("config", ["mnist", "cifar10", "fashion_gpu"])
def test_gpu_config_loss_falls_over_200_cpu_steps(config, tmp_path, forked):
    out = tmp_path / "run"
    overrides = [*SMALL_NET, *BUDGET, *data_overrides(config), f"output_dir={out}"]
    res = forked("code", f"configs/{config}.yaml", *overrides, code=TRAIN, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    losses = [r["loss"] for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines()) if "loss" in r]
    assert len(losses) == 40
    first, last = sum(losses[:20]) / 20, sum(losses[-20:]) / 20
    assert last < 0.9 * first, (first, last)
