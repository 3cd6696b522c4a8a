import json
import math

import numpy as np
import pytest
import torch

from softdiff.studies.probes.attention import (
    AttentionRecorder, attention_entropy, massive_activation, probe_model, register_share, row_mass,
    sink_score, sparsity_score,
)
from softdiff.diffusion import training_scheduler_config
from softdiff.diffusion.process import ForwardProcess
from softdiff.nets.attention import SelfAttention

DIM, N = 8, 12


def gen(seed):
    return torch.Generator().manual_seed(seed)


def tokens(batch=3, seed=0):
    return torch.randn(batch, N, DIM, generator=gen(seed))


def uniform_layer(normalization):
    """Zero queries: every logit is equal, so every query attends uniformly."""
    layer = SelfAttention(DIM, num_heads=2, normalization=normalization)
    with torch.no_grad():
        layer.qkv.weight[:DIM].zero_()
        layer.qkv.bias[:DIM].zero_()
    return layer


def sink_layer(sink_position, normalization="softmax"):
    """Constant queries and a key that is large only for the token carrying a marker feature: a forced sink."""
    layer = SelfAttention(DIM, num_heads=2, normalization=normalization)
    with torch.no_grad():
        w, b = layer.qkv.weight, layer.qkv.bias
        w[:2 * DIM].zero_()
        b[:2 * DIM].zero_()
        b[:DIM] = 4.0                        # q = 4 on every head channel
        w[DIM:2 * DIM, 0] = 4.0             # k = 4 * x_0 on every head channel
    x = tokens()
    x[..., 0] = 0.0
    x[:, sink_position, 0] = 3.0             # logit to the sink 4*4*3*4 / sqrt(4) = 96, to the rest 0
    return layer, x


@pytest.mark.parametrize("normalization", ["softmax", "sigmoid", "relu_norm"])
def test_uniform_attention_has_entropy_log_n(normalization):
    layer = uniform_layer(normalization)
    _, probs = layer(tokens(), return_probs=True)
    if normalization == "relu_norm":  # relu of all-zero logits is 0: the rows carry no mass at all
        assert torch.allclose(row_mass(probs), torch.zeros(2, dtype=torch.float64))
        return
    assert torch.allclose(attention_entropy(probs), torch.full((2,), math.log(N), dtype=torch.float64), atol=1e-6)
    assert torch.allclose(sparsity_score(probs), torch.full((2,), 1 / N, dtype=torch.float64), atol=1e-6)
    score, _ = sink_score(probs)
    assert torch.allclose(score, torch.full((2,), 1 / N, dtype=torch.float64), atol=1e-6)


@pytest.mark.parametrize("normalization", ["softmax", "relu_norm", "sigmoid"])
def test_forced_sink_gives_sink_score_one(normalization):
    layer, x = sink_layer(sink_position=5, normalization=normalization)
    _, probs = layer(x, return_probs=True)
    score, key = sink_score(probs)
    assert torch.all(key == 5)
    if normalization == "sigmoid":
        # unnormalised: the sink gets sigmoid(96 - log N) ~ 1, each other key sigmoid(-log N) = 1/(N+1)
        expected = 1 / (1 + (N - 1) / (N + 1))
        assert torch.allclose(score, torch.full((2,), expected, dtype=torch.float64), atol=1e-6)
    else:
        assert (score > 1 - 1e-9).all() and (sparsity_score(probs) > 1 - 1e-9).all()
        assert (attention_entropy(probs) < 1e-6).all()


def test_register_share_counts_only_register_keys_and_non_special_queries():
    probs = torch.zeros(1, 1, 4, 4)
    probs[0, 0, 0] = torch.tensor([0.0, 0.0, 0.0, 1.0])  # the register's own row is ignored
    probs[0, 0, 1:] = torch.tensor([0.5, 0.25, 0.25, 0.0])
    assert register_share(probs, num_special=1).item() == pytest.approx(0.5)
    assert register_share(probs, num_special=0).item() == 0.0
    score, key = sink_score(probs, num_special=1)
    assert key.item() == 0 and score.item() == pytest.approx(0.5)
    assert sink_score(probs)[1].item() == 0 and sink_score(probs)[0].item() == pytest.approx(0.375)


def test_massive_activation_ratio_and_token():
    h = torch.ones(2, 5, 4)
    h[1, 3, 2] = -50.0
    ratio, token = massive_activation(h)
    assert ratio == pytest.approx(50.0) and token == 3


def test_bad_shapes_raise():
    with pytest.raises(ValueError, match=r"\(B, heads, N, N\)"):
        attention_entropy(torch.ones(3, 3))
    with pytest.raises(ValueError, match=r"\(B, N, dim\)"):
        massive_activation(torch.ones(3, 3))


