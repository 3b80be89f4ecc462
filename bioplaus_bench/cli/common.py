"""What every ``bench`` command shares: the Typer app, the consoles, the option types and the
one-line handling of bad input (exit code 2).

The command modules import the layers below them (registry, suite, data, run, results) inside
the commands, not at the top: those import torch, pandas and scipy, which ``bench --help`` and
a mistyped option need not wait for (tests/test_startup.py)."""

from __future__ import annotations

import contextlib
import enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console, ConsoleDimensions

from ..errors import InputError
from ..files import write_atomically
from ..results.numbers import FORMATS

if TYPE_CHECKING:
    from ..data import DataSettings
    from ..registry import Registry, Wanted
    from ..suite import Suite

app = typer.Typer(no_args_is_help=True, add_completion=False, rich_markup_mode=None,
                  help="Benchmark biologically plausible credit-assignment algorithms.")


class _Console(Console):
    """A console that wraps lines only on a terminal: output to a file or a pipe keeps each
    line whole (a path, a table row, a message), as a log or ``grep`` needs it. Rich would wrap
    it at the terminal's width, or at 80 columns without one."""

    @property
    def size(self) -> ConsoleDimensions:
        size = super().size
        return size if self.is_terminal else ConsoleDimensions(UNWRAPPED, size.height)

    @size.setter
    def size(self, new_size: tuple[int, int]) -> None:
        Console.size.fset(self, new_size)  # type: ignore[attr-defined]


UNWRAPPED = 1_000_000  # a width that no line reaches: tables keep their natural width
out = _Console()
err = _Console(stderr=True)

PluginOption = Annotated[list[Path], typer.Option(
    "--plugin", help="A Python file with plugins: algorithms, datasets, architectures, metrics or "
    "executors (repeatable); its folder is on the import path while it is imported, so it can "
    "import the modules next to it.")]
SetOption = Annotated[list[str], typer.Option(
    "--set", help="Override a suite value: KEY.PATH=VALUE (repeatable).")]


@contextlib.contextmanager
def input_errors():
    try:
        yield
    except InputError as error:
        err.print(f"error: {error}", markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None


def write_text(path: Path, text: str) -> None:
    """Write an output file (renamed into place, never through a link); a failure is one line
    and exit 2."""
    with input_errors():
        try:
            write_atomically(path, text)
        except OSError as error:
            raise InputError(f"cannot write {path}: {error.strerror or error}") from None


def load_plugins(plugins: list[Path], wanted: Wanted | None = None) -> Registry:
    from ..registry import load_registry

    registry = load_registry(plugins, wanted)
    for warning in registry.warnings:
        warn(f"warning: {warning}")
    return registry


def data_settings(data_dir: Path | None, download: bool, skip_checksums: bool
                   ) -> DataSettings:
    from ..suite.running import data_settings

    return data_settings(data_dir, download, verify_checksums=not skip_checksums)


# Members from one list, the renderer's (so mypy knows them by name only: TableFormat["csv"]).
TableFormat = enum.Enum("TableFormat", {name: name for name in FORMATS}, type=str)  # type: ignore[misc]
Compare = enum.Enum("Compare", {"paper": "paper"}, type=str)

SuiteArgument = Annotated[Path, typer.Argument(help="The suite file (YAML).")]
# $BIOPLAUS_DATA is data.DATA_ENV, written out: the data layer imports torch (tested equal).
DataDirOption = Annotated[Path | None, typer.Option(
    help="Dataset root (torchvision layout) [default: $BIOPLAUS_DATA or ./data].")]
DownloadOption = Annotated[bool, typer.Option(
    help="Allow downloading missing datasets (also BIOPLAUS_DOWNLOAD=1).")]
SkipChecksumsOption = Annotated[bool, typer.Option(
    help="Accept dataset files whose checksums differ from torchvision's (warns).")]
DeviceOption = Annotated[str, typer.Option(help="cpu, cuda or cuda:N.")]
ExecutorOption = Annotated[str, typer.Option(
    help="An executor plugin (bench list): local (this machine; see --jobs), ray (Ray tasks), "
    "or one of yours.")]
RayAddressOption = Annotated[str | None, typer.Option(
    help="Ray cluster address (default: start a local Ray; 'auto': the running cluster).")]
CpusPerCellOption = Annotated[float, typer.Option(
    min=0.01, help="Ray: CPUs reserved per cell (per trial's cells with bench tune).")]
GpusPerCellOption = Annotated[float, typer.Option(
    min=0, help="Ray: GPUs reserved per cell (per trial's cells with bench tune).")]


def load_suite_with_plugins(suite: Path, overrides: list[str], plugins: list[Path],
                            only: list[str] | None = None, executor: str | None = None
                            ) -> tuple[Registry, Suite]:
    """The registry and the suite (``suite.running.load_suite_with_plugins``), the plugins'
    warnings on stderr."""
    from ..suite.running import load_suite_with_plugins as load

    return load(suite, overrides, plugins, only=only, executor=executor, warn=warn)


def warn(line: str) -> None:
    """A warning line on stderr, whole."""
    err.print(line, markup=False, highlight=False, soft_wrap=True)


def names(text: str | None) -> list[str] | None:
    return [name.strip() for name in text.split(",") if name.strip()] if text else None
