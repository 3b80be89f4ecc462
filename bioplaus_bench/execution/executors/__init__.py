"""Where cells run: executors as plugins. The core does the bookkeeping every executor shares (a
finished record with the same config hash is not run again unless forced; the cached cells are
counted and reported; every record is written atomically by this process alone, then the cell's
checkpoint is dropped), and an executor only runs the pending cells and hands each record back
(``RunContext.finish``). A failing cell becomes an ``error`` record with its traceback and the
others still run. Every executor runs a cell through ``execute_cell``. The built-in ``local``
(in this process, or ``-j N`` worker processes) and ``ray`` register through the
``bioplaus_bench_executors`` hook like anyone's (``builtin``).

The pieces, each importing only those named before it: ``execute`` (a cell, or a stack of
seeds, run in this process to its record), ``executor`` (the plugin type and its
``RunContext``), ``workers`` (the entry points of worker processes and Ray tasks), ``local`` and
``ray``, ``seed_groups`` (``--vectorize-seeds``); this module runs a suite's cells with them."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from ...errors import InputError
from ...registry import Registry
from ...results.store import ResultStore
from ...spec.cell import Cell
from ..inputs import code_identity, describe_code, same_implementation
from ..progress import LogReporter
from ..setup import Environment
from .execute import execute_cell
from .executor import Executor, ExecutorOptions, RunContext, RunSummary
from .seed_groups import SeedVectorization, run_seed_groups

# What plugins, the suite layer and docs/extending.md import from here.
__all__ = ["Executor", "ExecutorOptions", "RunContext", "RunSummary", "SeedVectorization",
           "execute_cell", "run_cells", "run_seed_groups"]


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
