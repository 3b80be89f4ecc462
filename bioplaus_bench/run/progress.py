"""Progress display: a live rich display (cells done, current epoch, ETA) or plain log lines."""

from __future__ import annotations

import sys
import time

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from ..spec.cell import Cell


class LogReporter:
    """One plain line per event on stderr, for log files (``--quiet``)."""

    def __init__(self) -> None:
        self.total = 0

    def start(self, total: int) -> None:
        self.total = total

    def log(self, message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    def cell_started(self, cell: Cell, index: int) -> None:
        self._index = index

    def epoch(self, cell: Cell, phase: str, done: int, total: int) -> None:
        pass

    def cell_finished(self, cell: Cell, index: int, status: str, detail: str = "") -> None:
        self.log(f"[{index + 1}/{self.total}] {cell.key}: {status}{f' ({detail})' if detail else ''}")

    def close(self) -> None:
        pass


class RichReporter(LogReporter):
    """A live display: the cells bar with ETA and the current cell's epoch bar."""

    def __init__(self) -> None:
        super().__init__()
        self.console = Console(stderr=True)
        self.progress = Progress(TextColumn("{task.description}"), BarColumn(),
                                 MofNCompleteColumn(), TimeElapsedColumn(),
                                 TextColumn("ETA"), TimeRemainingColumn(),
                                 console=self.console)
        self.cells: TaskID | None = None
        self.current: TaskID | None = None

    def start(self, total: int) -> None:
        super().start(total)
        self.progress.start()
        self.cells = self.progress.add_task("cells", total=total)
        self.current = self.progress.add_task("", total=1, visible=False)
        self._started = time.perf_counter()

    @staticmethod
    def _task(task: TaskID | None) -> TaskID:
        if task is None:
            raise RuntimeError("RichReporter: a cell was reported before start()")
        return task

    def log(self, message: str) -> None:
        self.progress.console.print(message, markup=False, highlight=False)

    def cell_started(self, cell: Cell, index: int) -> None:
        self.progress.update(self._task(self.current), description=cell.key, completed=0, total=1,
                             visible=True)

    def epoch(self, cell: Cell, phase: str, done: int, total: int) -> None:
        self.progress.update(self._task(self.current), description=f"{cell.key} {phase}",
                             completed=done, total=total)

    def cell_finished(self, cell: Cell, index: int, status: str, detail: str = "") -> None:
        super().cell_finished(cell, index, status, detail)
        self.progress.update(self._task(self.cells), advance=1)
        self.progress.update(self._task(self.current), visible=False)

    def close(self) -> None:
        if self.cells is not None:
            self.progress.stop()
