"""The target-propagation family as one composable algorithm: a feedback path plus a feedback loss.

Per minibatch (algorithms.md §5): targets of every layer from the output target ``ŷ = a_L − η̂ e`` through
the path, with the feedback weights from before this minibatch's feedback step; every layer moves
towards its target with the local rule of algorithms.md §3; then one feedback Adam step (weight decay
inside Adam, the stand-in for Eq. 10's λ-term) on all layers' losses, each computed on the same
stored forward pass with its own noise sample.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
from torch import Tensor

from ..model.algorithm import Algorithm, Capabilities
from ..model.networks import ForwardPass
from ..model.optim import adam
from ..spec.schema import Beta, NonNegativeFloat, PositiveFloat
from .feedback import FeedbackLoss, FeedbackPath
from .targets import local_updates, output_target


@dataclass(frozen=True)
class TPParams:
    """Hyper-parameters shared by the family (defaults: the original code's command line)."""

    target_stepsize: PositiveFloat = 0.01  # η̂; the forward lr is divided by it (normalize_lr)
    sigma: PositiveFloat = 0.08  # std of the noise added to the activations in the feedback losses
    feedback_lr: PositiveFloat = 1e-4
    feedback_betas: tuple[Beta, Beta] = (0.99, 0.99)
    feedback_eps: PositiveFloat = 1e-4
    feedback_weight_decay: NonNegativeFloat = 0.0
    feedback_optimizer: Literal["adam", "sgd"] = "adam"  # SGD (no momentum) in Figure 2


class TargetPropagation(Algorithm):
    """Subclasses declare ``build_path`` and ``feedback_loss`` (None: frozen feedback)."""

    Params = TPParams
    capabilities = Capabilities(mlp=True, trainable_feedback=True)
    default_schedule: ClassVar[dict[str, int]] = {"feedback_pretraining_epochs": 6,
                                                  "extra_feedback_epochs": 1}
    feedback_loss: ClassVar[FeedbackLoss | None] = None

    def build_path(self) -> FeedbackPath:
        raise NotImplementedError

    def __init__(self, network, task, params):
        super().__init__(network, task, params)
        self.path = self.build_path()
        self.feedback_parameters = [p for p in self.path.parameters() if p.requires_grad]
        if self.feedback_loss is not None and self.feedback_parameters:
            if params.feedback_optimizer == "sgd":
                self.feedback_optimizer = torch.optim.SGD(
                    self.feedback_parameters, lr=params.feedback_lr,
                    weight_decay=params.feedback_weight_decay)
            else:
                self.feedback_optimizer = adam(
                    self.feedback_parameters, lr=params.feedback_lr, betas=params.feedback_betas,
                    eps=params.feedback_eps, weight_decay=params.feedback_weight_decay)

    def lr_normalizer(self) -> float:
        return self.params.target_stepsize

    def targets(self, fwd: ForwardPass) -> list[Tensor | None]:
        return self.path.targets(fwd, output_target(fwd, self.task, self.params.target_stepsize))

    def forward_updates(self, fwd: ForwardPass) -> Sequence[Tensor]:
        return local_updates(self.network, fwd, self.targets(fwd))

    def feedback_losses(self, fwd: ForwardPass) -> list[Tensor]:
        """ℒ_i of every hidden layer i = 1..L-1, each with a fresh noise sample. A loss with a
        ``layers(path, fwd, sigma)`` method computes them all at once (the built-ins do, sharing
        the forward re-propagations); otherwise it is called once per layer."""
        # Called only where there is a loss (feedback_step). The ignores below, and the tensor
        # feedback_step returns where the base says float, leave this module's syntax tree (part
        # of every target-propagation method's code digest) as the reference was run with.
        loss, sigma = self.feedback_loss, self.params.sigma
        if hasattr(loss, "layers"):
            return loss.layers(self.path, fwd, sigma)  # type: ignore[union-attr]
        return [loss(self.path, i, fwd, sigma)  # type: ignore[misc]
                for i in range(1, self.network.depth)]

    def feedback_step(self, fwd: ForwardPass) -> Tensor | None:  # type: ignore[override]
        if self.feedback_loss is None or not self.feedback_parameters:
            return None
        total = torch.stack(self.feedback_losses(fwd)).sum(0)  # one per seed when stacked
        grads = torch.autograd.grad(total.sum(), self.feedback_parameters)
        for parameter, grad in zip(self.feedback_parameters, grads, strict=True):
            parameter.grad = grad
        self.feedback_optimizer.step()
        return total.detach()
