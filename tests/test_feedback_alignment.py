"""Feedback alignment, the outside plugin in plugins/feedback_alignment: its formula against backprop
and a direct per-sample computation (float64), its installation through the entry point, and the
conformance check on the MLP and the CNN (it is a ``BackwardRule``; tests/test_backward_rules.py
checks the CNN's update against an independent computation)."""

import ast
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from bioplaus_bench.api import ArchitectureSpec, Classification, Regression, forward_pass
from bioplaus_bench.cli import app
from bioplaus_bench.execution.build import build_network
from bioplaus_bench.registry import load_registry

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "plugins" / "feedback_alignment"
runner = CliRunner()


@pytest.fixture(scope="module")
def fa():
    registry = load_registry()
    assert "feedback-alignment" in registry, (
        "feedback alignment is not installed: `make install` (or pip install --no-deps "
        "--no-build-isolation -e plugins/feedback_alignment)")
    return registry.get("feedback-alignment")


def make(fa, task, hidden=(7, 5, 4), n_in=6, n_out=3, seed=0):
    torch.manual_seed(seed)
    network = build_network(ArchitectureSpec(type="mlp", hidden=hidden), (n_in,), n_out,
                            dtype=torch.float64)
    algorithm = fa.cls(network, task, fa.cls.Params())
    return network, algorithm


def batch(task, n_in=6, n_out=3, size=9):
    x = torch.randn(size, n_in, dtype=torch.float64)
    if isinstance(task, Classification):
        return x, torch.randint(0, n_out, (size,))
    return x, torch.randn(size, n_out, dtype=torch.float64)


@pytest.mark.parametrize("task", [Classification(3), Regression(3)], ids=["classification", "regression"])
def test_fa_with_the_transposed_forward_weights_is_exactly_backprop(fa, task):
    network, algorithm = make(fa, task)
    for i in range(2, network.depth + 1):  # B_i := W_i
        algorithm.feedback_matrix(i).copy_(network.layer(i).linear.weight.detach())
    x, y = batch(task)
    expected = torch.autograd.grad(forward_pass(network, task, x, y, record_graph=True).loss,
                                   list(network.parameters()))
    updates = proposed(algorithm, network, task, x, y)
    assert len(updates) == len(expected) == 2 * network.depth
    for update, grad in zip(updates, expected, strict=True):
        assert update.dtype == torch.float64 and update.shape == grad.shape
        torch.testing.assert_close(update, grad, rtol=1e-12, atol=1e-14)
    # With its own random matrices it is not backprop (the test above is not vacuous).
    random_fa = fa.cls(network, task, fa.cls.Params())
    assert not torch.allclose(proposed(random_fa, network, task, x, y)[0], expected[0])


def proposed(algorithm, network, task, x, y):
    """The update of one training step, with the forward pass the runner makes for it."""
    fwd = forward_pass(network, task, x, y, record_graph=True,
                       backward_weights=algorithm.backward_weights())
    return algorithm.forward_updates(fwd)


def test_fa_update_against_a_direct_per_sample_computation(fa):
    task = Classification(3)
    network, algorithm = make(fa, task, hidden=(5, 4))
    x, y = batch(task, size=4)
    updates = proposed(algorithm, network, task, x, y)
    W = [None] + [network.layer(i).linear.weight.detach() for i in range(1, 4)]
    b = [None] + [network.layer(i).linear.bias.detach() for i in range(1, 4)]
    B = [None, None] + [algorithm.feedback_matrix(i) for i in range(2, 4)]
    expected = [torch.zeros_like(w) if w is not None else None for w in W], \
        [torch.zeros_like(v) if v is not None else None for v in b]
    for n in range(len(x)):  # one sample at a time, written out from the paper's equations
        h1 = torch.tanh(W[1] @ x[n] + b[1])
        h2 = torch.tanh(W[2] @ h1 + b[2])
        out = W[3] @ h2 + b[3]
        p = torch.softmax(out, 0)
        e = (p - torch.nn.functional.one_hot(y[n], 3).double()) / len(x)  # ∂(batch mean)/∂out
        d3 = e
        d2 = (d3 @ B[3]) * (1 - h2 ** 2)  # B_i in place of W_i: (W_iᵀ δ_i) becomes (B_iᵀ δ_i)
        d1 = (d2 @ B[2]) * (1 - h1 ** 2)
        for i, (d, h_prev) in enumerate([(d1, x[n]), (d2, h1), (d3, h2)], start=1):
            expected[0][i] += torch.outer(d, h_prev)
            expected[1][i] += d
    want = [t for i in range(1, 4) for t in (expected[0][i], expected[1][i])]
    for update, value in zip(updates, want, strict=True):
        torch.testing.assert_close(update, value, rtol=1e-12, atol=1e-14)


def test_feedback_matrices_are_fixed_seeded_buffers_of_the_right_shapes(fa):
    network, algorithm = make(fa, Regression(3), seed=3)
    _, again = make(fa, Regression(3), seed=3)
    _, other = make(fa, Regression(3), seed=4)
    buffers = dict(algorithm.named_buffers())
    assert sorted(buffers) == ["feedback.B2", "feedback.B3", "feedback.B4"]
    for i in range(2, network.depth + 1):
        assert algorithm.feedback_matrix(i).shape == network.layer(i).linear.weight.shape
        assert torch.equal(algorithm.feedback_matrix(i), again.feedback_matrix(i))
        assert not torch.equal(algorithm.feedback_matrix(i), other.feedback_matrix(i))
    assert not list(algorithm.parameters())  # nothing to train
    assert set(algorithm.state_dict()) >= set(buffers)  # saved in checkpoints


def test_fa_is_an_outside_package_using_only_the_public_api(fa):
    assert fa.origin == "entry point"
    assert fa.cls.__module__ == "bioplaus_feedback_alignment.algorithm"
    assert "bioplaus-feedback-alignment" in fa.source
    assert 'feedback_alignment = "bioplaus_feedback_alignment.algorithm"' in \
        (PACKAGE / "pyproject.toml").read_text()
    tree = ast.parse((PACKAGE / "bioplaus_feedback_alignment" / "algorithm.py").read_text())
    imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)} | \
        {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    assert {m for m in imported if m and m.startswith("bioplaus_bench")} == {"bioplaus_bench.api"}
    assert "plugins/feedback_alignment" in (ROOT / "Makefile").read_text()


def test_bench_list_shows_fa_from_an_entry_point_and_it_passes_check_plugin(fa):
    listing = runner.invoke(app, ["list"])
    assert listing.exit_code == 0
    row = next(line for line in listing.stdout.splitlines() if "feedback-alignment" in line)
    assert "FA" in row and "entry point" in row and "MLP, CNN" in row
    result = runner.invoke(app, ["check-plugin", "feedback-alignment"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert "[entry point]" in lines[0]
    checks = [line for line in lines if line.startswith(("PASS", "FAIL", "SKIP"))]
    assert checks and all(line.startswith("PASS") for line in checks), result.stdout
    for name in ("loads", *[f"{check} [{arch}]" for arch in ("mlp", "cnn") for check in
                            ("step", "precision", "deterministic", "frozen layers", "checkpoint")]):
        assert any(line.startswith(f"PASS  {name}:") for line in checks), name
    assert lines[-1].startswith(f"{len(checks)} passed, 0 failed in ")
    # The distribution's name finds it too.
    by_package = runner.invoke(app, ["check-plugin", "bioplaus-feedback-alignment"])
    assert by_package.exit_code == 0 and "feedback-alignment" in by_package.stdout
