"""The worker side: processes and Ray tasks get plugin file paths and pickled cells, not
classes. A worker imports the parent's plugin files first, then unpickles its cells and runs
them by ``execute_cell`` (or ``execute_seed_group``), returning the records for the parent to
write."""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

from ...plugin_files import import_plugin_file
from ...results.record import Record
from ...spec.cell import Cell
from ..setup import Environment
from .execute import execute_cell, execute_seed_group


def import_files(plugin_files: list[str]) -> None:
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
    import_files(plugin_files)  # before any cell is unpickled


def execute_pickled(payload: bytes, plugin_files: list[str], env: Environment,
                    checkpoint: str | None, force: bool) -> Record:
    """A task's entry point for one cell. The cell travels pickled, to be unpickled only after
    the plugin files are imported (its params may be instances of a plugin's class).
    ``payload`` is made by the parent ``bench`` process (``pickle.dumps(cell)``) and handed over
    in memory by the process pool or Ray; nothing read from disk is ever unpickled here."""
    cell = unpickled(payload, plugin_files)
    return execute_cell(cell, plugin_files, env, Path(checkpoint) if checkpoint else None, force)


def execute_pickled_unit(payload: bytes, plugin_files: list[str], env: Environment,
                         checkpoints: list[str], force: bool, chunk: int | None
                         ) -> tuple[list[Record] | None, list[str]]:
    """A local worker's entry point for a unit (``pickle.dumps`` of its cells, as for
    ``execute_pickled``): its records, stacked where it has several seeds, and the notes said on
    the way, for the parent to report. None where its seeds cannot be stacked: the parent then
    runs each seed as a unit of its own, side by side in the pool, so that one worker does not
    run them one after the other while another waits, and each record is kept as it ends."""
    cells: list[Cell] = unpickled(payload, plugin_files)
    paths = [Path(checkpoint) for checkpoint in checkpoints]
    notes: list[str] = []
    if len(cells) > 1:
        return execute_seed_group(cells, plugin_files, env, paths, force, chunk,
                                  note=notes.append), notes
    return [execute_cell(cells[0], plugin_files, env, paths[0], force)], notes


def unpickled(payload: bytes, plugin_files: list[str]) -> Any:
    """What the parent process pickled (``pickle.dumps`` of its cells, handed over in memory by
    the pool or Ray; never anything read from a folder), after the plugin files are imported:
    the cells may hold instances of their classes. The one place a worker unpickles."""
    try:
        import_files(plugin_files)
        return pickle.loads(payload)
    except Exception as error:
        raise RuntimeError(f"worker could not load the cell: {type(error).__name__}: {error}"
                           ) from error

