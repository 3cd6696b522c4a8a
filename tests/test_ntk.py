"""NTK diagnostics: closed forms vs torch.func, empirical NTK conventions, spectra, kernel-regime predictions."""
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from einops import rearrange
from sklearn.kernel_ridge import KernelRidge
from torch import nn
from torch.func import functional_call, jacrev

from softdiff.studies.ntk import (KernelDriftTracker, empirical_ntk, gd_dynamics, kernel_drift,
                                      kernel_regression, max_stable_lr, monte_carlo_ntk, ntk_as_matrix, ntk_scale,
                                      ntk_to_full, spectrum, two_layer_exp_ntk, two_layer_ntk, two_layer_relu_ntk,
                                      two_layer_softmax_ntk)
from softdiff.studies.ntk.study import output_major
from softdiff.nets import TwoLayerNet

ACTS = ["softmax", "relu", "exp"]


def rn(gen, *shape):
    return torch.randn(*shape, generator=gen, dtype=torch.float64)


def unit_rows(gen, n, d):
    x = rn(gen, n, d)
    return x / x.norm(dim=1, keepdim=True)


def jacobian_rows(net, x):
    """J of vec(F) w.r.t. vec(W) by torch.func, rows output-major (l*n + i)."""
    jac = jacrev(lambda W: functional_call(net, {"W": W}, (x,)))(net.W.detach())   # (n, d_out, d_in, m)
    return rearrange(jac, "n l d r -> (l n) (d r)")


# ------------------------------------------------------------------------------------------ closed forms
@pytest.mark.parametrize("act", ACTS)
@pytest.mark.parametrize("coupled", [True, False])
def test_closed_form_equals_torch_func_gram(act, coupled):
    gen = torch.Generator().manual_seed(0)
    net = TwoLayerNet(3, 3, 14, coupled=coupled, activation=act, seed=1).double()
    x, x2 = unit_rows(gen, 5, 3), unit_rows(gen, 4, 3)
    J1, J2 = jacobian_rows(net, x), jacobian_rows(net, x2)
    m = net.width
    kappa = m if act == "softmax" else 1.0           # the stated normalisation (module docstring)
    for chunk in (3, 14, 4096):                      # neuron chunks that do and do not divide m
        H = two_layer_ntk(net, x, chunk_size=chunk)
        H12 = two_layer_ntk(net, x, x2, chunk_size=chunk)
        assert torch.allclose(H, J1 @ J1.T / kappa, rtol=0, atol=1e-10)
        assert torch.allclose(H12, J1 @ J2.T / kappa, rtol=0, atol=1e-10)
    assert ntk_scale(net) == kappa
    assert H12.shape == (3 * 5, 3 * 4)


def test_softmax_closed_form_matches_theory_formula_entrywise():
    """docs/theory.md 1.4 written out for single entries: checks the output-major ordering l*n + i."""
    gen = torch.Generator().manual_seed(1)
    net = TwoLayerNet(4, 2, 10, coupled=False, seed=2).double()
    x = unit_rows(gen, 3, 4)
    H = two_layer_softmax_ntk(net, x)
    S = torch.softmax(x @ net.W.detach(), dim=-1)
    A, m = net.A, net.width
    for (l1, i), (l2, j) in [((0, 0), (1, 2)), ((1, 1), (0, 0)), ((1, 2), (1, 1))]:
        c1 = A[l1] - A[l1] @ S[i]
        c2 = A[l2] - A[l2] @ S[j]
        expected = m * (x[i] @ x[j]) * (S[i] * S[j] * c1 * c2).sum()
        assert abs(float(H[l1 * 3 + i, l2 * 3 + j] - expected)) < 1e-12


def test_named_closed_forms_and_float64_option():
    gen = torch.Generator().manual_seed(2)
    x = unit_rows(gen, 4, 3)
    for act, fn in [("softmax", two_layer_softmax_ntk), ("relu", two_layer_relu_ntk), ("exp", two_layer_exp_ntk)]:
        net32 = TwoLayerNet(3, 2, 16, activation=act, seed=3)
        net64 = TwoLayerNet(3, 2, 16, activation=act, seed=3).double()
        K = fn(net32, x.float(), dtype=torch.float64)
        assert K.dtype == torch.float64
        assert torch.allclose(K, fn(net64, x), rtol=0, atol=1e-6)   # only W's float32 rounding differs
        assert fn(net32, x.float()).dtype == torch.float32


