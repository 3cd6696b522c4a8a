import math

import numpy as np
import pytest
import torch

from softdiff.studies.value_flow.integrate import FlowIntegrationError, value_softmax_flow
from softdiff.studies.value_flow.losses import LOSSES, get_loss
from softdiff.studies.value_flow.normalisations import NORMALISATIONS, get_normalisation
from softdiff.studies.value_flow.presets import preset_cases, run_case
from softdiff.studies.value_flow.problem import TiedProblem, ValueSoftmaxProblem, objective

D, N, B = 5, 6, 3


def gen(seed):
    return torch.Generator().manual_seed(seed)


def rn(*shape, seed=0):
    return torch.randn(*shape, generator=gen(seed), dtype=torch.float64)


def problem_inputs(loss, seed=0):
    """A batched (V, a, target, design) for ``loss`` with generic (non-degenerate) values."""
    V, a = rn(B, D, N, seed=seed), rn(B, N, seed=seed + 1).abs() + 0.3  # positive a keeps sum/l2/relu maps smooth
    design = None
    if loss == "design_square":
        design, target = rn(B, 4, D, seed=seed + 2), rn(B, 4, seed=seed + 3)
    elif loss == "cross_entropy":
        target = torch.softmax(rn(B, D, seed=seed + 2), -1)
    else:
        target = rn(B, D, seed=seed + 2)
    return V, a, target, design


