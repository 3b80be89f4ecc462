"""Results: one JSON record per cell, written atomically, found again by its config hash.

Layout: ``RESULTS_DIR/<dataset>/<algorithm>/seed-<n>.json`` (and ``.ckpt`` beside it while the
cell runs). A record is written to a temporary file and renamed into place, so a killed run never
leaves a half-written record; a re-run skips every cell whose record has the same config hash.
Records (``record.Record``) are standard JSON (non-finite numbers are written as null), readable
by any parser. One run at a time holds a results folder (``ResultStore.lock``).

A results folder may come from anyone, so what it holds is read as untrusted input: only regular
files (never a link, FIFO or device: a FIFO would hang the reader) of at most MAX_RECORD_BYTES;
a record counts only at its own path, the one file named ``seed-<seed>.json`` of its dataset and
entry, with its values in their range (``record.check_ranges``) and the task and metric of its
dataset's other records. Anything else is skipped with a warning and listed in
``ResultStore.skipped`` with the reason, for the table to say.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import fnmatch
import json
import os
import platform
import re
import socket
import stat
import subprocess
import sys
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import cache
from pathlib import Path
from typing import Any, Literal

import torch

from ..version import __version__
from ..errors import InputError, StorageError
from ..files import LinkRefused, open_folder, write_atomically
from ..spec.cell import Cell
from .numbers import one_line
from .record import Record, RecordError, check_ranges
from .protocol import same_settings

LOCK_FILE = ".lock"
# The committed records are at most 40 kB (100 epochs of history); a record of thousands of
# epochs with alignment metrics stays far below this bound, which only keeps a stray file from
# being read into memory whole.
MAX_RECORD_BYTES = 64 * 2**20
RECORD_FILE = re.compile(r"seed-(0|[1-9][0-9]*)\.json")  # the one name of a seed's record
LIKE_A_RECORD = "seed-*.json"  # what else looks like one, to be named when skipped


@dataclass(frozen=True)
class Skipped:
    """A file of a results folder that was not counted, and why."""

    path: Path
    name: str  # relative to the results folder
    why: str

    def __str__(self) -> str:
        return f"{self.name} ({self.why})"


class Refused(Exception):
    """A file that is not a record to count; the message says why."""


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=5, cwd=Path(__file__).parent)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


@cache
def _static_provenance() -> dict[str, Any]:
    return {"bioplaus_bench": __version__, "torch": torch.__version__,
            "python": platform.python_version(), "platform": platform.platform(),
            "host": socket.gethostname(), "git_commit": _git_commit()}


def timestamp() -> str:
    """Now, in UTC to the second, as records carry their finish time."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def provenance(cell: Cell, device: str, finished_at: str | None = None) -> dict[str, Any]:
    """Where and with what the record was computed; ``code`` and ``data`` (the algorithm's
    source digest, the data's identity) are also in the config hash, ``settings`` (how the
    settings were obtained) is not. ``finished_at``: now unless given (a stack's seeds share
    one)."""
    made = {**_static_provenance(), "device": device, "dtype": cell.precision,
            "config_hash": cell.config_hash(), "torch_threads": torch.get_num_threads(),
            **cell.inputs, "finished_at": finished_at or timestamp()}
    if cell.settings_origin:  # how the suite's settings were obtained (paper, tuned): tables say
        made["settings"] = cell.settings_origin
    return made


def make_record(cell: Cell, result: dict[str, Any], device: str, task: str,
                finished_at: str | None = None) -> Record:
    """The record of ``cell`` with the run's ``result`` (the fields of ``Record`` from
    ``status`` on; any other key is a TypeError, not a silently dropped field). ``task``: the
    dataset's kind, "classification" or "regression", which the caller knows from the dataset
    (the store knows no datasets). ``finished_at``: as for ``provenance``."""
    return Record(
        suite=cell.suite, dataset=cell.dataset_id, dataset_label=cell.dataset.label, task=task,
        algorithm=cell.algorithm_id, algorithm_name=cell.algorithm, label=cell.label,
        seed=cell.seed, order=cell.order, paper_protocol=not cell.deviations,
        deviations=cell.deviations, metric=cell.metric, config=cell.config(),
        config_hash=cell.config_hash(), baseline=cell.baseline,
        provenance=provenance(cell, device, finished_at), **result)


