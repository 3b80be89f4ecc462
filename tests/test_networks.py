"""Networks, tasks and the shared target building blocks against direct computations (float64)."""

import pytest
import torch
import torch.nn.functional as F

from bioplaus_bench.api import (
    ArchitectureSpec,
    Classification,
    Regression,
    forward_pass,
    local_updates,
    output_target,
)
from bioplaus_bench.execution.build import build_network


@pytest.fixture(autouse=True)
def float64():
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


def small_mlp(hidden=(5, 4, 3), n_in=6, n_out=3, seed=0):
    torch.manual_seed(seed)
    return build_network(ArchitectureSpec(type="mlp", hidden=hidden), (n_in,), n_out,
                         dtype=torch.float64)


def small_cnn(seed=0):
    torch.manual_seed(seed)
    spec = ArchitectureSpec(type="cnn", conv_channels=(2, 3), hidden=(7,))
    return build_network(spec, (3, 8, 8), 4, dtype=torch.float64)


def test_paper_mlp_and_cnn_shapes_and_parameter_counts():
    mlp = build_network(ArchitectureSpec(hidden=(256,) * 5), (1, 28, 28), 10, dtype=torch.float32)
    assert mlp.depth == 6
    assert [tuple(p.shape) for p in mlp.layer_parameters(1)] == [(256, 784), (256,)]
    assert sum(p.numel() for p in mlp.parameters()) == 784 * 256 + 256 + 4 * (256 * 256 + 256) \
        + 256 * 10 + 10
    cnn = build_network(ArchitectureSpec(type="cnn", conv_channels=(32, 64), hidden=(512,)),
                        (3, 32, 32), 10)
    assert cnn.activation_shape(1) == (32, 16, 16)
    assert cnn.activation_shape(2) == (64, 8, 8)
    counts = [sum(p.numel() for p in cnn.layer_parameters(i)) for i in range(1, 5)]
    assert counts == [32 * 3 * 25 + 32, 64 * 32 * 25 + 64, 4096 * 512 + 512, 512 * 10 + 10]


def test_glorot_normal_init_and_zero_biases():
    net = build_network(ArchitectureSpec(hidden=(400, 300)), (500,), 10)
    w = net.layer(1).linear.weight
    assert w.std().item() == pytest.approx((2 / (500 + 400)) ** 0.5, rel=0.02)
    assert torch.count_nonzero(net.layer(1).linear.bias) == 0


def test_no_bias_layers_are_built_without_bias():
    spec = ArchitectureSpec(hidden=(5, 4)).without_bias(2)
    net = build_network(spec, (3,), 2)
    assert net.layer(1).linear.bias is not None
    assert net.layer(2).linear.bias is None
    assert net.layer(3).linear.bias is not None


def test_forward_pass_activations_match_direct_computation():
    net = small_mlp()
    x, y = torch.randn(7, 6), torch.randint(0, 3, (7,))
    fwd = forward_pass(net, Classification(3), x, y)
    h = x
    for i in range(1, 4):
        a = h @ net.layer(i).linear.weight.t() + net.layer(i).linear.bias
        assert torch.allclose(fwd.a[i], a)
        h = torch.tanh(a)
        assert torch.allclose(fwd.h[i], h)
    logits = h @ net.layer(4).linear.weight.t() + net.layer(4).linear.bias
    assert torch.allclose(fwd.output, logits)
    assert torch.allclose(fwd.loss, F.cross_entropy(logits, y))
    assert not fwd.loss.requires_grad
    assert torch.allclose(net.propagate(fwd.h[2], 2), logits)


@pytest.mark.parametrize("task, y", [(Classification(3), torch.tensor([0, 2, 1, 1, 0])),
                                     (Regression(3), torch.randn(5, 3))])
def test_output_error_is_autograd_gradient_of_the_batch_mean_loss(task, y):
    out = torch.randn(5, 3, requires_grad=True)
    (expected,) = torch.autograd.grad(task.loss(out, y), out)
    assert torch.allclose(task.output_error(out.detach(), y), expected)


def test_output_target_is_logits_minus_stepsize_times_mean_loss_gradient():
    net = small_mlp()
    x, y = torch.randn(8, 6), torch.randint(0, 3, (8,))
    fwd = forward_pass(net, Classification(3), x, y)
    p = torch.softmax(fwd.output, 1)
    expected = fwd.output - 0.3 / 8 * (p - F.one_hot(y, 3))
    assert torch.allclose(output_target(fwd, Classification(3), 0.3), expected)


