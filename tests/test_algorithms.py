"""The built-in BP and DFA plugins against independent direct computations (float64)."""

import torch
import torch.nn.functional as F

from bioplaus_bench.api import ArchitectureSpec, Classification, forward_pass
from bioplaus_bench.execution.build import build_network
from bioplaus_bench.registry import load_registry

REGISTRY = load_registry()


def build(name, params=None, hidden=(6, 5, 4), seed=3):
    cls = REGISTRY.get(name).cls
    params = params or cls.Params()
    torch.manual_seed(seed)
    spec = cls.adapt_architecture(ArchitectureSpec(hidden=hidden), params)
    net = build_network(spec, (7,), 3, dtype=torch.float64)
    return net, cls(net, Classification(3), params)


def batch(seed=0, n=10):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 7, generator=g, dtype=torch.float64), torch.randint(0, 3, (n,), generator=g)


def test_bp_update_is_the_autograd_gradient():
    net, bp = build("bp")
    x, y = batch()
    fwd = forward_pass(net, bp.task, x, y, record_graph=bp.record_graph)
    updates = bp.forward_updates(fwd)
    loss = F.cross_entropy(net(x), y)
    expected = torch.autograd.grad(loss, list(net.parameters()))
    assert len(updates) == len(expected)
    for got, want in zip(updates, expected, strict=True):
        assert torch.allclose(got, want)


def test_dfa_update_matches_spec_4_2():
    """∇W_i = (2η̂/B) Σ_b [s'(a_i) ⊙ (B_i e_b)] h_{i-1}ᵀ with e = (softmax − onehot)/B;
    the output layer gets (2η̂/B) ∂ℒ/∂W_L."""
    stepsize = 0.7
    cls = REGISTRY.get("dfa").cls
    net, dfa = build("dfa", cls.Params(target_stepsize=stepsize))
    x, y = batch()
    n = len(y)
    updates = dfa.forward_updates(forward_pass(net, dfa.task, x, y))

    # Independent forward pass and error.
    hs, pre = [x], [None]
    for i in range(1, net.depth + 1):
        lin = net.layer(i).linear
        a = hs[-1] @ lin.weight.t() + (lin.bias if lin.bias is not None else 0)
        pre.append(a)
        hs.append(torch.tanh(a) if i < net.depth else a)
    e = (torch.softmax(hs[-1], 1) - F.one_hot(y, 3)) / n
    expected = []
    for i in range(1, net.depth):
        delta = (1 - torch.tanh(pre[i]) ** 2) * (e @ dfa.feedback_matrix(i).t())
        expected.append(2 * stepsize / n * delta.t() @ hs[i - 1])
        if net.layer(i).linear.bias is not None:
            expected.append(2 * stepsize / n * delta.sum(0))
    logits = net(x)
    grads = torch.autograd.grad(F.cross_entropy(logits, y), net.layer_parameters(net.depth))
    expected += [2 * stepsize / n * g for g in grads]
    assert len(updates) == len(expected)
    for got, want in zip(updates, expected, strict=True):
        assert torch.allclose(got, want)


def test_dfa_last_hidden_layer_has_no_bias_by_default_and_feedback_is_glorot():
    net, dfa = build("dfa", hidden=(300, 200, 100))
    assert net.layer(3).linear.bias is None
    assert all(net.layer(i).linear.bias is not None for i in (1, 2, 4))
    b1 = dfa.feedback_matrix(1)
    assert b1.shape == (300, 3)
    assert abs(b1.std().item() / (2 / 303) ** 0.5 - 1) < 0.1
    cls = REGISTRY.get("dfa").cls
    net, _ = build("dfa", cls.Params(last_hidden_bias=True))
    assert net.layer(3).linear.bias is not None


def test_dfa_feedback_is_never_trained():
    net, dfa = build("dfa")
    before = [p.detach().clone() for p in dfa.parameters()]
    assert before and not any(p.requires_grad for p in dfa.parameters())
    x, y = batch()
    fwd = forward_pass(net, dfa.task, x, y)
    assert dfa.feedback_step(fwd) is None
    assert all(torch.equal(a, b) for a, b in zip(before, dfa.parameters(), strict=True))


def test_dfa_runs_on_a_cnn():
    cls = REGISTRY.get("dfa").cls
    torch.manual_seed(0)
    spec = cls.adapt_architecture(ArchitectureSpec(type="cnn", conv_channels=(2, 3), hidden=(5,)),
                                  cls.Params())
    net = build_network(spec, (3, 8, 8), 4, dtype=torch.float64)
    dfa = cls(net, Classification(4), cls.Params())
    fwd = forward_pass(net, dfa.task, torch.randn(2, 3, 8, 8, dtype=torch.float64),
                       torch.tensor([0, 3]))
    updates = dfa.forward_updates(fwd)
    assert [u.shape for u in updates] == [p.shape for p in net.parameters()]
    assert all(net.layer(i).conv.bias is not None for i in (1, 2))
