"""The plugin contract: the hooks a plugin module may implement (mark them with ``api.hookimpl``).

Five kinds of plugin, one registry: algorithms, datasets, architectures, metrics and executors.
The built-in ones register through these same hooks (``registry.DEFAULT_PLUGINS``). Each hook
returns a list; every name must be unique within its kind across all plugins (built-in, entry
point and ``--plugin`` files): a clash is an error naming both.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:  # the plugin types' modules import ``hookimpl`` from here
    from .data.types import Dataset
    from .execution.executors import Executor
    from .metrics import Metric
    from .model.algorithm import Algorithm
    from .model.architectures import Architecture

hookspec = pluggy.HookspecMarker("bioplaus_bench")
hookimpl = pluggy.HookimplMarker("bioplaus_bench")  # what a plugin marks its hooks with


@hookspec
def bioplaus_bench_algorithms() -> list[type[Algorithm]]:
    """Return the ``api.Algorithm`` subclasses this plugin provides (``name`` is what suites
    write under ``algorithms:``)."""


@hookspec
def bioplaus_bench_datasets() -> list[Dataset]:
    """Return ``api.Dataset`` objects: a name (``datasets.<id>.source``), how to load the train,
    validation and test sets into tensors, its options, and optionally a check and a fingerprint
    of the files it reads."""


@hookspec
def bioplaus_bench_architectures() -> list[Architecture]:
    """Return ``api.Architecture`` objects: a name (``architecture.type``), how to build the
    ``Network`` of a spec, and the kinds of layer it is made of (checked against each
    algorithm's ``Capabilities``)."""


@hookspec
def bioplaus_bench_metrics() -> list[Metric]:
    """Return ``api.Metric`` objects: a name (listed in a suite's ``metrics.extra``) and a
    function of the network, the task, the forward pass and the step's proposed updates, run
    every ``metrics.log_interval`` minibatches; what it returns is stored in the record."""


@hookspec
def bioplaus_bench_executors() -> list[Executor]:
    """Return ``api.Executor`` objects: a name (``bench run --executor NAME``) and how to run a
    list of cells, reporting each record as it finishes."""
