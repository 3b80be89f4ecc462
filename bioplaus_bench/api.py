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

Datasets (``Dataset``), architectures (``Architecture``), metrics (``Metric``) and executors
(``Executor``) are plugins too, through the hooks ``bioplaus_bench_datasets``,
``bioplaus_bench_architectures``, ``bioplaus_bench_metrics`` and ``bioplaus_bench_executors``
(``hookspecs``); the built-in ones register the same way. docs/plugins.md has an example of each.
"""

from __future__ import annotations

from .backward.rule import (
    BackwardMatrices,
    BackwardRule,
    FixedRandom,
    Learned,
    RandomMagnitudeSign,
    SignOfForward,
)
from .data import Data, Dataset, DataSettings, NoOptions, Split, split_validation
from .errors import DataMissingError
from .execution.build import build_network
from .execution.executors import Executor, ExecutorOptions, RunContext
from .hookspecs import hookimpl
from .metrics import Metric
from .model.algorithm import Algorithm, Capabilities, NoParams
from .model.architectures import Architecture
from .model.inference import InferenceRule
from .model.networks import (
    ConvBlock,
    Dense,
    ForwardPass,
    LayerGraph,
    Network,
    forward_pass,
    mlp_layers,
)
from .model.seeds import draw, linear, mean_per_seed, mse_per_seed, randn_like, sum_per_seed
from .model.tasks import Classification, Regression, Task
from .spec.architecture import ArchitectureSpec
from .spec.cell import MetricsConfig
from .spec.schema import (
    Beta,
    Check,
    NonNegativeFloat,
    NonNegativeInt,
    NudgingBeta,
    PositiveFloat,
    PositiveInt,
)
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
    "Architecture",
    "ArchitectureSpec",
    "BackwardMatrices",
    "BackwardRule",
    "Beta",
    "Check",
    "Capabilities",
    "Classification",
    "ConvBlock",
    "Data",
    "DataMissingError",
    "DataSettings",
    "Dataset",
    "Dense",
    "Executor",
    "FixedRandom",
    "InferenceRule",
    "ExecutorOptions",
    "DifferenceReconstructionLoss",
    "DirectPath",
    "FeedbackMap",
    "FeedbackPath",
    "ForwardPass",
    "LayerGraph",
    "LayerwisePath",
    "Learned",
    "Metric",
    "MetricsConfig",
    "Network",
    "NonNegativeFloat",
    "NonNegativeInt",
    "NoOptions",
    "NoParams",
    "NudgingBeta",
    "RandomHiddenLayerPath",
    "RandomMagnitudeSign",
    "ReconstructionLoss",
    "PositiveFloat",
    "PositiveInt",
    "Regression",
    "RunContext",
    "SignOfForward",
    "Split",
    "TPParams",
    "TargetPropagation",
    "Task",
    "build_network",
    "check_algorithm",
    "draw",
    "forward_pass",
    "glorot_normal",
    "hookimpl",
    "linear",
    "local_updates",
    "mean_per_seed",
    "mlp_layers",
    "mse_per_seed",
    "output_target",
    "randn_like",
    "split_validation",
    "sum_per_seed",
]


def check_algorithm(algorithm):
    """The conformance checks of ``bench check-plugin`` on ``algorithm`` (an ``Algorithm``
    subclass): a list of results, each with ``check`` (its name), ``passed``, ``reason`` and
    ``line()`` (the PASS/FAIL line the command prints). For a plugin's own tests."""
    from .kit.conformance import check_algorithm as run_checks  # the kit imports the runner

    return run_checks(algorithm)
