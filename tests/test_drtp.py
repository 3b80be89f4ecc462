"""DRTP (plugins/drtp.py) in float64: its updates against the formula computed independently (the
MLP sample by sample, the CNN's conv layers by autograd of a hand-built layer), hidden signals
that never see the output error, the output layer's update equal to BP's, regression cells
skipped with their reason, and the conformance checks."""

import json

import pytest
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

from bioplaus_bench.api import ArchitectureSpec, Classification, Regression, forward_pass
from bioplaus_bench.cli import app
from bioplaus_bench.execution.build import build_network
from bioplaus_bench.kit.conformance import check_algorithm
from bioplaus_bench.model.algorithm import Capabilities
from bioplaus_bench.registry import load_registry

from .helpers import write_idx_dataset

N_OUT = 3
MLP = (ArchitectureSpec(type="mlp", hidden=(7, 5, 4)), (6,))
CNN = (ArchitectureSpec(type="cnn", conv_channels=(3, 4), hidden=(5,), kernel_size=3), (2, 8, 8))


@pytest.fixture(scope="module")
def drtp():
    registry = load_registry()
    assert "drtp" in registry, "drtp is not registered: reinstall (pip install -e .)"
    return registry.get("drtp").cls


def make(cls, arch, seed=0, **params):
    spec, input_shape = arch
    torch.manual_seed(seed)
    network = build_network(spec, input_shape, N_OUT, dtype=torch.float64)
    return network, cls(network, Classification(N_OUT), cls.Params(**params))


def batch(input_shape, size=9, seed=1):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(size, *input_shape, generator=generator, dtype=torch.float64)
    return x, torch.randint(0, N_OUT, (size,), generator=generator)


def one_hot(y):
    return F.one_hot(y, N_OUT).double()


def test_mlp_updates_are_the_formula_computed_sample_by_sample(drtp):
    network, algorithm = make(drtp, MLP, feedback_scale=0.7)
    x, y = batch((6,))
    updates = algorithm.forward_updates(forward_pass(network, Classification(N_OUT), x, y))
    W = [None] + [network.layer(i).linear.weight.detach() for i in range(1, 5)]
    b = [None] + [network.layer(i).linear.bias.detach() for i in range(1, 5)]
    P = [None] + [algorithm.projection(i) for i in range(1, 4)]
    expected = [torch.zeros_like(p) for p in network.parameters()]
    B = len(x)
    for n in range(B):  # the paper's equations, one sample at a time, mean over the batch
        h = [x[n]]
        for i in range(1, 4):
            h.append(torch.tanh(W[i] @ h[-1] + b[i]))
        out = W[4] @ h[3] + b[4]
        target = one_hot(y[n])
        for i in range(1, 4):  # δy_i = (B_iᵀ y*) ⊙ f'(y_i), with B_iᵀ = P_i
            delta = (P[i] @ target) * (1 - h[i] ** 2) / B
            expected[2 * i - 2] += torch.outer(delta, h[i - 1])
            expected[2 * i - 1] += delta
        e = (torch.softmax(out, 0) - target) / B  # ∂(batch-mean CE)/∂out
        expected[6] += torch.outer(e, h[3])
        expected[7] += e
    assert len(updates) == len(expected) == 8
    for update, value in zip(updates, expected, strict=True):
        assert update.dtype == torch.float64 and update.shape == value.shape
        torch.testing.assert_close(update, value, rtol=1e-12, atol=1e-14)


def test_projections_are_glorot_normal_buffers_drawn_from_the_seeded_rng(drtp):
    network, algorithm = make(drtp, CNN, seed=3, feedback_scale=2.0)
    buffers = dict(algorithm.named_buffers())
    assert list(buffers) == ["P1", "P2", "P3"]
    assert [tuple(t.shape) for t in buffers.values()] == [(3 * 4 * 4, N_OUT), (4 * 2 * 2, N_OUT),
                                                          (5, N_OUT)]
    _, again = make(drtp, CNN, seed=3, feedback_scale=2.0)
    for name, tensor in buffers.items():
        assert tensor.dtype == torch.float64
        assert torch.equal(tensor, again.get_buffer(name))
    big = make(drtp, (ArchitectureSpec(type="mlp", hidden=(4000,)), (6,)), feedback_scale=2.0)[1]
    std = 2.0 * (2.0 / (4000 + N_OUT)) ** 0.5
    assert abs(big.projection(1).std().item() / std - 1) < 0.03


