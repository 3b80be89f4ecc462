"""``bench run --vectorize-seeds``: the pending seeds of each (dataset, algorithm) trained as
one computation (``execute_seed_group``), in this process, or with ``-j N`` each stack in a
worker process of its own (the local executor's pool, ``local.run_units``)."""

from __future__ import annotations

from dataclasses import dataclass

from ...results.record import Record
from ...spec.cell import Cell
from .execute import execute_seed_group
from .executor import RunContext
from .local import Unit, run_units


@dataclass(frozen=True)
class SeedVectorization:
    """``bench run --vectorize-seeds``: the seeds of a cell as one computation, at most
    ``chunk`` at once (None: as many as memory holds)."""

    chunk: int | None = None


def run_seed_groups(todo: list[tuple[int, Cell]], context: RunContext,
                    vectorize: SeedVectorization) -> None:
    """The pending cells, the seeds of each (dataset, algorithm) together (in chunks of at most
    ``vectorize.chunk``): in this process, or with ``-j N`` each stack in a worker process of
    its own, N at once (``local.run_units``). An algorithm that does not declare
    ``vectorize_seeds``, a lone seed, and seeds that cannot be stacked run as the local
    executor runs them: one after the other, or with ``-j N`` side by side."""
    units = _in_chunks(seed_group_units(todo, context), vectorize.chunk, context)
    if context.options.jobs > 1:
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
                                     "vectorize_seeds; its seeds are not stacked")
                serial += runnable
        else:
            serial += runnable
        units += [[pair] for pair in sorted(serial, key=lambda pair: pair[0])]
    return units


def _in_chunks(units: list[Unit], chunk: int | None, context: RunContext) -> list[Unit]:
    """Each stack of more than ``chunk`` seeds (``--seed-chunk``) as chunks of at most
    ``chunk``, each a unit of its own: with ``-j N``, N workers train N chunks at once, and a
    chunk of one seed runs as a serial run in a worker and in this process alike."""
    if chunk is None:
        return units
    parts: list[Unit] = []
    for unit in units:
        chunks = [unit[k:k + chunk] for k in range(0, len(unit), chunk)]
        if len(chunks) > 1:
            cell = unit[0][1]
            context.reporter.log(f"{cell.dataset_id}/{cell.algorithm_id}: {len(unit)} seeds in "
                                 f"{len(chunks)} chunks of at most {chunk} (--seed-chunk)"
                                 + (", each in a worker" if context.options.jobs > 1 else ""))
        parts += chunks
    return parts


def _execute_seed_group(cells: list[Cell], context: RunContext,
                        chunk: int | None = None) -> list[Record] | None:
    """``execute_seed_group`` in this process, its epochs reported as they finish."""
    context.reporter.cell_started(cells[0], 0, stacked=len(cells))
    return execute_seed_group(
        cells, context.registry, context.env, [context.checkpoint(cell) for cell in cells],
        context.force, chunk, note=context.reporter.log,
        on_epoch=lambda phase, done, total: context.reporter.epoch(cells[0], phase, done, total))