@pytest.mark.parametrize("act", ACTS)
def test_closed_form_is_symmetric_psd(act):
    gen = torch.Generator().manual_seed(3)
    net = TwoLayerNet(5, 3, 64, activation=act, seed=4).double()
    H = two_layer_ntk(net, unit_rows(gen, 12, 5))
    assert torch.equal(H, H.T)
    evals = torch.linalg.eigvalsh(H)
    assert evals.min() > -1e-10 * evals.max()


def test_shift_invariance_direction_is_null_for_softmax_only():
    """docs/theory.md 1.2: adding c to every w_r leaves F unchanged, so J (c 1_m^T) = 0 and it is null in J^T J."""
    gen = torch.Generator().manual_seed(4)
    x = unit_rows(gen, 6, 3)
    c = rn(gen, 3)
    shift = c[:, None].expand(3, 10).reshape(-1)          # vec of c 1_m^T in (d r) order
    for act, is_null in [("softmax", True), ("relu", False)]:
        net = TwoLayerNet(3, 2, 10, coupled=False, activation=act, seed=5).double()
        J = jacobian_rows(net, x)
        gram = J.T @ J                                    # parameter-space Gram
        moved = torch.linalg.norm(gram @ shift) / (torch.linalg.norm(gram) * torch.linalg.norm(shift))
        assert (moved < 1e-12) if is_null else (moved > 1e-3)


# ------------------------------------------------------------------------------------------ empirical NTK
class TinyMLP(nn.Module):
    def __init__(self):
        super().__init__()
        gen = torch.Generator().manual_seed(6)
        self.l1 = nn.Linear(3, 7).double()
        self.l2 = nn.Linear(7, 2).double()
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=gen, dtype=torch.float64))

    def forward(self, x):
        return self.l2(torch.tanh(self.l1(x)))


def test_empirical_implementations_and_modes_agree():
    gen = torch.Generator().manual_seed(7)
    model = TinyMLP()
    x1, x2 = rn(gen, 5, 3), rn(gen, 4, 3)
    full = empirical_ntk(model, None, x1, x2, mode="full")
    vp = empirical_ntk(model, None, x1, x2, mode="full", implementation="ntk_vp", chunk_size=3)
    assert full.shape == (5, 4, 2, 2)
    assert torch.allclose(full, vp, atol=1e-10)
    diag = torch.diagonal(full, dim1=-2, dim2=-1)
    for impl in ("jacobian", "ntk_vp"):
        assert torch.allclose(empirical_ntk(model, None, x1, x2, mode="trace", implementation=impl),
                              diag.sum(-1), atol=1e-10)
        assert torch.allclose(empirical_ntk(model, None, x1, x2, mode="diagonal", implementation=impl),
                              diag, atol=1e-10)
    # against an independent J J^T: the Jacobian of the whole batch output w.r.t. all parameters
    params = {k: v.detach() for k, v in model.named_parameters()}
    jac1 = jacrev(lambda p: functional_call(model, p, (x1,)))(params)
    jac2 = jacrev(lambda p: functional_call(model, p, (x2,)))(params)
    J1 = torch.cat([jac1[k].reshape(10, -1) for k in params], 1)
    J2 = torch.cat([jac2[k].reshape(8, -1) for k in params], 1)
    assert torch.allclose(ntk_as_matrix(full), rearrange(J1 @ J2.T, "(i a) (j b) -> (a i) (b j)", a=2, b=2),
                          atol=1e-10)


@pytest.mark.parametrize("impl", ["jacobian", "ntk_vp"])
def test_per_parameter_contributions_sum_to_total(impl):
    gen = torch.Generator().manual_seed(8)
    model = TinyMLP()
    x = rn(gen, 4, 3)
    parts = empirical_ntk(model, None, x, mode="full", implementation=impl, per_param=True)
    assert set(parts) == {"l1.weight", "l1.bias", "l2.weight", "l2.bias"}
    total = empirical_ntk(model, None, x, mode="full", implementation=impl)
    assert torch.allclose(sum(parts.values()), total, atol=1e-10)
    only_l2 = empirical_ntk(model, ["l2.weight", "l2.bias"], x, mode="full", implementation=impl)
    assert torch.allclose(only_l2, parts["l2.weight"] + parts["l2.bias"], atol=1e-10)


