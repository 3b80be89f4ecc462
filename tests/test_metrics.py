"""Alignment metrics (algorithms.md §9, §10) against explicit autograd Jacobians (float64)."""

import copy
import dataclasses

import pytest
import torch
from torch.func import jacrev

from bioplaus_bench.api import ArchitectureSpec, Classification, Regression, forward_pass
from bioplaus_bench.execution.build import build_network
from bioplaus_bench.metrics.alignment import (
    MetricsConfig,
    alignment,
    angle,
    gauss_newton_step,
    gnt_weight_update,
    nullspace_ratio,
    output_jacobians,
)
from bioplaus_bench.registry import load_registry

REGISTRY = load_registry()
MLP = ArchitectureSpec(hidden=(6, 5, 4))
CNN = ArchitectureSpec(type="cnn", conv_channels=(2, 3), hidden=(5,))


def setup(spec=MLP, shape=(7,), n_out=3, seed=0, activation="tanh"):
    torch.manual_seed(seed)
    net = build_network(dataclasses.replace(spec, activation=activation), shape, n_out,
                        dtype=torch.float64)
    x = torch.randn(5, *shape, dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 1, 0]) % n_out
    return net, forward_pass(net, Classification(n_out), x, y)


def test_angles_of_bp_with_the_bp_gradient_are_0_and_180_for_its_negative():
    net, fwd = setup()
    bp = REGISTRY.get("bp").cls(net, Classification(3), REGISTRY.get("bp").cls.Params())
    graph = forward_pass(net, bp.task, fwd.x, fwd.y, record_graph=True)
    updates = bp.forward_updates(graph)
    config = MetricsConfig(log_interval=1, gnt_angles=False)
    assert alignment(net, bp.task, fwd, updates, config)["bp_angle"] == pytest.approx([0.0] * 4, abs=1e-5)
    negated = [-u for u in updates]
    assert alignment(net, bp.task, fwd, negated, config)["bp_angle"] == pytest.approx([180.0] * 4, abs=1e-5)
    assert angle(torch.tensor([1.0, 0.0]), torch.tensor([0.0, 2.0])) == pytest.approx(90.0)


@pytest.mark.parametrize("spec, shape", [(MLP, (7,)), (CNN, (3, 8, 8))], ids=["mlp", "cnn"])
def test_output_jacobians_match_explicit_autograd(spec, shape):
    net, fwd = setup(spec, shape)
    jacobians = output_jacobians(net, fwd)
    for i in range(1, net.depth):
        for b in range(fwd.batch_size):
            explicit = jacrev(lambda h, i=i: net.propagate(h.unsqueeze(0), i)[0])(fwd.h[i][b])
            assert torch.allclose(jacobians[i][b], explicit.reshape(3, -1))


@pytest.mark.parametrize("spec, shape", [(MLP, (7,)), (CNN, (3, 8, 8))], ids=["mlp", "cnn"])
def test_metrics_work_on_channels_last_networks(spec, shape):
    """float32 CNNs run on channels-last weights (architectures.py): the Jacobians through them
    (GNT angles, nullspace ratio) equal those of the same network in the standard layout."""
    net, fwd = setup(spec, shape)
    standard = copy.deepcopy(net)
    net.to(memory_format=torch.channels_last)
    jacobians, expected = output_jacobians(net, fwd), output_jacobians(standard, fwd)
    for i in range(1, net.depth):
        assert torch.allclose(jacobians[i], expected[i], rtol=1e-12, atol=1e-14)
    update = torch.randn_like(net.layer_parameters(2)[0])
    assert nullspace_ratio(net, fwd.x, 2, update) == pytest.approx(
        nullspace_ratio(standard, fwd.x, 2, update), abs=1e-12)


@pytest.mark.parametrize("damping", [0.0, 0.1])
@pytest.mark.parametrize("spec, shape", [(MLP, (7,)), (CNN, (3, 8, 8))], ids=["mlp", "cnn"])
def test_gnt_update_is_the_damped_pseudo_inverse_step(spec, shape, damping):
    net, fwd = setup(spec, shape)
    task = Classification(3)
    e = task.output_error(fwd.output, fwd.y)
    jacobians = output_jacobians(net, fwd)
    for i in range(1, net.depth):
        delta = gauss_newton_step(jacobians[i], e, damping)
        for b in range(fwd.batch_size):
            J = jacrev(lambda h, i=i: net.propagate(h.unsqueeze(0), i)[0])(fwd.h[i][b]).reshape(3, -1)
            expected = J.t() @ torch.linalg.inv(J @ J.t() + damping * torch.eye(3, dtype=J.dtype)) @ e[b]
            assert torch.allclose(delta[b], expected, atol=1e-8)
        # the weight update: the local rule towards h − Δh, i.e. the VJP with Δh as cotangent
        layer = net.layer(i)
        weight = net.layer_parameters(i)[0]
        with torch.enable_grad():
            _, h = layer(fwd.h[i - 1])
            (vjp,) = torch.autograd.grad(h, weight, grad_outputs=delta.view_as(h))
        assert angle(gnt_weight_update(net, fwd, i, delta), vjp) < 1e-5


