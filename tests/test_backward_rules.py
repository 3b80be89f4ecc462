"""Backward-pass rules: ``BackwardRule`` and the built-in rules FA, uSF, brSF, frSF and
Kolen-Pollack, each against an independent computation on a small float64 network (an explicit δ
recursion for the MLP; for both the MLP and the CNN, autograd through a hand-built functional
forward pass in which the substitute enters only the path to the layer's input), the BP angle
the core logs for them, their kinds of backward weight, and the conformance checks."""

import math

import pytest
import torch
import torch.nn.functional as F

from bioplaus_bench.api import (
    ArchitectureSpec,
    BackwardRule,
    Classification,
    ConvBlock,
    Regression,
    forward_pass,
)
from bioplaus_bench.execution.build import build_network
from bioplaus_bench.execution.runner import ForwardOptimisers, Runner
from bioplaus_bench.kit.conformance import check_algorithm
from bioplaus_bench.metrics.alignment import angle
from bioplaus_bench.registry import load_registry
from bioplaus_bench.spec.cell import MetricsConfig, OptimizerConfig

RULES = ["feedback-alignment", "usf", "brsf", "frsf", "kolen-pollack"]
MLP = (ArchitectureSpec(type="mlp", hidden=(7, 5, 4)), (6,))
CNN = (ArchitectureSpec(type="cnn", conv_channels=(3, 4), hidden=(5,), kernel_size=3), (2, 8, 8))
ARCHS = {"mlp": MLP, "cnn": CNN}
N_OUT = 3


class Mirror(BackwardRule):
    """A rule written as a third party would: ``backward_weight`` only. With ``factor`` 1 it
    is backprop."""

    name = "mirror-rule"
    factor = 1.0

    def backward_weight(self, i, weight):
        return self.factor * weight


class Doubled(Mirror):
    name = "doubled-rule"
    factor = 2.0


@pytest.fixture(scope="module")
def registry():
    return load_registry()


def build(cls, arch="mlp", task=None, seed=0, params=None):
    spec, input_shape = ARCHS[arch]
    task = task or Classification(N_OUT)
    torch.manual_seed(seed)
    network = build_network(spec, input_shape, N_OUT, dtype=torch.float64)
    algorithm = cls(network, task, params if params is not None else cls.Params())
    return network, algorithm


def batch(arch, task, size=9, seed=1):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(size, *ARCHS[arch][1], generator=generator, dtype=torch.float64)
    if isinstance(task, Classification):
        return x, torch.randint(0, N_OUT, (size,), generator=generator)
    return x, torch.randn(size, N_OUT, generator=generator, dtype=torch.float64)


def proposed(algorithm, network, task, x, y):
    """The backward weights of one step and the update proposed with them (as the runner does)."""
    weights = algorithm.backward_weights()
    fwd = forward_pass(network, task, x, y, record_graph=True, backward_weights=weights)
    return weights, fwd, algorithm.forward_updates(fwd)


def straight_through(network, task, x, y, weights):
    """Autograd of a hand-built functional forward pass: the value of layer i's pre-activation is
    ``W_i h + b_i`` (or the convolution), but its path to ``h`` goes through ``B_i`` alone:
    ``a = lin(h.detach(); W, b) + lin(h; B) − lin(h; B).detach()``."""
    params = list(network.parameters())
    h = x
    for i in range(1, network.depth + 1):
        layer = network.layer(i)
        if isinstance(layer, ConvBlock):
            conv = layer.conv

            def op(v, w, b=None, conv=conv):
                return F.conv2d(v, w, b, padding=conv.padding)
            weight, bias = conv.weight, conv.bias
        else:
            h = h.flatten(1)

            def op(v, w, b=None):
                return F.linear(v, w, b)
            weight, bias = layer.linear.weight, layer.linear.bias
        substitute = weights[i] if i >= 2 else None
        if substitute is None:
            a = op(h, weight, bias)
        else:
            substitute = substitute.detach()
            a = op(h.detach(), weight, bias) + op(h, substitute) - op(h, substitute).detach()
        h = torch.tanh(a) if layer.activation == "tanh" else a
        if isinstance(layer, ConvBlock):
            h = F.max_pool2d(h, *network.spec.pool)
    return list(torch.autograd.grad(task.loss(h, y), params))


