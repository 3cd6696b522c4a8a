import json
import math

import pytest
import torch

from softdiff.nets import (
    ACTIVATIONS, ATTENTION_NORMALIZATIONS, Activation, ScoreMLP, ScoreTransformer, TwoLayerBlock, TwoLayerScoreNet,
    SelfAttention,
)
from softdiff.nets.score_transformer import patchify, unpatchify


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _perturb(model, seed=0):
    # Zero-initialised output layers would make a round trip trivially pass: randomise every parameter.
    g = _gen(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    return model


@pytest.mark.parametrize("make,shape", [
    (lambda: ScoreMLP(dim=2, hidden_size=16, num_blocks=2, fourier_features=4, activation="relu_norm"), (5, 2)),
    (lambda: ScoreTransformer(sample_size=8, in_channels=1, hidden_size=16, num_layers=2, num_heads=2,
                              num_registers=1, num_class_embeds=10, attention_normalization="sigmoid"), (3, 1, 8, 8)),
    (lambda: ScoreTransformer(sample_size=8, in_channels=1, hidden_size=16, num_layers=3, num_heads=2,
                              long_skips=True, conv_out=True, conv_stem=8, num_class_embeds=10), (3, 1, 8, 8)),
    (lambda: ScoreTransformer(sample_size=8, in_channels=1, hidden_size=16, num_layers=2, num_heads=2,
                              conv_stem=8, conv_decoder=6), (3, 1, 8, 8)),
    (lambda: ScoreTransformer(sample_size=8, in_channels=3, hidden_size=16, num_layers=4, num_heads=2,
                              long_skips=True, conditioning="token", num_registers=2, num_class_embeds=10),
     (3, 3, 8, 8)),
    (lambda: TwoLayerScoreNet(dim=2, width=32), (4, 2)),
])
def test_save_load_round_trip_is_exact(tmp_path, make, shape):
    model = _perturb(make()).eval()
    x, t = torch.randn(shape, generator=_gen(1)), torch.tensor([3.5] * shape[0])
    before = model(x, t)
    model.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["_class_name"] == type(model).__name__
    loaded = type(model).from_pretrained(tmp_path).eval()
    assert torch.equal(loaded(x, t), before)
    if isinstance(model, TwoLayerScoreNet):   # the +-1 signs are a buffer: they must travel too
        assert torch.equal(loaded.net.A, model.net.A)


@pytest.mark.parametrize("activation", list(ACTIVATIONS))
def test_every_activation_builds_a_working_score_net(activation):
    model = _perturb(ScoreTransformer(hidden_size=16, num_layers=1, num_heads=2, activation=activation))
    out = model(torch.randn(2, 1, 8, 8, generator=_gen()), torch.tensor([10.0, 500.0]))
    assert out.shape == (2, 1, 8, 8) and torch.isfinite(out).all()
    # The activation really is the configured one (a wrong lookup would silently train another network).
    assert model.layers[0].mlp.act.name == activation


def test_transformer_accepts_any_size_divisible_by_patch():
    model = ScoreTransformer(sample_size=12, in_channels=3, patch_size=4, hidden_size=16, num_layers=1, num_heads=2)
    assert model(torch.randn(2, 3, 12, 12), 5).shape == (2, 3, 12, 12)
    with pytest.raises(ValueError, match="divisible"):
        ScoreTransformer(sample_size=10, patch_size=4)


def test_each_activation_name_computes_its_function():
    z = torch.tensor([[-2.0, -0.5, 0.0, 0.5, 1.0, 3.0], [0.3, -1.0, 2.0, -4.0, 0.1, 1.5]], dtype=torch.float64)
    m, relu = z.shape[-1], z.clamp(min=0)
    reference = {
        "softmax": m * torch.exp(z) / torch.exp(z).sum(-1, keepdim=True),
        "relu": relu,
        "exp": torch.exp(z),
        "gelu": 0.5 * z * (1 + torch.erf(z / math.sqrt(2))),
        "silu": z / (1 + torch.exp(-z)),
        "sigmoid": 1 / (1 + torch.exp(-z)),
        "tanh": (torch.exp(z) - torch.exp(-z)) / (torch.exp(z) + torch.exp(-z)),
        "relu_norm": m * relu / relu.sum(-1, keepdim=True),
        "identity": z,
    }
    assert set(reference) == set(ACTIVATIONS)
    for name, expected in reference.items():
        assert torch.allclose(Activation(name)(z), expected, rtol=1e-9, atol=1e-12), name
    assert torch.equal(Activation("relu_norm")(-z.abs()), torch.zeros_like(z))  # no active unit: zero, not NaN
    # Attention's relu_norm is the same map left on the simplex (the activation is m times it).
    assert torch.allclose(ATTENTION_NORMALIZATIONS["relu_norm"](z) * m, reference["relu_norm"], rtol=1e-9)


@pytest.mark.parametrize("channels,size,patch", [(1, 8, 2), (3, 12, 4), (2, 6, 1)])
def test_patchify_then_unpatchify_gives_the_input_back(channels, size, patch):
    x = torch.randn(2, channels, size, size, generator=_gen())
    tokens = patchify(x, patch)
    n = size // patch
    assert tokens.shape == (2, n * n, channels * patch * patch)
    assert torch.equal(unpatchify(tokens, size, patch), x)
    # Token k is the patch in grid row k // n, column k % n (the order of the position table).
    row, col = divmod(n * n - 2, n)
    patch_pixels = x[:, :, row * patch:(row + 1) * patch, col * patch:(col + 1) * patch]
    assert torch.equal(tokens[:, n * n - 2], patch_pixels.reshape(2, -1))


def test_transformer_is_zero_at_init_and_not_once_perturbed():
    model = ScoreTransformer(hidden_size=16, num_layers=1, num_heads=2)
    x = torch.randn(2, 1, 8, 8, generator=_gen())
    assert model(x, 3).abs().max() == 0  # adaLN-Zero: every residual and the final layer start closed
    g = _gen(1)
    with torch.no_grad():  # a small step away from the initialisation opens every output pixel
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 1e-2)
    assert (model(x, 3) != 0).all()
    _perturb(model)
    assert not torch.allclose(model(x, 3), model(x, 700))


