import json

import numpy as np
import pytest
import torch

from softdiff.nets.attention import ATTENTION_NORMALIZATIONS, SelfAttention
from softdiff.studies.probes.attention import AttentionRecorder
from softdiff.studies.sinks.core import SinksConfig, build_model, measure, train_one
from softdiff.studies.sinks.tasks import classification_batch, induction_batch


@pytest.mark.parametrize("norm", list(ATTENTION_NORMALIZATIONS))
def test_causal_attention_ignores_later_tokens(norm):
    torch.manual_seed(0)
    attn = SelfAttention(16, 2, norm, causal=True)
    x = torch.randn(3, 7, 16)
    out, probs = attn(x, return_probs=True)
    assert (probs.triu(1) == 0).all() and torch.isfinite(probs).all()
    y = x.clone()
    y[:, 4:] = torch.randn(3, 3, 16)  # change the future: the first four outputs must not move
    assert torch.allclose(attn(y)[:, :4], out[:, :4], atol=1e-6)
    rows = probs.sum(-1)
    if norm in ("softmax", "sigmoid_norm"):
        assert torch.allclose(rows, torch.ones_like(rows), atol=1e-6)
    elif norm == "relu_norm":  # 1, or 0 for a row with no positive logit
        assert ((rows - 1).abs() < 1e-6).logical_or(rows == 0).all()


def test_causal_softmax_fast_path_equals_explicit_probabilities():
    torch.manual_seed(1)
    attn = SelfAttention(16, 4, "softmax", causal=True)
    x = torch.randn(2, 9, 16)
    fused = attn(x)
    explicit, probs = attn(x, return_probs=True)
    assert torch.allclose(fused, explicit, atol=1e-5)
    assert torch.allclose(probs[0, 0, 0], torch.eye(9)[0])  # the first query sees only itself


def test_induction_targets_follow_the_first_occurrence():
    inputs, targets = induction_batch(200, 20, 9, True, torch.Generator().manual_seed(0))
    assert inputs.shape == targets.shape == (200, 8) and (inputs[:, 0] == 0).all()
    assert torch.equal(inputs[:, 1:], targets[:, :-1])
    main, query = inputs[:, 1:-1], inputs[:, -1] - 20  # shifted query token
    for m, q, c in zip(main.tolist(), query.tolist(), targets[:, -1].tolist()):
        assert len(set(m)) == len(m) and q in m
        r = m.index(q)
        assert c == (m + [q + 20])[r + 1]


def test_classification_tokens_come_from_the_label_group():
    x, y = classification_batch(300, 41, 11, 4, torch.Generator().manual_seed(0))
    assert (x[:, 0] == 0).all() and x.shape == (300, 11)
    group = (x[:, 1:] - 1) // 10
    assert (group == y[:, None]).all() and all(len(set(r)) == 10 for r in x[:, 1:].tolist())


TINY = dict(steps=4, eval_every=2, embed_dim=16, num_heads=2, batch_size=16, num_train=64, num_eval=32, seeds=1)


@pytest.mark.parametrize("task, extra", [("induction", {}),
                                         ("classification", dict(positional="no", causal=False, vocab_size=41,
                                                                 seq_length=11))])
def test_tiny_runs_give_finite_statistics_and_softmax_rows_sum_to_one(task, extra):
    cfg = SinksConfig(task=task, **TINY, **extra)
    cfg.validate()
    for norm in ("softmax", "sigmoid"):
        hist = train_one(cfg, norm, seed=0)["history"]
        assert hist["step"] == [0, 2, 4]
        for key in ("first_mass", "row_mass", "readout_max", "massive", "accuracy", "loss"):
            arr = np.array(hist[key], dtype=float)
            assert np.isfinite(arr).all(), key
        first = np.array(hist["first_mass"])
        assert first.shape == (3, 2, 2) and ((first >= 0) & (first <= 1)).all()
        if norm == "softmax":
            assert np.allclose(hist["row_mass"], 1.0, atol=1e-6)
    model = build_model(cfg, "softmax")
    x = torch.zeros(4, cfg.seq_length - (1 if task == "induction" else 0), dtype=torch.long)
    with AttentionRecorder(model) as rec:
        model(x)
    for probs in rec.probs:
        assert torch.allclose(probs.sum(-1), torch.ones_like(probs[..., 0]), atol=1e-6)


def test_first_token_mass_is_one_when_every_query_attends_to_token_zero():
    cfg = SinksConfig(task="classification", positional="no", causal=False, vocab_size=41, seq_length=11, **TINY)
    model = build_model(cfg, "softmax")
    for block in model.layers:  # keys: only token 0 gets a large logit
        block.attn.attention_probs = lambda q, k: torch.nn.functional.one_hot(
            torch.zeros(q.shape[:-1], dtype=torch.long), k.shape[-2]).float()
        block.attn.normalization = "explicit"
    x, y = classification_batch(8, 41, 11, 4, torch.Generator().manual_seed(0))
    stats = measure(cfg, model, x, y)
    assert np.allclose(stats["first_mass"], 1.0) and np.allclose(stats["readout_max"], 1.0)


@pytest.mark.parametrize("argv, match", [(["attentions=[softmax,bogus]"], "attentions='bogus' is not valid"),
                                         (["task=lm"], "task='lm' is not valid"),
                                         (["--preset", "classification", "num_labels=3"], "num_labels")])
def test_sinks_cli_bad_input_exits_2_with_one_line(argv, match, tmp_path, capsys):
    from softdiff.cli import main

    assert main(["sinks", "--output-dir", str(tmp_path), *argv]) == 2
    err = capsys.readouterr().err
    assert match in err and err.count("\n") == 1 and not (tmp_path / "results.json").exists()


def test_sinks_cli_writes_results_and_plots(tmp_path, capsys):
    from softdiff.cli import main

    argv = ["sinks", "--preset", "classification", "--output-dir", str(tmp_path), "--quiet", "steps=2",
            "eval_every=1", "embed_dim=16", "batch_size=16", "num_train=64", "num_eval=16", "seeds=2",
            "attentions=[softmax,relu_norm]"]
    assert main(argv) == 0
    results = json.loads((tmp_path / "results.json").read_text())
    assert set(results["summary"]) == {"softmax", "relu_norm"} and len(results["runs"]) == 4
    assert results["summary"]["softmax"]["layers"][0]["row_mass"]["mean"] == pytest.approx(1.0, abs=1e-6)
    for name in ("sinks.png", "heads.png"):
        assert (tmp_path / name).read_bytes()[:4] == b"\x89PNG"
