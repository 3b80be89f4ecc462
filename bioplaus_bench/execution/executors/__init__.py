"""Where cells run: executors as plugins. The core does the bookkeeping every executor shares (a
finished record with the same config hash is not run again unless forced; the cached cells are
counted and reported; every record is written atomically by this process alone, then the cell's
checkpoint is dropped), and an executor only runs the pending cells and hands each record back
(``RunContext.finish``). A failing cell becomes an ``error`` record with its traceback and the
others still run. Every executor runs a cell through ``execute_cell``. The built-in ``local``
(in this process, or ``-j N`` worker processes) and ``ray`` register through the
``bioplaus_bench_executors`` hook like anyone's (``builtin``)."""

from __future__ import annotations

import dataclasses
import json
import os
import pickle
import traceback
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ...errors import InputError
from ...plugin_files import import_plugin_file
from ...registry import Registry, Wanted, load_registry
from ...results.record import Record
from ...results.store import ResultStore, make_record
from ...spec.cell import Cell
from ..inputs import code_identity, describe_code, same_implementation
from ..progress import LogReporter
from ..setup import Environment
from ..training import CellTimeout, StopRule, train_cell


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
        return _record(cell, {"status": "error", "error": message, "reason": message,
                              "traceback": text}, self.env, self.registry)


@dataclass(frozen=True)
class Executor:
    """``bench run --executor NAME``: ``run(todo, context)`` runs the pending ``(index, cell)``
    pairs and calls ``context.finish(index, cell, record)`` for each (docs/extending.md)."""

    name: str
    run: Callable[[list[tuple[int, Cell]], RunContext], None]
    summary: str = ""


def run_cells(executor: Executor, cells: list[Cell], *, registry: Registry,
              plugin_files: list[str], store: ResultStore, env: Environment,
              reporter: LogReporter, options: ExecutorOptions = ExecutorOptions(),
              force: bool = False, vectorize: SeedVectorization | None = None) -> RunSummary:
    """Run ``cells`` with ``executor``: the cached ones are counted, the others run. With
    ``vectorize``, the pending seeds of each (dataset, algorithm) run as one computation
    (``run_seed_groups``: in this process, or each stack in a ``-j N`` worker) instead."""
    if not force:
        _refuse_other_implementations(cells, store, registry)
    summary = RunSummary()
    reporter.start(len(cells))
    try:
        todo = []
        for index, cell in enumerate(cells):
            record = None if force else store.finished(cell)
            if record is not None:
                summary.cached += 1
                summary.statuses[record.status] += 1
                summary.records[index] = record
                reporter.cell_finished(cell, index, "cached")
            else:
                todo.append((index, cell))
        if todo:
            files = [str(Path(f).resolve()) for f in plugin_files]
            # The registry stays here: workers load the plugin files themselves.
            local_env = dataclasses.replace(env, registry=None)
            context = RunContext(registry, files, local_env, options, force, store, reporter,
                                 summary)
            if vectorize is not None:
                run_seed_groups(todo, context, vectorize)
            else:
                executor.run(todo, context)
    finally:
        reporter.close()
    return summary


def _refuse_other_implementations(cells: list[Cell], store: ResultStore, registry: Registry
                                  ) -> None:
    """A finished record that another implementation of the cell's algorithm made (a
    ``--plugin`` file's and a built-in of the same name, two files) is not replaced by this run
    unless forced: the user may have forgotten ``--plugin``, or named another file. Told apart
    by the code identity in the record's config (``same_implementation``); a record of the same
    implementation with other code or settings is re-run as always."""
    clashes = []
    for cell in cells:
        record = store.load(cell)
        if record is None or not record.finished or record.config_hash == cell.config_hash():
            continue
        inputs = record.config.get("inputs")
        made = inputs.get("code") if isinstance(inputs, dict) else None
        now = cell.inputs.get("code") if cell.inputs else (  # a skipped cell has no inputs
            code_identity(registry.get(cell.algorithm).cls) if cell.algorithm in registry else None)
        if isinstance(made, dict) and now and same_implementation(made, now) is False:
            clashes.append((cell, made, now))
    if clashes:
        cell, made, now = clashes[0]
        more = f" (and {len(clashes) - 1} more records of it)" if len(clashes) > 1 else ""
        raise InputError(f"{store.path(cell)} is a finished record of '{cell.algorithm}' made by "
                         f"{describe_code(made)}{more}; this run's '{cell.algorithm}' is "
                         f"{describe_code(now)}: replace the record with --force, or write to "
                         "another results folder with --out")