@pytest.mark.parametrize("normalization", ["softmax", "sigmoid", "relu_norm"])
def test_attention_probabilities_match_output(normalization):
    with torch.random.fork_rng():  # the layer's own initialisation must not depend on the global RNG state
        torch.manual_seed(0)
        attn = SelfAttention(16, num_heads=4, normalization=normalization).eval()
    x = torch.randn(2, 7, 16, generator=_gen())
    fused = attn(x)
    out, probs = attn(x, return_probs=True)
    assert probs.shape == (2, 4, 7, 7)
    assert torch.allclose(out, fused, atol=1e-6)
    v = attn.qkv(x).chunk(3, dim=-1)[2].reshape(2, 7, 4, 4).transpose(1, 2)
    manual = attn.proj((probs @ v).transpose(1, 2).reshape(2, 7, 16))
    assert torch.allclose(out, manual, atol=1e-6)
    if normalization == "softmax":
        assert torch.allclose(probs.sum(-1), torch.ones(2, 4, 7), atol=1e-5)
    elif normalization == "relu_norm":  # rows sum to one, or to zero where every score is <= 0
        sums = probs.sum(-1)
        assert torch.all(((sums - 1).abs() < 1e-5) | (sums == 0))
    else:  # unnormalised: rows do not sum to one
        assert (probs.sum(-1) - 1).abs().max() > 1e-3


def test_attention_fused_path_equals_explicit_softmax():
    attn = SelfAttention(8, num_heads=2).eval()
    x = torch.randn(3, 5, 8, dtype=torch.float64, generator=_gen())
    attn.double()
    fused = attn(x)
    attn.record_probs = True
    explicit = attn(x)
    assert torch.allclose(fused, explicit, atol=1e-12)
    assert attn.last_probs.shape == (3, 2, 5, 5)


def test_two_layer_block_is_residual_and_conditioned():
    block = _perturb(TwoLayerBlock(8, "softmax", width_mult=2, cond_dim=4))
    x, c = torch.randn(3, 8), torch.randn(3, 4)
    assert not torch.allclose(block(x, c), block(x, torch.zeros_like(c)))
    fresh = TwoLayerBlock(8)
    assert torch.equal(fresh(x), x)  # zero output projection: identity at init


def test_score_mlp_accepts_float_and_tensor_timesteps():
    model = _perturb(ScoreMLP(dim=2, hidden_size=8, num_blocks=1))
    x = torch.randn(4, 2)
    assert torch.allclose(model(x, 12.5), model(x, torch.full((4,), 12.5)))
    assert torch.allclose(model(x, torch.tensor(12.5)), model(x, torch.full((4,), 12.5)))


