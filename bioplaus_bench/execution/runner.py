"""The one minibatch step of the suite (algorithms.md §5, steps 1–5). Training, feedback-only epochs, the
GNT damping search, the conformance checks of ``bench check-plugin`` and the speed benchmark all
step through ``Runner``, so what is checked and what is timed is what trains.

A step: the forward pass (with the autograd graph only for algorithms that ask for it, and the
substitute backward weights a backward-pass rule gives for this step), the algorithm's proposed
update of every forward parameter, its feedback step on the same stored activations, a check
that nothing is NaN or infinite, the logged metrics (which see this step's updates and the
feedback weights after their step), then the forward optimiser.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ..metrics import ALIGNMENT, Metric, logged
from ..model.algorithm import Algorithm
from ..model.networks import ForwardPass, Network, forward_pass
from ..model.optim import adam
from ..spec.cell import MetricsConfig, OptimizerConfig


class UpdateError(RuntimeError):
    """``forward_updates`` returned something that is not one tensor per forward parameter."""


@dataclass
class Proposal:
    """What the algorithm proposed for one minibatch, before the optimiser moved anything."""

    fwd: ForwardPass
    updates: list[Tensor]
    feedback_loss: float | Tensor | None  # as the algorithm returned it


@dataclass
class StepResult:
    proposal: Proposal
    fault: str | None  # what was NaN or infinite ("training loss", "update of parameter P")
    metrics: dict[str, Any] | None  # the logged metrics, when asked for

    @property
    def feedback_loss(self) -> float | None:
        loss = self.proposal.feedback_loss
        return None if loss is None else float(loss)


class ForwardOptimisers:
    """The forward Adam(s) the runner owns: one over all trainable layers, or one per layer when
    the learning rates are a list (the CNN configs). The learning rates are divided by the
    algorithm's ``lr_normalizer`` when ``normalize_lr`` is set (algorithms.md §3). The feedback
    parameters the algorithm ties to a layer (``optimised_with_layers``) are stepped with it."""

    def __init__(self, network: Network, algorithm: Algorithm, config: OptimizerConfig,
                 frozen_layers: Sequence[int] = ()):
        divisor = algorithm.lr_normalizer() if config.normalize_lr else 1.0
        layers = [i for i in range(1, network.depth + 1) if i not in set(frozen_layers)]
        self.trainable = {id(p) for i in layers for p in network.layer_parameters(i)}
        tied = algorithm.optimised_with_layers()
        # Each trainable layer's parameters, with the feedback parameters tied to it (if any).
        stepped = {i: network.layer_parameters(i) + list(tied.get(i, ())) for i in layers
                   if network.layer_parameters(i)}
        self.optimisers: list[torch.optim.Optimizer] = []
        if isinstance(config.lr, tuple):
            eps = config.eps if isinstance(config.eps, tuple) else (config.eps,) * network.depth
            for i, parameters in stepped.items():
                self.optimisers.append(adam(parameters, lr=config.lr[i - 1] / divisor,
                                            betas=config.betas, eps=eps[i - 1]))
        else:
            parameters = [p for group in stepped.values() for p in group]
            if parameters:
                self.optimisers.append(adam(parameters, lr=config.lr / divisor,
                                            betas=config.betas, eps=config.eps))

    def step(self) -> None:
        for optimiser in self.optimisers:
            optimiser.step()

    def state_dict(self) -> list[dict[str, Any]]:
        return [o.state_dict() for o in self.optimisers]

    def load_state_dict(self, states: list[dict[str, Any]]) -> None:
        for optimiser, state in zip(self.optimisers, states, strict=True):
            optimiser.load_state_dict(state)


class Runner:
    """A network, its algorithm and the forward optimisers, stepped one minibatch at a time.
    ``metrics`` are the metric plugins a logged step computes (the built-in alignment metrics,
    and those a suite names in ``metrics.extra``)."""

    def __init__(self, network: Network, algorithm: Algorithm, optimisers: ForwardOptimisers,
                 metrics: Sequence[Metric] = (ALIGNMENT,)):
        self.network, self.algorithm, self.optimisers = network, algorithm, optimisers
        self.metrics = tuple(metrics)
        self.parameters = list(network.parameters())
        self.names = network.parameter_names()
        self.trainable = [id(p) in optimisers.trainable for p in self.parameters]
        self.record_graph = type(algorithm).record_graph
        self._validated = False

    def propose(self, x: Tensor, y: Tensor) -> Proposal:
        """Steps 1–3: forward pass, proposed updates with the current feedback weights, then
        the algorithm's feedback step on the same activations."""
        fwd = forward_pass(self.network, self.algorithm.task, x, y, record_graph=self.record_graph,
                           backward_weights=self.algorithm.backward_weights())
        updates = self.algorithm.forward_updates(fwd)
        if not self._validated:  # the structure cannot change from one step to the next
            updates = validate_updates(updates, self.parameters, self.names)
            self._validated = True
        return Proposal(fwd, list(updates), self.algorithm.feedback_step(fwd))

    def step(self, x: Tensor, y: Tensor, *, metrics: MetricsConfig | None = None,
             update_forward: bool = True,
             inspect: Callable[[Proposal], None] | None = None) -> StepResult:
        """One training minibatch. ``metrics``: log them for this step. ``update_forward=False``
        leaves the forward weights where they are (the feedback still trains). ``inspect`` sees
        the proposal before anything is applied (the conformance checks). A step with a NaN or
        infinite loss or update applies no forward update (the feedback step has happened) and
        reports the ``fault``."""
        proposal = self.propose(x, y)
        if inspect is not None:
            inspect(proposal)
        fault = non_finite(proposal.fwd.loss, proposal.updates, self.names, self.trainable)
        if fault is not None:
            return StepResult(proposal, fault, None)
        logged_row = None
        if metrics is not None:
            logged_row = logged(self.metrics, self.network, self.algorithm.task, proposal.fwd,
                                proposal.updates, metrics)
        if update_forward:
            self.apply(proposal)
        return StepResult(proposal, None, logged_row)

    def apply(self, proposal: Proposal) -> None:
        """The forward optimiser's step along the proposed updates."""
        for parameter, update, moves in zip(self.parameters, proposal.updates, self.trainable,
                                            strict=True):
            if moves:
                parameter.grad = update.detach()
        self.optimisers.step()

    def feedback_step(self, x: Tensor, y: Tensor) -> float | None:
        """A minibatch of a feedback-only epoch (pre-training, extra feedback epochs): the
        forward pass keeps no conv-layer graphs, which only local updates would use."""
        fwd = forward_pass(self.network, self.algorithm.task, x, y, layer_graphs=False)
        loss = self.algorithm.feedback_step(fwd)
        return None if loss is None else float(loss)


