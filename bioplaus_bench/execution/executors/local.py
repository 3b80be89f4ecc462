"""The ``local`` executor: the cells in this process one after the other, or with ``-j N`` in N
spawned worker processes, each with this process's torch threads (``execution/threads.py``).
With ``--vectorize-seeds -j N``, each stack of seeds runs in a worker of its own, N at once."""

from __future__ import annotations

import pickle

from ...spec.cell import Cell
from .executor import Executor, RunContext
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
    from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
    from concurrent.futures.process import BrokenProcessPool
    from multiprocessing import get_context

    import torch

    lost: list[Unit] = []
    files = context.plugin_files
    cells = sum(len(unit) for unit in units)  # a stack that cannot stack splits into its seeds
    with ProcessPoolExecutor(max_workers=min(jobs, cells), mp_context=get_context("spawn"),
                             initializer=init_worker,
                             initargs=(files, torch.get_num_threads())) as pool:
        futures: dict[Future, Unit] = {}
        remaining: set[Future] = set()

        def submit(unit: Unit) -> None:
            future = pool.submit(execute_pickled_unit, pickle.dumps([cell for _, cell in unit]),
                                 files, context.env,
                                 [str(context.checkpoint(cell)) for _, cell in unit],
                                 context.force, chunk)
            futures[future] = unit
            remaining.add(future)

        for unit in units:
            submit(unit)
        try:
            while remaining:
                done, remaining = wait(remaining, return_when=FIRST_COMPLETED)
                for future in done:
                    unit = futures.pop(future)
                    try:
                        records, notes = future.result()
                    except BrokenProcessPool as error:
                        if keep_lost:
                            lost.append(unit)
                            continue
                        records, notes = [context.lost(cell, error) for _, cell in unit], []
                    except Exception as error:  # the worker could not start or load the cells
                        records, notes = [context.lost(cell, error) for _, cell in unit], []
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
        except BaseException as error:
            workers = list((pool._processes or {}).values())
            pool.shutdown(wait=False, cancel_futures=True)
            if isinstance(error, KeyboardInterrupt):  # SIGTERM, or Ctrl-C sent to bench alone:
                for worker in workers:  # exiting would wait for the cells they run; a cell's
                    worker.terminate()  # last checkpoint is kept, so a re-run goes on from it
            raise
    return lost


LOCAL = Executor("local", run_local, "this machine: one cell after the other, or -j N processes")