def tiny_transformer(normalization="softmax", registers=1, seed=0):
    from softdiff.nets import ScoreTransformer

    torch.manual_seed(seed)  # diffusers constructs parameters from the global RNG; fixed here for the test
    model = ScoreTransformer(sample_size=8, in_channels=1, patch_size=2, hidden_size=16, num_layers=2, num_heads=2,
                             attention_normalization=normalization, width_mult=2, num_registers=registers)
    with torch.no_grad():  # adaLN-Zero gates start at 0; open them so attention shapes the residual stream
        for layer in model.layers:
            layer.modulation.bias.normal_(0, 1, generator=gen(seed))
        model.final.weight.normal_(0, 0.1, generator=gen(seed))  # zero-initialised too: make the output depend on x
    return model


def test_recorder_captures_every_layer_and_restores_flags():
    model = tiny_transformer()
    x, t = torch.randn(2, 1, 8, 8, generator=gen(1)), torch.tensor([10, 20])
    plain = model(x, t)  # fused scaled_dot_product_attention path
    with AttentionRecorder(model) as rec:
        recorded = model(x, t)  # explicit probabilities path
        assert len(rec.probs) == 2 and rec.probs[0].shape == (2, 2, 17, 17)
        assert len(rec.hidden) == 2 and rec.hidden[1].shape == (2, 17, 16)
    assert torch.allclose(plain, recorded, atol=1e-5) and plain.abs().max() > 0
    assert all(not m.record_probs and m.last_probs is None for m in (model.layers[0].attn, model.layers[1].attn))
    rows = rec.probs[0].sum(-1)
    assert torch.allclose(rows, torch.ones_like(rows), atol=1e-5)


def test_probe_model_shapes_and_uniform_model():
    """Zero queries in every layer: entropy is exactly log N at every timestep, layer and head."""
    model = tiny_transformer(registers=0)
    with torch.no_grad():
        for layer in model.layers:
            layer.attn.qkv.weight[:16].zero_()
            layer.attn.qkv.bias[:16].zero_()
    x0 = torch.randn(4, 1, 8, 8, generator=gen(2))
    result = probe_model(model, x0, [0, 500], ForwardProcess(training_scheduler_config()), gen(3))
    assert result.entropy.shape == (2, 2, 2) and result.massive.shape == (2, 2)
    np.testing.assert_allclose(result.entropy, math.log(16), atol=1e-5)
    np.testing.assert_allclose(result.sink_head_fraction, 0.0)
    assert (result.massive >= 1).all()


def save_run(tmp_path, name, normalization):
    """A run folder laid out like train.py's (model/ and model_ema/, pipeline folders)."""
    from softdiff.data import make_dataset
    from softdiff.diffusion.schedulers import training_scheduler_config
    from softdiff.pipeline import SoftdiffPipeline

    run = tmp_path / name
    pipe = SoftdiffPipeline.for_training_run(tiny_transformer(normalization), make_dataset("digits"),
                                             training_scheduler_config())
    for folder in ("model", "model_ema"):
        pipe.save_pretrained(run / folder)
    return run


def test_probe_cli_compares_two_runs(tmp_path, capsys):
    from softdiff.cli import main

    run_a, run_b = save_run(tmp_path, "soft", "softmax"), save_run(tmp_path, "sig", "sigmoid")
    out = tmp_path / "out"
    rc = main(["probe", str(run_a), str(run_b), "--output-dir", str(out), "--timesteps", "10", "900",
               "--num-samples", "8"])
    text = capsys.readouterr().out
    assert rc == 0
    assert "run1 (softmax)" in text and "run2 (sigmoid)" in text
    data = json.loads((out / "probe.json").read_text())
    assert [r["normalization"] for r in data["runs"]] == ["softmax", "sigmoid"]
    first = data["runs"][0]
    assert first["timesteps"] == [10, 900] and first["num_tokens"] == 17 and first["num_special"] == 1
    assert np.allclose(first["row_mass"], 1.0, atol=1e-5)  # softmax rows sum to 1; sigmoid rows need not
    assert (out / "probe_heatmaps.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("argv, match", [
    (["{missing}"], "is not a run folder"),
    (["{run}", "--timesteps", "5000"], "outside 0..999"),
    (["{run}", "{run}", "{run}"], "pass one or two"),
    (["{run}", "--num-samples", "0"], "num_samples=0 must be positive"),
])
def test_probe_cli_bad_input_exits_2(argv, match, tmp_path, capsys):
    from softdiff.cli import main

    run = save_run(tmp_path, "soft", "softmax")
    argv = [a.format(run=run, missing=tmp_path / "nope") for a in argv]
    assert main(["probe", *argv, "--output-dir", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert match in err and "Traceback" not in err
