"""Fidelity of the Table-3 CNN runs to the authors' code.

The images come out of ``data.py`` NHWC-strided (a permuted view of the decoded H×W×C array).
Fed to the float64 CNN, whose weights are in the standard layout, they made autograd return the
first conv weight's gradient channels-last; torch's fused Adam (``optim.adam``) reads a gradient
in raw memory order, so that gradient was applied to the wrong weight elements. The float64 BP
CNN then trained worse than the public code. Two guards now prevent it: ``ConvBlock.forward``
feeds each convolution its input in the weight's layout (so updates come out in the parameters'
layout), and ``optim.Adam`` copies any differently laid-out gradient before a step.
These tests run the suite's own pieces (table3.yaml, data loading, network, per-layer Adams)
against an independent float64 computation written from the public code and algorithms.md §4.10.
"""

import dataclasses
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from bioplaus_bench.api import ArchitectureSpec, Classification, forward_pass
from bioplaus_bench.data import DataSettings
from bioplaus_bench.execution.build import build_network
from bioplaus_bench.execution.runner import ForwardOptimisers, Runner
from bioplaus_bench.execution.setup import Environment, prepare
from bioplaus_bench.registry import load_registry
from bioplaus_bench.suite import load_suite

from .helpers import write_cifar

ROOT = Path(__file__).resolve().parents[1]
REGISTRY = load_registry()

# final_configs/cifar10_BPConv.py of the public code: one Adam per layer (conv1, conv2, fc1,
# fc2), each over that layer's weight and bias; target_stepsize 1, betas 0.9/0.999, no decay.
PUBLIC_LR = [0.000592992422167547, 0.00038001447767611315, 7.373656030831236e-06,
             1.0011818742335523e-06]
PUBLIC_EPS = [1.7193559220924876e-07, 0.00019809119366335256, 1.4745363724867889e-08,
              3.0370342703184836e-05]


def _reference_forward(params, x):
    """BPConvNetworkCIFAR.forward: conv 5×5 pad 2 → tanh → max-pool 3/2/1, twice; flatten in
    C, H, W order; FC 512 tanh; FC 10."""
    w1, b1, w2, b2, w3, b3, w4, b4 = params
    h = F.max_pool2d(torch.tanh(F.conv2d(x, w1, b1, padding=2)), 3, 2, 1)
    h = F.max_pool2d(torch.tanh(F.conv2d(h, w2, b2, padding=2)), 3, 2, 1)
    h = torch.tanh(F.linear(h.reshape(h.shape[0], -1), w3, b3))
    return F.linear(h, w4, b4)


def _reference_adam(params, grads, state, t, lrs, eps, betas=(0.9, 0.999)):
    """Adam written out (torch.optim.Adam's formula), one lr/eps per layer of two tensors."""
    b1, b2 = betas
    for k, (p, g) in enumerate(zip(params, grads, strict=True)):
        m, v = state.setdefault(k, (torch.zeros_like(p), torch.zeros_like(p)))
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        state[k] = (m, v)
        denom = (v.sqrt() / math.sqrt(1 - b2 ** t)) + eps[k // 2]
        p -= lrs[k // 2] / (1 - b1 ** t) * m / denom


@pytest.fixture(scope="module")
def bp_cell(tmp_path_factory):
    root = tmp_path_factory.mktemp("cifar")
    write_cifar(root, n_per_batch=8, n_test=8)
    suite = load_suite(ROOT / "suites" / "table3.yaml", REGISTRY,
                       ["datasets.cifar10_cnn.protocol.validation=8"])
    cell = next(c for c in suite.cells(only=["bp"], seeds=1, epochs=1))
    env = Environment(data=DataSettings(root=root, verify_checksums=False))
    return cell, env


def test_float64_bp_cnn_steps_match_an_independent_computation(bp_cell):
    cell, env = bp_cell
    assert cell.precision == "float64"
    data, network, algorithm = prepare(cell, REGISTRY.get("bp").cls, env)
    runner = Runner(network, algorithm, ForwardOptimisers(network, algorithm,
                                                          cell.settings.optimizer))
    params = [p.detach().clone() for p in network.parameters()]
    assert [tuple(p.shape) for p in params] == [(32, 3, 5, 5), (32,), (64, 32, 5, 5), (64,),
                                                (512, 4096), (512,), (10, 512), (10,)]
    state: dict = {}
    for t, rows in enumerate(([0, 3, 5, 7, 9, 11], [1, 2, 4, 6, 8, 10, 12], [13, 14, 15]), 1):
        x, y = data.train.x[rows], data.train.y[rows]  # laid out as data.py gives them
        fwd = runner.step(x, y).proposal.fwd  # the step training takes

        reference = [p.clone().requires_grad_() for p in params]
        logits = _reference_forward(reference, x.contiguous())
        assert torch.allclose(fwd.output, logits, rtol=0, atol=1e-12)
        grads = torch.autograd.grad(F.cross_entropy(logits, y), reference)
        _reference_adam(params, grads, state, t, PUBLIC_LR, PUBLIC_EPS)
        for name, (ours, expected) in zip(dict(network.named_parameters()), zip(
                network.parameters(), params, strict=True), strict=True):
            assert torch.allclose(ours, expected, rtol=0, atol=1e-13), (t, name)


def _build(name, dtype):
    cls = REGISTRY.get(name).cls
    fields = {f.name for f in dataclasses.fields(cls.Params)}
    values = {"target_stepsize": 0.2, "sigma": 0.05}
    p = cls.Params(**{k: v for k, v in values.items() if k in fields})
    torch.manual_seed(0)
    spec = ArchitectureSpec(type="cnn", conv_channels=(3, 4), hidden=(6,))
    net = build_network(cls.adapt_architecture(spec, p), (3, 8, 8), 5, dtype=dtype)
    return net, cls(net, Classification(5), p)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name", ["bp", "dfa", "ddtp-linear", "ddtp-control"])
def test_cnn_updates_are_laid_out_like_their_parameters(name, dtype):
    """The fused Adam needs each gradient in its parameter's memory layout, whatever the
    layout of the images (NHWC-strided as data.py gives them, or standard)."""
    net, alg = _build(name, dtype)
    g = torch.Generator().manual_seed(1)
    nhwc = torch.randn(4, 8, 8, 3, generator=g, dtype=dtype).permute(0, 3, 1, 2)
    for x in (nhwc, nhwc.contiguous()):
        fwd = forward_pass(net, alg.task, x, torch.tensor([0, 1, 4, 2]),
                           REGISTRY.get(name).cls.record_graph)
        for (pname, p), u in zip(net.named_parameters(), alg.forward_updates(fwd), strict=True):
            assert u.stride() == p.stride(), (pname, u.stride(), p.stride())