def open_lock_file(path: Path) -> int:
    """The lock file, opened for writing: its holder's line overwrites it, so it is never a
    link (``O_NOFOLLOW``) nor a file that has another name (a hard link), where that would
    overwrite another file; ``OSError`` otherwise."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o666)
    except OSError as error:
        if error.errno == errno.ELOOP:
            raise OSError(errno.ELOOP, f"its lock file {path.name} is a symbolic link, which "
                          "is never followed (remove it)", str(path)) from None
        raise
    found = os.fstat(fd)
    if not stat.S_ISREG(found.st_mode) or found.st_nlink != 1:
        os.close(fd)
        raise OSError(errno.EINVAL, f"its lock file {path.name} is not a plain file with one "
                      "name (remove it)", str(path))
    return fd


class ResultStore:
    def __init__(self, root: Path | str):
        self.root = Path(root)
        self.skipped: list[Skipped] = []  # what records() found but did not count

    def path(self, cell: Cell) -> Path:
        return self.root / cell.dataset_id / cell.algorithm_id / f"seed-{cell.seed}.json"

    def checkpoint_path(self, cell: Cell) -> Path:
        return self.path(cell).with_suffix(".ckpt")

    def load(self, cell: Cell) -> Record | None:
        """The record at the cell's path if it is a record of this cell, else None (with a
        warning for a file that is not)."""
        path = self.path(cell)
        try:
            return read_record(path, (cell.dataset_id, cell.algorithm_id, cell.seed))
        except Refused as refused:
            _warn(path, str(refused))
            return None

    def finished(self, cell: Cell, *, any_code: bool = False) -> Record | None:
        """The cell's record if it is finished (``Record.finished``; ``skipped`` only for a
        cell that is skipped) and of this very configuration (the config hash: its settings,
        code and data), else None. ``any_code``: of the cell's settings and protocol, whatever
        code and data it was run with (``same_settings``): the reference campaign's rule, where
        older code still gives a reference cell, which the table marks."""
        record = self.load(cell)
        if record is None or not record.finished or (record.status == "skipped"
                                                     and not cell.skip_reason):
            return None
        same = same_settings(record, cell) if any_code else \
            record.config_hash == cell.config_hash()
        return record if same else None

    def is_finished(self, cell: Cell) -> bool:
        return self.finished(cell) is not None

    def state(self, cell: Cell, *, any_code: bool = False) -> Literal["finished", "stale",
                                                                      "missing"]:
        """Whether the cell has a ``finished`` record (``any_code`` as there), a file at its
        record's path that is none (another configuration, unfinished, not a record), or
        nothing. Only a regular file is opened: a FIFO in a record's place would block a
        reader, so it counts as nothing."""
        if not self.path(cell).is_file():
            return "missing"
        return "finished" if self.finished(cell, any_code=any_code) is not None else "stale"

    def write(self, record: Record, cell: Cell) -> Path:
        """Write atomically, with the user's umask, never through a link (``files``). A failed
        write leaves nothing behind and raises ``StorageError``."""
        path = self.path(cell)
        text = json.dumps(record.to_json(), indent=1, allow_nan=False)
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            write_atomically(path, text, inside=self.root)
        except OSError as error:
            advice = "free space" if error.errno == errno.ENOSPC else "fix the folder"
            raise StorageError(f"cannot write the record {path}: {error.strerror or error}; "
                               f"records written so far and the last checkpoints are kept: "
                               f"{advice} and run the same command again to resume") from None
        return path

    def records(self) -> Iterator[Record]:
        """Every record of the folder that counts; the other files named like records (and
        links to folders) are listed in ``skipped`` with the reason, and warned of, by the time
        this returns."""
        self.skipped = []
        found = []
        for path in self._candidates():
            try:
                found.append((path, _read_in_place(path)))
            except Refused as why:
                self._skip(path, str(why))
        counted = []
        for (path, record), off in zip(found, _off_column([r for _, r in found]), strict=True):
            if off is None:
                counted.append(record)
            else:
                self._skip(path, off)
        return iter(counted)

    def _candidates(self) -> Iterator[Path]:
        """The files at the records' depth named like records, in order; a link to a folder
        (or anything but a folder) on the way is skipped, never followed."""
        for dataset in _entries(self.root):
            for entry in _entries(dataset) if self._folder(dataset) else ():
                if self._folder(entry):
                    yield from (path for path in _entries(entry)
                                if path.match(LIKE_A_RECORD))

    def _folder(self, path: Path) -> bool:
        """Whether ``path`` is a folder to look into; a link to one is skipped."""
        if path.is_symlink():
            if path.is_dir():
                self._skip(path, "a symbolic link to a folder, not followed")
            return False
        return path.is_dir()

    def _skip(self, path: Path, why: str) -> None:
        _warn(path, why)
        self.skipped.append(Skipped(path, str(path.relative_to(self.root)), why))

    def make_folders(self, cells: Iterable[Cell]) -> None:
        """Create every cell's folder before anything trains: a file in the way, or a link
        where a folder, record or checkpoint is to be written (never written through, see
        ``files``), is found now, not after a cell has trained."""
        cells = list(cells)
        for folder in sorted({self.path(cell).parent for cell in cells}):
            try:
                with open_folder(folder, self.root) as fd:
                    # A run killed while writing a record leaves its temporary file; this run
                    # holds the folder, so none is being written now.
                    for name in fnmatch.filter(os.listdir(fd), ".seed-*.json.*.tmp"):
                        os.unlink(name, dir_fd=fd)
            except OSError as error:
                raise InputError(f"cannot create the results folder {folder}: "
                                 f"{error.strerror or error}") from None
        for path in (path for cell in cells
                     for path in (self.path(cell), self.checkpoint_path(cell))):
            if path.is_symlink():
                raise InputError(f"cannot write {path}: {LinkRefused(path).strerror}")

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the folder for one run: a second ``bench run`` on it stops with the holder's
        process id instead of overwriting records. The operating system drops the lock when
        the holder dies (even by SIGKILL), so a killed run never blocks its resumption."""
        if self.root.exists() and not self.root.is_dir():
            raise InputError(f"results folder {self.root} is a file; expected a folder")
        created = not self.root.exists()
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            fd = open_lock_file(self.root / LOCK_FILE)
        except OSError as error:
            raise InputError(f"results folder {self.root} is not writable: "
                             f"{error.strerror or error}") from None
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 4096, 0).decode(errors="replace").strip()
                raise InputError(f"results folder {self.root} is in use by "
                                 f"{holder or 'another process'}; wait for it to finish, or "
                                 "use another --out") from None
            holder = (f"process {os.getpid()} on {socket.gethostname()} since "
                      f"{datetime.now().isoformat(timespec='seconds')} "
                      f"({' '.join(sys.argv[:3])})")
            try:
                os.ftruncate(fd, 0)
                os.pwrite(fd, holder.encode(), 0)
            except OSError as error:  # a full disk, found before any training
                if created:  # leave nothing behind
                    (self.root / LOCK_FILE).unlink(missing_ok=True)
                    with contextlib.suppress(OSError):
                        self.root.rmdir()
                raise InputError(f"results folder {self.root} is not writable: "
                                 f"{error.strerror or error}") from None
            try:
                yield
            finally:
                os.ftruncate(fd, 0)
        finally:
            os.close(fd)


