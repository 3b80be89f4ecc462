"""Backpropagation (spec §4.1): the proposed update is autograd's gradient of the batch-mean loss."""

from __future__ import annotations

import torch

from bioplaus_bench.api import Algorithm, Capabilities, ForwardPass, hookimpl


class Backprop(Algorithm):
    name = "bp"
    label = "BP"
    summary = "Error backpropagation: the exact gradient of the loss."
    capabilities = Capabilities(mlp=True, cnn=True, trainable_feedback=False)
    record_graph = True

    def forward_updates(self, fwd: ForwardPass) -> list[torch.Tensor]:
        return list(torch.autograd.grad(fwd.loss, list(self.network.parameters())))


@hookimpl
def bioplaus_bench_algorithms():
    return [Backprop]
