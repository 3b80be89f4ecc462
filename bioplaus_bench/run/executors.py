"""Where cells run: in this process one after the other (``run_serial``), in N local worker
processes (``run_parallel``) or as Ray tasks (``run_ray``). Every executor obeys the same rules: a
finished record with the same config hash is not run again (unless forced), a failing cell
becomes an ``error`` record with its traceback and the others still run, and every record is
written atomically by this process alone (workers return records; the parent writes them).
All of them run a cell through ``execute_cell``."""

from __future__ import annotations

import os
import pickle
import traceback
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import InputError
from ..registry import Registry, load_registry
from ..results.store import ResultStore, make_record
from ..spec.cell import Cell
from .progress import LogReporter
from .setup import Environment
from .training import CellTimeout, train_cell


@dataclass
class RunSummary:
    statuses: Counter = field(default_factory=Counter)
    cached: int = 0

    @property
    def failed(self) -> bool:
        return self.statuses["error"] + self.statuses["timeout"] > 0


def run_serial(cells: list[Cell], registry: Registry, store: ResultStore, env: Environment,
               reporter: LogReporter, *, force: bool = False) -> RunSummary:
    summary = RunSummary()
    reporter.start(len(cells))
    try:
        for index, cell in enumerate(cells):
            reporter.cell_started(cell, index)
            if not force and store.is_finished(cell):
                summary.cached += 1
                summary.statuses[store.load(cell)["status"]] += 1
                reporter.cell_finished(cell, index, "cached")
                continue
            checkpoint = store.checkpoint_path(cell)
            record = execute_cell(cell, registry, env, checkpoint, force,
                                  on_epoch=lambda phase, done, total, cell=cell:
                                  reporter.epoch(cell, phase, done, total))
            _finish(cell, index, record, store, summary, reporter)
    finally:
        reporter.close()
    return summary


def execute_cell(cell: Cell, plugins: Registry | list[str], env: Environment,
                 checkpoint: Path | None, force: bool, *,
                 on_epoch: Callable[[str, int, int], None] | None = None) -> dict:
    """Run one cell and return its record. It never raises for a failing cell: any exception of
    the plugin, ``SystemExit`` included, is an ``error`` record with the traceback, and a cell
    past its time limit a ``timeout`` record. Only Ctrl-C (``KeyboardInterrupt``) stops the
    run. ``plugins`` is a loaded registry, or the ``--plugin`` files to load one from (in a
    worker process, where classes are not passed)."""
    if cell.skip_reason:
        return make_record(cell, {"status": "skipped", "reason": cell.skip_reason}, env.device)
    if force and checkpoint is not None:
        checkpoint.unlink(missing_ok=True)
    time_limit = env.cell_timeout or cell.dataset.protocol.cell_timeout
    try:
        registry = plugins if isinstance(plugins, Registry) else _worker_registry(plugins)
        result = train_cell(cell, registry.get(cell.algorithm).cls, env, checkpoint=checkpoint,
                            on_epoch=on_epoch, time_limit=time_limit)
    except KeyboardInterrupt:
        raise
    except CellTimeout as timeout:  # the last epoch's checkpoint stays: a re-run continues
        result = {"status": "timeout", "reason": str(timeout)}
    except BaseException as error:  # a failing plugin must not stop the suite
        text = f"{type(error).__name__}: {error}"
        result = {"status": "error", "error": text, "reason": text,
                  "traceback": traceback.format_exc()}
    return make_record(cell, result, env.device)


# --- worker side: processes and Ray tasks get plugin file paths and pickled cells, not classes ---

_REGISTRIES: dict[tuple[str, ...], Registry] = {}


def _worker_registry(plugin_files: list[str]) -> Registry:
    key = tuple(plugin_files)
    if key not in _REGISTRIES:
        _REGISTRIES[key] = load_registry(plugin_files)
    return _REGISTRIES[key]


def _init_worker(plugin_files: list[str], threads: int) -> None:
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
    _worker_registry(plugin_files)  # imports the plugin modules before any cell is unpickled


def _execute_pickled(payload: bytes, plugin_files: list[str], env: Environment,
                     checkpoint: str | None, force: bool, threads: int | None = None) -> dict:
    """A worker's entry point. The cell travels pickled, to be unpickled only after the plugin
    files are imported (its params may be instances of a plugin's class)."""
    if threads is not None:
        import torch

        torch.set_num_threads(threads)
    try:
        _worker_registry(plugin_files)
        cell = pickle.loads(payload)
    except Exception as error:
        raise RuntimeError(f"worker could not load the cell: {type(error).__name__}: {error}"
                           ) from error
    return execute_cell(cell, plugin_files, env, Path(checkpoint) if checkpoint else None, force)


def _pending(cells: list[Cell], store: ResultStore, summary: RunSummary, reporter: LogReporter,
             force: bool) -> list[tuple[int, Cell]]:
    """Count and report the cached cells; return the ones to run."""
    todo = []
    for index, cell in enumerate(cells):
        if not force and store.is_finished(cell):
            summary.cached += 1
            summary.statuses[store.load(cell)["status"]] += 1
            reporter.cell_finished(cell, index, "cached")
        else:
            todo.append((index, cell))
    return todo


