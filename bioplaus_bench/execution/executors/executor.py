"""The executor plugin type: an ``Executor`` runs the pending cells of a run and hands each
record back through the ``RunContext`` it is given (``finish``: the core writes the record),
with the ``ExecutorOptions`` of the command line; the run's ``RunSummary`` counts how its cells
ended."""

from __future__ import annotations

import traceback
from collections import Counter
from collections.abc import Callable, Collection, Hashable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from ...registry import Registry
from ...results.record import Record
from ...results.store import ResultStore
from ...spec.cell import Cell
from ..progress import LogReporter
from ..setup import Environment
from .execute import cell_record, execute_cell


@dataclass
class RunSummary:
    """How a run's cells ended: their statuses, how many were reused from earlier runs, and
    each cell's record by its index in the run (reused ones included)."""

    statuses: Counter = field(default_factory=Counter)
    cached: int = 0
    records: dict[int, Record] = field(default_factory=dict)

    def in_order(self) -> list[Record]:
        """The records in the order of the run's cells."""
        return [self.records[index] for index in sorted(self.records)]

    @property
    def failed(self) -> bool:
        return self.statuses["error"] + self.statuses["timeout"] > 0


@dataclass(frozen=True)
class ExecutorOptions:
    """What the command line says about where to run: ``-j N`` worker processes, and for a
    cluster its address and the CPUs and GPUs reserved per cell."""

    jobs: int = 1
    address: str | None = None
    cpus_per_cell: float = 1
    gpus_per_cell: float = 0


@dataclass
class RunContext:
    """What an executor gets besides the pending cells: how to run one cell here, where a cell
    checkpoints, and ``finish`` to hand each record back (the core writes it)."""

    registry: Registry
    plugin_files: list[str]  # absolute paths: a worker loads them before unpickling a cell
    env: Environment
    options: ExecutorOptions
    force: bool
    store: ResultStore
    reporter: LogReporter
    summary: RunSummary

    def checkpoint(self, cell: Cell) -> Path:
        return self.store.checkpoint_path(cell)

    def execute(self, cell: Cell, index: int | None = None) -> Record:
        """Run ``cell`` in this process (its epochs reported as they finish)."""
        if index is not None:
            self.reporter.cell_started(cell, index)
        return execute_cell(cell, self.registry, self.env, self.checkpoint(cell), self.force,
                            on_epoch=lambda phase, done, total:
                            self.reporter.epoch(cell, phase, done, total))

    def finish(self, index: int, cell: Cell, record: Record) -> None:
        """The one writer: store a returned record atomically, then drop the cell's checkpoint
        (kept after a timeout, so that a re-run continues where the cell stopped)."""
        self.store.write(record, cell)
        if record.status != "timeout":
            self.checkpoint(cell).unlink(missing_ok=True)
        self.summary.statuses[record.status] += 1
        self.summary.records[index] = record
        self.reporter.cell_finished(cell, index, record.status, _detail(record))

    def lost(self, cell: Cell, error: BaseException) -> Record:
        """A record for a cell whose worker failed outside ``execute_cell`` (e.g. killed)."""
        text = "".join(traceback.format_exception(type(error), error, error.__traceback__))
        message = f"{type(error).__name__}: {error}"
        return cell_record(cell, {"status": "error", "error": message, "reason": message,
                                  "traceback": text}, self.env, self.registry)


@dataclass(frozen=True)
class Executor:
    """``bench run --executor NAME``: ``run(todo, context)`` runs the pending ``(index, cell)``
    pairs and calls ``context.finish(index, cell, record)`` for each (docs/extending.md).
    ``tasks``, if given, runs other work the same way (``bench tune --executor NAME``: its
    trials); an executor without it runs cells only."""

    name: str
    run: Callable[[list[tuple[int, Cell]], RunContext], None]
    summary: str = ""
    tasks: TaskPools | None = None


class TaskPool(Protocol):
    """Functions of the package run where an executor runs cells, at most ``jobs`` (or the
    cluster's share) at once; each gets the torch threads of a cell and the plugin files
    imported before its arguments are unpickled. The caller keeps the handles."""

    def submit(self, fn: Callable[..., Any], *args: Any) -> Hashable:
        """Start ``fn(*args)``; a handle to wait for."""
        ...

    def wait(self, handles: Collection[Hashable]) -> list[tuple[Hashable, Any, Exception | None]]:
        """Block until at least one of ``handles`` has ended; for each that has: (handle, its
        result, None), or (handle, None, the error that ended it: a lost worker too)."""
        ...


# (options, plugin files) -> a pool that is open within the ``with`` and closed after it.
TaskPools = Callable[[ExecutorOptions, list[str]], AbstractContextManager[TaskPool]]


def _detail(record: Record) -> str:
    if record.status != "ok" and record.reason:
        return record.reason
    final = record.final or {}
    parts = []
    # A non-finite metric is stored as null: it is left out of the line, not a crash.
    if (error := final.get("test_error")) is not None:
        parts.append(f"test error {100 * error:.2f}%")
    elif (loss := final.get("test_loss")) is not None:
        parts.append(f"test loss {loss:.4g}")
    seconds = f"{record.wall_time or 0:.1f} s"
    if record.stacked_seeds:  # not this seed's own time
        seconds += f" (an equal share of {record.stacked_seeds} seeds trained stacked)"
    parts.append(seconds)
    return ", ".join(parts)
