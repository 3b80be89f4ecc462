"""Errors that mean "the input is wrong" (exit code 2), each with a message a user can act on."""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from pathlib import Path


class InputError(Exception):
    """Bad input: a suite, a plugin, a missing dataset. The CLI prints it and exits with 2."""


class SuiteError(InputError):
    """A problem at one place of a suite file: ``file:line: key.path: message``."""

    def __init__(self, message: str, *, file: str = "<suite>", line: int | str | None = None,
                 key: str = ""):
        self.file, self.line, self.key, self.message = file, line, key, message
        where = f"{file}:{line}" if line is not None else file
        super().__init__(f"{where}: {key}: {message}" if key else f"{where}: {message}")


class PluginError(InputError):
    """A plugin that cannot be loaded or that clashes with another one."""


class DataMissingError(InputError):
    """A dataset that is not on disk and may not be downloaded."""


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for a misspelt name, or an empty string."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


class StorageError(Exception):
    """A write to the results folder failed during a run (disk full, folder removed). The CLI
    prints it and exits with 1; finished records and the last checkpoints stay."""


class Terminated(KeyboardInterrupt):
    """SIGTERM during a run (a batch scheduler's preemption, ``kill``): stops it as Ctrl-C does,
    through every place that lets ``KeyboardInterrupt`` pass, and exits with 143."""


class RunInterrupted(KeyboardInterrupt):
    """A run stopped by Ctrl-C or SIGTERM (``bioplaus_bench.run``), saying what is kept: the
    finished cells have records in ``folder``; the same run again resumes (running cells continue
    from their last epoch)."""

    def __init__(self, finished: int, total: int, folder: Path, terminated: bool):
        self.finished, self.total, self.folder, self.terminated = finished, total, folder, terminated
        super().__init__(f"{finished} of {total} cells have records in {folder}; the same run "
                         "again resumes (running cells continue from their last epoch)")
