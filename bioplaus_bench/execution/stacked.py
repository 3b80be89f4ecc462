"""The step of several seeds stacked (``model.seeds``): ``Runner`` over a stacked network and
algorithm, with each seed's faults and metrics, and ``stack_runners``, which makes one from the
seeds' own runners. ``seed_group`` trains with it; ``bench check-plugin`` and the seed benchmark
step it directly."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ..metrics import logged
from ..model.algorithm import Algorithm
from ..model.networks import Network, forward_pass
from ..model.seeds import stack_modules, stack_optimiser_states
from ..spec.cell import MetricsConfig, OptimizerConfig
from .runner import ForwardOptimisers, Proposal, Runner, non_finite


@dataclass
class SeedStep:
    """One minibatch of stacked seeds: the proposal, and per seed what was NaN or infinite
    (None: nothing) and the logged metrics (None: not logged)."""

    proposal: Proposal
    faults: list[str | None]
    metrics: list[dict[str, Any] | None]

    def feedback_losses(self) -> list[float] | None:
        return _per_seed(self.proposal.feedback_loss)


class StackedRunner(Runner):
    """``Runner`` over stacked seeds. ``views``: each seed's own network, whose parameters are
    views of the stacked ones (the metrics measure one seed at a time)."""

    def __init__(self, network: Network, algorithm: Algorithm, optimisers: ForwardOptimisers,
                 metrics, views: Sequence[Network]):
        super().__init__(network, algorithm, optimisers, metrics)
        self.views = list(views)

    def step_seeds(self, x: Tensor, y: Tensor, active: Sequence[bool],
                   metrics: MetricsConfig | None = None,
                   on_fault: Callable[[int], None] | None = None) -> SeedStep:
        """A training minibatch of every seed. A seed whose loss or update is NaN or infinite
        gets its fault (its run ends there, as a serial run does: ``on_fault(s)`` sees it
        before the forward step); the others are unaffected: nothing mixes seeds."""
        proposal = self.propose(x, y)
        faults: list[str | None] = [None] * len(self.views)
        for s in _faulty(proposal.fwd.loss, proposal.updates, self.trainable):
            if active[s]:
                faults[s] = non_finite(proposal.fwd.loss[s], [u[s] for u in proposal.updates],
                                       self.names, self.trainable)
        if on_fault is not None:
            for s, fault in enumerate(faults):
                if fault is not None:
                    on_fault(s)
        rows: list[dict[str, Any] | None] = [None] * len(self.views)
        if metrics is not None:
            for s, view in enumerate(self.views):
                if active[s] and faults[s] is None:
                    rows[s] = self._logged(view, proposal, s, metrics)
        self.apply(proposal)
        return SeedStep(proposal, faults, rows)

    def _logged(self, view: Network, proposal: Proposal, s: int, config: MetricsConfig
                ) -> dict[str, Any]:
        return logged(self.metrics, view, self.algorithm.task, proposal.fwd.seed(s),
                      [u[s] for u in proposal.updates], config)

    # One loss per seed where the serial runner has one loss.
    def feedback_step(self, x: Tensor, y: Tensor) -> list[float] | None:  # type: ignore[override]
        """A minibatch of a feedback-only epoch; each seed's feedback loss."""
        fwd = forward_pass(self.network, self.algorithm.task, x, y, layer_graphs=False)
        return _per_seed(self.algorithm.feedback_step(fwd))


def _per_seed(loss: float | Tensor | None) -> list[float] | None:
    """A stacked feedback loss (one per seed) as numbers."""
    if isinstance(loss, (int, float)):
        raise TypeError(f"a stacked algorithm's feedback loss is a tensor, one per seed; got {loss!r}")
    return None if loss is None else [float(v) for v in loss]


def _faulty(loss: Tensor, updates: Sequence[Tensor], trainable: Sequence[bool]) -> list[int]:
    """The seeds whose loss or some update is NaN or infinite (one reduction, one sync)."""
    peaks = [loss.detach().double()]
    for update, moves in zip(updates, trainable, strict=True):
        if moves and update[0].numel():  # the extremes: NaN and ±inf show there, no copy made
            peaks.extend(part.double() for part in update.detach().flatten(1).aminmax(dim=1))
    finite = torch.isfinite(torch.stack(peaks)).all(0)
    return torch.nonzero(~finite).flatten().tolist()


def stack_runners(runners: Sequence[Runner], config: OptimizerConfig,
                  frozen_layers: Sequence[int] = ()) -> StackedRunner:
    """The seeds' runners (networks, algorithms and optimisers, in any state) as one stacked
    runner; each seed's own network becomes a view into the stack (for the metrics)."""
    networks = [runner.network for runner in runners]
    network = stack_modules(networks)
    network.seeds = len(runners)
    memo: dict[int, Any] = {id(networks[0]): network}
    memo.update({id(p0): p for p0, p in zip(networks[0].parameters(), network.parameters(),
                                            strict=True)})
    algorithms = [runner.algorithm for runner in runners]
    algorithm = stack_modules(algorithms, memo)
    inner = [a.get_extra_state() for a in algorithms]
    if inner[0]:
        algorithm.set_extra_state({key: stack_optimiser_states([state[key] for state in inner])
                                   for key in inner[0]})
    optimisers = ForwardOptimisers(network, algorithm, config, frozen_layers)
    states = [runner.optimisers.state_dict() for runner in runners]
    optimisers.load_state_dict([stack_optimiser_states(list(per_optimiser))
                                for per_optimiser in zip(*states, strict=True)])
    for s, view in enumerate(networks):
        for own, stacked in zip(view.parameters(), network.parameters(), strict=True):
            own.data = stacked.data[s]
    return StackedRunner(network, algorithm, optimisers, runners[0].metrics, networks)