def _finish(cell: Cell, index: int, record: dict, store: ResultStore, summary: RunSummary,
            reporter: LogReporter) -> None:
    """The one writer: store a returned record atomically, then drop the cell's checkpoint
    (kept after a timeout, so that a re-run continues where the cell stopped)."""
    store.write(record, cell)
    if record["status"] != "timeout":
        store.checkpoint_path(cell).unlink(missing_ok=True)
    summary.statuses[record["status"]] += 1
    reporter.cell_finished(cell, index, record["status"], _detail(record))


def _lost(cell: Cell, env: Environment, error: BaseException) -> dict:
    """A record for a cell whose worker failed outside ``execute_cell`` (e.g. it was killed)."""
    text = "".join(traceback.format_exception(type(error), error, error.__traceback__))
    message = f"{type(error).__name__}: {error}"
    return make_record(cell, {"status": "error", "error": message, "reason": message,
                              "traceback": text}, env.device)


def worker_threads(jobs: int) -> int:
    return max(1, (os.cpu_count() or 1) // jobs)


def run_parallel(cells: list[Cell], plugin_files: list[str], store: ResultStore, env: Environment,
                 reporter: LogReporter, *, jobs: int, force: bool = False) -> RunSummary:
    """Cells in ``jobs`` spawned worker processes, each with cpu_count // jobs torch threads.
    Per-epoch progress is not reported; cells still checkpoint every epoch.

    A worker that dies (a plugin that calls ``os._exit`` or crashes the interpreter) breaks
    the whole pool and every cell in flight with it; those cells are run again, each alone in
    a fresh worker, so that only the one that kills its worker gets an ``error`` record."""
    summary = RunSummary()
    reporter.start(len(cells))
    try:
        todo = _pending(cells, store, summary, reporter, force)
        files = [str(Path(f).resolve()) for f in plugin_files]
        lost = _run_pool(todo, files, store, env, summary, reporter, jobs, force)
        for item in lost:
            _run_pool([item], files, store, env, summary, reporter, 1, force, keep_lost=False)
    finally:
        reporter.close()
    return summary


def _run_pool(todo: list[tuple[int, Cell]], files: list[str], store: ResultStore,
              env: Environment, summary: RunSummary, reporter: LogReporter, jobs: int,
              force: bool, keep_lost: bool = True) -> list[tuple[int, Cell]]:
    """Run ``todo`` in one pool and write each record. Returns the cells lost to a broken
    pool when ``keep_lost`` (to be run again), else records them as errors."""
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
    from concurrent.futures.process import BrokenProcessPool
    from multiprocessing import get_context

    lost = []
    if not todo:
        return lost
    with ProcessPoolExecutor(max_workers=min(jobs, len(todo)), mp_context=get_context("spawn"),
                             initializer=_init_worker,
                             initargs=(files, worker_threads(jobs))) as pool:
        futures = {pool.submit(_execute_pickled, pickle.dumps(cell), files, env,
                               str(store.checkpoint_path(cell)), force): (index, cell)
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
                        record = _lost(cell, env, error)
                    except Exception as error:  # the worker could not start or load the cell
                        record = _lost(cell, env, error)
                    _finish(cell, index, record, store, summary, reporter)
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)
            raise
    return lost


RAY_MISSING = "the Ray executor needs ray: pip install 'bioplaus-bench[ray]'"


def run_ray(cells: list[Cell], plugin_files: list[str], store: ResultStore, env: Environment,
            reporter: LogReporter, *, address: str | None = None, cpus_per_cell: float = 1,
            gpus_per_cell: float = 0, max_retries: int = 3, force: bool = False) -> RunSummary:
    """Cells as Ray tasks; the driver (this process) writes every record once. A task whose
    worker is lost is re-run by Ray (``max_retries``); checkpoints go to the store's folder, so
    on one machine (or a shared file system) a re-run continues from the last epoch."""
    try:
        import ray
    except ImportError:
        raise InputError(RAY_MISSING) from None
    summary = RunSummary()
    reporter.start(len(cells))
    started_ray = False
    try:
        todo = _pending(cells, store, summary, reporter, force)
        if not todo:
            return summary
        if not ray.is_initialized():
            if address in (None, "local"):
                ray.init(address=address, include_dashboard=False, log_to_driver=False)
            else:
                ray.init(address=address, log_to_driver=False)
            started_ray = True
        files = [str(Path(f).resolve()) for f in plugin_files]
        remote = ray.remote(_execute_pickled).options(
            num_cpus=cpus_per_cell, num_gpus=gpus_per_cell, max_retries=max_retries,
            retry_exceptions=False)
        threads = max(1, int(cpus_per_cell))
        refs = {remote.remote(pickle.dumps(cell), files, env, str(store.checkpoint_path(cell)),
                              force, threads): (index, cell) for index, cell in todo}
        remaining = list(refs)
        while remaining:
            done, remaining = ray.wait(remaining, num_returns=1)
            for ref in done:
                index, cell = refs[ref]
                try:
                    record = ray.get(ref)
                except Exception as error:  # retries exhausted, or the task could not run
                    record = _lost(cell, env, error)
                _finish(cell, index, record, store, summary, reporter)
    finally:
        reporter.close()
        if started_ray:
            ray.shutdown()
    return summary


def _detail(record: dict) -> str:
    if record["status"] != "ok" and record.get("reason"):
        return record["reason"]
    final = record.get("final") or {}
    parts = []
    if "test_error" in final:
        parts.append(f"test error {100 * final['test_error']:.2f}%")
    elif "test_loss" in final:
        parts.append(f"test loss {final['test_loss']:.4g}")
    parts.append(f"{record.get('wall_time', 0):.1f} s")
    return ", ".join(parts)
