"""Direct random target projection (DRTP), written against ``bioplaus_bench.api`` only.

C. Frenkel, M. Lefebvre and D. Bol, "Learning without feedback: fixed random learning signals
allow for feedforward training of deep neural networks", Frontiers in Neuroscience 15:629892
(2021), doi:10.3389/fnins.2021.629892 (arXiv:1909.01311).

Every hidden layer learns from a fixed random projection of the one-hot **target** ``y*``, not of
the error: the target is a proxy for the sign of the error in classification, so a hidden layer
can update as soon as its own forward pass is done (no feedback pathway, no update locking). The
output layer learns from its true error. The paper writes, for a hidden layer k,

    δy_k = (B_kᵀ y*) ⊙ f'(y_k),        ΔW_k = −η δy_k y_{k−1}ᵀ

(and ``δy_N = e`` for the output layer): ``δy_k`` is a gradient-like direction that the
optimiser subtracts. We keep that sign. With ``P_i = B_iᵀ`` (shape ``n_i × n_L``; for a conv
layer ``n_i = C·H·W`` of its pooled output), ``Y*`` the ``B × n_L`` one-hot targets of the
minibatch and ``e`` the output error of the batch-mean loss (``task.output_error``, it includes
``1/B``), the updates proposed to the runner (which writes them into ``.grad``; Adam subtracts
them) are::

    S_i  = Y* P_iᵀ / B                    (the teaching signal on h_i, same 1/B as e)
    dense hidden layer:  δ_i = S_i ⊙ s'(a_i),   ∇W_i = δ_iᵀ h_{i−1},   ∇b_i = Σ_b δ_i
    conv hidden layer:   ∇θ_i = ∂⟨h_i, S_i⟩/∂θ_i   (autograd through conv → s → max-pool of
                         that layer alone, with ``grad_outputs = S_i``; h_i is the pooled output)
    output layer L:      δ_L = e,   ∇W_L = δ_Lᵀ h_{L−1},   ∇b_L = Σ_b δ_L   (= BP's gradient)

so every update is the batch mean of the per-sample updates, as BP's gradient of the batch-mean
loss is. ``P_i`` is Glorot-normal (``std = sqrt(2 / (n_i + n_L))``) times ``feedback_scale``,
drawn from the global RNG (seeded by the runner) in layer order and kept as buffers.

Differences from the authors' code (github.com/ChFrenkel/DirectRandomTargetProjection): there the
projections are Kaiming-uniform, the hidden signal carries no ``1/B`` while the output error of
the mean cross-entropy does (Adam is nearly invariant to that scale), and a conv layer's signal is
put on its activation before the max-pool; here it is on the pooled output, the activation every
other method of the suite gives targets to.

Classification only: ``y*`` is a one-hot label. ``Capabilities(tasks=("classification",))`` makes
a suite cell on a regression dataset a ``skipped`` record with the reason.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from bioplaus_bench.api import (
    Algorithm,
    Capabilities,
    Classification,
    Dense,
    ForwardPass,
    PositiveFloat,
    glorot_normal,
    hookimpl,
)


@dataclass(frozen=True)
class DRTPParams:
    feedback_scale: PositiveFloat = 1.0  # P_i is Glorot-normal times this


class DRTP(Algorithm):
    name = "drtp"
    label = "DRTP"
    summary = "Direct random target projection: hidden layers learn from fixed random projections " \
              "of the one-hot target (Frenkel et al. 2021)."
    Params = DRTPParams
    capabilities = Capabilities(mlp=True, cnn=True, tasks=("classification",),
                                vectorize_seeds=True)
    record_graph = False  # the stored activations and the conv layers' own graphs suffice

    def __init__(self, network, task, params: DRTPParams):
        super().__init__(network, task, params)
        if not isinstance(task, Classification):
            raise ValueError(f"DRTP needs a classification task (one-hot targets), not "
                             f"{getattr(task, 'kind', type(task).__name__)}")
        n_outputs = network.n_outputs
        for i in range(1, network.depth):
            width = math.prod(network.activation_shape(i))
            self.register_buffer(f"P{i}", params.feedback_scale * glorot_normal(
                width, n_outputs, dtype=network.dtype, device=network.device))

    def projection(self, i: int) -> Tensor:
        """``P_i`` (``n_i × n_L``) of hidden layer ``i``: the signal is ``y* P_iᵀ``."""
        return getattr(self, f"P{i}")

    def signal(self, fwd: ForwardPass, i: int) -> Tensor:
        """``S_i = Y* P_iᵀ / B``, shaped like ``h_i``: row b is column ``y_b`` of ``P_i`` (each
        seed's own ``P_i`` when seeds are stacked)."""
        rows = torch.take_along_dim(self.projection(i).mT, fwd.y.unsqueeze(-1), dim=-2)
        return (rows / fwd.batch_size).reshape(fwd.h[i].shape)

    def forward_updates(self, fwd: ForwardPass) -> list[Tensor]:
        depth = self.network.depth
        updates: list[Tensor] = []
        for i in range(1, depth + 1):
            layer = self.network.layer(i)
            if not isinstance(layer, Dense):  # a conv layer (the output layer is dense)
                updates += _through_layer(layer, fwd, i, self.signal(fwd, i))
            elif i == depth:
                updates += layer.gradients(self.task.output_error(fwd.output, fwd.y), fwd.h[i - 1])
            else:
                delta = self.signal(fwd, i) * layer.activation_derivative(fwd.a[i], fwd.h[i])
                updates += layer.gradients(delta, fwd.h[i - 1])
        return updates


def _through_layer(layer, fwd: ForwardPass, i: int, signal: Tensor) -> list[Tensor]:
    """``∂⟨h_i, S_i⟩/∂θ_i`` through layer ``i`` alone: through the graph the forward pass kept
    for it (``fwd.layer_graphs``), else through a pass of that layer on the stored input. The
    graph is retained: the core's alignment metrics may use it after this."""
    graph = fwd.layer_graphs.get(i)
    with torch.enable_grad():
        if graph is not None and graph.valid_for(layer):
            h = graph.h
        else:
            _, h = layer(fwd.h[i - 1].detach())
        return list(torch.autograd.grad(h, list(layer.parameters()), grad_outputs=signal,
                                        retain_graph=True))


@hookimpl
def bioplaus_bench_algorithms():
    return [DRTP]
