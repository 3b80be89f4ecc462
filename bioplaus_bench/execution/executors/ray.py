"""The ``ray`` executor: cells as Ray tasks on a local Ray or a cluster (the ``ray`` extra)."""

from __future__ import annotations

import contextlib
import pickle
import signal
import threading
from collections.abc import Callable, Collection, Hashable, Iterator
from typing import Any

from ...errors import InputError, Terminated
from ...results.record import Record
from ...spec.cell import Cell
from .executor import Executor, ExecutorOptions, RunContext, TaskPool
from .workers import execute_pickled, import_files

RAY_MISSING = "the Ray executor needs ray: pip install 'bioplaus-bench[ray]'"
MAX_RETRIES = 3
# How often the driver looks up from waiting for Ray: Ctrl-C and SIGTERM are handled in between.
WAIT_S = 0.5


def run_ray(todo: list[tuple[int, Cell]], context: RunContext) -> None:
    """The driver (this process) writes every record once. A task whose worker is lost is
    re-run by Ray (``MAX_RETRIES``), and said so; checkpoints go to the store's folder, so on one
    machine (or a shared file system) a re-run continues from the last epoch."""
    with ray_tasks(context.options, context.plugin_files) as pool:
        running = {pool.submit(_attempt, pickle.dumps(cell), context.plugin_files, context.env,
                               str(context.checkpoint(cell)), context.force): (index, cell)
                   for index, cell in todo}
        while running:
            for ref, result, error in pool.wait(list(running)):
                index, cell = running.pop(ref)
                if error is not None:  # retries exhausted, or the task could not run
                    record = context.lost(cell, error)
                else:
                    record, attempt = result
                    if attempt:
                        context.reporter.log(f"cell {cell.key} retried after its worker was "
                                             f"lost ({_times(attempt)})")
                context.finish(index, cell, record)


@contextlib.contextmanager
def _ray_session(options: ExecutorOptions) -> Iterator[Any]:
    """Ray, joined at ``options.address`` (None or "local": started on this machine) unless
    this process has joined already, and left at the end if joined here."""
    try:
        import ray
    except ImportError:
        raise InputError(RAY_MISSING) from None
    started_ray = False
    try:
        if not ray.is_initialized():
            with _suite_signal_handlers():
                if options.address in (None, "local"):
                    ray.init(address=options.address, include_dashboard=False,
                             log_to_driver=False)
                else:
                    ray.init(address=options.address, log_to_driver=False)
            started_ray = True
        yield ray
    finally:
        if started_ray:
            ray.shutdown()


class _RayPool:
    """``TaskPool`` over Ray tasks, each with a cell's CPUs, GPUs and torch threads."""

    def __init__(self, ray: Any, options: ExecutorOptions, plugin_files: list[str]) -> None:
        self.ray, self.plugin_files = ray, plugin_files
        self.threads = max(1, int(options.cpus_per_cell))
        self.remote = ray.remote(_task).options(
            num_cpus=options.cpus_per_cell, num_gpus=options.gpus_per_cell,
            max_retries=MAX_RETRIES, retry_exceptions=False)

    def submit(self, fn: Callable[..., Any], *args: Any) -> Hashable:
        return self.remote.remote(self.plugin_files, self.threads, fn, *args)

    def wait(self, handles: Collection[Hashable]) -> list[tuple[Hashable, Any, Exception | None]]:
        done: list[Any] = []
        while not done:  # with a timeout: Python runs the signal handlers only between waits
            done, _ = self.ray.wait(list(handles), num_returns=1, timeout=WAIT_S)
        ended: list[tuple[Hashable, Any, Exception | None]] = []
        for ref in done:
            try:
                ended.append((ref, self.ray.get(ref), None))
            except Exception as error:  # retries exhausted, or the task could not run
                ended.append((ref, None, error))
        return ended


@contextlib.contextmanager
def ray_tasks(options: ExecutorOptions, plugin_files: list[str]) -> Iterator[TaskPool]:
    """Ray tasks on this machine or a cluster; a task whose worker is lost is run again."""
    with _ray_session(options) as ray:
        yield _RayPool(ray, options, plugin_files)


def _task(plugin_files: list[str], threads: int, fn: Callable[..., Any], *args: Any) -> Any:
    """A Ray task of a ``TaskPool``: ``fn(*args)`` with the threads and plugin files a cell
    gets (``fn``'s pickled arguments are unpickled by ``fn`` itself, after the imports)."""
    import torch

    torch.set_num_threads(threads)
    import_files(plugin_files)
    return fn(*args)


def _attempt(payload: bytes, plugin_files: list[str], env: Any, checkpoint: str | None,
             force: bool) -> tuple[Record, int]:
    """A cell's task: its record, and which attempt of the task made it (0: the first; a task
    is attempted again when its worker or node was lost)."""
    return execute_pickled(payload, plugin_files, env, checkpoint, force), _attempts()


def _attempts() -> int:
    """Ray's attempt number of the task running here. Ray has no public API for it, so 0 (no
    retry said) where its internal one is missing."""
    import ray

    try:
        core = ray._private.worker.global_worker.core_worker  # type: ignore[attr-defined]
        return int(core.get_current_task_attempt_number())
    except Exception:
        return 0


def _times(retries: int) -> str:
    return "once" if retries == 1 else f"{retries} times"


@contextlib.contextmanager
def _suite_signal_handlers() -> Iterator[None]:
    """Keep the run's Ctrl-C and SIGTERM handlers (``cli.running._interruptible``: one line,
    exit 130 or 143) through ``ray.init``, which replaces SIGTERM's with its own (exit 15, or
    its core's stack dump). A SIGTERM that Ray's handler catches during ``ray.init`` stops the
    run as the suite's would."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    kept = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    except SystemExit as exit_:
        if exit_.code == signal.SIGTERM and kept[signal.SIGTERM] not in (None, signal.SIG_IGN):
            raise Terminated() from None
        raise
    finally:
        for signum, handler in kept.items():
            if handler is not None:  # None: not set from Python, so nothing to put back
                signal.signal(signum, handler)


RAY = Executor("ray", run_ray, "cells as Ray tasks, on this machine or a cluster (--ray-address)",
               tasks=ray_tasks)
