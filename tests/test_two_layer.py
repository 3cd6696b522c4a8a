import math

import pytest
import torch

from softdiff.nets import TwoLayerNet, get_activation, softmax_vjp


def rn(*shape, **kw):
    return torch.randn(*shape, dtype=torch.float64, **kw)



def test_softmax_vjp_matches_autograd():
    z = rn(5, 7).requires_grad_()
    g = rn(5, 7)
    s = torch.softmax(z, -1)
    (auto,) = torch.autograd.grad(s, z, g)
    assert torch.allclose(softmax_vjp(s.detach(), g), auto, atol=1e-12)


@pytest.mark.parametrize("act", ["softmax", "relu", "exp"])
def test_forward_matches_plain_formula(act):
    net = TwoLayerNet(3, 2, 10, coupled=False, activation=act, seed=0).double()
    x = rn(4, 3)
    z = x @ net.W
    m = net.width
    if act == "softmax":
        expected = m * torch.exp(z) @ net.A.T / torch.exp(z).sum(-1, keepdim=True)
    elif act == "relu":
        expected = torch.relu(z) @ net.A.T / math.sqrt(m)
    else:
        expected = torch.exp(z) @ net.A.T / math.sqrt(m)
    assert torch.allclose(net(x), expected, atol=1e-10)


@pytest.mark.parametrize("act", ["softmax", "relu", "exp"])
def test_closed_form_gradient_matches_autograd(act):
    net = TwoLayerNet(3, 2, 12, coupled=False, activation=act, seed=1).double()
    x = rn(5, 3)
    closed = net.grad_W(x)
    jac = torch.func.jacrev(lambda W: torch.func.functional_call(net, {"W": W}, (x,)))(net.W.detach())
    # jac: (n, d_out, d_in, m)
    assert torch.allclose(closed, jac, atol=1e-10)


def test_softmax_gradients_sum_to_zero_over_neurons():
    net = TwoLayerNet(4, 3, 16, coupled=False, seed=2).double()
    x = rn(6, 4)
    loss = ((net(x) - rn(6, 3)) ** 2).sum()
    loss.backward()
    assert net.W.grad.sum(dim=1).abs().max() < 1e-10
    assert net.W.grad.abs().max() > 1e-3


def test_shift_invariance_of_softmax_network():
    net = TwoLayerNet(4, 2, 8, coupled=False, seed=3).double()
    x = rn(5, 4)
    before = net(x)
    with torch.no_grad():
        net.W += rn(4, 1)
    assert torch.allclose(net(x), before, atol=1e-10)


@pytest.mark.parametrize("act", ["softmax", "relu", "exp"])
def test_coupled_init_gives_zero_output(act):
    net = TwoLayerNet(3, 2, 20, activation=act, seed=4).double()
    assert net(rn(7, 3)).abs().max() < 1e-12
    uncoupled = TwoLayerNet(3, 2, 20, coupled=False, activation=act, seed=4).double()
    assert uncoupled(rn(7, 3)).abs().max() > 1e-3


def test_output_signs_are_buffer_unless_trained():
    net = TwoLayerNet(3, 2, 8).double()
    assert [n for n, _ in net.named_parameters()] == ["W"]
    assert set(net.A.unique().tolist()) <= {-1.0, 1.0} and net.A.shape == (2, 8)
    trained = TwoLayerNet(3, 2, 8, train_output=True).double()
    assert {n for n, _ in trained.named_parameters()} == {"W", "A"}


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="even"):
        TwoLayerNet(3, 2, 7).double()
    with pytest.raises(ValueError, match="softmax, relu, exp"):
        TwoLayerNet(3, 2, 8, activation="tanh").double()
    with pytest.raises(ValueError, match="gelu"):
        get_activation("nope")


def test_scaled_softmax_is_order_one_at_any_width():
    act = get_activation("softmax")
    for m in (16, 4096):
        out = act(rn(100, m))
        assert torch.allclose(out.mean(-1), torch.ones(100, dtype=out.dtype), atol=1e-10)
