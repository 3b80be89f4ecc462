"""Feedback alignment (Lillicrap, Cownden, Tweed & Akerman 2016, *Random synaptic feedback weights
support error backpropagation for deep learning*, Nature Communications 7:13276): backprop's
layer-by-layer error recursion with a fixed random matrix in place of each layer's forward weight
in the backward pass. Written against ``bioplaus_bench.api`` only, as a ``BackwardRule``, so it
runs on MLPs and CNNs alike.

For fully connected layers, with ``e = ∂ℒ/∂h_L`` the output error of the batch-mean loss (it
includes 1/B) and ``B_i`` the fixed matrix of layer i (the shape of ``W_i``)::

    δ_L = e
    δ_i = (δ_{i+1} B_{i+1}) ⊙ s'(a_i)            i = L-1 … 1   (B_{i+1} in place of W_{i+1})
    ∇W_i = δ_iᵀ h_{i-1},   ∇b_i = Σ_b δ_i

A conv layer's error goes down through the transposed convolution with its kernel ``B_i``; the
weight gradients are backprop's given the δ's. With ``B_i = W_i`` this is exactly backprop.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from bioplaus_bench.api import BackwardRule, Capabilities, FixedRandom, hookimpl


@dataclass(frozen=True)
class FAParams:
    feedback_scale: float = 1.0  # B_i is Glorot-normal times this


class FeedbackAlignment(BackwardRule):
    name = "feedback-alignment"
    label = "FA"
    summary = "Feedback alignment: the error goes down layer by layer through fixed random matrices."
    Params = FAParams
    capabilities = Capabilities(mlp=True, cnn=True, vectorize_seeds=True)
    feedback: FixedRandom  # what build_feedback returns, kept by the base constructor

    def build_feedback(self) -> FixedRandom:
        # B_2 … B_L drawn from the global RNG (seeded by the runner) in layer order, kept as
        # buffers (saved in checkpoints, never trained).
        return FixedRandom(self.network, scale=self.params.feedback_scale)

    def feedback_matrix(self, i: int) -> Tensor:
        """``B_i`` (layers i = 2 … L, the shape of ``W_i``), used in place of ``W_i`` to carry
        ``δ_i`` down to layer i-1."""
        return self.feedback.weight(i, self.network.layer_parameters(i)[0])


@hookimpl
def bioplaus_bench_algorithms():
    return [FeedbackAlignment]
