"""Predictive coding (inference learning), written against ``bioplaus_bench.api`` only.

J. C. R. Whittington and R. Bogacz, "An approximation of the error backpropagation algorithm in
a predictive coding network with local Hebbian synaptic plasticity", Neural Computation 29(5),
2017; in the formulation that PCX benchmarks (L. Pinchetti et al., "Benchmarking Predictive
Coding Networks — Made Simple", ICLR 2025): the discriminative network, predictions flowing up.

Value nodes ``x_1 … x_{L−1}`` on every hidden layer, the input clamped (``x_0 = x``); layer l
predicts ``μ_l = s(W_l x_{l−1} + b_l)`` (the network's own layer), the output layer
``o = W_L x_{L−1} + b_L``. The energy of one sample, with ``ℓ`` the task's per-sample loss::

    E = Σ_{l<L} ½ ‖x_l − μ_l‖² + β ℓ(o, y)

The output is *clamped to the target* through the task's loss: for classification ``ℓ`` is the
cross-entropy of ``o`` against the one-hot label (PCX's CE energy at the output: the output
node fixed to the one-hot target, its energy ``−Σ y log softmax(o)``), for regression the
task's squared error. ``β = output_weight`` (1: the standard PCN).

Inference: the value nodes start at the feed-forward pass (every hidden error zero) and take
``T`` steps of gradient descent on E with step size ``inference_lr`` (optionally heavy-ball
momentum ``inference_momentum``), all samples and (stacked) seeds at once. With
``d_l = ∂E/∂a_l`` (``d_L = β ∂ℓ/∂o``, ``d_l = −s'(a_l) ⊙ (x_l − μ_l)``)::

    ∂E/∂x_l = (x_l − μ_l) + d_{l+1} W_{l+1}

Learning, at the last state: the local, Hebbian gradient of E, ``∇W_l = d_lᵀ x_{l−1}``,
``∇b_l = Σ_b d_l``, divided by ``βB`` so that it is a batch-mean gradient's size (for β → 0 and
converged inference it is BP's gradient of the batch-mean loss: the known result, tested).

Variant ``nudge: center``: PCX's *center nudging* (after Laborieux et al.'s symmetric EP
estimate), the variant that closed most of the gap to BP on PCX's deeper networks: two
relaxations, with output weights ``+β`` and ``−β``, and the update
``(∇_θ E_{+β} − ∇_θ E_{−β}) / 2βB``. Incremental PC (weights moving at every inference step)
does not fit a rule that proposes one update per minibatch and is not offered.

Predictions are the feed-forward pass (the free phase of this energy is the feed-forward
pass, with energy 0), so evaluation needs nothing of its own.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from bioplaus_bench.api import (
    Beta,
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
class PCParams:
    # Defaults measured by benchmarks/energy_defaults.py (docs/plugins.md, "Defaults and why"):
    # the cheapest setting within 5° of BP's gradient on 784-256-10 and 784-5×256-10.
    T: PositiveInt = 50  # inference steps per minibatch; 20 leaves the deep net 15-20° off
    inference_lr: PositiveFloat = 0.2  # step size of the value nodes' gradient descent; 0.5 diverges
    inference_momentum: Beta = 0.8  # heavy-ball momentum of that descent (0: plain SGD); 0 needs T ≥ 200
    output_weight: NudgingBeta = 0.01  # β, the weight of the output loss; β = 1 stays 20-36° off
    nudge: Literal["clamped", "center"] = "clamped"  # center: ±β, PCX's center nudging


class PredictiveCoding(InferenceRule):
    name = "pc"
    label = "PC"
    summary = "Predictive coding: T inference steps on the prediction errors, then local " \
              "updates (Whittington & Bogacz 2017; PCX)."
    Params = PCParams
    capabilities = Capabilities(mlp=True, vectorize_seeds=True)

    def relaxation_phases(self) -> list[tuple[float, int]]:
        beta, steps = self.params.output_weight, self.params.T
        return [(beta, steps), (-beta, steps)] if self.params.nudge == "center" \
            else [(beta, steps)]

    @torch.no_grad()  # the relaxation is closed-form: no graph through the layers' weights
    def forward_updates(self, fwd: ForwardPass) -> list[Tensor]:
        phases = self.relaxation_phases()
        total: list[Tensor] | None = None
        for beta, steps in phases:
            state = self.relax(fwd, self.initial_state(fwd), beta, steps)
            _, deltas, _ = self._errors(fwd, state, beta)
            # ∇θ E_β / (βB), averaged over the phases (center: the ±β difference / 2βB)
            scale = 1.0 / (beta * fwd.batch_size * len(phases))
            grads = [g.mul_(scale) for g in self._weight_gradients(fwd, state, deltas)]
            total = grads if total is None else [t.add_(g) for t, g in zip(total, grads,
                                                                            strict=True)]
        assert total is not None
        return total

    def energy(self, fwd: ForwardPass, state: Sequence[Tensor], beta: float) -> Tensor:
        errors, _, output = self._errors(fwd, state, beta)
        seeds = self.network.seeds
        hidden = sum(sum_per_seed(e.square(), seeds) for e in errors)
        return 0.5 * hidden + beta * fwd.batch_size * self.task.loss(output, fwd.y)

    def relax_step(self, fwd: ForwardPass, state: Sequence[Tensor], beta: float
                   ) -> list[Tensor]:
        step = self.params.inference_lr
        return [x - step * g for x, g in zip(state, self._state_gradient(fwd, state, beta),
                                              strict=True)]

    def relax(self, fwd: ForwardPass, state: Sequence[Tensor], beta: float, steps: int
              ) -> list[Tensor]:
        momentum = self.params.inference_momentum
        if momentum == 0:
            return super().relax(fwd, state, beta, steps)
        # copies: the steps below are in place, and the caller's state stays where it was
        state, velocity = [x.clone() for x in state], [torch.zeros_like(x) for x in state]
        for _ in range(steps):
            for x, v, g in zip(state, velocity, self._state_gradient(fwd, state, beta),
                               strict=True):
                v.mul_(momentum).add_(g)
                x.sub_(v, alpha=self.params.inference_lr)
        return state

    # --- the energy's pieces ----------------------------------------------------------------

    def _errors(self, fwd: ForwardPass, state: Sequence[Tensor], beta: float
                ) -> tuple[list[Tensor], list[Tensor], Tensor]:
        """The prediction errors ``x_l − μ_l`` (l < L), ``d_l = ∂E/∂a_l`` (l = 1..L) and the
        output ``o``, at ``state``. Layer 1's prediction is the feed-forward one (the input is
        clamped), so it costs no product."""
        depth = self.network.depth
        errors, deltas = [], []
        for i in range(1, depth):
            layer = self.network.dense(i)
            a, mu = (fwd.a[1], fwd.h[1]) if i == 1 else layer(state[i - 2])
            error = state[i - 1] - mu
            errors.append(error)
            deltas.append(-layer.activation_derivative(a, mu) * error)
        output, _ = self.network.dense(depth)(state[-1] if depth > 1 else fwd.h[0])
        # β ∂ℓ/∂o per sample: output_error carries the batch mean's 1/B
        deltas.append(self.task.output_error(output, fwd.y).mul_(beta * fwd.batch_size))
        return errors, deltas, output

    def _state_gradient(self, fwd: ForwardPass, state: Sequence[Tensor], beta: float
                        ) -> list[Tensor]:
        """``∂E/∂x_l = (x_l − μ_l) + d_{l+1} W_{l+1}`` for every value node."""
        errors, deltas, _ = self._errors(fwd, state, beta)
        # errors[i − 1] and deltas[i − 1] belong to layer i
        return [error + deltas[i] @ self.network.dense(i + 1).linear.weight
                for i, error in enumerate(errors, start=1)]

    def _weight_gradients(self, fwd: ForwardPass, state: Sequence[Tensor],
                          deltas: Sequence[Tensor]) -> list[Tensor]:
        """``∂E/∂θ``: ``d_lᵀ x_{l−1}`` and ``Σ_b d_l`` for every layer, in parameter order."""
        inputs = [fwd.h[0], *state]
        grads: list[Tensor] = []
        for i in range(1, self.network.depth + 1):
            grads += self.network.dense(i).gradients(deltas[i - 1], inputs[i - 1])
        return grads


@hookimpl
def bioplaus_bench_algorithms():
    return [PredictiveCoding]