def test_theorem_6_gnt_update_is_within_90_degrees_of_the_gradient_on_linear_networks():
    for seed in range(5):
        net, fwd = setup(ArchitectureSpec(hidden=(6, 5, 4)), seed=seed, activation="linear")
        task = Classification(3)
        bp = REGISTRY.get("bp").cls(net, task, REGISTRY.get("bp").cls.Params())
        graph = forward_pass(net, task, fwd.x, fwd.y, record_graph=True)
        result = alignment(net, task, fwd, bp.forward_updates(graph),
                           MetricsConfig(bp_angles=False, gnt_damping=0.0))
        assert all(a < 90 for a in result["gnt_angle"]), result


def test_nullspace_ratio_is_0_in_the_row_space_and_1_in_the_nullspace():
    torch.manual_seed(0)
    net = build_network(ArchitectureSpec(hidden=(6, 6)), (6,), 2, dtype=torch.float64)
    x = torch.randn(1, 6, dtype=torch.float64)
    weight = net.layer(2).linear.weight
    J = jacrev(lambda w: torch.func.functional_call(
        net, {**dict(net.named_parameters()), "layers.1.linear.weight": w}, (x,))[0])(weight)
    J = J.reshape(2, -1)
    row = (J.t() @ torch.randn(2, dtype=torch.float64)).view_as(weight)
    assert nullspace_ratio(net, x, 2, row) == pytest.approx(0.0, abs=1e-10)
    _, _, vh = torch.linalg.svd(J, full_matrices=True)
    null = (vh[2:].t() @ torch.randn(34, dtype=torch.float64)).view_as(weight)
    assert nullspace_ratio(net, x, 2, null) == pytest.approx(1.0, abs=1e-10)
    mixed = row / row.norm() + null / null.norm()
    assert nullspace_ratio(net, x, 2, mixed) == pytest.approx(2 ** -0.5, abs=1e-10)


def test_nullspace_ratio_of_a_batch_is_the_mean_over_its_samples():
    torch.manual_seed(1)
    net = build_network(ArchitectureSpec(hidden=(6, 6)), (6,), 2, dtype=torch.float64)
    x = torch.randn(5, 6, dtype=torch.float64)
    update = torch.randn_like(net.layer(2).linear.weight)
    singles = [nullspace_ratio(net, sample.unsqueeze(0), 2, update) for sample in x]
    assert len({round(r, 6) for r in singles}) > 1  # the samples differ
    assert nullspace_ratio(net, x, 2, update) == pytest.approx(sum(singles) / 5, abs=1e-12)


def test_metrics_are_logged_for_any_algorithm_at_the_interval(tmp_path):
    from bioplaus_bench.execution.training import train_cell
    from bioplaus_bench.suite import load_suite

    suite = tmp_path / "s.yaml"
    suite.write_text(
        "seeds: [0]\nprecision: float64\n"
        "datasets:\n  t:\n    source: teacher\n"
        "    options: {n_train: 40, n_test: 10, hidden: [8]}\n"
        "    architecture: {hidden: [5, 4]}\n"
        "    protocol: {epochs: 2, batch_size: 4, validation: 10}\n"
        "algorithms:\n  ddtp-linear:\n    optimizer: {lr: 1.0e-3}\n"
        "    schedule: {feedback_pretraining_epochs: 0, extra_feedback_epochs: 0}\n"
        "    metrics: {log_interval: 4, gnt_damping: [1.0, 0.0], nullspace_layers: [2]}\n")
    cell = load_suite(suite, REGISTRY).cells()[0]
    result = train_cell(cell, REGISTRY.get("ddtp-linear").cls)
    logged = result["metrics"]
    assert [(m["epoch"], m["batch"]) for m in logged] == [(1, 0), (1, 4), (1, 8), (2, 0), (2, 4), (2, 8)]
    assert len(logged[0]["bp_angle"]) == 3 and len(logged[0]["gnt_angle"]) == 2
    assert 0 <= logged[0]["nullspace_ratio"]["2"] <= 1
    assert all(0 <= a <= 180 for m in logged for a in m["bp_angle"] + m["gnt_angle"])


