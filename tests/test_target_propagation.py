"""The target-propagation family against hand-written computations of algorithms.md §4.3–§4.8 (float64)."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch.func import jacrev

from bioplaus_bench.api import (
    ArchitectureSpec,
    Classification,
    FeedbackPath,
    ForwardPass,
    ReconstructionLoss,
    forward_pass,
    local_updates,
    output_target,
)
from bioplaus_bench.execution.build import build_network
from bioplaus_bench.registry import load_registry

REGISTRY = load_registry()
TP = ["dtp", "dtp-pretrained", "dtp-drl", "ddtp-linear", "ddtp-rhl", "ddtp-control"]
HIDDEN = (6, 5, 4)


def build(name, hidden=HIDDEN, n_in=7, n_out=3, seed=0, **params):
    cls = REGISTRY.get(name).cls
    if name == "ddtp-rhl":
        params.setdefault("random_width", 9)
    defaults = {"target_stepsize": 0.3} if name == "dfa" else {"target_stepsize": 0.3, "sigma": 0.1}
    p = cls.Params(**{**defaults, **params})
    torch.manual_seed(seed)
    spec = cls.adapt_architecture(ArchitectureSpec(hidden=hidden), p)
    net = build_network(spec, (n_in,), n_out, dtype=torch.float64)
    algorithm = cls(net, Classification(n_out), p)
    for parameter in algorithm.parameters():  # non-zero feedback biases, so that they matter
        if parameter.requires_grad and parameter.dim() == 1:
            torch.nn.init.normal_(parameter, std=0.1)
    return net, algorithm


def data(n=8, n_in=7, n_out=3, seed=1):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(n, n_in, generator=g, dtype=torch.float64),
            torch.randint(0, n_out, (n,), generator=g))


def run(net, algorithm, seed=1):
    x, y = data(seed=seed)
    return forward_pass(net, algorithm.task, x, y)


def weights(algorithm, i):
    """(Q, c) of g_i (c = 0 where the map has no bias)."""
    linear = algorithm.path.maps[i - 1].linear
    bias = linear.bias if linear.bias is not None else torch.zeros(linear.out_features, dtype=torch.float64)
    return linear.weight, bias


def mean_ce_error(logits, y):
    return (torch.softmax(logits, 1) - F.one_hot(y, logits.shape[1])) / len(y)


# --- targets -----------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["dtp", "dtp-drl"])
def test_layerwise_targets_spec_4_3(name):
    net, alg = build(name)
    fwd = run(net, alg)
    eta = alg.params.target_stepsize
    target = fwd.output - eta * mean_ce_error(fwd.output, fwd.y)
    expected = {net.depth: target}
    for i in range(net.depth - 1, 0, -1):
        Q, c = weights(alg, i)
        g = lambda v, Q=Q, c=c: torch.tanh(v @ Q.t() + c)  # noqa: E731
        expected[i] = g(expected[i + 1]) + fwd.h[i] - g(fwd.h[i + 1])
    got = alg.targets(fwd)
    for i in range(1, net.depth + 1):
        assert torch.allclose(got[i], expected[i])


@pytest.mark.parametrize("name", ["ddtp-linear", "ddtp-control"])
def test_direct_linear_targets_spec_4_6(name):
    net, alg = build(name)
    fwd = run(net, alg)
    eta = alg.params.target_stepsize
    e = mean_ce_error(fwd.output, fwd.y)
    got = alg.targets(fwd)
    for i in range(1, net.depth):
        Q, _ = weights(alg, i)
        assert torch.allclose(got[i], fwd.h[i] - eta * e @ Q.t())


def test_ddtp_linear_and_dfa_last_hidden_layer_has_no_bias_anywhere_but_control_has():
    for name in ("ddtp-linear", "dfa"):
        net, alg = build(name)
        assert net.layer(3).linear.bias is None and alg.path.maps[2].linear.bias is None
        assert net.layer(2).linear.bias is not None and alg.path.maps[1].linear.bias is not None
    net, alg = build("ddtp-linear", last_hidden_bias=True)
    assert net.layer(3).linear.bias is not None and alg.path.maps[2].linear.bias is not None
    net, alg = build("ddtp-control")
    assert net.layer(3).linear.bias is not None and alg.path.maps[2].linear.bias is not None


def test_random_hidden_layer_targets_spec_4_7():
    net, alg = build("ddtp-rhl", random_width=11)
    fwd = run(net, alg)
    R, rho = alg.path.R, alg.path.rho
    assert R.shape == (11, 3) and rho.shape == (11,)
    bound = 1 / math.sqrt(3)  # PyTorch's default nn.Linear init, fan_in = n_outputs
    assert R.abs().max() <= bound and rho.abs().max() <= bound
    assert not any(p is R or p is rho for p in alg.parameters())  # never trained
    eta = alg.params.target_stepsize
    target = fwd.output - eta * mean_ce_error(fwd.output, fwd.y)
    got = alg.targets(fwd)
    for i in range(1, net.depth):
        Q, c = weights(alg, i)
        last = i == net.depth - 1
        assert Q.shape[1] == (3 if last else 11)

        def g(v, Q=Q, c=c, last=last):
            return torch.tanh((v if last else torch.tanh(v @ R.t() + rho)) @ Q.t() + c)
        assert torch.allclose(got[i], g(target) + fwd.h[i] - g(fwd.output))


@pytest.mark.parametrize("name", TP + ["dfa"])
def test_output_layer_update_is_2_eta_over_B_times_its_bp_gradient(name):
    net, alg = build(name)
    fwd = run(net, alg)
    updates = alg.forward_updates(fwd)
    x, y = data()
    grads = torch.autograd.grad(F.cross_entropy(net(x), y), net.layer_parameters(net.depth))
    eta = alg.params.target_stepsize
    for got, bp in zip(updates[-2:], grads, strict=True):
        assert torch.allclose(got, 2 * eta / len(y) * bp)


@pytest.mark.parametrize("name", TP)
def test_hidden_updates_are_the_local_rule_towards_the_targets(name):
    net, alg = build(name)
    fwd = run(net, alg)
    assert all(torch.equal(a, b) for a, b in
               zip(alg.forward_updates(fwd), local_updates(net, fwd, alg.targets(fwd)), strict=True))


# --- feedback losses ---------------------------------------------------------------------------

def noise_of(fwd, i, seed):
    torch.manual_seed(seed)
    return torch.randn_like(fwd.h[i])


def forward_from(net, h, start, stop=None):
    for k in range(start + 1, (stop or net.depth) + 1):
        lin = net.layer(k).linear
        a = h @ lin.weight.t() + (lin.bias if lin.bias is not None else 0)
        h = torch.tanh(a) if k < net.depth else a
    return h


def expected_loss(name, alg, net, fwd, i, eps):
    sigma = alg.params.sigma
    noisy = fwd.h[i] + sigma * eps
    if name in ("dtp", "dtp-pretrained"):
        Q, c = weights(alg, i)
        rec = torch.tanh(forward_from(net, noisy, i, i + 1) @ Q.t() + c)
        return ((rec - noisy) ** 2).mean() / max(sigma, 0.02) ** 2
    if name == "ddtp-control":
        Q, c = weights(alg, i)
        rec = forward_from(net, noisy, i) @ Q.t() + c
        return ((rec - noisy) ** 2).mean()
    if name == "ddtp-linear":
        Q, _ = weights(alg, i)
        return ((Q @ (forward_from(net, noisy, i) - fwd.output).t()).t() - sigma * eps).pow(2).mean() \
            / sigma ** 2
    if name == "dtp-drl":  # back down through every higher difference-corrected map (§4.5)
        r = forward_from(net, noisy, i)
        for k in range(net.depth - 1, i - 1, -1):
            Q, c = weights(alg, k)
            r = torch.tanh(r @ Q.t() + c) + fwd.h[k] - torch.tanh(fwd.h[k + 1] @ Q.t() + c)
        return ((r - noisy) ** 2).mean() / sigma ** 2
    if name == "ddtp-rhl":
        y_noisy = forward_from(net, noisy, i)
        Q, c = weights(alg, i)
        R, rho = alg.path.R, alg.path.rho

        def g(v):
            if i < net.depth - 1:
                v = torch.tanh(v @ R.t() + rho)
            return torch.tanh(v @ Q.t() + c)
        return ((g(y_noisy) + fwd.h[i] - g(fwd.output) - noisy) ** 2).mean() / sigma ** 2
    raise AssertionError(name)


@pytest.mark.parametrize("sigma", [0.1, 0.01])
@pytest.mark.parametrize("name", TP)
def test_feedback_loss_values_and_only_the_layers_own_map_gets_gradient(name, sigma):
    net, alg = build(name, sigma=sigma)
    fwd = run(net, alg)
    feedback = [p for p in alg.parameters() if p.requires_grad]
    for i in range(1, net.depth):
        torch.manual_seed(100 + i)
        loss = alg.feedback_loss(alg.path, i, fwd, sigma)
        eps = noise_of(fwd, i, 100 + i)
        assert torch.allclose(loss, expected_loss(name, alg, net, fwd, i, eps))
        grads = torch.autograd.grad(loss, feedback, allow_unused=True)
        own = {id(p) for p in alg.path.map_parameters(i)}
        # In the DRL of a direct linear map the bias cancels: ĝ(ỹ) − g(a_L) = Q(ỹ − a_L).
        cancels = {id(p) for p in alg.path.map_parameters(i)
                   if p.dim() == 1 and name == "ddtp-linear"}
        for p, g in zip(feedback, grads, strict=True):
            if id(p) in own and id(p) not in cancels:
                assert g is not None and g.abs().sum() > 0
            else:
                assert g is None or g.abs().sum() < 1e-12


@pytest.mark.parametrize("name", TP)
def test_all_losses_at_once_equal_the_direct_computation_with_the_targets_references(name):
    """``feedback_losses`` draws the layers' noise in turn (layer 1 first), stacks the
    re-propagations and reuses the references ``g_i(h_s)`` the targets computed; every loss and
    its gradient (to the layer's own map only) still equal the hand-written spec computation."""
    net, alg = build(name)
    fwd = run(net, alg)
    alg.targets(fwd)
    torch.manual_seed(11)
    eps = [torch.randn_like(fwd.h[i]) for i in range(1, net.depth)]
    torch.manual_seed(11)
    losses = alg.feedback_losses(fwd)
    feedback = alg.feedback_parameters

    def flat(grads, parameters):
        return torch.cat([torch.zeros(p.numel(), dtype=p.dtype) if g is None else g.flatten()
                          for p, g in zip(parameters, grads, strict=True)])
    for i, loss, noise in zip(range(1, net.depth), losses, eps, strict=True):
        expected = expected_loss(name, alg, net, fwd, i, noise)
        assert torch.allclose(loss, expected)
        own = alg.path.map_parameters(i)
        others = [p for p in feedback if all(p is not q for q in own)]
        got = torch.autograd.grad(loss, [*own, *others], retain_graph=True, allow_unused=True)
        want = torch.autograd.grad(expected, own, allow_unused=True)
        assert torch.allclose(flat(got[:len(own)], own), flat(want, own), atol=1e-12)
        assert flat(got[len(own):], others).abs().max() < 1e-14


@pytest.mark.parametrize("name", ["dtp-drl", "ddtp-linear", "ddtp-rhl"])
def test_kept_references_are_not_reused_once_the_feedback_weights_moved(name):
    net, alg = build(name)
    fwd = run(net, alg)
    alg.targets(fwd)
    with torch.no_grad():
        for p in alg.feedback_parameters:
            p.add_(0.05)
    torch.manual_seed(4)
    eps = [torch.randn_like(fwd.h[i]) for i in range(1, net.depth)]
    torch.manual_seed(4)
    losses = alg.feedback_losses(fwd)
    for i, loss, noise in zip(range(1, net.depth), losses, eps, strict=True):
        assert torch.allclose(loss, expected_loss(name, alg, net, fwd, i, noise))


def test_an_algorithm_copied_between_its_targets_and_its_feedback_step_steps_alike():
    import copy
    net, alg = build("dtp-drl")
    fwd = run(net, alg)
    alg.targets(fwd)
    clone = copy.deepcopy(alg)  # the kept references (a graph) are not copied
    for algorithm in (alg, clone):
        torch.manual_seed(2)
        algorithm.feedback_step(fwd)
    for a, b in zip(alg.feedback_parameters, clone.feedback_parameters, strict=True):
        assert torch.allclose(a, b, atol=1e-14)


@pytest.mark.parametrize("name", TP)
def test_a_feedback_step_after_the_targets_equals_one_without(name):
    (net_a, alg_a), (net_b, alg_b) = build(name), build(name)
    fwd_a, fwd_b = run(net_a, alg_a), run(net_b, alg_b)
    alg_a.forward_updates(fwd_a)
    for _ in range(2):  # the second step must not reuse the first step's references
        torch.manual_seed(9)
        alg_a.feedback_step(fwd_a)
        torch.manual_seed(9)
        alg_b.feedback_step(fwd_b)
    for a, b in zip(alg_a.feedback_parameters, alg_b.feedback_parameters, strict=True):
        assert torch.allclose(a, b, atol=1e-14)


def test_dtp_clips_the_noise_scale_and_control_has_none():
    assert REGISTRY.get("dtp").cls.feedback_loss == ReconstructionLoss(scaled=True, clip=0.02)
    assert REGISTRY.get("ddtp-control").cls.feedback_loss == ReconstructionLoss(scaled=False)
    net, alg = build("dtp", sigma=0.001)
    fwd = run(net, alg)
    torch.manual_seed(5)
    clipped = alg.feedback_loss(alg.path, 2, fwd, 0.001)
    torch.manual_seed(5)
    plain = ReconstructionLoss(scaled=False)(alg.path, 2, fwd, 0.001)
    assert torch.allclose(clipped, plain / 0.02 ** 2)


@pytest.mark.parametrize("name", TP)
def test_feedback_step_is_one_adam_step_on_all_layers_with_weight_decay(name):
    net, alg = build(name, feedback_weight_decay=0.01, feedback_lr=0.001, feedback_eps=1e-16)
    fwd = run(net, alg)
    forward_before = [p.detach().clone() for p in net.parameters()]
    before = [p.detach().clone() for p in alg.feedback_parameters]
    torch.manual_seed(3)
    total = sum(alg.feedback_losses(fwd))
    grads = torch.autograd.grad(total, alg.feedback_parameters)
    torch.manual_seed(3)
    reported = alg.feedback_step(fwd)
    assert reported == pytest.approx(total.item())
    # Adam's first step moves every parameter by lr·sign(g + wd·p): coupled weight decay.
    for p0, p1, g in zip(before, alg.feedback_parameters, grads, strict=True):
        expected = p0 - 0.001 * torch.sign(g + 0.01 * p0)
        assert torch.allclose(p1, expected, atol=1e-9)
    assert all(torch.equal(a, b) for a, b in zip(forward_before, net.parameters(), strict=True))
    assert all(p.grad is None for p in net.parameters())


# --- theory ------------------------------------------------------------------------------------

def test_theorem_4_drl_trains_direct_linear_feedback_to_the_damped_pseudo_inverse():
    """Training DDTP-linear's Q_i with the DRL on one input, small σ, converges to
    J_iᵀ(J_i J_iᵀ + λI)⁻¹ with J_i = ∂a_L/∂h_i; coupled weight decay wd gives λ = wd·n_i/2
    (the loss is a mean over the n_i units). Tolerance: 5% relative Frobenius error after 1500
    Adam steps, and the error keeps shrinking with more training."""
    torch.manual_seed(0)
    net, alg = build("ddtp-linear", hidden=(5, 4, 4), n_in=3, n_out=2, sigma=1e-3,
                     feedback_lr=0.01, feedback_betas=(0.9, 0.999), feedback_eps=1e-8,
                     feedback_weight_decay=0.02)
    x = torch.randn(1, 3, dtype=torch.float64).repeat(512, 1)
    fwd = forward_pass(net, alg.task, x, torch.zeros(512, dtype=torch.long))

    def optimum(i):
        J = jacrev(lambda h: net.propagate(h.unsqueeze(0), i)[0])(fwd.h[i][0])
        lam = 0.02 * fwd.h[i].shape[1] / 2
        return J.t() @ torch.linalg.inv(J @ J.t() + lam * torch.eye(2, dtype=torch.float64))

    def errors():
        return [((weights(alg, i)[0] - optimum(i)).norm() / optimum(i).norm()).item()
                for i in range(1, net.depth)]

    for _ in range(500):
        alg.feedback_step(fwd)
    early = errors()
    for group in alg.feedback_optimizer.param_groups:
        group["lr"] = 0.002
    for _ in range(1000):
        alg.feedback_step(fwd)
    late = errors()
    assert max(late) < 0.05, late
    assert sum(late) < sum(early)


class InversePath(FeedbackPath):
    """Exact layer-wise inverses of an invertible tanh network (a third-party path)."""

    def source(self, i):
        return i + 1

    def g(self, i, v):
        lin = self.network.layer(i + 1).linear
        pre = v if i + 1 == self.depth else torch.atanh(v)
        return torch.linalg.solve(lin.weight, (pre - lin.bias).t()).t()


@pytest.mark.parametrize("stepsize", [1e-2, 1e-3, 1e-4])
def test_lemma_1_exact_inverses_give_gauss_newton_targets_as_the_stepsize_vanishes(stepsize):
    torch.manual_seed(0)
    net = build_network(ArchitectureSpec(hidden=(4, 4, 4)), (4,), 4, dtype=torch.float64)
    with torch.no_grad():
        for layer in net.layers:  # well conditioned, invertible layers
            layer.linear.weight.copy_(torch.eye(4) + 0.3 * torch.randn(4, 4))
    path = InversePath(net)
    x, y = torch.randn(6, 4, dtype=torch.float64) * 0.5, torch.randint(0, 4, (6,))
    task = Classification(4)
    fwd: ForwardPass = forward_pass(net, task, x, y)
    targets = path.targets(fwd, output_target(fwd, task, stepsize))
    e = task.output_error(fwd.output, y)
    for i in range(1, net.depth):
        for b in range(len(y)):
            J = jacrev(lambda h, i=i: net.propagate(h.unsqueeze(0), i)[0])(fwd.h[i][b])
            gauss_newton = -stepsize * torch.linalg.solve(J, e[b])
            error = (targets[i][b] - fwd.h[i][b] - gauss_newton).norm() / gauss_newton.norm()
            assert error < 50 * stepsize  # first-order agreement: the gap shrinks with η̂


def test_a_third_party_variant_composes_the_public_pieces():
    """A direct tanh path trained with a new loss, written with the public API alone."""
    from dataclasses import dataclass

    from bioplaus_bench.api import DirectPath, TargetPropagation, TPParams

    @dataclass(frozen=True)
    class CosineLoss:
        def __call__(self, path, i, fwd, sigma):
            noisy = fwd.h[i] + sigma * torch.randn_like(fwd.h[i])
            with torch.no_grad():
                output = path.network.propagate(noisy, i)
            return 1 - F.cosine_similarity(path.g(i, output), noisy, dim=1).mean()

    class DirectCosine(TargetPropagation):
        name = "direct-cosine"
        Params = TPParams
        feedback_loss = CosineLoss()

        def build_path(self):
            return DirectPath(self.network, "tanh")

    torch.manual_seed(0)
    net = build_network(ArchitectureSpec(hidden=HIDDEN), (7,), 3, dtype=torch.float64)
    alg = DirectCosine(net, Classification(3), TPParams(feedback_lr=0.01))
    fwd = run(net, alg)
    losses = [alg.feedback_step(fwd) for _ in range(30)]
    assert losses[-1] < losses[0]
    e = mean_ce_error(fwd.output, fwd.y)
    Q, c = weights(alg, 2)
    target = fwd.output - 0.01 * e
    assert torch.allclose(alg.targets(fwd)[2], torch.tanh(target @ Q.t() + c) + fwd.h[2]
                          - torch.tanh(fwd.output @ Q.t() + c))
