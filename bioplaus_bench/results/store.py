"""Results: one JSON record per cell, written atomically, found again by its config hash.

Layout: ``RESULTS_DIR/<dataset>/<algorithm>/seed-<n>.json`` (and ``.ckpt`` beside it while the
cell runs). A record is written to a temporary file and renamed into place, so a killed run never
leaves a half-written record; a re-run skips every cell whose record has the same config hash.
Records (``record.Record``) are standard JSON (non-finite numbers are written as null), readable
by any parser; a file that is not a record (``Record.from_json`` refuses it) is skipped with a
warning, never trusted. One run at a time holds a results folder (``ResultStore.lock``).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import fnmatch
import json
import os
import platform
import socket
import stat
import subprocess
import sys
from collections.abc import Iterable, Iterator
from datetime import datetime, timezone
from functools import cache
from pathlib import Path
from typing import Any

import torch

from .. import __version__
from ..errors import InputError, StorageError
from ..files import LinkRefused, open_folder, write_atomically
from ..spec.cell import Cell
from .record import Record, RecordError

LOCK_FILE = ".lock"


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


def provenance(cell: Cell, device: str) -> dict[str, Any]:
    """Where and with what the record was computed; ``code`` and ``data`` (the algorithm's
    source digest, the data's identity) are also in the config hash."""
    return {**_static_provenance(), "device": device, "dtype": cell.precision,
            "config_hash": cell.config_hash(), "torch_threads": torch.get_num_threads(),
            **cell.inputs,
            "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}


def make_record(cell: Cell, result: dict[str, Any], device: str, task: str) -> Record:
    """The record of ``cell`` with the run's ``result`` (the fields of ``Record`` from
    ``status`` on; any other key is a TypeError, not a silently dropped field). ``task``: the
    dataset's kind, "classification" or "regression", which the caller knows from the dataset
    (the store knows no datasets)."""
    return Record(
        suite=cell.suite, dataset=cell.dataset_id, dataset_label=cell.dataset.label, task=task,
        algorithm=cell.algorithm_id, algorithm_name=cell.algorithm, label=cell.label,
        seed=cell.seed, order=cell.order, paper_protocol=not cell.deviations,
        deviations=cell.deviations, metric=cell.metric, config=cell.config(),
        config_hash=cell.config_hash(), baseline=cell.baseline,
        provenance=provenance(cell, device), **result)


def _open_lock_file(path: Path) -> int:
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
        self.skipped: list[str] = []  # files found by records() that are not records

    def path(self, cell: Cell) -> Path:
        return self.root / cell.dataset_id / cell.algorithm_id / f"seed-{cell.seed}.json"

    def checkpoint_path(self, cell: Cell) -> Path:
        return self.path(cell).with_suffix(".ckpt")

    def load(self, cell: Cell) -> Record | None:
        return _read(self.path(cell))

    def finished(self, cell: Cell) -> Record | None:
        """The cell's record if it is finished and of this very configuration, else None."""
        record = self.load(cell)
        return record if record is not None and record.config_hash == cell.config_hash() \
            and record.finished else None

    def is_finished(self, cell: Cell) -> bool:
        return self.finished(cell) is not None

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
        """Every record of the folder; files that are not records are listed in ``skipped``
        with a warning."""
        self.skipped = []
        for path in sorted(self.root.glob("*/*/seed-*.json")):
            record = _read(path)
            if record is None:
                if path.is_file():
                    self.skipped.append(str(path))
                continue
            yield record

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
            fd = _open_lock_file(self.root / LOCK_FILE)
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


def _read(path: Path) -> Record | None:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (FileNotFoundError, NotADirectoryError):  # no record there (yet)
        return None
    except (OSError, ValueError) as error:  # ValueError: bad JSON or bad UTF-8
        print(f"warning: ignoring unreadable record {path}: {error}", file=sys.stderr)
        return None
    try:
        return Record.from_json(data)
    except RecordError as problem:
        print(f"warning: ignoring {path}: not a record ({problem})", file=sys.stderr)
        return None