def execute_cell(cell: Cell, plugins: Registry | list[str], env: Environment,
                 checkpoint: Path | None, force: bool, *,
                 on_epoch: Callable[[str, int, int], None] | None = None,
                 stop: StopRule | None = None) -> Record:
    """Run one cell and return its record. It never raises for a failing cell: any exception of
    the plugin, ``SystemExit`` included, is an ``error`` record with the traceback, and a cell
    past its time limit a ``timeout`` record. Only Ctrl-C and SIGTERM (``KeyboardInterrupt``,
    ``errors.Terminated``) stop the run. ``plugins`` is a loaded registry, or the ``--plugin``
    files to load one from (in a worker process, where classes are not passed). ``stop``:
    ``train_cell``'s, for ``bench tune``'s pruner."""
    if cell.skip_reason:
        return _record(cell, {"status": "skipped", "reason": cell.skip_reason}, env, plugins)
    if force and checkpoint is not None:
        checkpoint.unlink(missing_ok=True)
    time_limit = env.cell_timeout or cell.dataset.protocol.cell_timeout
    try:
        registry = _registry(plugins, cell)
        result = train_cell(cell, registry.get(cell.algorithm).cls,
                            dataclasses.replace(env, registry=registry), checkpoint=checkpoint,
                            on_epoch=on_epoch, time_limit=time_limit, stop=stop)
    except KeyboardInterrupt:
        raise
    except CellTimeout as timeout:  # the last epoch's checkpoint stays: a re-run continues
        result = {"status": "timeout", "reason": str(timeout)}
    except BaseException as error:  # a failing plugin must not stop the suite
        text = f"{type(error).__name__}: {error}"
        result = {"status": "error", "error": text, "reason": text,
                  "traceback": traceback.format_exc()}
    return _record(cell, result, env, plugins)


@dataclass(frozen=True)
class SeedVectorization:
    """``bench run --vectorize-seeds``: the seeds of a cell as one computation, at most
    ``chunk`` at once (None: as many as memory holds)."""

    chunk: int | None = None


# A share of a run that one process runs: one cell, or the seeds of one (dataset, entry) trained
# as one computation (more than one member).
Unit = list[tuple[int, Cell]]


def run_seed_groups(todo: list[tuple[int, Cell]], context: RunContext,
                    vectorize: SeedVectorization) -> None:
    """The pending cells, the seeds of each (dataset, algorithm) together: in this process, or
    with ``-j N`` each stack in a worker process of its own, N at once (``local.run_units``).
    An algorithm that does not declare ``vectorize_seeds``, a lone seed, and seeds that cannot
    be stacked run one after the other, as the local executor runs them."""
    units = seed_group_units(todo, context)
    if context.options.jobs > 1:
        from .local import run_units

        run_units(units, context, vectorize.chunk)
        return
    for unit in units:
        records = (_execute_seed_group([c for _, c in unit], context, vectorize.chunk)
                   if len(unit) > 1 else None)
        if records is None:
            for index, cell in unit:
                context.finish(index, cell, context.execute(cell, index))
        else:
            for (index, cell), record in zip(unit, records, strict=True):
                context.finish(index, cell, record)


def seed_group_units(todo: list[tuple[int, Cell]], context: RunContext) -> list[Unit]:
    """``todo`` as units, in its order: the runnable seeds of each (dataset, entry) as one
    stack where its algorithm declares ``vectorize_seeds`` (said otherwise), then the group's
    other cells one by one."""
    groups: dict[tuple[str, str], list[tuple[int, Cell]]] = {}
    for index, cell in todo:
        groups.setdefault((cell.dataset_id, cell.algorithm_id), []).append((index, cell))
    units: list[Unit] = []
    for (dataset, entry), members in groups.items():
        runnable = [(i, c) for i, c in members if not c.skip_reason]
        serial = [(i, c) for i, c in members if c.skip_reason]
        if len(runnable) > 1:
            name = runnable[0][1].algorithm
            if context.registry.get(name).cls.capabilities.vectorize_seeds:
                units.append(runnable)
            else:
                context.reporter.log(f"{dataset}/{entry}: {name} does not declare "
                                     "vectorize_seeds; its seeds run one after the other")
                serial += runnable
        else:
            serial += runnable
        units += [[pair] for pair in sorted(serial, key=lambda pair: pair[0])]
    return units


def _execute_seed_group(cells: list[Cell], context: RunContext,
                        chunk: int | None = None) -> list[Record] | None:
    """``execute_seed_group`` in this process, its epochs reported as they finish."""
    context.reporter.cell_started(cells[0], 0, stacked=len(cells))
    return execute_seed_group(
        cells, context.registry, context.env, [context.checkpoint(cell) for cell in cells],
        context.force, chunk, note=context.reporter.log,
        on_epoch=lambda phase, done, total: context.reporter.epoch(cells[0], phase, done, total))


