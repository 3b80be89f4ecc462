"""Where cells run. Today: in this process, one after the other. Every executor obeys the same
rules: a finished record with the same config hash is not run again (unless forced), a failing
cell becomes an ``error`` record with its traceback and the others still run, and every record
is written atomically."""

from __future__ import annotations

import traceback
from collections import Counter
from dataclasses import dataclass, field

from .plugins import Registry
from .progress import LogReporter
from .store import ResultStore, make_record
from .suite import Cell
from .training import Environment, train_cell


@dataclass
class RunSummary:
    statuses: Counter = field(default_factory=Counter)
    cached: int = 0

    @property
    def failed(self) -> bool:
        return self.statuses["error"] > 0


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
            record = _run_cell(cell, registry, store, env, reporter, force)
            store.write(record, cell)
            store.checkpoint_path(cell).unlink(missing_ok=True)
            summary.statuses[record["status"]] += 1
            reporter.cell_finished(cell, index, record["status"], _detail(record))
    finally:
        reporter.close()
    return summary


def _run_cell(cell: Cell, registry: Registry, store: ResultStore, env: Environment,
              reporter: LogReporter, force: bool) -> dict:
    if cell.skip_reason:
        return make_record(cell, {"status": "skipped", "reason": cell.skip_reason}, env.device)
    checkpoint = store.checkpoint_path(cell)
    if force:
        checkpoint.unlink(missing_ok=True)
    try:
        result = train_cell(cell, registry.get(cell.algorithm).cls, env, checkpoint=checkpoint,
                            on_epoch=lambda phase, done, total:
                            reporter.epoch(cell, phase, done, total))
    except Exception as error:  # a failing plugin must not stop the suite
        result = {"status": "error", "error": f"{type(error).__name__}: {error}",
                  "traceback": traceback.format_exc()}
    return make_record(cell, result, env.device)


def _detail(record: dict) -> str:
    if record["status"] == "error":
        return record["error"]
    if record["status"] == "skipped":
        return record["reason"]
    final = record.get("final") or {}
    parts = []
    if "test_error" in final:
        parts.append(f"test error {100 * final['test_error']:.2f}%")
    elif "test_loss" in final:
        parts.append(f"test loss {final['test_loss']:.4g}")
    parts.append(f"{record.get('wall_time', 0):.1f} s")
    return ", ".join(parts)
