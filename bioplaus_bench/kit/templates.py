"""The rules ``bench new-plugin --template`` starts from, each written against
``bioplaus_bench.api`` alone (placeholders: ``__NAME__`` the algorithm's name, ``__CLASS__`` its
class, ``__LABEL__`` its label); ``scaffold`` writes the package or file around them."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Template:
    """One kind of rule: its code, what it is (printed by ``bench new-plugin``, written into
    the README) and its entry in the example suite."""

    name: str
    description: str
    algorithm: str  # the module's code
    suite_entry: str  # the lines under `__NAME__:` in the example suite


# --- the rules ----------------------------------------------------------------------------------

DIRECT = '''\
"""__LABEL__ (`__NAME__`): direct feedback alignment with error-driven updates (Nøkland 2016).

Written against `bioplaus_bench.api` only. Per minibatch the runner calls `forward_updates(fwd)`
on a forward pass `fwd` (h[0] = x, ..., h[L] = the network's output; a[i] the pre-activations),
writes the returned tensors into `.grad` of the trainable forward parameters and steps its Adam.

The rule: the output error e = dLoss/dh_L (batch-mean loss, so it includes 1/B) reaches every
hidden layer i through a fixed random matrix B_i (n_i x n_L):

    delta_L = e,   delta_i = (e B_i^T) * s'(a_i),   dW_i = delta_i^T h_{i-1},   db_i = sum_b delta_i
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from bioplaus_bench.api import Algorithm, Capabilities, ForwardPass, glorot_normal, hookimpl


@dataclass(frozen=True)
class __CLASS__Params:
    """Hyper-parameters, validated against a suite's `params:` (`bench list --params`)."""

    feedback_scale: float = 1.0  # B_i is Glorot-normal times this


class __CLASS__(Algorithm):
    name = "__NAME__"
    label = "__LABEL__"
    summary = "Direct feedback alignment: the output error through fixed random matrices."
    Params = __CLASS__Params
    capabilities = Capabilities(mlp=True, cnn=False, trainable_feedback=False)
    record_graph = False  # forward_updates needs only the stored activations

    def __init__(self, network, task, params: __CLASS__Params):
        super().__init__(network, task, params)
        # Fixed random feedback, drawn from the global RNG (the runner seeds it) and registered
        # as buffers: saved in checkpoints, in the network's dtype and device, never trained.
        like = network.layer(network.depth).linear.weight
        for i in range(1, network.depth):
            width = network.layer(i).linear.weight.shape[0]
            matrix = glorot_normal(width, network.n_outputs, like=like)
            self.register_buffer(f"B{i}", params.feedback_scale * matrix)

    def forward_updates(self, fwd: ForwardPass) -> list[Tensor]:
        """One update per forward parameter, in `self.network.parameters()` order."""
        error = self.task.output_error(fwd.output, fwd.y)
        depth = self.network.depth
        updates = []
        for i in range(1, depth + 1):
            layer = self.network.layer(i)
            if i == depth:
                delta = error
            else:
                feedback = error @ getattr(self, f"B{i}").t()
                delta = feedback * layer.activation_derivative(fwd.a[i], fwd.h[i])
            h_prev = fwd.h[i - 1].flatten(1)
            for name, _ in layer.named_parameters():
                updates.append(delta.t() @ h_prev if name.endswith("weight") else delta.sum(0))
        return updates

    # With trainable feedback: set `trainable_feedback=True` above, register the feedback weights
    # as nn.Parameters, keep their optimiser as an attribute, and implement
    # `feedback_step(self, fwd) -> float | None` (one step; return the feedback loss).


@hookimpl
def bioplaus_bench_algorithms():
    return [__CLASS__]
'''

TARGET_PROPAGATION = '''\
"""__LABEL__ (`__NAME__`): a target-propagation rule (Meulemans et al. 2020), declared as a
feedback path and a feedback loss.

Written against `bioplaus_bench.api` only. `TargetPropagation` does the rest: per minibatch the
output target h_L - target_stepsize * e goes down the feedback path, each hidden layer's target
difference-corrected (t_i = g_i(t_L) + h_i - g_i(h_L)); every layer moves towards its target
(`local_updates`); then one step trains the feedback maps g_i on the feedback loss, with noise
of std `sigma`. The forward learning rate is divided by `target_stepsize` (`lr_normalizer`).

Here: direct feedback maps from the output, g_i(v) = s(Q_i v + c_i) with s = tanh by default
(`DirectPath`), trained with the difference reconstruction loss (`DifferenceReconstructionLoss`).
Change `build_path` (e.g. `LayerwisePath`, or a `FeedbackPath` subclass of your own) or
`feedback_loss` (any callable `(path, i, fwd, sigma) -> scalar Tensor`) into your rule.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from bioplaus_bench.api import (
    Capabilities,
    DifferenceReconstructionLoss,
    DirectPath,
    TargetPropagation,
    TPParams,
    hookimpl,
)


@dataclass(frozen=True)
class __CLASS__Params(TPParams):
    """`TPParams` (target_stepsize, sigma, feedback_lr, feedback_betas, ...) and this rule's own,
    validated against a suite's `params:` (`bench list --params`)."""

    feedback_activation: Literal["linear", "tanh"] = "tanh"  # s of the feedback maps


class __CLASS__(TargetPropagation):
    name = "__NAME__"
    label = "__LABEL__"
    summary = "Direct feedback maps from the output, difference reconstruction loss."
    Params = __CLASS__Params
    capabilities = Capabilities(mlp=True, cnn=True, trainable_feedback=True)
    feedback_loss = DifferenceReconstructionLoss()  # trains the maps; None: frozen feedback
    # TargetPropagation's default schedule: 6 feedback pre-training epochs, then 1 feedback-only
    # epoch after each forward epoch (a suite's `schedule:` overrides it).

    def build_path(self) -> DirectPath:
        """The feedback path (its maps are nn.Modules of the algorithm: saved in checkpoints)."""
        return DirectPath(self.network, self.params.feedback_activation)


@hookimpl
def bioplaus_bench_algorithms():
    return [__CLASS__]
'''

BACKWARD_RULE = '''\
"""__LABEL__ (`__NAME__`): backprop with a fixed random matrix in place of each layer's weight in
the backward pass: feedback alignment (Lillicrap et al. 2016).

Written against `bioplaus_bench.api` only. `BackwardRule` runs backprop through a forward pass
in which layer i (2..L) uses `backward_weight(i, W_i)` instead of W_i to send the error down to
layer i-1, on MLPs and CNNs alike; the weights' and biases' own gradients are the usual ones:

    delta_L = e,   delta_{i-1} = (delta_i B_i) * s'(a_{i-1}),   dW_i = delta_i^T h_{i-1}

Change `backward_weight` into your rule: any tensor with the weight's shape, dtype and device,
computed from anything (the current weight `weight`, buffers, the global RNG).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from bioplaus_bench.api import BackwardRule, Capabilities, hookimpl


@dataclass(frozen=True)
class __CLASS__Params:
    """Hyper-parameters, validated against a suite's `params:` (`bench list --params`)."""

    feedback_scale: float = 1.0  # B_i is Glorot-normal times this


class __CLASS__(BackwardRule):
    name = "__NAME__"
    label = "__LABEL__"
    summary = "Feedback alignment: fixed random matrices in place of the weights in backprop."
    Params = __CLASS__Params
    capabilities = Capabilities(mlp=True, cnn=True)  # BackwardRule's: dense and conv layers

    def __init__(self, network, task, params: __CLASS__Params):
        super().__init__(network, task, params)
        # One fixed random B_i per layer 2..L, the shape of its weight (n_i x n_{i-1}, or a conv
        # kernel), drawn from the global RNG (the runner seeds it) and registered as a buffer:
        # saved in checkpoints, in the network's dtype and device, never trained.
        for i in range(2, network.depth + 1):
            weight = network.layer_parameters(i)[0]
            receptive = weight[0][0].numel() if weight.dim() > 2 else 1
            std = math.sqrt(2.0 / ((weight.shape[0] + weight.shape[1]) * receptive))  # Glorot
            matrix = torch.randn(weight.shape, dtype=weight.dtype, device=weight.device)
            self.register_buffer(f"B{i}", params.feedback_scale * std * matrix)

    def backward_weight(self, i: int, weight: Tensor) -> Tensor:
        """What layer i (2..L) uses in place of its current forward weight `weight` in this
        training step's backward pass: same shape, dtype and device."""
        return getattr(self, f"B{i}")


@hookimpl
def bioplaus_bench_algorithms():
    return [__CLASS__]
'''

INFERENCE = '''\
"""__LABEL__ (`__NAME__`): a rule with an inference phase, predictive coding written as its
energy (Whittington & Bogacz 2017).

Written against `bioplaus_bench.api` only. An `InferenceRule` relaxes state of its own (here:
value nodes x_1 ... x_{L-1} on the hidden layers, starting at the feed-forward activations)
before it proposes the weight updates. Here the energy is all there is to write; both the
inference steps and the updates are its gradients, by autograd:

    E = sum_{l<L} 1/2 |x_l - s(W_l x_{l-1} + b_l)|^2 + beta * loss(W_L x_{L-1} + b_L, y)

T steps x <- x - inference_lr * dE/dx, then the update dE/dtheta / (beta B) at the last state
(for a tiny beta and converged inference, backprop's gradient). `bench check-plugin` checks
that the relaxation lowers the energy with shrinking steps (`relaxation_phases`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from bioplaus_bench.api import (
    Capabilities,
    ForwardPass,
    InferenceRule,
    NudgingBeta,
    PositiveFloat,
    PositiveInt,
    hookimpl,
    sum_per_seed,
)


@dataclass(frozen=True)
class __CLASS__Params:
    """Hyper-parameters, validated against a suite's `params:` (`bench list --params`)."""

    T: PositiveInt = 20  # inference steps per minibatch
    inference_lr: PositiveFloat = 0.1  # step size of the descent on the value nodes
    output_weight: NudgingBeta = 1.0  # beta: the weight of the output loss in the energy


class __CLASS__(InferenceRule):
    name = "__NAME__"
    label = "__LABEL__"
    summary = "Predictive coding written as its energy: inference and learning by autograd."
    Params = __CLASS__Params
    # Written over the leading dimensions (sum_per_seed, the layers' own calls): stacked seeds
    # run it unchanged.
    capabilities = Capabilities(mlp=True, vectorize_seeds=True)

    def energy(self, fwd: ForwardPass, state: list[Tensor], beta: float) -> Tensor:
        """Summed over the minibatch; one value per seed when seeds are stacked."""
        seeds, below, total = self.network.seeds, fwd.h[0], 0.0
        for i, node in enumerate(state, start=1):
            _, prediction = self.network.layer(i)(below)
            total = total + 0.5 * sum_per_seed((node - prediction) ** 2, seeds)
            below = node
        output, _ = self.network.layer(self.network.depth)(below)
        # the task's loss is the batch mean: times B, the summed per-sample loss
        return total + beta * fwd.batch_size * self.task.loss(output, fwd.y)

    def relax_step(self, fwd: ForwardPass, state: list[Tensor], beta: float) -> list[Tensor]:
        with torch.enable_grad():
            nodes = [x.detach().requires_grad_() for x in state]
            grads = torch.autograd.grad(self.energy(fwd, nodes, beta).sum(), nodes)
        return [x.detach() - self.params.inference_lr * g
                for x, g in zip(state, grads, strict=True)]

    def relaxation_phases(self) -> list[tuple[float, int]]:
        return [(self.params.output_weight, self.params.T)]

    def forward_updates(self, fwd: ForwardPass) -> list[Tensor]:
        (beta, steps), = self.relaxation_phases()
        state = self.relax(fwd, self.initial_state(fwd), beta, steps)
        with torch.enable_grad():
            energy = self.energy(fwd, state, beta).sum()  # the seeds' sum: each seed's own
            grads = torch.autograd.grad(energy, list(self.network.parameters()))
        return [g / (beta * fwd.batch_size) for g in grads]


@hookimpl
def bioplaus_bench_algorithms():
    return [__CLASS__]
'''

_ADAM = "    optimizer: {lr: 1.0e-3, betas: [0.9, 0.999], eps: 1.0e-8}\n"

TEMPLATES = {
    "direct": Template(
        "direct",
        "an Algorithm that computes every update itself in forward_updates: direct feedback "
        "alignment (the output error through a fixed random matrix to each hidden layer; MLP)",
        DIRECT, _ADAM + "    params: {feedback_scale: 1.0}\n"),
    "target-propagation": Template(
        "target-propagation",
        "a TargetPropagation subclass declared as a feedback path and a feedback loss: direct "
        "tanh maps from the output, trained with the difference reconstruction loss (MLP, CNN; "
        "trainable feedback)",
        TARGET_PROPAGATION,
        "    optimizer: {lr: 3.0e-3, betas: [0.9, 0.999], eps: 1.0e-8}\n"
        "    schedule: {feedback_pretraining_epochs: 2, extra_feedback_epochs: 1}\n"
        "    params: {target_stepsize: 0.1, sigma: 0.1, feedback_lr: 1.0e-3, "
        "feedback_betas: [0.9, 0.999],\n"
        "             feedback_activation: tanh}\n"),
    "backward-rule": Template(
        "backward-rule",
        "a BackwardRule subclass, backprop with another tensor in place of each layer's weight "
        "in the backward pass, written as backward_weight(i, weight): a fixed random matrix "
        "(feedback alignment; MLP, CNN)",
        BACKWARD_RULE, _ADAM + "    params: {feedback_scale: 1.0}\n"),
    "inference": Template(
        "inference",
        "an InferenceRule, a rule that relaxes value nodes of its own before it learns, "
        "written as its energy: predictive coding, inference steps and updates by autograd "
        "(MLP; vectorised seeds)",
        INFERENCE, _ADAM + "    params: {T: 20, inference_lr: 0.1, output_weight: 1.0}\n"),
}
