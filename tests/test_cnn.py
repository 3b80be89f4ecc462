"""The small CNN of algorithms.md §4.10 with BP, DDTP-linear, DDTP-control and DFA (float64)."""

import dataclasses
import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

from bioplaus_bench.api import ArchitectureSpec, Classification, forward_pass
from bioplaus_bench.cli import app
from bioplaus_bench.execution.build import build_network
from bioplaus_bench.registry import load_registry

from .helpers import write_cifar

ROOT = Path(__file__).resolve().parents[1]
REGISTRY = load_registry()
SPEC = ArchitectureSpec(type="cnn", conv_channels=(3, 4), hidden=(6,))


def build(name, **params):
    cls = REGISTRY.get(name).cls
    fields = {f.name for f in dataclasses.fields(cls.Params)}
    values = {"target_stepsize": 0.2, "sigma": 0.05, **params}
    p = cls.Params(**{k: v for k, v in values.items() if k in fields})
    torch.manual_seed(0)
    net = build_network(cls.adapt_architecture(SPEC, p), (3, 8, 8), 5, dtype=torch.float64)
    alg = cls(net, Classification(5), p)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(4, 3, 8, 8, generator=g, dtype=torch.float64)
    return net, alg, forward_pass(net, alg.task, x, torch.tensor([0, 1, 4, 2]), cls.record_graph)


def test_direct_feedback_shapes_conv_maps_have_no_bias_and_fc_keeps_it():
    for name in ("ddtp-linear", "ddtp-control"):
        net, alg, _ = build(name)
        assert alg.path.maps[0].linear.weight.shape == (3 * 4 * 4, 5)
        assert alg.path.maps[1].linear.weight.shape == (4 * 2 * 2, 5)
        assert alg.path.maps[0].linear.bias is None and alg.path.maps[1].linear.bias is None
        assert alg.path.maps[2].linear.bias is not None
        assert all(layer.conv.bias is not None for layer in net.layers[:2])
        assert net.layer(3).linear.bias is not None  # the MLP quirk does not apply to CNNs


def test_ddtp_linear_conv_targets_and_forward_updates():
    net, alg, fwd = build("ddtp-linear")
    e = (torch.softmax(fwd.output, 1) - F.one_hot(fwd.y, 5)) / 4
    step = -0.2 * e  # ŷ − a_L
    targets = alg.targets(fwd)
    updates = alg.forward_updates(fwd)
    offset = 0
    for i in (1, 2):
        Q = alg.path.maps[i - 1].linear.weight
        expected = fwd.h[i] + (step @ Q.t()).view_as(fwd.h[i])
        assert torch.allclose(targets[i], expected)
        block = net.layer(i)
        pooled = block.pool(torch.tanh(block.conv(fwd.h[i - 1])))
        grads = torch.autograd.grad(F.mse_loss(pooled, expected), [block.conv.weight, block.conv.bias])
        assert torch.allclose(updates[offset], grads[0]) and torch.allclose(updates[offset + 1], grads[1])
        offset += 2


def test_ddtp_linear_conv_difference_reconstruction_loss():
    net, alg, fwd = build("ddtp-linear", sigma=0.05)
    for i in (1, 2):
        torch.manual_seed(7)
        loss = alg.feedback_loss(alg.path, i, fwd, 0.05)
        torch.manual_seed(7)
        eps = torch.randn_like(fwd.h[i])
        h = fwd.h[i] + 0.05 * eps
        for block in net.layers[i:]:  # the remaining conv → tanh → pool and FC layers
            _, h = block(h)
        Q = alg.path.maps[i - 1].linear.weight
        rec = (Q @ (h - fwd.output).t()).t().reshape(fwd.h[i].shape)
        assert torch.allclose(loss, ((rec - 0.05 * eps) ** 2).mean() / 0.05 ** 2)


def test_ddtp_control_conv_loss_has_no_difference_and_no_scale():
    net, alg, fwd = build("ddtp-control")
    torch.manual_seed(3)
    loss = alg.feedback_loss(alg.path, 1, fwd, 0.05)
    torch.manual_seed(3)
    noisy = fwd.h[1] + 0.05 * torch.randn_like(fwd.h[1])
    Q = alg.path.maps[0].linear.weight
    rec = (net.propagate(noisy, 1) @ Q.t()).view_as(noisy)
    assert torch.allclose(loss, F.mse_loss(rec, noisy))


@pytest.mark.parametrize("name", ["bp", "dfa", "ddtp-linear", "ddtp-control"])
def test_every_cnn_method_proposes_updates_of_the_right_shape(name):
    net, alg, fwd = build(name)
    updates = alg.forward_updates(fwd)
    assert [u.shape for u in updates] == [p.shape for p in net.parameters()]
    assert all(torch.isfinite(u).all() for u in updates)


def test_table3_cnn_suite_runs_end_to_end_on_generated_cifar(tmp_path):
    write_cifar(tmp_path / "data", n_per_batch=12, n_test=20)
    out = tmp_path / "results"
    overrides = ["datasets.cifar10_cnn.protocol.validation=12",
                 "datasets.cifar10_cnn.protocol.batch_size=16"]
    for name in ("ddtp-linear", "ddtp-control"):
        overrides += [f"algorithms.{name}.schedule.feedback_pretraining_epochs=1"]
    args = ["run", str(ROOT / "suites" / "table3.yaml"), "--data-dir", str(tmp_path / "data"),
            "--skip-checksums", "--seeds", "1", "--epochs", "2", "--out", str(out), "--quiet"]
    for item in overrides:
        args += ["--set", item]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    for label in ("BP", "DDTP-linear", "DDTP-control", "DFA"):
        assert f"| {label} |" in result.stdout
    records = [json.loads(p.read_text()) for p in out.glob("*/*/seed-0.json")]
    assert len(records) == 4 and all(r["status"] == "ok" for r in records)
    assert all(len(r["history"]) == 2 for r in records)
    assert "checksums are not verified" in result.stderr


def test_methods_without_a_cnn_variant_are_skipped_with_the_reason(tmp_path):
    write_cifar(tmp_path / "data", n_per_batch=4, n_test=8)
    suite = tmp_path / "s.yaml"
    suite.write_text(
        "seeds: [0]\n"
        "datasets:\n"
        "  cnn:\n"
        "    source: cifar10\n"
        "    architecture: {type: cnn, conv_channels: [2], hidden: [4]}\n"
        "    protocol: {epochs: 1, batch_size: 8, validation: 4}\n"
        "algorithms:\n"
        "  dtp: {optimizer: {lr: 1.0e-3}}\n"
        "  dfa: {optimizer: {lr: 1.0e-3}}\n")
    out = tmp_path / "r"
    result = CliRunner().invoke(app, ["run", str(suite), "--data-dir", str(tmp_path / "data"),
                                      "--skip-checksums", "--out", str(out), "--quiet"])
    assert result.exit_code == 0, result.output
    record = json.loads((out / "cnn" / "dtp" / "seed-0.json").read_text())
    assert record["status"] == "skipped"
    assert record["reason"] == "dtp does not support CNN networks"
    assert "| DTP | n/a |" in result.stdout