def delta_recursion(network, task, x, y, weights):
    """The MLP's explicit recursion: δ_L = e, δ_i = (δ_{i+1} B_{i+1}) ⊙ (1 − h_i²),
    ∇W_i = δ_iᵀ h_{i−1}, ∇b_i = Σ_b δ_i."""
    with torch.no_grad():
        W = [None] + [network.layer(i).linear.weight for i in range(1, network.depth + 1)]
        b = [None] + [network.layer(i).linear.bias for i in range(1, network.depth + 1)]
        h = [x]
        for i in range(1, network.depth + 1):
            a = h[-1] @ W[i].t() + b[i]
            h.append(a if i == network.depth else torch.tanh(a))
        delta = task.output_error(h[-1], y)
        grads = {}
        for i in range(network.depth, 0, -1):
            grads[i] = [delta.t() @ h[i - 1], delta.sum(0)]
            if i > 1:
                delta = (delta @ weights[i]) * (1 - h[i - 1] ** 2)
    return [g for i in range(1, network.depth + 1) for g in grads[i]]


def bp_gradient(network, task, x, y):
    return list(torch.autograd.grad(task.loss(network(x), y), list(network.parameters())))


def assert_all_close(actual, expected, tol=1e-10):
    assert len(actual) == len(expected)
    for a, e in zip(actual, expected, strict=True):
        assert a.shape == e.shape and a.dtype == e.dtype == torch.float64
        torch.testing.assert_close(a, e, rtol=tol, atol=tol)


def without_decay(algorithm, network, updates):
    """Kolen-Pollack proposes ``∇W + λW`` for the weights: the gradient part."""
    decay = getattr(algorithm.params, "weight_decay", 0.0)
    out = []
    for p, u in zip(network.parameters(), updates, strict=True):
        out.append(u - decay * p.detach() if p.dim() > 1 else u)
    return out


# --- Each rule against a direct computation ------------------------------------------------------

@pytest.mark.parametrize("name", RULES)
@pytest.mark.parametrize("task", [Classification(N_OUT), Regression(N_OUT)],
                         ids=["classification", "regression"])
def test_mlp_update_is_the_delta_recursion_with_the_substitute(registry, name, task):
    network, algorithm = build(registry.get(name).cls, "mlp", task)
    x, y = batch("mlp", task)
    weights, _, updates = proposed(algorithm, network, task, x, y)
    assert weights[0] is None and weights[1] is None
    gradient = without_decay(algorithm, network, updates)
    assert_all_close(gradient, delta_recursion(network, task, x, y, weights))
    assert_all_close(gradient, straight_through(network, task, x, y, weights))
    # Not vacuous: the substitute is not the forward weight, and the update is not BP's.
    bp = bp_gradient(network, task, x, y)
    assert not torch.allclose(gradient[0], bp[0])
    torch.testing.assert_close(gradient[-2], bp[-2], rtol=1e-12, atol=1e-14)  # output layer


@pytest.mark.parametrize("name", RULES)
def test_cnn_update_is_backprop_with_the_substitute_in_the_input_path(registry, name):
    task = Classification(N_OUT)
    network, algorithm = build(registry.get(name).cls, "cnn", task)
    x, y = batch("cnn", task)
    weights, _, updates = proposed(algorithm, network, task, x, y)
    assert weights[2].dim() == 4  # the second conv layer has a substitute kernel
    gradient = without_decay(algorithm, network, updates)
    assert_all_close(gradient, straight_through(network, task, x, y, weights))
    assert not torch.allclose(gradient[0], bp_gradient(network, task, x, y)[0])


@pytest.mark.parametrize("arch", ["mlp", "cnn"])
def test_a_rule_that_returns_the_forward_weight_is_exactly_backprop(arch):
    task = Classification(N_OUT)
    network, algorithm = build(Mirror, arch, task)
    x, y = batch(arch, task)
    _, fwd, updates = proposed(algorithm, network, task, x, y)
    for update, grad in zip(updates, bp_gradient(network, task, x, y), strict=True):
        assert torch.equal(update, grad)
    # Written by overriding backward_weight alone, another substitute is another update.
    doubled = Doubled(network, task, Doubled.Params())
    _, _, other = proposed(doubled, network, task, x, y)
    twice = [None, None] + [2 * w for w in layer_weights(network).values()]
    assert_all_close(other, straight_through(network, task, x, y, twice))


