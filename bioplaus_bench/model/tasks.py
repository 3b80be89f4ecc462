"""What the network is trained to do: the batch-mean loss and its output error ``e = ∂ℒ/∂out``.

The output error is written in closed form (not autograd) because every target-propagation method
and DFA uses it as the starting point of its targets; note the ``1/B`` of the mean reduction
(spec §1, §2, pitfall 1).
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch
import torch.nn.functional as F
from torch import Tensor


class Task(ABC):
    kind: str

    def __init__(self, n_outputs: int):
        self.n_outputs = n_outputs

    @abstractmethod
    def loss(self, output: Tensor, y: Tensor) -> Tensor:
        """The batch-mean loss."""

    @abstractmethod
    def output_error(self, output: Tensor, y: Tensor) -> Tensor:
        """``∂ loss / ∂ output``, per sample, including the mean's ``1/B``."""

    def correct(self, output: Tensor, y: Tensor) -> Tensor | None:
        """Number of correctly classified samples, or None for a regression task."""
        return None


class Classification(Task):
    """Softmax cross-entropy on the logits, mean over the batch."""

    kind = "classification"

    def loss(self, output: Tensor, y: Tensor) -> Tensor:
        return F.cross_entropy(output, y)

    def output_error(self, output: Tensor, y: Tensor) -> Tensor:
        error = torch.softmax(output, dim=1)
        error[torch.arange(len(y), device=y.device), y] -= 1.0
        return error / output.shape[0]

    def correct(self, output: Tensor, y: Tensor) -> Tensor:
        return (output.argmax(dim=1) == y).sum()


class Regression(Task):
    """Mean squared error, mean over the batch and the outputs (``MSELoss``)."""

    kind = "regression"

    def loss(self, output: Tensor, y: Tensor) -> Tensor:
        return F.mse_loss(output, y)

    def output_error(self, output: Tensor, y: Tensor) -> Tensor:
        return 2.0 * (output - y) / output.numel()