def validate_updates(updates: Any, parameters: Sequence[torch.nn.Parameter],
                     names: Sequence[str]) -> list[Tensor]:
    """``updates`` as a list of one tensor per forward parameter, with its shape, dtype and
    device; ``UpdateError`` naming the first that is not."""
    expected = f"one tensor per forward parameter ({len(parameters)}: {', '.join(names)})"
    if updates is None:
        raise UpdateError(f"forward_updates returned None; it must return a list with {expected}")
    if not isinstance(updates, Sequence) or isinstance(updates, str | Tensor):
        raise UpdateError(f"forward_updates returned {type(updates).__name__}; it must return a "
                          f"list with {expected}")
    updates = list(updates)
    if len(updates) != len(parameters):
        raise UpdateError(f"forward_updates proposed {len(updates)} updates for "
                          f"{len(parameters)} forward parameters; expected {expected}, in "
                          "network.parameters() order")
    for index, (update, parameter, name) in enumerate(zip(updates, parameters, names, strict=True)):
        want = f"shape {tuple(parameter.shape)} and dtype {parameter.dtype}"
        if not isinstance(update, Tensor):
            raise UpdateError(f"update {index} ({name}) should be a tensor of {want}, "
                              f"got {type(update).__name__}")
        if update.shape != parameter.shape or update.dtype != parameter.dtype:
            raise UpdateError(f"update {index} ({name}) should be a tensor of {want}, got shape "
                              f"{tuple(update.shape)} and dtype {update.dtype}")
        if update.device != parameter.device:
            raise UpdateError(f"update {index} ({name}) is on {update.device}, its parameter "
                              f"on {parameter.device}")
    return updates


def non_finite(loss: Tensor, updates: Sequence[Tensor], names: Sequence[str],
               trainable: Sequence[bool]) -> str | None:
    """What is NaN or infinite in this minibatch: "training loss", "update of parameter P",
    or None. One reduction and one host sync for the whole minibatch; the culprit is looked
    for only when there is one."""
    moving = [u.detach() for u, moves in zip(updates, trainable, strict=True) if moves]
    peaks = torch.stack([loss.detach().double().abs()] +
                        [u.abs().amax().double() for u in moving if u.numel()])
    if bool(torch.isfinite(peaks).all()):
        return None
    if not torch.isfinite(loss).all():
        return "training loss"
    for name, update, moves in zip(names, updates, trainable, strict=True):
        if moves and not torch.isfinite(update).all():
            return f"update of parameter {name}"
    return "an update"