@pytest.mark.parametrize("act", ACTS)
def test_empirical_ntk_of_two_layer_net_matches_closed_form(act):
    gen = torch.Generator().manual_seed(9)
    net = TwoLayerNet(3, 2, 12, train_output=True, activation=act, seed=10).double()
    x = unit_rows(gen, 5, 3)
    full = empirical_ntk(net, ["W"], x)                    # A is trainable here but excluded
    assert torch.allclose(ntk_as_matrix(full), two_layer_ntk(net, x) * ntk_scale(net), atol=1e-10)
    assert torch.equal(ntk_to_full(ntk_as_matrix(full), 2), full)


@dataclass
class Output:
    sample: torch.Tensor


class TinyScoreNet(nn.Module):
    """``model(sample, timestep)`` returning a diffusers-style output with ``.sample``."""

    def __init__(self, dim=2, hidden=16, seed=11):
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        self.inp = nn.Parameter(torch.randn(dim + 1, hidden, generator=gen, dtype=torch.float64) / 2)
        self.out = nn.Parameter(torch.randn(hidden, dim, generator=gen, dtype=torch.float64) / 4)

    def forward(self, sample, timestep):
        t = timestep.to(sample.dtype).reshape(-1, 1).expand(sample.shape[0], 1)
        h = torch.tanh(torch.cat([sample, t / 1000], dim=1) @ self.inp)
        return Output(h @ self.out)


def test_empirical_ntk_over_sample_timestep_pairs():
    gen = torch.Generator().manual_seed(12)
    model = TinyScoreNet()
    sample, t = rn(gen, 4, 2), torch.tensor([10.0, 200.0, 500.0, 900.0], dtype=torch.float64)
    K = empirical_ntk(model, None, (sample, t))
    vp = empirical_ntk(model, None, (sample, t), implementation="ntk_vp")
    params = {k: v.detach() for k, v in model.named_parameters()}
    jac = jacrev(lambda p: functional_call(model, p, (sample, t)).sample)(params)
    J = torch.cat([jac[k].reshape(8, -1) for k in params], 1)
    expected = rearrange(J @ J.T, "(i a) (j b) -> i j a b", a=2, b=2)
    assert torch.allclose(K, expected, atol=1e-10) and torch.allclose(vp, expected, atol=1e-10)


# ------------------------------------------------------------------------------- spectra and predictions
def test_spectrum_summaries_against_numpy():
    gen = torch.Generator().manual_seed(13)
    B = rn(gen, 6, 6)
    K = B @ B.T + 0.1 * torch.eye(6, dtype=torch.float64)
    spec = spectrum(K)
    ref = np.linalg.eigvalsh(K.numpy())
    assert np.allclose(spec.eigenvalues.numpy(), ref, atol=1e-12)
    assert spec.lambda_min == pytest.approx(ref[0]) and spec.lambda_max == pytest.approx(ref[-1])
    assert spec.condition_number == pytest.approx(ref[-1] / ref[0])
    assert spectrum(torch.eye(5, dtype=torch.float64)).effective_rank == pytest.approx(5.0)
    y = rn(gen, 6)
    rank_one = spectrum(torch.outer(y, y), y)
    assert rank_one.effective_rank == pytest.approx(1.0, abs=1e-6) and rank_one.alignment == pytest.approx(1.0)
    assert spectrum(torch.eye(6, dtype=torch.float64), y).alignment == pytest.approx(1 / np.sqrt(6))


def test_kernel_drift_is_relative_frobenius():
    K0 = torch.eye(3, dtype=torch.float64)
    assert kernel_drift(K0, K0) == 0.0
    assert kernel_drift(2 * K0, K0) == pytest.approx(1.0)


def test_kernel_regression_matches_sklearn_kernel_ridge():
    gen = torch.Generator().manual_seed(14)
    net = TwoLayerNet(3, 1, 64, seed=15).double()
    x, xt = unit_rows(gen, 10, 3), unit_rows(gen, 5, 3)
    y = rn(gen, 10)
    K, Kt = two_layer_ntk(net, x), two_layer_ntk(net, xt, x)
    ours = kernel_regression(K, Kt, y, ridge=1e-3)
    ref = KernelRidge(alpha=1e-3, kernel="precomputed").fit(K.numpy(), y.numpy()).predict(Kt.numpy())
    assert np.allclose(ours.numpy(), ref, atol=1e-8)
    interpolant = kernel_regression(K, K, y, ridge=0.0)
    assert torch.allclose(interpolant, y, atol=1e-6)


