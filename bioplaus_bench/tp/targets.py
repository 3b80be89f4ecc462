"""Building blocks shared by target-based algorithms (DFA and the target-propagation family).

- the output target on the logits, ``ŷ = a_L − η̂ e`` (algorithms.md §2);
- the local forward update that moves each layer towards its target (algorithms.md §3);
- Glorot-normal initialisation for feedback matrices (algorithms.md §1).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from ..model.networks import ForwardPass, Network
from ..model.tasks import Task


def output_target(fwd: ForwardPass, task: Task, stepsize: float) -> Tensor:
    """``ŷ = h_L − η̂ ∂ℒ/∂h_L`` with the batch-mean loss, so the per-sample step is ``η̂/B``."""
    return fwd.output - stepsize * task.output_error(fwd.output, fwd.y)


def local_updates(network: Network, fwd: ForwardPass, targets: Sequence[Tensor | None]) -> list[Tensor]:
    """The update of every forward parameter that moves layer ``i`` towards ``targets[i]``.

    ``targets`` is indexed like the forward pass (``targets[0]`` is ignored); a layer whose target
    is None gets zero updates. Fully connected layers use ``(2/B) Σ_b [s'(a) ⊙ (h − ĥ)] h_prevᵀ``;
    conv layers the autograd gradient of the element-mean MSE (algorithms.md §3). The result is aligned
    with ``network.parameters()``.
    """
    if len(targets) != network.depth + 1:
        raise ValueError(f"expected {network.depth + 1} targets (index 0..L), got {len(targets)}")
    updates: list[Tensor] = []
    for i in range(1, network.depth + 1):
        layer, target = network.layer(i), targets[i]
        if target is None:
            updates.extend(torch.zeros_like(p) for p in layer.parameters())
        else:
            updates.extend(layer.local_gradients(fwd.h[i - 1], fwd.a[i], fwd.h[i], target,
                                                 fwd.layer_graphs.get(i)))
    return updates


def glorot_normal(rows: int, cols: int, like: Tensor | None = None, *,
                  dtype: torch.dtype | None = None, device: torch.device | None = None) -> Tensor:
    """A ``rows × cols`` Glorot-normal matrix, ``std = sqrt(2 / (rows + cols))``, gain 1."""
    if like is not None:
        dtype, device = like.dtype, like.device
    std = (2.0 / (rows + cols)) ** 0.5
    return torch.randn(rows, cols, dtype=dtype, device=device) * std
