"""Progress display: a live rich display (cells done, current epoch, ETA) or plain log lines,
which say every few minutes that a long run is alive."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable

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

HEARTBEAT_SECONDS = 180.0  # a quiet run says it is alive at least this often


class LogReporter:
    """One plain line per event on stderr, for log files (``--quiet``). A cell (or a stack of
    seeds) can train for many minutes between two events: when nothing was said for
    ``heartbeat`` seconds, one line says what runs, its epoch and the time elapsed, checked at
    every epoch and by a timer thread (workers of ``-j N`` report no epochs). ``clock``: the
    seconds it measures with (a test's clock); ``heartbeat`` None: no such lines."""

    def __init__(self, heartbeat: float | None = HEARTBEAT_SECONDS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.total = 0
        self.heartbeat = heartbeat
        self.clock = clock
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._timer: threading.Thread | None = None
        self._started = self._said = clock()
        self._done = 0
        self._running = ""  # the cell, or the stack of seeds, that runs in this process
        self._epoch = ""

    def start(self, total: int) -> None:
        self.total = total
        self._started = self._said = self.clock()
        if self.heartbeat is not None and self._timer is None:
            self._timer = threading.Thread(target=self._beat, name="bench-heartbeat", daemon=True)
            self._timer.start()

    def _beat(self) -> None:
        assert self.heartbeat is not None
        while not self._stop.wait(min(max(self.heartbeat, 1.0), 60.0)):
            self.pulse()

    def log(self, message: str) -> None:
        with self._lock:
            print(message, file=sys.stderr, flush=True)
            self._said = self.clock()

    def pulse(self) -> None:
        """One line saying that the run is alive, if nothing was said for ``heartbeat`` s."""
        if self.heartbeat is None:
            return
        with self._lock:
            now = self.clock()
            if now - self._said < self.heartbeat:
                return
            what = ", ".join(part for part in (self._running, self._epoch) if part)
            self.log(f"still running{f': {what}' if what else ''}; {self._done} of {self.total} "
                     f"cells done, {_duration(now - self._started)} elapsed")

    def cell_started(self, cell: Cell, index: int, stacked: int = 1) -> None:
        """``cell`` starts in this process; ``stacked``: with that many seeds (itself included)
        trained together as one computation."""
        with self._lock:
            self._running = _running(cell, stacked)
            self._epoch = ""

    def epoch(self, cell: Cell, phase: str, done: int, total: int) -> None:
        with self._lock:
            self._epoch = f"{phase} {done}/{total}"
        self.pulse()

    def cell_finished(self, cell: Cell, index: int, status: str, detail: str = "") -> None:
        with self._lock:
            self._done += 1
            self._running = self._epoch = ""  # until the next cell starts here
            self.log(f"[{index + 1}/{self.total}] {cell.key}: {status}"
                     f"{f' ({detail})' if detail else ''}")

    def close(self) -> None:
        self._stop.set()


def _running(cell: Cell, stacked: int) -> str:
    """What runs: the cell, or the stack of seeds it leads."""
    return cell.key if stacked == 1 else \
        f"{cell.dataset_id}/{cell.algorithm_id}, {stacked} seeds vectorised"


def _duration(seconds: float) -> str:
    """"42 s", "7 min 05 s", "2 h 03 min"."""
    whole = int(seconds)
    if whole < 60:
        return f"{whole} s"
    if whole < 3600:
        return f"{whole // 60} min {whole % 60:02d} s"
    return f"{whole // 3600} h {whole % 3600 // 60:02d} min"


class RichReporter(LogReporter):
    """A live display: the cells bar with ETA and the current cell's epoch bar."""

    def __init__(self) -> None:
        super().__init__(heartbeat=None)  # the display shows the time itself
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

    def cell_started(self, cell: Cell, index: int, stacked: int = 1) -> None:
        self.progress.update(self._task(self.current), description=_running(cell, stacked),
                             completed=0, total=1, visible=True)

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
