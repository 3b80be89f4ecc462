"""The contract of rules with an inference phase (predictive coding, equilibrium propagation):
per minibatch they *relax* state that they own (value nodes, neuron states) for a number of
steps before proposing weight updates, and they may predict with that relaxation too.

``InferenceRule`` is an ``Algorithm``: its ``forward_updates(fwd)`` still returns one update per
forward parameter, so the runner's optimiser, the alignment metrics, divergence handling,
stacked seeds and checkpoints see nothing new. What it adds is a vocabulary the conformance
check ``relaxation`` can drive on a tiny network:

- ``initial_state(fwd)``: the state the relaxation starts from (default: the feed-forward
  activations of the hidden layers, detached copies);
- ``energy(fwd, state, beta)``: the energy of one phase, ``beta`` the weight of the output
  loss in it (0: the free phase), summed over the minibatch (one value per seed, ``[S]``, when
  seeds are stacked);
- ``relax_step(fwd, state, beta)``: one inference step of that phase, a new state;
- ``relax(fwd, state, beta, steps)``: ``steps`` of them (the loop; override it for an inner
  optimiser with memory, e.g. momentum);
- ``relaxation_phases()``: the ``(beta, steps)`` of every phase ``forward_updates`` runs; the
  check relaxes each from ``initial_state`` and asks the energy to go down and the steps to
  shrink.

The state is a list of tensors the rule allocates per minibatch (never kept across
minibatches, so checkpoints need nothing); its dtype and device are the network's. ``predict``
(an ``Algorithm`` method) is where a rule whose prediction is its relaxed state answers the
evaluation.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from torch import Tensor

from .algorithm import Algorithm, Capabilities
from .networks import ForwardPass


class InferenceRule(Algorithm):
    """Base class of rules that relax state of their own before they learn (see the module)."""

    capabilities: ClassVar[Capabilities] = Capabilities(mlp=True)
    record_graph: ClassVar[bool] = False  # the relaxation is the rule's own computation

    def initial_state(self, fwd: ForwardPass) -> list[Tensor]:
        """The hidden layers' feed-forward activations ``h_1 … h_{L−1}``, as copies."""
        return [h.detach().clone() for h in fwd.h[1:-1]]

    def energy(self, fwd: ForwardPass, state: Sequence[Tensor], beta: float) -> Tensor:
        """The energy of the phase with output weight ``beta`` at ``state``, summed over the
        minibatch (per seed when stacked)."""
        raise NotImplementedError

    def relax_step(self, fwd: ForwardPass, state: Sequence[Tensor], beta: float
                   ) -> list[Tensor]:
        """One inference step of the phase ``beta``: the next state."""
        raise NotImplementedError

    def relax(self, fwd: ForwardPass, state: Sequence[Tensor], beta: float, steps: int
              ) -> list[Tensor]:
        """``steps`` inference steps of the phase ``beta`` from ``state``."""
        state = list(state)
        for _ in range(steps):
            state = self.relax_step(fwd, state, beta)
        return state

    def relaxation_phases(self) -> Sequence[tuple[float, int]]:
        """``(beta, steps)`` of every relaxation ``forward_updates`` runs (for the check)."""
        raise NotImplementedError