def test_gd_dynamics_matches_explicit_linear_iteration_and_stability_edge():
    gen = torch.Generator().manual_seed(16)
    B = rn(gen, 5, 5)
    K = B @ B.T
    y, f0 = rn(gen, 5), rn(gen, 5)
    kappa, lr = 7.0, 0.3 * max_stable_lr(K, 7.0)
    traj = gd_dynamics(K, y, f0, lr, [0, 1, 5, 20], kernel_scale=kappa)
    r, explicit = f0 - y, {}
    for t in range(21):
        explicit[t] = r
        r = r - lr * kappa * (K @ r)
    assert torch.allclose(traj, torch.stack([explicit[t] for t in (0, 1, 5, 20)]), atol=1e-10)
    assert gd_dynamics(K, y, f0, lr, 5, kernel_scale=kappa).shape == (5,)
    edge = max_stable_lr(K, kappa)
    top = torch.linalg.eigh(K)[1][:, -1]
    assert gd_dynamics(K, top, 2 * top, 0.99 * edge, 200, kappa).norm() < 1.0       # r(0) = top, |factor| < 1
    assert gd_dynamics(K, top, 2 * top, 1.01 * edge, 200, kappa).norm() > 1.0


@pytest.mark.parametrize("act, narrow, wide_tol", [("softmax", 4, 1e-3), ("relu", 8, 2e-2)])
def test_wide_network_follows_kernel_dynamics_and_narrow_does_not(act, narrow, wide_tol):
    """Max over 200 GD steps of ||r_net(t) - r_lin(t)|| / ||r(0)|| at step 0.5 * max_stable_lr(H(0)).

    The linearisation error scales with how far each neuron moves: about 1/m for softmax (kappa = m) and
    1/sqrt(m) for relu (plus activation flips), so m = 4096 is within ``wide_tol`` while the narrow net
    (4 or 8 units, 2-4 distinct pairs) leaves the kernel regime by more than 10%.
    """
    gen = torch.Generator().manual_seed(0)
    x, y = unit_rows(gen, 6, 3), rn(gen, 6, 2)

    def linearisation_error(width):
        net = TwoLayerNet(3, 2, width, activation=act, seed=1).double()
        H, kappa = two_layer_ntk(net, x), ntk_scale(net)
        lr = 0.5 * max_stable_lr(H, kappa)
        predicted = gd_dynamics(H, output_major(y), output_major(net(x).detach()), lr, range(201), kappa)
        errors = []
        for t in range(201):
            net.W.grad = None
            out = net(x)
            errors.append(float(torch.linalg.norm(output_major(out.detach() - y) - predicted[t])))
            (0.5 * ((out - y) ** 2).sum()).backward()
            with torch.no_grad():
                net.W -= lr * net.W.grad
        return max(errors) / float(predicted[0].norm())

    assert linearisation_error(4096) < wide_tol
    assert linearisation_error(narrow) > 0.1


def test_monte_carlo_kernel_converges_with_width():
    gen = torch.Generator().manual_seed(17)
    x = unit_rows(gen, 4, 3)
    conv = monte_carlo_ntk(lambda w, s: TwoLayerNet(3, 2, w, seed=s).double(), x, [16, 256, 4096], n_inits=3)
    assert conv.relative_error[0] > conv.relative_error[1] > conv.relative_error[2]
    assert conv.mean_kernels[0].shape == (8, 8) and torch.equal(conv.k_inf, conv.mean_kernels[-1])
    given = monte_carlo_ntk(lambda w, s: TwoLayerNet(3, 2, w, seed=s).double(), x, [16, 64], 2,
                            k_inf=conv.k_inf)
    assert given.relative_error_of_mean[1] > 0


