"""Kolen-Pollack learning, written against ``bioplaus_bench.api`` only.

M. Akrout, C. Wilson, P. C. Humphreys, T. Lillicrap and D. Tweed, "Deep Learning without Weight
Transport", NeurIPS 2019 (arXiv:1904.05391); after J. F. Kolen and J. B. Pollack, "Backpropagation
without weight transport", ICNN 1994.

Backprop with a learned matrix ``B_i`` (the shape of ``W_i``) in place of ``W_i`` in the backward
pass of every layer i = 2..L, dense and conv. Akrout et al. give ``B_i`` the same update as
``W_i`` and weight decay to both::

    ΔW_i = −η (δ_i h_{i−1}ᵀ + λ W_i),    ΔB_i = −η (δ_i h_{i−1}ᵀ + λ B_i)

so that ``B_i − W_i`` shrinks by ``(1 − ηλ)`` every step and ``B_i → W_i``, without ``B_i`` ever
reading ``W_i``: the update signal ``δ_i h_{i−1}ᵀ`` is available at both synapses.

Here ``B_i`` is stepped by the forward weights' own optimiser (in the authors' code,
github.com/makrout/Deep-Learning-without-Weight-Transport, both take the same SGD step and decay
factor): the runner's Adam steps ``W_i`` along the proposed update ``∇W_i + λ W_i``
(``∇W_i = δ_i h_{i−1}ᵀ``, the rule's weight gradient; biases get no decay) and, through
``optimised_with_layers``, ``B_i`` along ``∇W_i + λ B_i``, which ``feedback_step`` sets as its
gradient on the same minibatch (this step's errors used the ``B_i`` from before the step). Same
optimiser, same settings (per-layer learning rates included), same signal: the two steps differ
only through the decay terms, whose difference ``λ (B_i − W_i)`` pulls ``B_i`` towards ``W_i``
(Adam's first moment is linear in the signal; the pull per step is about ``lr λ / sqrt(v)``, with
``v`` Adam's second moment). A frozen layer's ``B_i`` stays where it is, like its ``W_i``.
``B_i`` starts Glorot-normal (parameters ``feedback.B2 …``, saved in checkpoints; their Adam
state is the runner's).

The feedback is not trained in feedback-only epochs (KP learns only alongside the forward
weights), so ``trainable_feedback`` is off. ``feedback_step`` returns
``Σ_i ‖B_i − W_i‖² / Σ_i ‖W_i‖²`` before the step, which goes to 0 as the feedback converges.

Parameter: ``weight_decay`` (λ, default 1e-2).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from bioplaus_bench.api import (
    BackwardRule,
    Capabilities,
    ForwardPass,
    Learned,
    NonNegativeFloat,
    hookimpl,
    sum_per_seed,
)


@dataclass(frozen=True)
class KPParams:
    weight_decay: NonNegativeFloat = 1e-2  # λ, on the forward and the backward weights


class KolenPollack(BackwardRule):
    """Kolen-Pollack (Akrout et al. 2019): learned backward weights with the forward weights'
    update and weight decay on both."""

    name = "kolen-pollack"
    label = "KP"
    summary = "Kolen-Pollack: backward weights get the forward weights' update, both decay."
    Params = KPParams
    capabilities = Capabilities(mlp=True, cnn=True, vectorize_seeds=True)

    def build_feedback(self) -> Learned:
        return Learned(self.network)

    def __init__(self, network, task, params: KPParams):
        super().__init__(network, task, params)
        self._signal: tuple[ForwardPass, list[Tensor]] | None = None

    def backward_matrix(self, i: int) -> torch.nn.Parameter:
        """``B_i`` (layers 2 … L), the shape of ``W_i``."""
        return getattr(self.feedback, f"B{i}")

    def optimised_with_layers(self) -> dict[int, Sequence[torch.nn.Parameter]]:
        return {i: [self.backward_matrix(i)] for i in range(2, self.network.depth + 1)}

    def forward_updates(self, fwd: ForwardPass) -> list[Tensor]:
        grads = iter(super().forward_updates(fwd))
        decay = self.params.weight_decay
        updates, signals = [], []
        for i in range(1, self.network.depth + 1):
            weight, *rest = self.network.layer_parameters(i)
            gradient = next(grads)
            if i == 1:  # no backward weight: the gradient (ours) becomes the update
                updates.append(gradient.add_(weight.detach(), alpha=decay))
            else:  # the gradient is also B_i's signal (feedback_step)
                signals.append(gradient)
                updates.append(torch.add(gradient, weight.detach(), alpha=decay))
            updates.extend(next(grads) for _ in rest)
        self._signal = (fwd, signals)
        return updates

    # A tensor, one loss per seed when stacked, as the target-propagation family returns; the
    # base still says float (its syntax tree is in every algorithm's code digest).
    def feedback_step(self, fwd: ForwardPass) -> Tensor | None:  # type: ignore[override]
        if self._signal is None or self._signal[0] is not fwd:
            return None  # a pass without forward updates: nothing to learn from
        signals, self._signal = self._signal[1], None
        decay, seeds = self.params.weight_decay, self.network.seeds
        with torch.no_grad():
            gap, norm = [], []
            for i, signal in enumerate(signals, start=2):
                feedback, weight = self.backward_matrix(i), self.network.layer_parameters(i)[0]
                gap.append(sum_per_seed((feedback - weight).square(), seeds))
                norm.append(sum_per_seed(weight.square(), seeds))
                # The signal is ours (the update proposed for W_i is another tensor): the
                # runner's forward Adam applies this gradient to B_i.
                feedback.grad = signal.add_(feedback, alpha=decay)
            return torch.stack(gap).sum(0) / torch.stack(norm).sum(0)  # per seed when stacked


@hookimpl
def bioplaus_bench_algorithms():
    return [KolenPollack]
