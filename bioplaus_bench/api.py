"""The public plugin surface. A plugin imports from this module and nothing else of the package.

An algorithm answers two questions per minibatch:

1. ``forward_updates(fwd)``: which update does it propose for every forward parameter? The runner
   writes the returned tensors into ``.grad`` and steps the forward optimiser it owns; because the
   core sees every proposal, it can measure any algorithm (alignment with backprop and so on).
2. ``feedback_step(fwd)``: how does it train its own feedback parameters, if it has any?

A plugin module exposes its algorithms through the ``bioplaus_bench_algorithms`` hook::

    from bioplaus_bench.api import Algorithm, hookimpl

    class MyRule(Algorithm):
        name = "my-rule"
        ...

    @hookimpl
    def bioplaus_bench_algorithms():
        return [MyRule]
"""

from __future__ import annotations

from .model.algorithm import Algorithm, Capabilities, NoParams, hookimpl
from .model.networks import ArchitectureSpec, ForwardPass, LayerGraph, Network, forward_pass
from .model.tasks import Classification, Regression, Task
from .tp.feedback import (
                       DifferenceReconstructionLoss,
                       DirectPath,
                       FeedbackMap,
                       FeedbackPath,
                       LayerwisePath,
                       RandomHiddenLayerPath,
                       ReconstructionLoss,
)
from .tp.method import TargetPropagation, TPParams
from .tp.targets import glorot_normal, local_updates, output_target

__all__ = [
    "Algorithm",
    "ArchitectureSpec",
    "Capabilities",
    "Classification",
    "DifferenceReconstructionLoss",
    "DirectPath",
    "FeedbackMap",
    "FeedbackPath",
    "ForwardPass",
    "LayerGraph",
    "LayerwisePath",
    "Network",
    "NoParams",
    "RandomHiddenLayerPath",
    "ReconstructionLoss",
    "Regression",
    "TPParams",
    "TargetPropagation",
    "Task",
    "forward_pass",
    "glorot_normal",
    "hookimpl",
    "local_updates",
    "output_target",
]
