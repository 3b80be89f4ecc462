"""The ``ray`` executor: cells as Ray tasks on a local Ray or a cluster (the ``ray`` extra)."""

from __future__ import annotations

import pickle

from ...errors import InputError
from ...spec.cell import Cell
from . import Executor, RunContext, execute_pickled

RAY_MISSING = "the Ray executor needs ray: pip install 'bioplaus-bench[ray]'"
MAX_RETRIES = 3


def run_ray(todo: list[tuple[int, Cell]], context: RunContext) -> None:
    """The driver (this process) writes every record once. A task whose worker is lost is
    re-run by Ray (``MAX_RETRIES``); checkpoints go to the store's folder, so on one machine
    (or a shared file system) a re-run continues from the last epoch."""
    try:
        import ray
    except ImportError:
        raise InputError(RAY_MISSING) from None
    options = context.options
    started_ray = False
    try:
        if not ray.is_initialized():
            if options.address in (None, "local"):
                ray.init(address=options.address, include_dashboard=False, log_to_driver=False)
            else:
                ray.init(address=options.address, log_to_driver=False)
            started_ray = True
        remote = ray.remote(execute_pickled).options(
            num_cpus=options.cpus_per_cell, num_gpus=options.gpus_per_cell,
            max_retries=MAX_RETRIES, retry_exceptions=False)
        threads = max(1, int(options.cpus_per_cell))
        # ray's overloads take execute_pickled's optional last argument for 5 of them: it has 6.
        refs = {remote.remote(pickle.dumps(cell), context.plugin_files,  # type: ignore[call-arg]
                              context.env,
                              str(context.checkpoint(cell)), context.force, threads):
                (index, cell) for index, cell in todo}
        remaining = list(refs)
        while remaining:
            done, remaining = ray.wait(remaining, num_returns=1)
            for ref in done:
                index, cell = refs[ref]
                try:
                    record = ray.get(ref)
                except Exception as error:  # retries exhausted, or the task could not run
                    record = context.lost(cell, error)
                context.finish(index, cell, record)
    finally:
        if started_ray:
            ray.shutdown()


RAY = Executor("ray", run_ray, "cells as Ray tasks, on this machine or a cluster (--ray-address)")
