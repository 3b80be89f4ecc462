"""Metrics as plugins: computed by the core from any algorithm's proposed updates, every
``metrics.log_interval`` minibatches, and stored in the record. The built-in alignment metrics
(algorithms.md §9, §10) register through the same hook as anyone's."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from torch import Tensor

from ..hookspecs import hookimpl
from ..model.networks import ForwardPass, Network
from ..model.tasks import Task
from ..spec.cell import MetricsConfig
from .alignment import alignment

Compute = Callable[[Network, Task, ForwardPass, Sequence[Tensor], MetricsConfig], dict[str, Any]]


@dataclass(frozen=True)
class Metric:
    """``compute(network, task, fwd, updates, config)`` for one logged minibatch: it sees the
    step's proposed updates (one per forward parameter) and the feedback weights after the
    step's feedback update, before the forward optimiser moves anything. It returns a mapping
    of plain numbers and lists (JSON), stored in the record's ``metrics`` rows; a metric plugin's
    under its name, the built-in ``alignment`` at the row's top level."""

    name: str
    compute: Compute
    summary: str = ""


ALIGNMENT = Metric("alignment", alignment, "angles to the BP gradient and to the GNT update, "
                   "nullspace ratio (algorithms.md §9, §10)")


def logged(metrics: Sequence[Metric], network: Network, task: Task, fwd: ForwardPass,
           updates: Sequence[Tensor], config: MetricsConfig) -> dict[str, Any]:
    """One metrics row: the alignment metrics at the top level, every other metric under its
    name."""
    row: dict[str, Any] = {}
    for metric in metrics:
        value = metric.compute(network, task, fwd, updates, config)
        if metric.name == ALIGNMENT.name:
            row.update(value)
        else:
            row[metric.name] = value
    return row


@hookimpl
def bioplaus_bench_metrics() -> list[Metric]:
    return [ALIGNMENT]