def test_regression_tasks_have_gnt_angles_too():
    torch.manual_seed(0)
    net = build_network(MLP, (7,), 2, dtype=torch.float64)
    task = Regression(2)
    fwd = forward_pass(net, task, torch.randn(3, 7, dtype=torch.float64),
                       torch.randn(3, 2, dtype=torch.float64))
    updates = [torch.randn_like(p) for p in net.parameters()]
    result = alignment(net, task, fwd, updates, MetricsConfig(gnt_damping=0.5))
    assert len(result["gnt_angle"]) == 3 and len(result["bp_angle"]) == 4


def synthetic_records(tmp_path):
    """Two methods with logged angles and nullspace ratios, in a results folder."""
    import json
    rng = torch.Generator().manual_seed(0)
    folder = tmp_path / "results"
    for index, (name, label) in enumerate([("dtp", "DTP"), ("ddtp-linear", "DDTP-linear")]):
        metrics = [{"epoch": 1, "batch": 10 * k,
                    "bp_angle": torch.rand(4, generator=rng).mul(90).tolist(),
                    "gnt_angle": torch.rand(3, generator=rng).mul(90).tolist(),
                    "nullspace_ratio": {"2": float(torch.rand(1, generator=rng))}}
                   for k in range(40)]
        record = {"dataset": "t", "dataset_label": "Teacher", "algorithm": name,
                  "algorithm_name": name, "label": label, "seed": 0, "status": "ok",
                  "task": "regression", "order": [0, index], "metric": "test_error",
                  "config": {"metrics": {"log_interval": 10}, "dataset": {"protocol": {"epochs": 2}}},
                  "history": [{"epoch": 1, "test_loss": 2.0}, {"epoch": 2, "test_loss": 1.5}],
                  "final": {"test_loss": 1.5}, "metrics": metrics}
        path = folder / "t" / name / "seed-0.json"
        path.parent.mkdir(parents=True)
        path.write_text(json.dumps(record))
    return folder


@pytest.mark.parametrize("figure, suffix", [("angles", "png"), ("nullspace", "pdf"), ("curves", "png")])
def test_bench_plot_writes_the_figure(tmp_path, figure, suffix):
    from typer.testing import CliRunner

    from bioplaus_bench.cli import app
    folder = synthetic_records(tmp_path)
    out = tmp_path / f"figure.{suffix}"
    result = CliRunner().invoke(app, ["plot", str(folder), "--figure", figure, "--out", str(out)])
    assert result.exit_code == 0, result.output
    header = out.read_bytes()[:8]
    assert header.startswith(b"\x89PNG" if suffix == "png" else b"%PDF")
    bad = CliRunner().invoke(app, ["plot", str(folder), "--figure", "bars", "--out", str(out)])
    assert bad.exit_code == 2 and "unknown figure 'bars'" in bad.stderr


def test_damping_search_picks_the_smallest_mean_angle_per_layer(tmp_path):
    from typer.testing import CliRunner

    from bioplaus_bench.cli import app
    suite = tmp_path / "s.yaml"
    suite.write_text(
        "seeds: [0]\nprecision: float64\n"
        "datasets:\n  t:\n    source: teacher\n"
        "    options: {n_train: 32, n_test: 8, hidden: [8]}\n"
        "    architecture: {hidden: [5, 4]}\n"
        "    protocol: {epochs: 5, batch_size: 4, validation: 8}\n"
        "algorithms:\n  ddtp-linear:\n    optimizer: {lr: 1.0e-3}\n"
        "    schedule: {feedback_pretraining_epochs: 1, extra_feedback_epochs: 0}\n"
        "    metrics: {log_interval: 2}\n")
    from bioplaus_bench.execution.damping import damping_search
    from bioplaus_bench.suite import load_suite
    cell = load_suite(suite, REGISTRY).cells(epochs=1)[0]
    found = damping_search(cell, REGISTRY.get("ddtp-linear").cls, grid=(0.0, 0.1, 10.0))
    assert set(found["mean_angle"]) == {"0.0", "0.1", "10.0"}
    for i, best in enumerate(found["best"]):
        assert found["mean_angle"][str(best)][i] == min(a[i] for a in found["mean_angle"].values())
    result = CliRunner().invoke(app, ["damping", str(suite), "--algorithm", "ddtp-linear",
                                      "--dataset", "t", "--epochs", "1", "--grid", "0,0.1,10"])
    assert result.exit_code == 0, result.output
    assert "metrics: {gnt_damping: [" in result.stdout
    line = next(x for x in result.stderr.splitlines() if x.startswith("or on the command line"))
    override = line.split("--set ")[1]
    check = CliRunner().invoke(app, ["validate", str(suite), "--set", override])
    assert check.exit_code == 0, check.output