def test_the_runner_asks_for_the_backward_weights_once_per_step(registry):
    cls = registry.get("brsf").cls
    task = Classification(N_OUT)
    network, algorithm = build(cls, "mlp", task)
    runner = Runner(network, algorithm, ForwardOptimisers(
        network, algorithm, OptimizerConfig(lr=1e-3, betas=(0.9, 0.999), eps=1e-8)))
    calls = []
    original = algorithm.backward_weights

    def counted():
        weights = original()
        calls.append(weights)
        return weights

    algorithm.backward_weights = counted
    x, y = batch("mlp", task)
    for _ in range(3):
        parameters = [p.detach().clone() for p in network.parameters()]
        proposal = runner.step(x, y).proposal
        weights = calls[-1]
        with torch.no_grad():  # the step's update, recomputed with the weights it was given
            for p, saved in zip(network.parameters(), parameters, strict=True):
                p.copy_(saved)
            expected = delta_recursion(network, task, x, y, weights)
        assert_all_close(proposal.updates, expected)
        runner.optimisers.step()  # (the restored weights move again, as in the step)
    assert len(calls) == 3


# --- The kinds of backward weight ---------------------------------------------------------------

def layer_weights(network):
    return {i: network.layer_parameters(i)[0] for i in range(2, network.depth + 1)}


def glorot(weight):
    receptive = weight[0][0].numel() if weight.dim() > 2 else 1
    return math.sqrt(2 / ((weight.shape[0] + weight.shape[1]) * receptive))


@pytest.mark.parametrize("arch", ["mlp", "cnn"])
def test_usf_is_the_scaled_sign_of_the_current_forward_weight(registry, arch):
    network, algorithm = build(registry.get("usf").cls, arch)
    for _ in range(2):
        weights = algorithm.backward_weights()
        for i, weight in layer_weights(network).items():
            assert torch.equal(weights[i], glorot(weight) * torch.sign(weight))
        with torch.no_grad():
            for weight in layer_weights(network).values():
                weight.neg_()
    assert not list(algorithm.parameters()) and not list(algorithm.buffers())


@pytest.mark.parametrize("arch", ["mlp", "cnn"])
def test_brsf_redraws_magnitudes_every_step_with_the_forward_sign(registry, arch):
    network, algorithm = build(registry.get("brsf").cls, arch)
    first, second = algorithm.backward_weights(), algorithm.backward_weights()
    for i, weight in layer_weights(network).items():
        bound = math.sqrt(3) * glorot(weight)
        for drawn in (first[i], second[i]):
            assert torch.equal(torch.sign(drawn), torch.sign(weight))
            assert drawn.abs().max() <= bound
        assert not torch.equal(first[i], second[i])
        # Glorot-uniform magnitudes: |U(−a, a)| has mean a/2.
        both = torch.cat([first[i].abs().flatten(), second[i].abs().flatten()])
        if both.numel() > 100:
            assert abs(both.mean().item() / (bound / 2) - 1) < 0.2
    torch.manual_seed(5)
    again = algorithm.backward_weights()
    torch.manual_seed(5)
    assert all(torch.equal(a, b) for a, b in zip(again[2:], algorithm.backward_weights()[2:],
                                                  strict=True))  # the global, seeded RNG


@pytest.mark.parametrize("arch", ["mlp", "cnn"])
def test_frsf_magnitudes_are_fixed_buffers_and_follow_the_forward_sign(registry, arch):
    network, algorithm = build(registry.get("frsf").cls, arch)
    first = algorithm.backward_weights()
    assert all(torch.equal(a, b) for a, b in zip(first[2:], algorithm.backward_weights()[2:],
                                                  strict=True))
    with torch.no_grad():
        for weight in layer_weights(network).values():
            weight.neg_()
    flipped = algorithm.backward_weights()
    buffers = dict(algorithm.named_buffers())
    assert sorted(buffers) == [f"feedback.M{i}" for i in range(2, network.depth + 1)]
    for i, weight in layer_weights(network).items():
        assert torch.equal(flipped[i], -first[i])
        assert torch.equal(flipped[i].abs(), buffers[f"feedback.M{i}"])
        assert torch.equal(torch.sign(flipped[i]), torch.sign(weight))


