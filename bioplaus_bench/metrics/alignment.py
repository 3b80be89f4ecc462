"""Alignment metrics computed by the core from any algorithm's proposed updates (algorithms.md §9, §10):

- the angle between each layer's proposed weight update and the BP gradient of the same minibatch;
- the angle between each hidden layer's update and the Gauss-Newton-target (GNT) update, with
  ``Δh_b = J_bᵀ (J_b J_bᵀ + λ I)⁻¹ e_b`` (the pseudo-inverse for λ = 0), ``J_b = ∂a_L/∂h_i`` for
  the whole minibatch at once: a closed-form chain through fully connected layers, autograd
  (one backward pass per output unit) through conv layers;
- the nullspace ratio of an update w.r.t. ``∂y/∂vec(W_i)`` (batch size 1, Figure 2).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import cast

import torch
from torch import Tensor
from torch.func import functional_call

from ..model.networks import Dense, ForwardPass, Network
from ..model.tasks import Task
from ..spec.cell import MetricsConfig


def angle(a: Tensor, b: Tensor) -> float:
    """Angle in degrees between two tensors seen as flat vectors (Frobenius inner product)."""
    a, b = a.detach().flatten().double(), b.detach().flatten().double()
    cosine = torch.dot(a, b) / (a.norm() * b.norm())
    return math.degrees(math.acos(max(-1.0, min(1.0, float(cosine)))))


def bp_gradients(network: Network, task: Task, x: Tensor, y: Tensor) -> list[Tensor]:
    with torch.enable_grad():
        loss = task.loss(network(x), y)
        return list(torch.autograd.grad(loss, list(network.parameters())))


def output_jacobians(network: Network, fwd: ForwardPass) -> dict[int, Tensor]:
    """``J_i[b] = ∂a_L^(b)/∂h_i^(b)`` (B × n_out × numel(h_i)) for every hidden layer i."""
    jacobians: dict[int, Tensor] = {}
    top = network.depth
    # The output layer is fully connected: a Dense, or a plugin's module with its ``linear``.
    weight = cast(Dense, network.layer(top)).linear.weight
    jacobian = weight.expand(fwd.batch_size, *weight.shape)  # ∂a_L/∂h_{L-1}
    for i in range(top - 1, 0, -1):
        jacobians[i] = jacobian
        layer = network.layer(i)
        if i == 1 or not isinstance(layer, Dense):
            break  # a conv → pool layer below: batched autograd instead
        # ∂a_L/∂h_{i-1} = ∂a_L/∂h_i · diag(s'(a_i)) · W_i
        derivative = layer.activation_derivative(fwd.a[i], fwd.h[i])
        jacobian = (jacobian * derivative.unsqueeze(1)) @ layer.linear.weight
    for i in range(1, top):
        if i not in jacobians:  # through conv layers: autograd, one call per layer
            jacobians[i] = _per_sample_jacobian(lambda h, i=i: network.propagate(h, i),
                                                fwd.h[i].detach(), network.n_outputs)
    return jacobians


def _per_sample_jacobian(function, inputs: Tensor, n_outputs: int) -> Tensor:
    """``∂function(x)_b/∂x_b`` (B × n_outputs × numel(x_b)) of a map that treats the samples of
    a batch independently: one backward pass per output unit over the whole batch. (Not
    ``vmap(jacrev)``: a conv layer on channels-last weights, the float32 layout, converts its
    input's layout, which vmap does not support.)"""
    with torch.enable_grad():
        inputs = inputs.detach().requires_grad_(True)
        outputs = function(inputs)
        rows = [torch.autograd.grad(outputs[:, k].sum(), inputs, retain_graph=k + 1 < n_outputs)[0]
                for k in range(n_outputs)]
    return torch.stack(rows, 1).flatten(2)


def gauss_newton_step(jacobian: Tensor, error: Tensor, damping: float) -> Tensor:
    """``Δh_b = J_bᵀ (J_b J_bᵀ + λ I)⁻¹ e_b`` for every sample (``pinv(J_b) e_b`` if λ = 0)."""
    if damping > 0:
        gram = jacobian @ jacobian.transpose(1, 2)
        eye = torch.eye(gram.shape[-1], dtype=gram.dtype, device=gram.device)
        solved = torch.linalg.solve(gram + damping * eye, error.unsqueeze(-1))
        return (jacobian.transpose(1, 2) @ solved).squeeze(-1)
    return (torch.linalg.pinv(jacobian) @ error.unsqueeze(-1)).squeeze(-1)


def gnt_weight_update(network: Network, fwd: ForwardPass, i: int, delta_h: Tensor) -> Tensor:
    """The weight update of layer i that moves h_i towards ``h_i − Δh`` with the local rule
    (``(2/B) Σ_b (s'(a_i) ⊙ Δh_b) h_{i-1}ᵀ``; for conv layers the vector-Jacobian product)."""
    target = fwd.h[i] - delta_h.view_as(fwd.h[i])
    return network.layer(i).local_gradients(fwd.h[i - 1], fwd.a[i], fwd.h[i], target,
                                            fwd.layer_graphs.get(i))[0]


def _weight_indices(network: Network) -> dict[int, int]:
    """Index of layer i's weight in ``network.parameters()``."""
    indices, offset = {}, 0
    for i in range(1, network.depth + 1):
        indices[i] = offset
        offset += len(network.layer_parameters(i))
    return indices


def _per_layer(value: float | Sequence[float], count: int) -> list[float]:
    if isinstance(value, int | float):
        return [float(value)] * count
    if len(value) != count:
        raise ValueError(f"expected {count} damping values (one per hidden layer), got {len(value)}")
    return [float(v) for v in value]


def alignment(network: Network, task: Task, fwd: ForwardPass, updates: Sequence[Tensor],
              config: MetricsConfig) -> dict[str, object]:
    """The metrics of one logged minibatch; lists are indexed by layer (1..L or 1..L-1)."""
    weights = _weight_indices(network)
    result: dict[str, object] = {}
    if config.bp_angles:
        grads = bp_gradients(network, task, fwd.x, fwd.y)
        result["bp_angle"] = [angle(updates[weights[i]], grads[weights[i]])
                              for i in range(1, network.depth + 1)]
    if config.gnt_angles or config.damping_grid:
        with torch.no_grad():
            jacobians = output_jacobians(network, fwd)
            error = task.output_error(fwd.output, fwd.y)

            def angles(dampings: list[float]) -> list[float]:
                return [angle(updates[weights[i]], gnt_weight_update(
                    network, fwd, i, gauss_newton_step(jacobians[i], error, dampings[i - 1])))
                    for i in range(1, network.depth)]
            if config.gnt_angles:
                result["gnt_angle"] = angles(_per_layer(config.gnt_damping, network.depth - 1))
            if config.damping_grid:
                result["gnt_angle_grid"] = {
                    str(damping): angles([damping] * (network.depth - 1))
                    for damping in config.damping_grid}
    if config.nullspace_layers:
        result["nullspace_ratio"] = {
            str(i): nullspace_ratio(network, fwd.x, i, updates[weights[i]])
            for i in config.nullspace_layers}
    return result


def nullspace_ratio(network: Network, x: Tensor, i: int, update: Tensor,
                    tolerance: float = 1e-12) -> float:
    """``‖V_nullᵀ vec(ΔW_i)‖ / ‖vec(ΔW_i)‖`` with ``V_null`` the right singular vectors of
    ``J = ∂y/∂vec(W_i)`` beyond its numerical rank (singular values below ``tolerance``);
    the mean over the batch when it has more than one sample (the paper uses batch size 1)."""
    layer_weight = network.layer_parameters(i)[0]
    name = next(n for n, p in network.named_parameters() if p is layer_weight)
    params = dict(network.named_parameters())
    weight = params[name].detach()

    def output_of(sample):  # y_b as a function of W_i, as a batch of one: (1, n_out)
        return lambda w: functional_call(network, {**params, name: w.squeeze(0)}, (sample,))

    # ∂y_b/∂vec(W_i), one sample at a time: the weight is shared by the batch
    jac = torch.cat([_per_sample_jacobian(output_of(x[b:b + 1]), weight.unsqueeze(0),
                                          network.n_outputs)
                     for b in range(len(x))]).detach().double()
    vector = update.detach().flatten().double()
    # The row space of each J_b has at most n_out directions: project onto it and subtract,
    # instead of forming the (numel × numel) nullspace basis.
    _, singular, vh = torch.linalg.svd(jac, full_matrices=False)
    coefficients = (vh @ vector) * (singular > tolerance)
    null = vector - (coefficients.unsqueeze(1) @ vh).squeeze(1)
    return float((null.norm(dim=1) / vector.norm()).mean())
