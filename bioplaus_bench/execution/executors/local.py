"""The ``local`` executor: the cells in this process one after the other, or with ``-j N`` in N
spawned worker processes, each with this process's torch threads (``execution/threads.py``).
With ``--vectorize-seeds -j N``, each stack of seeds runs in a worker of its own, N at once."""

from __future__ import annotations

import contextlib
import dataclasses
import pickle
import typing
from collections.abc import Callable, Collection, Hashable, Iterator
from typing import Any

from ...spec.cell import Cell
from .executor import Executor, ExecutorOptions, RunContext, TaskPool
from .workers import execute_pickled_unit, init_worker

# A share of a run that one process runs: one cell, or the seeds of one (dataset, entry) trained
# as one computation (more than one member).
Unit = list[tuple[int, Cell]]


def run_local(todo: list[tuple[int, Cell]], context: RunContext) -> None:
    if context.options.jobs == 1:
        for index, cell in todo:
            context.finish(index, cell, context.execute(cell, index))
        return
    run_units([[pair] for pair in todo], context)


def run_units(units: list[Unit], context: RunContext, chunk: int | None = None) -> None:
    """Run ``units`` (single cells, or stacks of seeds of at most ``chunk`` at once) in
    ``-j N`` worker processes; the parent writes every record."""
    for lost in _run_pool(units, context, context.options.jobs, chunk):
        _run_pool([lost], context, 1, chunk, keep_lost=False)


def _run_pool(units: list[Unit], context: RunContext, jobs: int, chunk: int | None,
              keep_lost: bool = True) -> list[Unit]:
    """Run ``units`` in one pool of worker processes. Per-epoch progress is not reported; cells
    still checkpoint every epoch. A worker that dies (a plugin that calls ``os._exit`` or
    crashes the interpreter) breaks the whole pool and every unit in flight with it: those are
    returned when ``keep_lost``, to be run again each alone in a fresh worker, so that only the
    one that kills its worker gets ``error`` records (one per seed of its stack)."""
    from concurrent.futures.process import BrokenProcessPool

    lost: list[Unit] = []
    cells = sum(len(unit) for unit in units)  # a stack that cannot stack splits into its seeds
    options = dataclasses.replace(context.options, jobs=min(jobs, cells))
    with local_tasks(options, context.plugin_files) as pool:
        running: dict[Hashable, Unit] = {}

        def submit(unit: Unit) -> None:
            running[pool.submit(execute_pickled_unit, pickle.dumps([cell for _, cell in unit]),
                                context.plugin_files, context.env,
                                [str(context.checkpoint(cell)) for _, cell in unit],
                                context.force, chunk)] = unit

        for unit in units:
            submit(unit)
        while running:
            for handle, result, error in pool.wait(list(running)):
                unit = running.pop(handle)
                if isinstance(error, BrokenProcessPool) and keep_lost:
                    lost.append(unit)
                    continue
                # else an error: the worker died, or could not start or load the cells
                records, notes = result if error is None else (
                    [context.lost(cell, error) for _, cell in unit], [])
                for note in notes:
                    context.reporter.log(note)
                if records is None:  # its seeds do not stack: each is a unit of its own,
                    cell = unit[0][1]  # run side by side, its record kept as it ends
                    context.reporter.log(f"{cell.dataset_id}/{cell.algorithm_id}: its "
                                         f"{len(unit)} seeds run side by side, one a worker")
                    for pair in unit:
                        submit([pair])
                    continue
                for (index, cell), record in zip(unit, records, strict=True):
                    context.finish(index, cell, record)
    return lost


class _ProcessPool:
    """``TaskPool`` over a ``concurrent.futures`` process pool."""

    def __init__(self, pool: Any) -> None:
        self.pool = pool

    def submit(self, fn: Callable[..., Any], *args: Any) -> Hashable:
        return self.pool.submit(fn, *args)

    def wait(self, handles: Collection[Hashable]) -> list[tuple[Hashable, Any, Exception | None]]:
        from concurrent.futures import FIRST_COMPLETED, Future, wait

        done, _ = wait(typing.cast(Collection[Future], handles), return_when=FIRST_COMPLETED)
        ended: list[tuple[Hashable, Any, Exception | None]] = []
        for future in done:
            try:
                ended.append((future, future.result(), None))
            except Exception as error:
                ended.append((future, None, error))
        return ended


@contextlib.contextmanager
def local_tasks(options: ExecutorOptions, plugin_files: list[str]) -> Iterator[TaskPool]:
    """``-j N`` spawned worker processes, each with this process's torch threads and the plugin
    files imported. Stopped (Ctrl-C, SIGTERM), the workers are ended at once rather than
    waited for: what they ran keeps its last checkpoint, so a re-run goes on from it."""
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context

    import torch

    with ProcessPoolExecutor(max_workers=options.jobs, mp_context=get_context("spawn"),
                             initializer=init_worker,
                             initargs=(plugin_files, torch.get_num_threads())) as pool:
        try:
            yield _ProcessPool(pool)
        except BaseException as error:
            workers = list((pool._processes or {}).values())
            pool.shutdown(wait=False, cancel_futures=True)
            if isinstance(error, KeyboardInterrupt):
                for worker in workers:
                    worker.terminate()
            raise


LOCAL = Executor("local", run_local, "this machine: one cell after the other, or -j N processes",
                 tasks=local_tasks)