@pytest.mark.parametrize("make,shape", [
    (lambda: ScoreTransformer(hidden_size=16, num_layers=2, num_heads=2, num_registers=1), (4, 1, 8, 8)),
    (lambda: ScoreTransformer(hidden_size=16, num_layers=3, num_heads=2, long_skips=True, conv_out=True,
                              conv_stem=8), (4, 1, 8, 8)),
    (lambda: ScoreTransformer(hidden_size=16, num_layers=2, num_heads=2, conv_stem=8, conv_decoder=6, conv_out=True),
     (4, 1, 8, 8)),
    (lambda: ScoreTransformer(hidden_size=16, num_layers=2, num_heads=2, conv_decoder=6), (4, 1, 8, 8)),
    (lambda: ScoreTransformer(hidden_size=16, num_layers=4, num_heads=2, long_skips=True, conditioning="token"),
     (4, 1, 8, 8)),
    (lambda: ScoreMLP(dim=2, hidden_size=16, num_blocks=2), (8, 2)),
])
def test_every_parameter_trains_from_the_initialisation(make, shape):
    # Zero-initialised layers must not form a saddle (zero gate x zero output) that freezes part of the net.
    model = make()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    g = _gen(0)
    for _ in range(3):
        x = torch.randn(shape, generator=g)
        loss = (model(x, torch.rand(shape[0], generator=g) * 999) - x).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    frozen = [n for n, p in model.named_parameters() if torch.equal(p, before[n])]
    assert not frozen


def test_long_skips_join_mirrored_layers():
    # Layer i's output feeds layer L-1-i: zeroing the skip projections' halves that carry the shallow
    # outputs must change the output, and the default (no skips) builds no projections at all.
    model = _perturb(ScoreTransformer(hidden_size=16, num_layers=4, num_heads=2, long_skips=True)).eval()
    assert len(model.skips) == 2 and ScoreTransformer(hidden_size=16, num_layers=4, num_heads=2).skips is None
    x, t = torch.randn(2, 1, 8, 8, generator=_gen(3)), torch.tensor([5.0, 600.0])
    before = model(x, t)
    with torch.no_grad():
        model.skips[0].weight[:, 16:] = 0
    assert not torch.allclose(model(x, t), before)


def test_conv_decoder_starts_at_zero_and_sees_the_stem_features():
    model = ScoreTransformer(hidden_size=16, num_layers=2, num_heads=2, conv_stem=8, conv_decoder=6)
    x, t = torch.randn(2, 1, 8, 8, generator=_gen(4)), torch.tensor([5.0, 600.0])
    assert torch.equal(model(x, t), torch.zeros_like(x))      # the last convolution starts at zero
    model = _perturb(model).eval()
    assert model.decoder[0].in_channels == 6 + 8
    before = model(x, t)
    with torch.no_grad():  # cut the U-Net skip: the stem's channels of the decoder's first convolution
        model.decoder[0].weight[:, 6:] = 0
    assert not torch.allclose(model(x, t), before)


def test_output_conv_starts_as_identity_and_old_configs_load(tmp_path):
    # A saved config without the new keys must rebuild today's network (they default to off).
    plain = ScoreTransformer(hidden_size=16, num_layers=2, num_heads=2)
    plain.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    for key in ("long_skips", "conv_out", "conv_stem", "conv_decoder", "conditioning"):
        config.pop(key)
    (tmp_path / "config.json").write_text(json.dumps(config))
    loaded = ScoreTransformer.from_pretrained(tmp_path)
    assert loaded.skips is None and loaded.output_conv is None and loaded.stem is None and loaded.decoder is None
    assert loaded.config.conditioning == "adaln"
    conv = ScoreTransformer(hidden_size=16, num_layers=1, num_heads=2, conv_out=True).output_conv
    y = torch.randn(2, 1, 8, 8)
    assert torch.allclose(conv(y), y, atol=1e-6)


def test_null_label_embeds_as_zero():
    model = _perturb(ScoreTransformer(hidden_size=16, num_layers=1, num_heads=2, num_class_embeds=10)).eval()
    x, t = torch.randn(2, 1, 8, 8, generator=_gen(4)), torch.tensor([100.0, 100.0])
    assert torch.allclose(model(x, t, class_labels=torch.tensor([-1, -1])), model(x, t))
    assert not torch.allclose(model(x, t, class_labels=torch.tensor([3, 3])), model(x, t))


def _rms(a: torch.Tensor) -> float:
    return float(a.double().pow(2).mean().sqrt())