def execute_seed_group(cells: list[Cell], plugins: Registry | list[str], env: Environment,
                       checkpoints: list[Path], force: bool, chunk: int | None = None, *,
                       note: Callable[[str], None],
                       on_epoch: Callable[[str, int, int], None] | None = None
                       ) -> list[Record] | None:
    """``execute_cell`` for the seeds ``cells`` together: their records (a failure is every
    seed's ``error`` record, a timeout every seed's ``timeout``), or None when they cannot be
    stacked (``note`` says why). ``plugins`` as for ``execute_cell``."""
    from ..seed_group import train_seed_group

    first = cells[0]
    if force:
        for path in checkpoints:
            path.unlink(missing_ok=True)
    per_cell = env.cell_timeout or first.dataset.protocol.cell_timeout
    time_limit = per_cell * len(cells) if per_cell else None  # the work of that many cells
    try:
        registry = _registry(plugins, first)
        results = train_seed_group(
            cells, registry.get(first.algorithm).cls,
            dataclasses.replace(env, registry=registry), checkpoints=checkpoints,
            chunk=chunk, note=note, time_limit=time_limit, on_epoch=on_epoch)
    except KeyboardInterrupt:
        raise
    except CellTimeout as timeout:
        results = [{"status": "timeout", "reason": str(timeout)}] * len(cells)
    except BaseException as error:
        text = f"{type(error).__name__}: {error}"
        results = [{"status": "error", "error": text, "reason": text,
                    "traceback": traceback.format_exc()}] * len(cells)
    if results is None:
        return None
    return [_record(cell, result, env, plugins)
            for cell, result in zip(cells, results, strict=True)]


def _record(cell: Cell, result: dict, env: Environment, plugins: Registry | list[str]) -> Record:
    """The cell's record; its task kind is its dataset's, known before anything loads. A result
    that JSON cannot hold (a metric plugin's object) fails this cell, not the run."""
    kind = _registry(plugins, cell).dataset(cell.dataset.source).kind
    record = make_record(cell, result, env.device, kind)
    try:
        json.dumps(record.to_json(), allow_nan=False)
    except (TypeError, ValueError) as error:
        text = f"the result cannot be stored as JSON: {type(error).__name__}: {error}"
        record = make_record(cell, {"status": "error", "error": text, "reason": text},
                             env.device, kind)
    return record


def _registry(plugins: Registry | list[str], cell: Cell) -> Registry:
    return plugins if isinstance(plugins, Registry) else _worker_registry(plugins, cell)


# --- worker side: processes and Ray tasks get plugin file paths and pickled cells, not classes ---

_REGISTRIES: dict[tuple[tuple[str, ...], Wanted], Registry] = {}


def _worker_registry(plugin_files: list[str], cell: Cell) -> Registry:
    """The plugins ``cell`` needs, found as the parent found them: a worker imports no plugin
    the cell does not need (a slow or broken one costs the parent's run nothing more)."""
    wanted = Wanted(algorithms=frozenset({cell.algorithm}),
                    datasets=frozenset({cell.dataset.source}),
                    architectures=frozenset({cell.dataset.architecture.type}),
                    metrics=frozenset(cell.settings.metrics.extra))
    key = (tuple(plugin_files), wanted)
    if key not in _REGISTRIES:
        _REGISTRIES[key] = load_registry(plugin_files, wanted)
    return _REGISTRIES[key]


def _import_files(plugin_files: list[str]) -> None:
    """Import the parent's plugin files: a pickled cell may hold instances of their classes."""
    for file in plugin_files:
        import_plugin_file(file)


def init_worker(plugin_files: list[str], threads: int) -> None:
    import threading
    import time

    import torch

    torch.set_num_threads(threads)
    parent = os.getppid()

    def orphaned() -> None:  # a killed parent cannot collect results: stop computing
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=orphaned, daemon=True).start()
    _import_files(plugin_files)  # before any cell is unpickled


def execute_pickled(payload: bytes, plugin_files: list[str], env: Environment,
                    checkpoint: str | None, force: bool, threads: int | None = None) -> Record:
    """A worker's entry point for one cell. The cell travels pickled, to be unpickled only
    after the plugin files are imported (its params may be instances of a plugin's class).
    ``payload`` is made by the parent ``bench`` process (``pickle.dumps(cell)``) and handed over
    in memory by the process pool or Ray; nothing read from disk is ever unpickled here."""
    if threads is not None:
        import torch

        torch.set_num_threads(threads)
    cell = _unpickled(payload, plugin_files)
    return execute_cell(cell, plugin_files, env, Path(checkpoint) if checkpoint else None, force)


def execute_pickled_unit(payload: bytes, plugin_files: list[str], env: Environment,
                         checkpoints: list[str], force: bool, chunk: int | None
                         ) -> tuple[list[Record], list[str]]:
    """A local worker's entry point for a unit (``pickle.dumps`` of its cells, as for
    ``execute_pickled``): its records, stacked where it has several seeds (one after the other
    where they cannot be), and the notes said on the way, for the parent to report."""
    cells: list[Cell] = _unpickled(payload, plugin_files)
    paths = [Path(checkpoint) for checkpoint in checkpoints]
    notes: list[str] = []
    records = (execute_seed_group(cells, plugin_files, env, paths, force, chunk,
                                  note=notes.append) if len(cells) > 1 else None)
    if records is None:
        records = [execute_cell(cell, plugin_files, env, path, force)
                   for cell, path in zip(cells, paths, strict=True)]
    return records, notes


def _unpickled(payload: bytes, plugin_files: list[str]) -> Any:
    try:
        _import_files(plugin_files)
        return pickle.loads(payload)
    except Exception as error:
        raise RuntimeError(f"worker could not load the cell: {type(error).__name__}: {error}"
                           ) from error


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