# ------------------------------------------------------------------------------------------------ callback
def test_kernel_drift_tracker_records_at_chosen_steps():
    gen = torch.Generator().manual_seed(18)
    model = TinyScoreNet()
    sample, t = rn(gen, 5, 2), torch.tensor(300.0)
    tracker = KernelDriftTracker(sample, t, steps=[0, 3], mode="trace")
    opt = torch.optim.SGD(model.parameters(), lr=0.2)
    K0 = empirical_ntk(model, None, (sample, t.expand(5)), mode="trace")
    records = {}
    for step in range(5):
        rec = tracker(step, model)
        if rec is not None:
            records[step] = rec
        opt.zero_grad()
        (model(rn(gen, 8, 2), torch.full((8,), 100.0)).sample ** 2 - 1).pow(2).mean().backward()
        opt.step()
    assert set(records) == {0, 3} and [h["step"] for h in tracker.history] == [0, 3]
    assert records[0]["ntk_drift"] == 0.0 and records[0]["weight_movement"] == 0.0
    assert records[0]["ntk_lambda_min"] == pytest.approx(float(torch.linalg.eigvalsh(K0)[0]))
    assert records[3]["ntk_drift"] > 1e-4 and records[3]["weight_movement"] > 1e-4
    assert set(records[3]) == {"ntk_drift", "weight_movement", "ntk_lambda_min"}


def test_kernel_drift_tracker_values_match_direct_computation():
    gen = torch.Generator().manual_seed(19)
    model = TinyScoreNet()
    sample, t = rn(gen, 4, 2), torch.tensor([1.0, 2.0, 3.0, 4.0], dtype=torch.float64)
    tracker = KernelDriftTracker(sample, t, steps=[0, 1], mode="full", params=["inp"])
    K0 = ntk_as_matrix(empirical_ntk(model, ["inp"], (sample, t)))
    inp0 = model.inp.detach().clone()
    tracker(0, model)
    with torch.no_grad():
        model.inp.add_(0.05 * rn(gen, 3, 16))
        model.out.add_(1.0)                                # not tracked: changes K but not the movement
    rec = tracker(1, model)
    K1 = ntk_as_matrix(empirical_ntk(model, ["inp"], (sample, t)))
    assert rec["ntk_drift"] == pytest.approx(kernel_drift(K1, K0), rel=1e-12)
    assert rec["weight_movement"] == pytest.approx(float(((model.inp - inp0).norm() / inp0.norm()).detach()), rel=1e-12)
    assert rec["ntk_lambda_min"] == pytest.approx(float(torch.linalg.eigvalsh(K1)[0]), rel=1e-9, abs=1e-12)
    assert tracker(2, model) is None and len(tracker.history) == 2


# --------------------------------------------------------------------------------------------- bad input
def test_bad_inputs_raise_clear_errors():
    gen = torch.Generator().manual_seed(20)
    net = TwoLayerNet(3, 2, 8, seed=0).double()
    with pytest.raises(ValueError, match=r"d_in=3"):
        two_layer_ntk(net, rn(gen, 4, 5))
    with pytest.raises(ValueError, match=r"x2 must have shape"):
        two_layer_ntk(net, rn(gen, 4, 3), rn(gen, 4, 2))
    with pytest.raises(ValueError, match="TwoLayerNet"):
        two_layer_ntk(TinyMLP(), rn(gen, 4, 3))
    with pytest.raises(ValueError, match="activation='relu'"):
        two_layer_relu_ntk(net, rn(gen, 4, 3))
    with pytest.raises(ValueError, match="full, trace, diagonal"):
        empirical_ntk(net, None, rn(gen, 4, 3), mode="blocks")
    with pytest.raises(ValueError, match="jacobian, ntk_vp"):
        empirical_ntk(net, None, rn(gen, 4, 3), implementation="fast")
    with pytest.raises(ValueError, match="the module has: W"):
        empirical_ntk(net, ["V"], rn(gen, 4, 3))
    with pytest.raises(ValueError, match="batch size"):
        empirical_ntk(TinyScoreNet(), None, (rn(gen, 4, 2), torch.ones(3)))
    with pytest.raises(ValueError, match="shapes do not match"):
        kernel_regression(torch.eye(4), torch.ones(2, 3), torch.ones(4))
    with pytest.raises(ValueError, match="square"):
        spectrum(torch.ones(3, 4))
    with pytest.raises(ValueError, match="trace, full"):
        KernelDriftTracker(rn(gen, 2, 2), torch.ones(2), [0], mode="diagonal")