def _entries(folder: Path) -> list[Path]:
    try:
        return sorted(folder.iterdir())
    except OSError:
        return []


def _warn(path: Path, why: str) -> None:
    print(one_line(f"warning: ignoring {path}: {why}"), file=sys.stderr)  # a name may hold "\n"


def read_record(path: Path, cell: tuple[str, str, int] | None = None) -> Record | None:
    """The record in the file ``path``, None when there is none; ``Refused`` when the file is
    not a record to count: not a regular file, too large, not JSON, not a record, out of range,
    or (given ``cell``: its dataset, entry and seed) another cell's."""
    data = _read_json(path)
    if data is None:
        return None
    try:
        record = Record.from_json(data)
    except RecordError as problem:
        raise Refused(f"not a record: {problem}") from None
    if cell is not None and (record.dataset, record.algorithm, record.seed) != cell:
        raise Refused(f"holds {record.dataset}/{record.algorithm} seed {record.seed}, not "
                      f"{cell[0]}/{cell[1]} seed {cell[2]} as its path says")
    try:
        check_ranges(record)
    except RecordError as problem:
        raise Refused(str(problem)) from None
    return record


def _off_column(records: list[Record]) -> list[str | None]:
    """Per record, why it is not counted when its task and metric are not its dataset column's
    (None when they are). A column's task and metric are those most of its records hold (a
    dataset has one task, a suite one metric); where two are held equally often, none is
    trusted."""
    kinds: dict[str, Counter[tuple[str, str]]] = {}
    for record in records:
        kinds.setdefault(record.dataset, Counter())[(record.task, record.metric)] += 1
    reasons: list[str | None] = []
    for record in records:
        held = kinds[record.dataset].most_common()
        (top, count), *others = held
        if others and others[0][1] == count:
            listed = ", ".join(f"{n} {task} of {metric}" for (task, metric), n in held)
            reasons.append(f"the records of {record.dataset} disagree on the task and metric "
                           f"({listed}), so none counts")
        elif (record.task, record.metric) != top:
            reasons.append(f"a {record.task} record of {record.metric} where the records of "
                           f"{record.dataset} are {top[0]} of {top[1]}")
        else:
            reasons.append(None)
    return reasons


