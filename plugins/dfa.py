"""Direct feedback alignment (spec §4.2), built as the original does: DDTP-linear with frozen
random feedback. Each hidden layer's target is ``ĥ_i = h_i − η̂ B_i e`` with a fixed Glorot-normal
``B_i`` from the output error ``e``; the output layer's target is ``a_L − η̂ e``; every layer moves
towards its target with the local rule of spec §3."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from bioplaus_bench.api import (
    Algorithm,
    ArchitectureSpec,
    Capabilities,
    ForwardPass,
    glorot_normal,
    hookimpl,
    local_updates,
    output_target,
)


@dataclass(frozen=True)
class DFAParams:
    target_stepsize: float = 1.0  # η̂; the paper's DFA configs use 1
    # The original builds DFA's last hidden layer without a bias (spec §4.6, quirk 5); MLP only.
    last_hidden_bias: bool = False


class DirectFeedbackAlignment(Algorithm):
    name = "dfa"
    label = "DFA"
    summary = "Direct feedback alignment: fixed random projections of the output error."
    Params = DFAParams
    capabilities = Capabilities(mlp=True, cnn=True, trainable_feedback=False)

    @classmethod
    def adapt_architecture(cls, spec: ArchitectureSpec, params: DFAParams) -> ArchitectureSpec:
        if spec.type == "mlp" and not params.last_hidden_bias and spec.depth > 1:
            return spec.without_bias(spec.depth - 1)
        return spec

    def __init__(self, network, task, params: DFAParams):
        super().__init__(network, task, params)
        probe = next(network.parameters())
        n_out = network.n_outputs
        for i in range(1, network.depth):
            units = torch.Size(network.activation_shape(i)).numel()
            self.register_buffer(f"B{i}", glorot_normal(units, n_out, probe))

    def feedback_matrix(self, i: int) -> torch.Tensor:
        return getattr(self, f"B{i}")

    def forward_updates(self, fwd: ForwardPass) -> list[torch.Tensor]:
        stepsize = self.params.target_stepsize
        error = self.task.output_error(fwd.output, fwd.y)
        targets = [None]
        for i in range(1, self.network.depth):
            projected = (error @ self.feedback_matrix(i).t()).view_as(fwd.h[i])
            targets.append(fwd.h[i] - stepsize * projected)
        targets.append(output_target(fwd, self.task, stepsize))
        return local_updates(self.network, fwd, targets)

    def lr_normalizer(self) -> float:
        return self.params.target_stepsize


@hookimpl
def bioplaus_bench_algorithms():
    return [DirectFeedbackAlignment]
