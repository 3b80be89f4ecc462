"""Equilibrium propagation (EP) on the MLP, written against ``bioplaus_bench.api`` only.

B. Scellier and Y. Bengio, "Equilibrium Propagation: Bridging the Gap between Energy-Based
Models and Backpropagation", Frontiers in Computational Neuroscience 11:24 (2017); the
symmetric estimate and the softmax read-out of A. Laborieux, M. Ernoult, B. Scellier,
Y. Bengio, J. Grollier and D. Querlioz, "Scaling Equilibrium Propagation to Deep ConvNets by
Drastically Reducing Its Gradient Estimator Bias", Frontiers in Neuroscience 15:633674 (2021).

The network's hidden layers are the states ``s_1 … s_{L−1}`` of a layered Hopfield-like
network whose symmetric couplings are the forward weights (``s_0 = x`` clamped); the output
layer is a read-out ``o = W_L s_{L−1} + b_L`` that is not part of the dynamics (Laborieux et
al.'s read-out for the cross-entropy). With ``σ`` the layers' activation and ``G`` its
primitive's Legendre dual (``G' = σ⁻¹``: tanh ``s·atanh s + ½ log(1 − s²)``, relu and linear
``½ s²``), the energy of one sample and the total energy of a phase are::

    E(s) = Σ_{l<L} [ Σ G(s_l) − s_l · (W_l s_{l−1} + b_l) ],      F = E + β ℓ(o, y)

``ℓ`` the task's per-sample loss (cross-entropy for classification). E is convex in each layer
given its neighbours, whose minimiser is ``s_l = σ(W_l s_{l−1} + b_l + W_{l+1}ᵀ s_{l+1})``
(``− β W_Lᵀ ∂ℓ/∂o`` at the last hidden layer): one inference step is a sweep over the odd
layers, then the even ones (block coordinate descent: the free energy never goes up), all
samples and seeds at once.

Per minibatch: the free phase, ``T_free`` sweeps from the feed-forward activations (the EP
papers start from zero; the feed-forward pass is closer to the fixed point); the nudged phase,
``T_nudged`` sweeps with ``+β`` from the free fixed point (and one with ``−β`` when
``symmetric``, Laborieux et al.'s estimate, whose bias is O(β²)); the contrastive update, as a
gradient (``∂F/∂W_l = −s_l s_{l−1}ᵀ``)::

    one-sided:  ∇W_l = −(s_l^β s_{l−1}^βᵀ − s_l^0 s_{l−1}^0ᵀ) / βB
    symmetric:  ∇W_l = −(s_l^{+β} s_{l−1}^{+β}ᵀ − s_l^{−β} s_{l−1}^{−β}ᵀ) / 2βB

(biases alike), which tends to the gradient of the batch-mean loss at the free fixed point as
β → 0 (tested against implicit differentiation of the fixed point). The read-out's update is
that gradient itself, ``∂ℓ/∂W_L`` at the free fixed point.

The prediction is the read-out of the free fixed point (``predict``: ``T_free`` sweeps from the
feed-forward pass), not the network's feed-forward pass: the evaluation scores that.
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from bioplaus_bench.api import (
    Capabilities,
    ForwardPass,
    InferenceRule,
    NudgingBeta,
    PositiveInt,
    hookimpl,
    sum_per_seed,
)


def _dual_tanh(s: Tensor) -> Tensor:
    s = s.clamp(-1 + 1e-12, 1 - 1e-12)  # tanh reaches ±1 in float32
    return s * torch.atanh(s) + 0.5 * torch.log1p(-s * s)


# activation → (σ, G with G' = σ⁻¹)
_ACTIVATIONS: dict[str, tuple[Callable[[Tensor], Tensor], Callable[[Tensor], Tensor]]] = {
    "tanh": (torch.tanh, _dual_tanh),
    "relu": (torch.relu, lambda s: 0.5 * s * s),
    "linear": (lambda u: u, lambda s: 0.5 * s * s),
}


@dataclass(frozen=True)
class EPParams:
    # Defaults measured by benchmarks/energy_defaults.py (docs/plugins.md, "Defaults and why").
    T_free: PositiveInt = 20  # sweeps of the free phase (and of a prediction); not settled by
    # the measurement: on 5×256 the fixed point takes ~3000 sweeps, any affordable length is >55° off
    T_nudged: PositiveInt = 5  # sweeps of each nudged phase; 10 and 20 are further off on 5×256
    beta: NudgingBeta = 0.1  # nudging strength; in the β² regime (0.5 is not: 18-48 % off on tiny nets)
    symmetric: bool = True  # ±β phases (Laborieux et al. 2021); False: +β against the free phase


class EquilibriumPropagation(InferenceRule):
    name = "ep"
    label = "EP"
    summary = "Equilibrium propagation: free and nudged phases of a Hopfield-like energy, " \
              "contrastive local updates (Scellier & Bengio 2017; symmetric, Laborieux 2021)."
    Params = EPParams
    capabilities = Capabilities(mlp=True, vectorize_seeds=True)

    def __init__(self, network, task, params: EPParams):
        super().__init__(network, task, params)
        kinds = {network.dense(i).activation for i in range(1, network.depth)}
        unknown = kinds - set(_ACTIVATIONS)
        if unknown:
            raise ValueError(f"equilibrium propagation has no energy for the activation "
                             f"{', '.join(sorted(unknown))}; it knows {', '.join(_ACTIVATIONS)}")

    def relaxation_phases(self) -> list[tuple[float, int]]:
        beta, nudged = self.params.beta, self.params.T_nudged
        return [(0.0, self.params.T_free), (beta, nudged)] + \
            ([(-beta, nudged)] if self.params.symmetric else [])

    @torch.no_grad()
    def forward_updates(self, fwd: ForwardPass) -> list[Tensor]:
        beta, nudged = self.params.beta, self.params.T_nudged
        free = self.relax(fwd, self.initial_state(fwd), 0.0, self.params.T_free)
        positive = self.relax(fwd, free, beta, nudged)
        negative = self.relax(fwd, free, -beta, nudged) if self.params.symmetric else free
        scale = 1.0 / ((2.0 if self.params.symmetric else 1.0) * beta * fwd.batch_size)
        inputs = ([fwd.h[0], *positive], [fwd.h[0], *negative])
        updates: list[Tensor] = []
        for i in range(1, self.network.depth):
            layer = self.network.dense(i)
            plus = layer.gradients(positive[i - 1], inputs[0][i - 1])
            minus = layer.gradients(negative[i - 1], inputs[1][i - 1])
            updates += [m.sub_(p).mul_(scale) for p, m in zip(plus, minus, strict=True)]
        readout = self.network.dense(self.network.depth)
        output = self._readout(fwd, free)
        updates += readout.gradients(self.task.output_error(output, fwd.y), self._top(fwd, free))
        return updates

    @torch.no_grad()
    def predict(self, x: Tensor) -> Tensor:
        fwd = self._feed_forward(x)
        return self._readout(fwd, self.relax(fwd, self.initial_state(fwd), 0.0,
                                             self.params.T_free))

    def energy(self, fwd: ForwardPass, state: Sequence[Tensor], beta: float) -> Tensor:
        seeds, terms = self.network.seeds, []
        below = fwd.h[0]
        for i, s in enumerate(state, start=1):
            layer = self.network.dense(i)
            drive = fwd.a[1] if i == 1 else layer(below)[0]
            dual = _ACTIVATIONS[layer.activation][1]
            terms.append(sum_per_seed(dual(s) - s * drive, seeds))
            below = s
        total = functools.reduce(operator.add, terms)  # summed in layer order
        if beta:
            total = total + beta * fwd.batch_size * self.task.loss(self._readout(fwd, state),
                                                                   fwd.y)
        return total

    def relax_step(self, fwd: ForwardPass, state: Sequence[Tensor], beta: float
                   ) -> list[Tensor]:
        state = list(state)
        for parity in (1, 0):  # odd layers (they see only even ones), then even layers
            for i in range(1, self.network.depth):
                if i % 2 == parity:
                    state[i - 1] = self._settle(fwd, state, i, beta)
        return state

    # --- pieces -----------------------------------------------------------------------------

    def _settle(self, fwd: ForwardPass, state: Sequence[Tensor], i: int, beta: float
                ) -> Tensor:
        """Layer i's minimiser given its neighbours: σ(W_i s_{i−1} + b_i + W_{i+1}ᵀ s_{i+1}),
        the last hidden layer nudged by −β W_Lᵀ ∂ℓ/∂o instead."""
        layer, depth = self.network.dense(i), self.network.depth
        drive = fwd.a[1] if i == 1 else layer(state[i - 2])[0]
        above = self.network.dense(i + 1).linear.weight
        if i + 1 < depth:
            drive = drive + state[i] @ above
        elif beta:
            error = self.task.output_error(self._readout(fwd, state), fwd.y)
            drive = drive - (beta * fwd.batch_size) * (error @ above)
        return _ACTIVATIONS[layer.activation][0](drive)

    def _top(self, fwd: ForwardPass, state: Sequence[Tensor]) -> Tensor:
        return state[-1] if state else fwd.h[0]

    def _readout(self, fwd: ForwardPass, state: Sequence[Tensor]) -> Tensor:
        return self.network.dense(self.network.depth)(self._top(fwd, state))[0]

    def _feed_forward(self, x: Tensor) -> ForwardPass:
        """The pass the free phase starts from (no targets: a prediction needs none)."""
        a, h = self.network.activations(x)
        return ForwardPass(x=x, y=x.new_zeros(()), a=a, h=h, loss=x.new_zeros(()))


@hookimpl
def bioplaus_bench_algorithms():
    return [EquilibriumPropagation]