def test_fixed_random_feedback_is_glorot_normal_and_seeded(registry):
    cls = registry.get("feedback-alignment").cls
    network, algorithm = build(cls, "cnn", seed=3)
    _, again = build(cls, "cnn", seed=3)
    _, other = build(cls, "cnn", seed=4)
    for i, weight in layer_weights(network).items():
        b = algorithm.feedback_matrix(i)
        assert b.shape == weight.shape
        assert torch.equal(b, again.feedback_matrix(i))
        assert not torch.equal(b, other.feedback_matrix(i))
    big = build_network(ArchitectureSpec(type="mlp", hidden=(300, 200)), (100,), N_OUT,
                        dtype=torch.float64)
    fa = cls(big, Classification(N_OUT), cls.Params(feedback_scale=2.0))
    b = fa.feedback_matrix(2)
    assert abs(b.std().item() / (2.0 * glorot(b)) - 1) < 0.05


# --- Kolen-Pollack ------------------------------------------------------------------------------

def adam_config(lr, arch=None):
    """The runner's Adam; on the CNN one Adam per layer (a list of learning rates)."""
    if arch == "cnn":
        lr = (lr,) * 4
    return OptimizerConfig(lr=lr, betas=(0.9, 0.999), eps=1e-8)


@pytest.mark.parametrize("arch", ["mlp", "cnn"])
def test_kolen_pollack_feedback_gets_the_forward_update_signal_and_weight_decay(registry, arch):
    """W's proposed update is ∇W + λW, B's gradient ∇W + λB, and the runner's forward Adam
    steps B with its layer's settings: B moves as a reference Adam step on that gradient."""
    cls = registry.get("kolen-pollack").cls
    decay, lr = 0.05, 0.01
    task = Classification(N_OUT)
    network, algorithm = build(cls, arch, task, params=cls.Params(weight_decay=decay))
    runner = Runner(network, algorithm, ForwardOptimisers(network, algorithm,
                                                          adam_config(lr, arch)))
    x, y = batch(arch, task)
    before = {i: algorithm.backward_matrix(i).detach().clone() for i in range(2, network.depth + 1)}
    forward = [p.detach().clone() for p in network.parameters()]
    calls = []
    original = algorithm.backward_weights

    def recorded():
        weights = original()
        calls.append([None if w is None else w.detach().clone() for w in weights])
        return weights

    algorithm.backward_weights = recorded
    result = runner.step(x, y)
    weights = calls[0]
    for i in before:
        assert torch.equal(weights[i], before[i])  # this step's errors used B from before it
    with torch.no_grad():
        for p, saved in zip(network.parameters(), forward, strict=True):
            p.copy_(saved)
    gradient = straight_through(network, task, x, y, weights)
    updates, index, signals = result.proposal.updates, 0, {}
    for i in range(1, network.depth + 1):  # weights: ∇W + λW; biases: ∇b
        torch.testing.assert_close(updates[index], gradient[index] + decay * forward[index],
                                   rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(updates[index + 1], gradient[index + 1], rtol=1e-10, atol=1e-10)
        signals[i] = gradient[index]
        index += 2
    reference = [torch.nn.Parameter(before[i].clone()) for i in before]
    for p, i in zip(reference, before, strict=True):
        p.grad = signals[i] + decay * before[i]
    torch.optim.Adam(reference, lr=lr, betas=(0.9, 0.999), eps=1e-8).step()
    for p, i in zip(reference, before, strict=True):
        torch.testing.assert_close(algorithm.backward_matrix(i).detach(), p.detach(),
                                   rtol=1e-10, atol=1e-12)
    gap = sum(((before[i] - forward[2 * (i - 1)]) ** 2).sum() for i in before) / \
        sum((forward[2 * (i - 1)] ** 2).sum() for i in before)
    torch.testing.assert_close(result.proposal.feedback_loss, gap)
    assert algorithm.feedback_step(result.proposal.fwd) is None  # once per proposal


def test_kolen_pollack_feedback_of_a_frozen_layer_stays_with_its_weight(registry):
    cls = registry.get("kolen-pollack").cls
    network, algorithm = build(cls, "mlp")
    runner = Runner(network, algorithm, ForwardOptimisers(network, algorithm, adam_config(0.01),
                                                          frozen_layers=(2, 3)))
    frozen = {i: algorithm.backward_matrix(i).detach().clone() for i in (2, 3)}
    moving = algorithm.backward_matrix(4).detach().clone()
    x, y = batch("mlp", Classification(N_OUT))
    for _ in range(3):
        runner.step(x, y)
    assert all(torch.equal(algorithm.backward_matrix(i), frozen[i]) for i in frozen)
    assert not torch.equal(algorithm.backward_matrix(4), moving)


@pytest.mark.parametrize("arch", ["mlp", "cnn"])
def test_kolen_pollack_feedback_converges_to_the_forward_weights(registry, arch):
    """The runner's steps on a task the network learns: ‖B − W‖ / ‖W‖ falls to under 5% of its
    start."""
    cls = registry.get("kolen-pollack").cls
    task = Classification(N_OUT)
    network, algorithm = build(cls, arch, task, params=cls.Params(weight_decay=0.05))
    runner = Runner(network, algorithm, ForwardOptimisers(network, algorithm,
                                                          adam_config(1e-2, arch)))

    @torch.no_grad()
    def relative_gap():
        pairs = [(algorithm.backward_matrix(i), w) for i, w in layer_weights(network).items()]
        return math.sqrt(sum(float(((b - w) ** 2).sum()) for b, w in pairs)
                         / sum(float((w ** 2).sum()) for _, w in pairs))

    generator = torch.Generator().manual_seed(0)
    teacher = torch.randn(ARCHS[arch][1][0], N_OUT, generator=generator, dtype=torch.float64)
    start, losses = relative_gap(), []
    for _ in range(600):
        x = torch.randn(32, *ARCHS[arch][1], generator=generator, dtype=torch.float64)
        features = x.flatten(2).mean(2) if x.dim() > 2 else x  # the channel means of an image
        y = (features @ teacher[:features.shape[1]]).argmax(1)
        losses.append(runner.step(x, y).feedback_loss)
    assert relative_gap() / start < 0.05
    assert losses[0] == pytest.approx(start ** 2)  # the reported feedback loss is the gap²
    assert math.sqrt(losses[-1] / losses[0]) < 0.05


# --- The angle to BP is measured against the true BP gradient -----------------------------------

@pytest.mark.parametrize("arch", ["mlp", "cnn"])
def test_bp_angle_of_a_backward_rule_uses_the_true_bp_gradient(registry, arch):
    task = Classification(N_OUT)
    network, algorithm = build(registry.get("usf").cls, arch, task)
    runner = Runner(network, algorithm, ForwardOptimisers(
        network, algorithm, OptimizerConfig(lr=1e-3, betas=(0.9, 0.999), eps=1e-8)))
    x, y = batch(arch, task)
    bp = bp_gradient(network, task, x, y)
    result = runner.step(x, y, metrics=MetricsConfig(gnt_angles=False))
    updates = result.proposal.updates
    weights = [0] + [sum(len(network.layer_parameters(j)) for j in range(1, i))
                     for i in range(1, network.depth + 1)]
    by_hand = [angle(updates[weights[i]], bp[weights[i]]) for i in range(1, network.depth + 1)]
    assert result.metrics["bp_angle"] == pytest.approx(by_hand, abs=1e-9)
    assert all(a > 1.0 for a in by_hand[:-2])  # below the last hidden layer: not BP's direction
    assert by_hand[-1] == pytest.approx(0.0, abs=1e-5)  # the output layer's update is BP's


# --- Conformance --------------------------------------------------------------------------------

@pytest.mark.parametrize("name", RULES)
def test_the_rules_pass_the_conformance_checks_on_mlp_and_cnn(registry, name):
    info = registry.get(name)
    assert info.cls.capabilities.mlp and info.cls.capabilities.cnn
    assert info.cls.record_graph and issubclass(info.cls, BackwardRule)
    results = check_algorithm(info)
    assert results and all(r.passed for r in results), [r.line() for r in results]
    assert any(r.check == "checkpoint [cnn]" for r in results)


def test_a_rule_overriding_only_backward_weight_passes_the_checks():
    results = check_algorithm(Doubled)
    assert results and all(r.passed for r in results), [r.line() for r in results]


def test_a_wrong_backward_weight_is_reported_by_shape():
    network, algorithm = build(Mirror)
    algorithm.backward_weight = lambda i, weight: weight.t()
    with pytest.raises(ValueError, match=r"backward_weight\(2, weight\) returned a tensor of shape"):
        algorithm.backward_weights()


def test_the_rules_are_plugins_with_citations_and_params(registry):
    for name, label in [("usf", "uSF"), ("brsf", "brSF"), ("frsf", "frSF"),
                        ("kolen-pollack", "KP"), ("feedback-alignment", "FA")]:
        info = registry.get(name)
        assert info.label == label
        source = __import__(info.cls.__module__, fromlist=["_"])
        assert any(year in (source.__doc__ or "") for year in ("2016", "2018", "2019"))
    assert set(registry.get("kolen-pollack").cls.Params.__dataclass_fields__) == {"weight_decay"}


def test_the_guides_backward_rule_example_passes_the_checks(tmp_path):
    from pathlib import Path

    from typer.testing import CliRunner

    from bioplaus_bench.cli import app

    guide = (Path(__file__).resolve().parents[1] / "docs" / "plugins.md").read_text()
    section = guide.split("## Backward-pass rules\n")[1].split("\n## ")[0]
    code = section.split("```python\n")[1].split("```")[0]
    plugin = tmp_path / "mean_sign.py"
    plugin.write_text(code)
    result = CliRunner().invoke(app, ["check-plugin", str(plugin)])
    assert result.exit_code == 0, result.output
    assert "PASS  checkpoint [cnn]" in result.stdout and "FAIL" not in result.stdout


@pytest.mark.parametrize("name", ["kolen-pollack", "brsf"])
def test_a_cell_interrupted_after_an_epoch_resumes_to_the_same_result(registry, tmp_path, name):
    """Kolen-Pollack's B and its Adam state (the runner's), brSF's per-step draws (the RNG)."""
    from bioplaus_bench.execution.training import train_cell
    from bioplaus_bench.suite import load_suite

    class Stop(Exception):
        pass

    suite = tmp_path / "s.yaml"
    suite.write_text(f"""\
name: resume
seeds: [0]
precision: float64
datasets:
  teacher:
    source: teacher
    options: {{n_train: 96, n_test: 32, hidden: [16]}}
    architecture: {{type: mlp, hidden: [16, 16]}}
    protocol: {{epochs: 3, batch_size: 8, validation: 32}}
algorithms:
  {name}:
    optimizer: {{lr: 1.0e-2, betas: [0.9, 0.999], eps: 1.0e-8}}
""")
    cell = load_suite(suite, registry).cells()[0]
    cls = registry.get(name).cls

    def without_timing(result):
        history = [{k: v for k, v in row.items() if k != "seconds"} for row in result["history"]]
        return {**{k: v for k, v in result.items() if k not in ("history", "wall_time")},
                "history": history}

    def stop_after_first_epoch(phase, done, total):
        if done == 1:
            raise Stop

    unbroken = train_cell(cell, cls)
    checkpoint = tmp_path / "cell.ckpt"
    with pytest.raises(Stop):
        train_cell(cell, cls, checkpoint=checkpoint, on_epoch=stop_after_first_epoch)
    resumed = train_cell(cell, cls, checkpoint=checkpoint)
    assert without_timing(resumed) == without_timing(unbroken)
    if name == "kolen-pollack":
        gaps = [row["feedback_loss"] for row in unbroken["history"]]
        assert gaps[-1] < gaps[0]