def test_dense_local_update_is_autograd_of_batch_mean_squared_distance():
    """algorithms.md §3: the gradient of (1/B) Σ_b ‖h_i − ĥ_i‖² with h_{i-1} and the target constant."""
    net = small_mlp()
    x, y = torch.randn(9, 6), torch.randint(0, 3, (9,))
    fwd = forward_pass(net, Classification(3), x, y)
    targets = [None] + [h + 0.1 * torch.randn_like(h) for h in fwd.h[1:]]
    updates = local_updates(net, fwd, targets)
    offset = 0
    for i in range(1, net.depth + 1):
        params = net.layer_parameters(i)
        _, h = net.layer(i)(fwd.h[i - 1].detach())
        loss = ((h - targets[i]) ** 2).sum(1).mean()
        expected = torch.autograd.grad(loss, params)
        for got, want in zip(updates[offset:offset + len(params)], expected, strict=True):
            assert torch.allclose(got, want)
        offset += len(params)
    assert offset == len(updates)


def test_conv_local_update_is_autograd_of_element_mean_mse():
    net = small_cnn()
    x, y = torch.randn(4, 3, 8, 8), torch.randint(0, 4, (4,))
    fwd = forward_pass(net, Classification(4), x, y)
    targets = [None] + [h + 0.1 * torch.randn_like(h) for h in fwd.h[1:]]
    updates = local_updates(net, fwd, targets)
    conv = net.layer(2)
    pooled = conv.pool(torch.tanh(conv.conv(fwd.h[1])))
    expected = torch.autograd.grad(F.mse_loss(pooled, targets[2]), [conv.conv.weight, conv.conv.bias])
    assert torch.allclose(updates[2], expected[0])
    assert torch.allclose(updates[3], expected[1])


def test_a_pass_without_graph_keeps_each_conv_layers_own_graph_for_its_local_update():
    net = small_cnn()
    x, y = torch.randn(4, 3, 8, 8), torch.randint(0, 4, (4,))
    fwd = forward_pass(net, Classification(4), x, y)
    _, plain = net.activations(x)
    assert set(fwd.layer_graphs) == {1, 2}  # the conv layers only
    assert all(torch.equal(a, b) and not a.requires_grad for a, b in zip(fwd.h, plain, strict=True))
    assert all(torch.equal(fwd.layer_graphs[i].h, fwd.h[i]) for i in (1, 2))
    targets = [None] + [h + 0.1 * torch.randn_like(h) for h in fwd.h[1:]]
    kept = local_updates(net, fwd, targets)
    assert all(torch.equal(a, b) for a, b in zip(kept, local_updates(net, fwd, targets), strict=True))
    without = forward_pass(net, Classification(4), x, y)
    without.layer_graphs.clear()
    assert all(torch.equal(a, b) for a, b in zip(kept, local_updates(net, without, targets), strict=True))
    with torch.no_grad():  # once the weights move, the kept graph is stale: a second pass instead
        net.layer(2).conv.weight.mul_(1.5)
    conv = net.layer(2)
    pooled = conv.pool(torch.tanh(conv.conv(fwd.h[1])))
    expected = torch.autograd.grad(F.mse_loss(pooled, targets[2]), [conv.conv.weight])[0]
    assert torch.allclose(local_updates(net, fwd, targets)[2], expected)


def test_a_layer_without_target_gets_zero_updates():
    net = small_mlp()
    fwd = forward_pass(net, Classification(3), torch.randn(4, 6), torch.randint(0, 3, (4,)))
    targets = [None, None, fwd.h[2] + 1, None, fwd.h[4] + 1]
    updates = local_updates(net, fwd, targets)
    assert torch.count_nonzero(updates[0]) == 0 and torch.count_nonzero(updates[1]) == 0
    assert torch.count_nonzero(updates[2]) > 0


@pytest.mark.parametrize("make", [small_mlp, small_cnn])
def test_propagate_many_equals_one_propagation_per_value(make):
    net = make()
    x = torch.randn(4, *net.input_shape)
    _, h = net.activations(x)
    starts, stops = [0, 1, 1, 2, 3], [net.depth, net.depth, 2, net.depth, net.depth]
    values = [h[s] + 0.1 * torch.randn_like(h[s]) for s in starts]
    values[2] = values[2][:3]  # values may differ in batch size
    got = net.propagate_many(values, starts, stops)
    for value, start, stop, result in zip(values, starts, stops, got, strict=True):
        assert torch.allclose(result, net.propagate(value, start, stop), atol=1e-12)


def test_a_pass_for_a_feedback_step_alone_keeps_no_layer_graphs():
    net = small_cnn()
    x, y = torch.randn(4, 3, 8, 8), torch.randint(0, 4, (4,))
    fwd = forward_pass(net, Classification(4), x, y, layer_graphs=False)
    assert fwd.layer_graphs == {}
    kept = forward_pass(net, Classification(4), x, y)
    assert all(torch.equal(a, b) for a, b in zip(fwd.h, kept.h, strict=True))
