"""Feedback alignment (Lillicrap et al. 2016): backprop's layer-by-layer error recursion with a fixed
random matrix ``B_{i+1}`` in place of ``W_{i+1}ᵀ``. Written against ``bioplaus_bench.api`` only.

Per minibatch, with ``e = ∂ℒ/∂h_L`` the output error of the batch-mean loss (it includes 1/B)::

    δ_L = e
    δ_i = (B_{i+1} δ_{i+1}) ⊙ s'(a_i)            i = L-1 … 1
    ∇W_i = Σ_b δ_i h_{i-1}ᵀ,   ∇b_i = Σ_b δ_i     (batch form: δ_iᵀ h_{i-1}, δ_i.sum(0))

With ``B_{i+1} = W_{i+1}ᵀ`` this is exactly backprop's gradient of the batch-mean loss.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from bioplaus_bench.api import Algorithm, Capabilities, ForwardPass, glorot_normal, hookimpl


@dataclass(frozen=True)
class FAParams:
    feedback_scale: float = 1.0  # B_{i+1} is Glorot-normal times this


class FeedbackAlignment(Algorithm):
    name = "feedback-alignment"
    label = "FA"
    summary = "Feedback alignment: the error goes down layer by layer through fixed random matrices."
    Params = FAParams
    capabilities = Capabilities(mlp=True, cnn=False, trainable_feedback=False)
    record_graph = False  # everything needed is in the stored forward pass

    def __init__(self, network, task, params: FAParams):
        super().__init__(network, task, params)
        # B_{i+1} (shape n_i × n_{i+1}, the shape of W_{i+1}ᵀ) for i = 1 … L-1, drawn from the
        # global RNG (seeded by the runner) and registered as buffers: saved in checkpoints, never
        # trained, moved with the module.
        for i in range(2, network.depth + 1):
            weight = network.layer(i).linear.weight  # W_i, n_i × n_{i-1}
            rows, cols = weight.shape[1], weight.shape[0]
            self.register_buffer(f"B{i}", params.feedback_scale * glorot_normal(rows, cols, like=weight))

    def feedback_matrix(self, i: int) -> Tensor:
        """``B_i`` (layers i = 2 … L), used in place of ``W_iᵀ`` to carry ``δ_i`` down to layer i-1."""
        return getattr(self, f"B{i}")

    def deltas(self, fwd: ForwardPass) -> list[Tensor | None]:
        """``δ_i`` (B × n_i) of every layer, indexed 1 … L like the forward pass (index 0 unused)."""
        depth = self.network.depth
        deltas: list[Tensor | None] = [None] * (depth + 1)
        deltas[depth] = self.task.output_error(fwd.output, fwd.y)
        for i in range(depth - 1, 0, -1):
            derivative = self.network.layer(i).activation_derivative(fwd.a[i], fwd.h[i])
            deltas[i] = (deltas[i + 1] @ self.feedback_matrix(i + 1).t()) * derivative
        return deltas

    def forward_updates(self, fwd: ForwardPass) -> list[Tensor]:
        deltas = self.deltas(fwd)
        updates: list[Tensor] = []
        for i in range(1, self.network.depth + 1):
            h_prev = fwd.h[i - 1].flatten(1)
            for name, _ in self.network.layer(i).named_parameters():
                updates.append(deltas[i].t() @ h_prev if name.endswith("weight") else deltas[i].sum(0))
        return updates


@hookimpl
def bioplaus_bench_algorithms():
    return [FeedbackAlignment]
