"""Running a cell in this process to its record: ``execute_cell`` for one cell, and
``execute_seed_group`` for the seeds of one (dataset, entry) as one computation. Neither raises
for a failing cell: that is the cell's ``error`` or ``timeout`` record. The plugins are a loaded
registry, or (in a worker process or a Ray task, where classes are not passed) the ``--plugin``
files to load one from."""

from __future__ import annotations

import dataclasses
import json
import traceback
from collections.abc import Callable
from pathlib import Path

from ...registry import Registry, Wanted, load_registry
from ...results.record import Record
from ...results.store import make_record, timestamp
from ...spec.cell import Cell
from ..setup import Environment
from ..training import CellTimeout, StopRule, train_cell


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
        return cell_record(cell, {"status": "skipped", "reason": cell.skip_reason}, env, plugins)
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
    return cell_record(cell, result, env, plugins)


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
    finished = timestamp()  # one moment for the stack: what tells its records from seeds run apart
    return [cell_record(cell, result, env, plugins, finished)
            for cell, result in zip(cells, results, strict=True)]


def cell_record(cell: Cell, result: dict, env: Environment, plugins: Registry | list[str],
                finished_at: str | None = None) -> Record:
    """The cell's record; its task kind is its dataset's, known before anything loads. A result
    that JSON cannot hold (a metric plugin's object) fails this cell, not the run.
    ``finished_at``: now unless given."""
    kind = _registry(plugins, cell).dataset(cell.dataset.source).kind
    record = make_record(cell, result, env.device, kind, finished_at)
    try:
        json.dumps(record.to_json(), allow_nan=False)
    except (TypeError, ValueError) as error:
        text = f"the result cannot be stored as JSON: {type(error).__name__}: {error}"
        record = make_record(cell, {"status": "error", "error": text, "reason": text},
                             env.device, kind, finished_at)
    return record


def _registry(plugins: Registry | list[str], cell: Cell) -> Registry:
    return plugins if isinstance(plugins, Registry) else _worker_registry(plugins, cell)


# A worker gets plugin file paths, not classes: the registry it loads from them, once each.
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
