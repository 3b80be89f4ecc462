"""What the network is trained to do: the batch-mean loss and its output error ``e = ∂ℒ/∂out``.

The output error is written in closed form (not autograd) because every target-propagation method
and DFA uses it as the starting point of its targets; note the ``1/B`` of the mean reduction
(algorithms.md §1, §2, pitfall 1).

With seeds stacked (``model.seeds``) the output is ``[S, B, n]`` and the targets ``[S, B, …]``:
the loss is then one batch mean per seed (``[S]``), the error and the hits per seed.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch
import torch.nn.functional as F
from torch import Tensor

from .seeds import mean_per_seed


def _seeds(output: Tensor) -> int | None:
    """S when ``output`` holds stacked seeds' outputs (``[S, B, n]``; one seed's is ``[B, n]``)."""
    return output.shape[0] if output.dim() == 3 else None


class Task(ABC):
    kind: str

    def __init__(self, n_outputs: int):
        self.n_outputs = n_outputs

    @abstractmethod
    def loss(self, output: Tensor, y: Tensor) -> Tensor:
        """The batch-mean loss (one per seed, ``[S]``, when seeds are stacked)."""

    @abstractmethod
    def output_error(self, output: Tensor, y: Tensor) -> Tensor:
        """``∂ loss / ∂ output``, per sample, including the mean's ``1/B``."""

    def correct(self, output: Tensor, y: Tensor) -> Tensor | None:
        """Number of correctly classified samples (per seed when stacked), or None for a
        regression task."""
        return None


class Classification(Task):
    """Softmax cross-entropy on the logits, mean over the batch."""

    kind = "classification"

    def loss(self, output: Tensor, y: Tensor) -> Tensor:
        seeds = _seeds(output)
        if seeds is None:
            return F.cross_entropy(output, y)
        return mean_per_seed(F.cross_entropy(output.flatten(0, 1), y.flatten(),
                                             reduction="none"), seeds)

    def output_error(self, output: Tensor, y: Tensor) -> Tensor:
        error = torch.softmax(output, dim=-1)
        labels = y.unsqueeze(-1)
        error.scatter_(-1, labels, error.gather(-1, labels) - 1.0)
        return error / output.shape[-2]

    def correct(self, output: Tensor, y: Tensor) -> Tensor:
        return (output.argmax(dim=-1) == y).sum(-1)


class Regression(Task):
    """Mean squared error, mean over the batch and the outputs (``MSELoss``)."""

    kind = "regression"

    def loss(self, output: Tensor, y: Tensor) -> Tensor:
        seeds = _seeds(output)
        if seeds is None:
            return F.mse_loss(output, y)
        return mean_per_seed(F.mse_loss(output, y, reduction="none"), seeds)

    def output_error(self, output: Tensor, y: Tensor) -> Tensor:
        return 2.0 * (output - y) / (output.shape[-2] * output.shape[-1])  # one seed's numel
