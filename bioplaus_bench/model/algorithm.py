"""The algorithm contract: what every credit-assignment algorithm implements (see ``api``)."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

# ArchitectureSpec (spec.architecture) through networks: this module's syntax tree is part of
# every algorithm's code digest (execution/inputs.py), which an edited import would change.
from .networks import ArchitectureSpec, ForwardPass, Network
from .tasks import Task


@dataclass(frozen=True)
class Capabilities:
    """What an algorithm can do; the runner skips cells it cannot run, with the reason.

    An algorithm supports a network when it supports every kind of layer the network is made of
    (``Architecture.layer_kinds``): ``layer_kinds`` lists them; ``mlp=True`` is shorthand for
    ``"dense"`` and ``cnn=True`` adds ``"conv"``, so a new architecture of known kinds of layer
    needs no change to any algorithm. ``tasks`` are the task kinds it can learn (a dataset's
    ``kind``: ``"classification"``, ``"regression"``); cells of other tasks are skipped too.

    ``vectorize_seeds``: the algorithm runs unchanged on stacked seeds (``bench run
    --vectorize-seeds``; docs/plugins.md says what that asks of its code). Without it, its seeds
    run one after the other, with a note in the log."""

    mlp: bool = True
    cnn: bool = False
    trainable_feedback: bool = False
    layer_kinds: tuple[str, ...] = ()
    tasks: tuple[str, ...] = ("classification", "regression")
    vectorize_seeds: bool = False

    @property
    def supported_layers(self) -> frozenset[str]:
        kinds = set(self.layer_kinds) | ({"dense"} if self.mlp or self.cnn else set())
        return frozenset(kinds | ({"conv"} if self.cnn else set()))

    def supports(self, layer_kinds: frozenset[str]) -> bool:
        return layer_kinds <= self.supported_layers

    def supports_task(self, kind: str) -> bool:
        return kind in self.tasks

    def describe(self) -> str:
        parts = [name for name, on in (("MLP", self.mlp), ("CNN", self.cnn)) if on]
        parts += [kind for kind in self.layer_kinds if kind not in ("dense", "conv")]
        if set(self.tasks) != {"classification", "regression"}:
            parts.append(f"{' and '.join(self.tasks) or 'no task'} only")
        if self.trainable_feedback:
            parts.append("trainable feedback")
        if self.vectorize_seeds:
            parts.append("vectorised seeds")
        return ", ".join(parts)


@dataclass(frozen=True)
class NoParams:
    """For algorithms without hyper-parameters of their own."""


class Algorithm(nn.Module):
    """Base class of every credit-assignment algorithm.

    Subclasses set the class attributes and implement ``forward_updates``; those with trainable
    feedback set ``capabilities.trainable_feedback`` and implement ``feedback_step``. Feedback
    parameters and buffers registered on the algorithm (it is an ``nn.Module``) and optimisers
    stored as attributes are saved in checkpoints automatically.

    Class attributes:
        name: the identifier used in suites and on the command line (unique across plugins).
        label: the display name in tables (the paper's name); ``name`` when empty.
        summary: one line for ``bench list`` and the report.
        Params: a (frozen) dataclass of hyper-parameters with types and defaults; the suite's
            ``params`` mapping is validated against it.
        capabilities: see ``Capabilities``.
        record_graph: True if ``forward_updates`` needs the autograd graph of the forward pass
            (backprop does); otherwise the runner runs the forward pass without one.
        default_schedule: the schedule keys (``feedback_pretraining_epochs``,
            ``extra_feedback_epochs``) used where a suite does not give them.

    Instance attributes: ``network`` (the forward ``Network``, owned by the runner and not a
    submodule), ``task`` (the ``Task``: loss, output kind) and ``params`` (a ``Params``).
    Methods to override as needed: ``adapt_architecture``, ``lr_normalizer``,
    ``backward_weights``, ``optimised_with_layers``, ``predict``, ``feedback_step``.
    """

    network: Network

    name: ClassVar[str]
    label: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    Params: ClassVar[type] = NoParams
    capabilities: ClassVar[Capabilities] = Capabilities()
    record_graph: ClassVar[bool] = False
    # Schedule keys a suite may omit for this algorithm (feedback_pretraining_epochs,
    # extra_feedback_epochs); the suite's values always win.
    default_schedule: ClassVar[dict[str, int]] = {}

    def __init__(self, network: Network, task: Task, params: Any):
        super().__init__()
        # Not registered as a submodule: the forward network belongs to the runner.
        object.__setattr__(self, "network", network)
        self.task = task
        self.params = params

    @classmethod
    def adapt_architecture(cls, spec: ArchitectureSpec, params: Any) -> ArchitectureSpec:
        """Change the forward architecture before it is built (e.g. drop a bias). Default: none."""
        return spec

    def lr_normalizer(self) -> float:
        """The forward learning rate is divided by this when the suite's optimiser sets
        ``normalize_lr`` (target methods return their target step size η̂, algorithms.md §3)."""
        return 1.0

    def backward_weights(self) -> Sequence[Tensor | None] | None:
        """What each layer uses in place of its weight in the backward pass of this training
        step's forward pass (indexed 0..L like the layers; a None entry: the layer's own weight),
        or None (the default): backprop's backward pass. Asked once per training step, before
        its forward pass; only meaningful with ``record_graph`` (``BackwardRule`` uses it)."""
        return None

    def optimised_with_layers(self) -> dict[int, Sequence[nn.Parameter]]:
        """Feedback parameters that the runner's forward optimiser steps together with layer
        i's parameters, with that layer's settings (Kolen-Pollack's backward weights: the same
        optimiser as the forward weights); the algorithm sets their ``.grad`` (in
        ``feedback_step``), the forward optimiser's step applies it, and a frozen layer's are not
        stepped. Asked once, when the forward optimisers are built. Default: none."""
        return {}

    def forward_updates(self, fwd: ForwardPass) -> Sequence[Tensor]:
        """The proposed update (a gradient-like direction: the optimiser subtracts it) for every
        forward parameter, aligned with ``self.network.parameters()``, same shapes and dtype.

        Called once per training minibatch, before ``feedback_step`` on the same ``fwd``, so
        targets use the feedback weights from before this minibatch's feedback update."""
        raise NotImplementedError

    def predict(self, x: Tensor) -> Tensor:
        """The outputs the evaluation scores for inputs ``x`` (test and validation sets, under
        ``torch.no_grad``): the network's feed-forward pass unless the rule predicts otherwise
        (equilibrium propagation: the readout of its free-phase fixed point)."""
        return self.network(x)

    def feedback_step(self, fwd: ForwardPass) -> float | None:
        """Train the feedback parameters on the stored forward pass ``fwd``; return the feedback
        loss (a float) or None. Called after ``forward_updates`` during training, and alone in
        feedback-only epochs (pre-training and extra feedback epochs)."""
        return None

    # Optimisers kept as attributes travel with the module's state_dict (for checkpoints).
    def get_extra_state(self) -> dict[str, Any]:
        return {key: value.state_dict() for key, value in vars(self).items()
                if isinstance(value, torch.optim.Optimizer)}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        for key, value in state.items():
            getattr(self, key).load_state_dict(value)

    def __repr__(self) -> str:
        fields = ", ".join(f"{f.name}={getattr(self.params, f.name)!r}"
                           for f in dataclasses.fields(self.params))
        return f"{type(self).__name__}({fields})"