@pytest.mark.parametrize("normalization", list(NORMALISATIONS))
@pytest.mark.parametrize("loss", list(LOSSES))
def test_hand_gradients_match_autograd(loss, normalization):
    V, a, target, design = problem_inputs(loss)
    problem = ValueSoftmaxProblem(get_normalisation(normalization), get_loss(loss), target, design)
    _, value, gV, ga = problem.grads(V, a)
    Vr, ar = V.clone().requires_grad_(), a.clone().requires_grad_()
    ref = objective(Vr, ar, loss, target, normalization, design)
    auto_V, auto_a = torch.autograd.grad(ref.sum(), (Vr, ar))
    assert torch.allclose(value, ref.detach(), rtol=1e-12, atol=1e-14)
    assert torch.allclose(gV, auto_V, rtol=1e-9, atol=1e-12)
    assert torch.allclose(ga, auto_a, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("loss", ["logistic", "square"])
def test_tied_gradients_match_autograd(loss):
    U, a, target, _ = problem_inputs(loss)
    U = rn(B, D, D, seed=7) * 0.5
    a = a[:, :D]
    problem = TiedProblem(get_normalisation("softmax"), get_loss(loss), target, None)
    _, _, gU, ga = problem.grads(U, a)
    Ur, ar = U.clone().requires_grad_(), a.clone().requires_grad_()
    auto_U, auto_a = torch.autograd.grad(objective(Ur, ar, loss, target, tied=True).sum(), (Ur, ar))
    assert torch.allclose(gU, auto_U, rtol=1e-9, atol=1e-12)
    assert torch.allclose(ga, auto_a, rtol=1e-9, atol=1e-12)


def test_gd_step_is_plain_gradient_descent():
    """One recorded GD step equals (V, a) - lr * autograd gradient."""
    V, a, target, _ = problem_inputs("logistic")
    hist = value_softmax_flow(V, a, "logistic", target, lr=0.3, steps=1, record_every=1)
    Vr, ar = V.clone().requires_grad_(), a.clone().requires_grad_()
    gV, ga = torch.autograd.grad(objective(Vr, ar, "logistic", target).sum(), (Vr, ar))
    assert torch.allclose(hist.V, V - 0.3 * gV, atol=1e-14)
    assert torch.allclose(hist.a_final, a - 0.3 * ga, atol=1e-14)
    assert hist.steps.tolist() == [0, 1]


def test_invariants_over_a_long_logistic_run():
    """sum(a) is conserved (shift invariance) and (I - b b^T) V is constant (g parallel to b)."""
    V0 = 0.1 * rn(4, 8, 8, seed=3)
    b = rn(8, seed=4)
    b = b / b.norm()
    hist = value_softmax_flow(V0, rn(4, 8, seed=5), "logistic", b, lr=0.1, steps=20_000, record_every=5000)
    sums = hist.a.sum(-1)  # (R, B)
    assert (sums - sums[0]).abs().max() < 1e-10
    P = torch.eye(8, dtype=torch.float64) - torch.outer(b, b)
    assert torch.allclose(P @ hist.V, P @ V0, atol=1e-10)
    assert (hist.V - V0).abs().max() > 0.5  # the run did move V (along b)
    assert hist.loss[-1].max() < hist.loss[0].min()


def test_gd_with_small_step_tracks_flow():
    V0, b = 0.3 * rn(2, 6, 6, seed=11), rn(6, seed=12)
    b = b / b.norm()
    a0 = 0.2 * rn(2, 6, seed=13)
    t_max = 5.0
    flow = value_softmax_flow(V0, a0, "logistic", b, method="flow", t_max=t_max, record_every=5)
    gd_coarse = value_softmax_flow(V0, a0, "logistic", b, lr=0.05, steps=100, record_every=20)
    gd_fine = value_softmax_flow(V0, a0, "logistic", b, lr=0.005, steps=1000, record_every=200)
    assert torch.allclose(flow.times, gd_fine.times)
    err_fine = (gd_fine.a - flow.a).abs().max()
    err_coarse = (gd_coarse.a - flow.a).abs().max()
    assert err_fine < 2e-3
    assert err_fine < 0.2 * err_coarse  # GD is a first-order integrator: 10x smaller step, ~10x smaller error
    assert (flow.a[-1] - flow.a[0]).abs().max() > 50 * err_fine  # the trajectory moved much more than the error


def test_rich_get_richer_winner_is_largest_initial_projection():
    seeds = 32
    V0, betas = 0.1 * rn(seeds, 8, 8, seed=21), rn(seeds, 8, seed=22)
    betas = betas / betas.norm(dim=-1, keepdim=True)
    hist = value_softmax_flow(V0, None, "logistic", betas, lr=0.1, steps=20_000, record_every="log")
    expected = hist.projections[0].argmax(-1)
    assert torch.equal(hist.winner[-1], expected)
    assert torch.allclose(hist.projections[0], (V0 * betas[:, :, None]).sum(1))
    assert (hist.max_share[-1] > 0.5).all()
    assert (hist.entropy[-1] < hist.entropy[0]).all() and torch.allclose(hist.entropy[0], torch.tensor(math.log(8.0)).double())
    # the winner's value grows ("massive activation"), the others do not overtake it
    win = hist.projections[-1].gather(-1, expected[:, None]).squeeze(-1)
    assert (win > hist.projections[0].max(-1).values + 1.0).all()


def test_numpy_inputs_and_unbatched_shapes():
    V0, b = np.random.default_rng(0).normal(size=(4, 5)) * 0.1, np.ones(4) / 2.0
    hist = value_softmax_flow(V0, np.zeros(5), "square", b, lr=0.1, steps=50, record_every=10)
    assert hist.V.shape == (4, 5) and hist.a_final.shape == (5,)
    assert hist.s.shape == (6, 5) and hist.loss.shape == (6,) and hist.steps.tolist() == [0, 10, 20, 30, 40, 50]
    assert hist.V.dtype == torch.float64


def test_log_record_points_are_log_spaced_and_end_at_steps():
    hist = value_softmax_flow(0.1 * rn(3, 3), None, "logistic", rn(3), steps=1000)
    steps = hist.steps.tolist()
    assert steps[0] == 0 and steps[-1] == 1000 and steps == sorted(set(steps))
    assert 25 <= len(steps) <= 35  # about 10 a decade over 3 decades


def test_cross_entropy_reaches_target_distribution():
    k = 5
    p = torch.softmax(3 * rn(k, seed=31), -1)
    hist = value_softmax_flow(0.1 * rn(k, k, seed=32), None, "cross_entropy", p, lr=0.5, steps=3000)
    assert hist.loss[-1] < 1e-6 < hist.loss[0]  # KL(p* || softmax(V s))
    assert hist.loss[0] > 0


def test_tied_model_dominant_column_grows():
    Dt = 10
    a0 = 1 + 0.1 * rn(Dt, seed=41)
    b = rn(Dt, seed=42)
    b = b / b.norm()
    hist = value_softmax_flow(torch.eye(Dt, dtype=torch.float64), a0, "logistic", b, lr=0.05, steps=3000, tied=True)
    assert hist.max_share[-1] > 0.9
    assert hist.dominant_norm[-1] > 2.0 > 1.0 == pytest.approx(hist.dominant_norm[0].item())
    assert hist.value_norms[-1].median() < 1.5


@pytest.mark.parametrize("kwargs, match", [
    (dict(loss="nope"), "unknown loss"),
    (dict(normalization="softmin"), "unknown normalization"),
    (dict(method="adam"), "unknown method"),
    (dict(steps=0), "positive int"),
    (dict(record_every="linear"), "record_every"),
    (dict(loss="design_square"), "design"),
])
def test_bad_arguments_raise_clear_errors(kwargs, match):
    args = dict(V0=rn(3, 4), a0=None, loss="logistic", target=rn(3))
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        value_softmax_flow(**args)


def test_shape_mismatch_is_reported():
    with pytest.raises(ValueError, match="target must have shape"):
        value_softmax_flow(rn(3, 4), None, "square", rn(5))
    with pytest.raises(ValueError, match="a0 must have shape"):
        value_softmax_flow(rn(3, 4), rn(3), "square", rn(3))


@pytest.mark.slow
def test_e2_normalised_maps_polarise_and_sigmoid_does_not():
    cases = {c.label: c for c in preset_cases("E2", num_seeds=3, seed=100)}
    final = {norm: run_case(cases[f"logistic/{norm}"], steps=10_000).s[-1]
             for norm in ("softmax", "l1", "l2", "relu_norm", "sigmoid", "sum")}
    for norm in ("softmax", "l1", "l2", "relu_norm"):
        top = final[norm].max(-1).values
        assert (top > 0.4).all() and top.median() > 0.85, norm  # uniform would be 0.1
        assert torch.allclose(final[norm].sum(-1), torch.ones(3, dtype=torch.float64))
    sig = final["sigmoid"]
    assert (sig.max(-1).values - sig.min(-1).values < 0.1).all() and (sig > 0.5).all()  # flat, no winner
    assert ((final["sum"].max(-1).values > 1) | (final["sum"].min(-1).values < 0)).all()  # leaves the simplex


def test_flow_cli_writes_results_and_plots(tmp_path, capsys):
    import json

    from softdiff.cli import main

    rc = main(["flow", "--preset", "E5", "--output-dir", str(tmp_path), "steps=300", "seeds=2"])
    out = capsys.readouterr().out
    assert rc == 0
    assert "KL(p* || softmax(beta))" in out and "~3e-16" in out
    results = json.loads((tmp_path / "results.json").read_text())
    assert list(results["cases"]) == ["cross_entropy"]
    hist = results["cases"]["cross_entropy"]["history"]
    assert hist["steps"][-1] == 300 and len(hist["max_share"][0]) == 2
    measured_kl = float(results["cases"]["cross_entropy"]["summary"][0]["measured"])
    assert measured_kl == pytest.approx(sum(hist["loss"][-1]) / 2, rel=0.05)
    assert results["config"]["steps"] == 300
    for name in ("shares.png", "entropy.png", "projections.png", "gradients.png"):
        assert (tmp_path / name).read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("argv, match", [
    (["--preset", "E9"], "--preset 'E9' is not valid"),
    (["protocol=E9"], "protocol='E9' is not valid"),
    (["rng=mt"], "rng='mt' is not valid"),
    (["seeds=0"], "seeds=0 must be positive"),
    (["stepz=10"], "unknown config key 'stepz'"),
    (["method=adam"], "method='adam' is not valid"),
])
def test_flow_cli_bad_input_exits_2_with_one_line(argv, match, tmp_path, capsys):
    from softdiff.cli import main

    assert main(["flow", "--output-dir", str(tmp_path), *argv]) == 2
    err = capsys.readouterr().err
    assert match in err and err.count("\n") == 1 and "Traceback" not in err


def test_e4_entropy_decreases_with_condition_number():
    """E4's draws (seed 0), all kappas batched; lr 3e-2 x 1e4 steps covers the same time t = 300 as the protocol."""
    cases = preset_cases("E4", num_seeds=1, seed=0)
    X = torch.cat([c.kwargs["design"] for c in cases])
    conds = torch.linalg.cond(X)
    assert torch.allclose(conds, torch.arange(1, 6, dtype=torch.float64), rtol=1e-9)
    cat = lambda key: torch.cat([c.kwargs[key] for c in cases])
    hist = value_softmax_flow(cat("V0"), cat("a0"), "design_square", cat("target"), design=X, lr=3e-2,
                              steps=10_000, record_every=10_000)
    entropy = hist.entropy[-1]
    assert (entropy.diff() < 0).all(), entropy
    assert entropy[0] > 2.99 and entropy[-1] < 1.0  # kappa = 1 stays uniform (log 20 = 3.00); kappa = 5 polarises
    assert (hist.loss[-1] < 1e-6 * hist.loss[0]).all()  # every problem is solved; only the path differs


def test_stiff_flow_raises_a_clear_error():
    """E2's l1 map under logistic loss is non-smooth where shares hit 0: the adaptive solver gives up cleanly."""
    from softdiff.errors import SoftdiffError

    case = {c.label: c for c in preset_cases("E2", 1, 0)}["logistic/l1"]
    with pytest.raises(FlowIntegrationError, match="use method='gd'") as info:
        run_case(case, method="flow", steps=20_000, max_ode_steps=300)
    assert isinstance(info.value, SoftdiffError)  # the CLI prints it as one line


def test_relu_norm_is_one_map_across_flow_attention_and_activations():
    """The flow's relu_norm, attention's relu_norm and the activation relu_norm (scaled_relu_normalize) / m are the same map, and it is
    the notebook's ``max(0, z) / (sum max(0, z) + 1e-10)`` (all-negative rows give 0)."""
    from softdiff.nets.activations import relu_normalize, scaled_relu_normalize
    from softdiff.nets.attention import ATTENTION_NORMALIZATIONS

    z = rn(4, 7, seed=51)
    z[0] = -z[0].abs()  # a row with no active unit
    ref = np.maximum(0, z.numpy()) / (np.maximum(0, z.numpy()).sum(-1, keepdims=True) + 1e-10)
    flow = NORMALISATIONS["relu_norm"].forward(z)
    assert np.array_equal(flow.numpy(), relu_normalize(z).numpy())
    assert np.allclose(flow.numpy(), ref, rtol=1e-15, atol=0) and (flow[0] == 0).all()
    assert torch.equal(ATTENTION_NORMALIZATIONS["relu_norm"](z), flow)
    assert torch.allclose(scaled_relu_normalize(z), 7 * flow, rtol=1e-15)


def _np_softmax(z):
    e = np.exp(z - z.max())
    return e / e.sum()


def test_e1_numpy_rng_follows_the_notebook_update_step_by_step():
    """rng=numpy seed=123: the notebook's draws (W, a = 0 * randn, beta) and its update, written here in NumPy."""
    rs = np.random.RandomState(123)
    W, a, beta = 0.1 * rs.randn(8, 8), 0 * rs.randn(8), rs.randn(8)
    beta = beta / np.linalg.norm(beta)
    ref_a, ref_W = [a.copy()], [W.copy()]
    for _ in range(40):
        s = _np_softmax(a)
        c = 1.0 / (1.0 + np.exp(beta @ (W @ s)))
        v = -c * (W.T @ beta)
        gW, ga = -c * np.outer(beta, s), s * v - s * (s @ v)
        W, a = W - 0.1 * gW, a - 0.1 * ga
        ref_a.append(a.copy()), ref_W.append(W.copy())
    case = preset_cases("E1", num_seeds=1, seed=123, rng="numpy")[0]
    hist = run_case(case, steps=40, record_every=1)
    assert np.abs(hist.a[:, 0].numpy() - np.array(ref_a)).max() < 1e-14
    assert np.abs(hist.V[0].numpy() - ref_W[-1]).max() < 1e-14
    assert np.abs(hist.a[-1, 0].numpy()).max() > 1e-4  # the logits did move
    assert preset_cases("E1", 1, None, "numpy")[0].kwargs["V0"].equal(case.kwargs["V0"])  # default seed = 123


def test_e2_numpy_rng_reseeds_before_drawing_v():
    """The notebook reseeds 42 before V, so V's first row is 0.1 x beta*'s raw draw; a = 1 + 0.1 N."""
    rs = np.random.RandomState(42)
    raw = rs.randn(10)
    case = preset_cases("E2", 1, None, "numpy")[0]
    V0, a0, beta = (case.kwargs[k][0].numpy() for k in ("V0", "a0", "target"))
    assert np.array_equal(V0[0], 0.1 * raw) and np.allclose(beta, raw / np.linalg.norm(raw), rtol=0, atol=1e-16)
    rs = np.random.RandomState(42)
    rs.randn(10, 10)
    assert np.array_equal(a0, np.ones(10) + rs.randn(10) * 0.1)


def test_e5_numpy_rng_matches_the_notebook_with_transposed_values():
    """The notebook's V is (d, k) with logits V^T s; softdiff's V0 is its transpose; 30 steps agree."""
    rs = np.random.RandomState(123)
    V, a = 0.1 * rs.randn(10, 10), 0 * rs.randn(10)
    p = _np_softmax(10 * rs.rand(10))
    for _ in range(30):
        s = _np_softmax(a)
        q = _np_softmax(V.T @ s)
        gs = V @ (q - p)
        V, a = V - 0.1 * np.outer(s, q - p), a - 0.1 * (s * gs - s * (s @ gs))
    hist = run_case(preset_cases("E5", 1, None, "numpy")[0], steps=30, record_every=30)
    assert np.abs(hist.V[0].numpy() - V.T).max() < 1e-14 and np.abs(hist.a_final[0].numpy() - a).max() < 1e-14


@pytest.mark.parametrize("rng", ["torch", "numpy"])
def test_e4_design_has_linear_singular_values(rng):
    for kind, expected in (("linear", np.linspace), ("geometric", np.geomspace)):
        for case, kappa in zip(preset_cases("E4", 2, None, rng, kind), range(1, 6)):
            sv = torch.linalg.svdvals(case.kwargs["design"]).numpy()  # (2, 20), descending
            assert np.allclose(sv, expected(1, 1 / kappa, 20), rtol=1e-12, atol=1e-13), (kind, kappa)


def test_median_of_even_length_is_the_mean_of_the_two_middle_values():
    from softdiff.studies.value_flow.summaries import median

    x = torch.tensor([[4.0, 1.0, 3.0, 2.0], [1.0, 1.0, 5.0, 9.0]], dtype=torch.float64)
    assert median(x).tolist() == [2.5, 3.0]
    assert median(torch.tensor([3.0, 1.0, 2.0])).item() == 2.0
    odd = rn(7, 9, seed=61)
    assert torch.equal(median(odd), odd.median(-1).values)


def test_endings_are_counted_on_the_normalised_shares():
    from softdiff.studies.value_flow.summaries import endings

    s = torch.tensor([[0.995, 0.005, 0.0], [0.51, 0.49, 0.0], [0.6, 0.3, 0.1], [3.16, -2.16, 0.0]])
    assert endings(s) == {"one-hot": 1, "two-sparse": 2, "other": 1}  # 3.16 / 5.32 is not one-hot


def test_history_records_both_gradient_norms():
    V, a, target, _ = problem_inputs("logistic")
    hist = value_softmax_flow(V, a, "logistic", target, lr=0.1, steps=3, record_every=3)
    problem = ValueSoftmaxProblem(get_normalisation("softmax"), get_loss("logistic"), target, None)
    _, _, gV, ga = problem.grads(V, a)
    assert torch.allclose(hist.grad_norm_V[0], gV.flatten(1).norm(dim=-1), rtol=1e-14)
    assert torch.allclose(hist.grad_norm_a[0], ga.norm(dim=-1), rtol=1e-14)


def test_the_package_exports_its_api():
    import softdiff.studies.value_flow as value_flow
    from softdiff.studies.value_flow import value_softmax_flow as exported

    assert exported is value_softmax_flow
    assert all(getattr(value_flow, name) is not None for name in value_flow.__all__)
    with pytest.raises(AttributeError):
        value_flow.no_such_name
