"""Backpropagation (algorithms.md §4.1): the proposed update is autograd's gradient of the batch-mean loss."""

from __future__ import annotations

import torch

from bioplaus_bench.api import Algorithm, Capabilities, ForwardPass, hookimpl


class Backprop(Algorithm):
    name = "bp"
    label = "BP"
    summary = "Error backpropagation: the exact gradient of the loss."
    capabilities = Capabilities(mlp=True, cnn=True, vectorize_seeds=True)
    record_graph = True

    def forward_updates(self, fwd: ForwardPass) -> list[torch.Tensor]:
        # One loss per seed when seeds are stacked: their sum's gradient is each seed's own.
        return list(torch.autograd.grad(fwd.loss.sum(), list(self.network.parameters())))


@hookimpl
def bioplaus_bench_algorithms():
    return [Backprop]