@pytest.mark.parametrize("make,shape", [
    *[(lambda a=a: ScoreMLP(dim=2, hidden_size=32, num_blocks=2, activation=a), (16, 2))
      for a in ("softmax", "relu", "gelu", "exp")],
    *[(lambda a=a, n=n: ScoreTransformer(sample_size=8, in_channels=1, hidden_size=32, num_layers=2, num_heads=2,
                                         activation=a, attention_normalization=n, conv_stem=8, conv_decoder=8),
       (4, 1, 8, 8)) for a, n in [("softmax", "softmax"), ("relu", "softmax"), ("gelu", "sigmoid"),
                                  ("exp", "relu_norm")]],
])
def test_every_net_under_bf16_autocast_stays_near_float32(make, shape):
    """CPU bf16 autocast against float32 on the same (perturbed) weights: relative rms error below 3%, a few
    bf16 roundings' worth (bf16 keeps 8 mantissa bits, 0.4% per rounding)."""
    model = _perturb(make().eval())
    x, t = torch.randn(shape, generator=_gen(1)), torch.linspace(0, 999, shape[0])
    with torch.no_grad():
        ref = model(x, t)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = model(x, t)
    assert torch.isfinite(low).all() and _rms(low.float() - ref) < 0.03 * _rms(ref)


@pytest.mark.parametrize("activation", ["softmax", "relu", "exp"])
def test_two_layer_net_keeps_float32_under_autocast_and_in_bf16(activation):
    """m A softmax(W^T x) cancels m terms of size ~1: under bf16 it computed rms 0.8 instead of ~0 at the coupled
    init (m = 4,096); it now runs in float32 whatever autocast or the weights' dtype."""
    model = TwoLayerScoreNet(dim=2, width=4096, activation=activation).eval()
    x, t = torch.randn(32, 2, generator=_gen(2)), torch.linspace(0, 999, 32)
    with torch.no_grad():
        ref = model(x, t)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = model(x, t)
        assert low.dtype == torch.float32 and torch.allclose(low, ref, atol=1e-6, rtol=1e-6)
        half = model.to(torch.bfloat16)(x.bfloat16(), t)   # bf16 weights: W rounded once, the sum in float32
    assert half.dtype == torch.bfloat16 and _rms(half.float() - ref) < 1e-2   # bf16 autocast before: 0.8


def test_timesteps_and_exp_stay_exact_in_low_precision():
    from softdiff.nets.activations import exp_act
    from softdiff.nets.embeddings import timestep_tensor

    assert timestep_tensor(999, 2, "cpu").dtype == torch.float32
    assert timestep_tensor(torch.tensor(999), 2, "cpu")[0].item() == 999.0   # bf16 would round it to 1,000
    big = torch.tensor([5.0, 20.0, 100.0])
    for dtype in (torch.float16, torch.bfloat16, torch.float32):
        assert torch.isfinite(exp_act(big.to(dtype))).all()
    assert exp_act(big.half())[0].item() == pytest.approx(math.exp(5.0), rel=1e-3)   # unclamped below the limit
    assert exp_act(big)[2].item() == pytest.approx(math.exp(60.0), rel=1e-5)         # float32 keeps its clamp at 60


@pytest.mark.parametrize("normalization", ["sigmoid", "sigmoid_norm", "relu_norm"])
@pytest.mark.parametrize("causal", [False, True])
def test_chunked_attention_equals_the_full_matrix_with_gradients(normalization, causal):
    """Beyond query_chunk tokens the non-softmax maps run a chunk of queries at a time (checkpointed): the same
    output and gradients as forming the whole (N, N) matrix, to float tolerance."""
    torch.manual_seed(0)
    attn = SelfAttention(16, num_heads=2, normalization=normalization, causal=causal)
    x = torch.randn(2, 23, 16, requires_grad=True)
    inputs = [x, *attn.parameters()]
    full = attn(x)
    grads_full = torch.autograd.grad(full.square().sum(), inputs)
    attn.query_chunk = 5  # 23 tokens: chunks of 5, 5, 5, 5, 3
    rows, probs = [], attn.attention_probs
    attn.attention_probs = lambda q, *a: rows.append(q.shape[-2]) or probs(q, *a)
    chunked = attn(x)
    assert rows == [5, 5, 5, 5, 3]  # never the whole (23, 23) matrix
    assert torch.allclose(chunked, full, atol=1e-6, rtol=1e-5)
    for g, g_full in zip(torch.autograd.grad(chunked.square().sum(), inputs), grads_full):
        assert torch.allclose(g, g_full, atol=1e-5, rtol=1e-4)
    with torch.no_grad():
        assert torch.allclose(attn(x), full, atol=1e-6, rtol=1e-5)


def test_the_theory_names_are_aliases_of_the_classes_that_build_every_variant():
    """``TwoLayerSoftmax`` and ``ValueSoftmaxAttention`` (the theory's names) are the classes, not copies, so a
    relu two-layer net or a sigmoid attention built under either name is the same module."""
    from softdiff import nets

    assert nets.TwoLayerSoftmax is nets.TwoLayerNet
    assert nets.ValueSoftmaxAttention is nets.SelfAttention
    assert type(nets.TwoLayerSoftmax(2, 1, 4, activation="relu")) is nets.TwoLayerNet