def hand_built_conv(layer, h_prev):
    """conv → tanh → max-pool written with torch.nn.functional on fresh leaves of the layer's
    weights: (pooled output, [weight, bias])."""
    weight = layer.conv.weight.detach().clone().requires_grad_(True)
    bias = layer.conv.bias.detach().clone().requires_grad_(True)
    k = weight.shape[-1]
    h = F.max_pool2d(torch.tanh(F.conv2d(h_prev, weight, bias, padding=k // 2)), 3, 2, 1)
    return h, [weight, bias]


@pytest.mark.parametrize("how", ["layer graphs", "no layer graphs", "full graph"])
def test_cnn_updates_are_autograd_of_a_hand_built_layer_with_the_signal(drtp, how):
    network, algorithm = make(drtp, CNN, feedback_scale=1.3)
    x, y = batch((2, 8, 8), size=6)
    task = Classification(N_OUT)
    fwd = forward_pass(network, task, x, y, record_graph=how == "full graph",
                       layer_graphs=how == "layer graphs")
    assert bool(fwd.layer_graphs) == (how == "layer graphs")
    updates = algorithm.forward_updates(fwd)
    B = len(x)
    expected = []
    h_prev = x
    for i in (1, 2):  # conv layers: the signal on the pooled output, through the layer alone
        h, leaves = hand_built_conv(network.layer(i), h_prev.detach())
        signal = (one_hot(y) @ algorithm.projection(i).t() / B).reshape(h.shape)
        expected += torch.autograd.grad(h, leaves, grad_outputs=signal)
        h_prev = h
    fc = network.layer(3).linear
    h3 = torch.tanh(fc(h_prev.detach().flatten(1))).detach()
    delta = (one_hot(y) @ algorithm.projection(3).t() / B) * (1 - h3 ** 2)
    expected += [delta.t() @ h_prev.detach().flatten(1), delta.sum(0)]
    out = network.layer(4).linear(h3).detach()
    e = (torch.softmax(out, 1) - one_hot(y)) / B
    expected += [e.t() @ h3, e.sum(0)]
    assert len(updates) == len(expected) == 8
    for update, value in zip(updates, expected, strict=True):
        assert update.dtype == torch.float64 and update.shape == value.shape
        torch.testing.assert_close(update, value, rtol=1e-10, atol=1e-13)
    # The layer graphs stay usable (the core's alignment metrics read them after this call).
    for update, again in zip(updates, algorithm.forward_updates(fwd), strict=True):
        torch.testing.assert_close(update, again, rtol=0, atol=0)


@pytest.mark.parametrize("arch", [MLP, CNN], ids=["mlp", "cnn"])
def test_hidden_updates_do_not_depend_on_the_output_error(drtp, arch):
    network, algorithm = make(drtp, arch)
    x, y = batch(arch[1])
    task = Classification(N_OUT)
    before = [u.clone() for u in algorithm.forward_updates(forward_pass(network, task, x, y))]
    with torch.no_grad():  # other logits, so another output error; the hidden layers are the same
        network.layer(network.depth).linear.weight.mul_(-3.0).add_(0.5)
    fwd = forward_pass(network, task, x, y)
    after = algorithm.forward_updates(fwd)
    n_hidden = len(before) - 2
    for old, new in zip(before[:n_hidden], after[:n_hidden], strict=True):
        assert torch.equal(old, new)
    assert not torch.allclose(before[-2], after[-2])  # the output layer's update did change
    # Even an error of any value leaves them alone: the signal is the target's projection.
    algorithm.task.output_error = lambda output, y: torch.full_like(output, 123.0)
    garbage = algorithm.forward_updates(fwd)
    assert torch.equal(garbage[-1], torch.full((N_OUT,), 123.0 * len(x), dtype=torch.float64))
    for old, new in zip(before[:n_hidden], garbage[:n_hidden], strict=True):
        assert torch.equal(old, new)
    # ... and the hidden updates do depend on the labels.
    _, other = batch(arch[1], seed=7)
    changed = algorithm.forward_updates(forward_pass(network, Classification(N_OUT), x, other))
    assert not torch.allclose(changed[0], before[0])


@pytest.mark.parametrize("arch", [MLP, CNN], ids=["mlp", "cnn"])
def test_the_output_layer_update_is_backprops_gradient(drtp, arch):
    network, algorithm = make(drtp, arch)
    x, y = batch(arch[1])
    fwd = forward_pass(network, Classification(N_OUT), x, y, record_graph=True)
    bp = torch.autograd.grad(fwd.loss, list(network.parameters()))
    updates = algorithm.forward_updates(fwd)
    for update, grad in zip(updates[-2:], bp[-2:], strict=True):
        torch.testing.assert_close(update, grad, rtol=1e-12, atol=1e-14)
    assert not torch.allclose(updates[0], bp[0])  # the hidden layers are not BP


def test_capabilities_declare_classification_only(drtp):
    caps = drtp.capabilities
    assert caps.tasks == ("classification",)
    assert caps.supports_task("classification") and not caps.supports_task("regression")
    assert caps.describe() == "MLP, CNN, classification only, vectorised seeds"
    assert Capabilities().tasks == ("classification", "regression")
    assert Capabilities().describe() == "MLP"
    torch.manual_seed(0)
    network = build_network(MLP[0], MLP[1], N_OUT, dtype=torch.float64)
    with pytest.raises(ValueError, match="classification"):
        drtp(network, Regression(N_OUT), drtp.Params())


def test_a_regression_cell_is_skipped_with_its_reason_and_classification_runs(tmp_path):
    write_idx_dataset(tmp_path / "data", "MNIST", n_train=40, n_test=10)
    suite = tmp_path / "s.yaml"
    suite.write_text(
        "seeds: [0]\n"
        "precision: float64\n"
        "datasets:\n"
        "  teacher:\n"
        "    source: teacher\n"
        "    options: {n_train: 32, n_test: 16, hidden: [8]}\n"
        "    architecture: {type: mlp, hidden: [6]}\n"
        "    protocol: {epochs: 1, batch_size: 16, validation: 16}\n"
        "  mnist:\n"
        "    source: mnist\n"
        "    architecture: {type: mlp, hidden: [6]}\n"
        "    protocol: {epochs: 1, batch_size: 10, validation: 10}\n"
        "algorithms:\n"
        "  bp: {optimizer: {lr: 1.0e-3}}\n"
        "  drtp: {optimizer: {lr: 1.0e-3}, params: {feedback_scale: 0.5}}\n")
    out = tmp_path / "r"
    result = CliRunner().invoke(app, ["run", str(suite), "--data-dir", str(tmp_path / "data"),
                                      "--skip-checksums", "--out", str(out), "--quiet"])
    assert result.exit_code == 0, result.output
    skipped = json.loads((out / "teacher" / "drtp" / "seed-0.json").read_text())
    assert skipped["status"] == "skipped"
    assert skipped["reason"] == "drtp does not support regression tasks (it supports classification)"
    assert json.loads((out / "mnist" / "drtp" / "seed-0.json").read_text())["status"] == "ok"
    assert json.loads((out / "teacher" / "bp" / "seed-0.json").read_text())["status"] == "ok"
    assert "| DRTP | n/a |" in result.stdout


def test_conformance_checks_pass_on_mlp_and_cnn(drtp):
    results = check_algorithm(drtp)
    assert all(r.passed for r in results), "\n".join(r.line() for r in results)
    names = [r.check for r in results]
    assert "frozen layers [mlp]" in names and "checkpoint [cnn]" in names
    result = CliRunner().invoke(app, ["check-plugin", "drtp"])
    assert result.exit_code == 0, result.output