def _read_in_place(path: Path) -> Record:
    """The record of a file found in a results folder, which must be the one its path names."""
    match = RECORD_FILE.fullmatch(path.name)
    if match is None:
        raise Refused("not a record's name: a seed's record is seed-<seed>.json, and only it "
                      "counts")
    record = read_record(path, (path.parent.parent.name, path.parent.name, int(match[1])))
    if record is None:
        raise Refused("vanished while read")
    return record


def _read_json(path: Path, limit: int | None = None) -> Any:
    """The parsed JSON of a regular file of at most ``limit`` bytes (MAX_RECORD_BYTES), None
    when there is no file. The file is opened without following a link and without blocking,
    so a FIFO put in its place between the check and the opening cannot hang the reader
    either."""
    try:
        info = os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):  # no record there (yet)
        return None
    except OSError as error:
        raise Refused(f"unreadable: {error.strerror or error}") from None
    limit = MAX_RECORD_BYTES if limit is None else limit
    _check_file(info, limit)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as error:
        raise Refused(f"unreadable: {error.strerror or error}") from None
    try:
        _check_file(os.fstat(fd), limit)
        with os.fdopen(fd, "rb", closefd=False) as f:
            data = f.read(limit + 1)
    except OSError as error:
        raise Refused(f"unreadable: {error.strerror or error}") from None
    finally:
        os.close(fd)
    if len(data) > limit:
        raise Refused(f"larger than {limit} bytes")
    try:
        return json.loads(data.decode("utf-8"))
    except ValueError as error:  # bad JSON or bad UTF-8
        raise Refused(f"not JSON: {error}") from None
    except RecursionError:
        raise Refused("not JSON of a record: nested too deeply") from None


def _check_file(info: os.stat_result, limit: int) -> None:
    if stat.S_ISLNK(info.st_mode):
        raise Refused("a symbolic link, not followed")
    if not stat.S_ISREG(info.st_mode):
        raise Refused("not a regular file")
    if info.st_size > limit:
        raise Refused(f"larger than {limit} bytes")
