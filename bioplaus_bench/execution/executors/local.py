"""The ``local`` executor: the cells in this process one after the other, or with ``-j N`` in N
spawned worker processes, each with this process's torch threads (``execution/threads.py``)."""

from __future__ import annotations

import pickle

from ...spec.cell import Cell
from . import Executor, RunContext, execute_pickled, init_worker


def run_local(todo: list[tuple[int, Cell]], context: RunContext) -> None:
    if context.options.jobs == 1:
        for index, cell in todo:
            context.finish(index, cell, context.execute(cell, index))
        return
    for lost in _run_pool(todo, context, context.options.jobs):
        _run_pool([lost], context, 1, keep_lost=False)


def _run_pool(todo: list[tuple[int, Cell]], context: RunContext, jobs: int,
              keep_lost: bool = True) -> list[tuple[int, Cell]]:
    """Run ``todo`` in one pool of worker processes. Per-epoch progress is not reported; cells
    still checkpoint every epoch. A worker that dies (a plugin that calls ``os._exit`` or
    crashes the interpreter) breaks the whole pool and every cell in flight with it: those are
    returned when ``keep_lost``, to be run again each alone in a fresh worker, so that only the
    one that kills its worker gets an ``error`` record."""
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
    from concurrent.futures.process import BrokenProcessPool
    from multiprocessing import get_context

    import torch

    lost: list[tuple[int, Cell]] = []
    files = context.plugin_files
    with ProcessPoolExecutor(max_workers=min(jobs, len(todo)), mp_context=get_context("spawn"),
                             initializer=init_worker,
                             initargs=(files, torch.get_num_threads())) as pool:
        futures = {pool.submit(execute_pickled, pickle.dumps(cell), files, context.env,
                               str(context.checkpoint(cell)), context.force): (index, cell)
                   for index, cell in todo}
        try:
            remaining = set(futures)
            while remaining:
                done, remaining = wait(remaining, return_when=FIRST_COMPLETED)
                for future in done:
                    index, cell = futures[future]
                    try:
                        record = future.result()
                    except BrokenProcessPool as error:
                        if keep_lost:
                            lost.append((index, cell))
                            continue
                        record = context.lost(cell, error)
                    except Exception as error:  # the worker could not start or load the cell
                        record = context.lost(cell, error)
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
