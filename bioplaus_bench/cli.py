"""The ``bench`` command: thin; it parses, calls the modules, prints.

Exit codes: 0 success (every cell ok or diverged), 1 some cell failed with an error, 2 invalid
input (suite, plugin, missing data, options).
"""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from . import data as data_module
from .errors import InputError
from .executors import run_serial
from .plugins import Registry, load_registry
from .progress import LogReporter, RichReporter
from .report import FORMATS, records_frame, render, summarise
from .schema import schema_fields
from .store import ResultStore
from .suite import load_suite
from .training import Environment

app = typer.Typer(no_args_is_help=True, add_completion=False,
                  help="Benchmark biologically plausible credit-assignment algorithms.")
out = Console()
err = Console(stderr=True)

PluginOption = Annotated[list[Path], typer.Option(
    "--plugin", help="A Python file with algorithm plugins (repeatable).")]


@contextlib.contextmanager
def _input_errors():
    try:
        yield
    except InputError as error:
        err.print(f"error: {error}", markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None


def _registry(plugins: list[Path]) -> Registry:
    registry = load_registry(plugins)
    for warning in registry.warnings:
        err.print(f"warning: {warning}", markup=False, highlight=False, soft_wrap=True)
    return registry


def _names(text: str | None) -> list[str] | None:
    return [name.strip() for name in text.split(",") if name.strip()] if text else None


@app.command()
def run(
    suite: Annotated[Path, typer.Argument(help="The suite file (YAML).")],
    results: Annotated[Path | None, typer.Option(
        "--out", "-o", help="Results folder [default: results/<suite name>].")] = None,
    data_dir: Annotated[Path | None, typer.Option(
        help=f"Dataset root (torchvision layout) [default: ${data_module.DATA_ENV} or ./data].")
    ] = None,
    download: Annotated[bool, typer.Option(
        help="Allow downloading missing datasets (also BIOPLAUS_DOWNLOAD=1).")] = False,
    skip_checksums: Annotated[bool, typer.Option(
        help="Accept dataset files whose checksums differ from torchvision's (warns).")] = False,
    seeds: Annotated[int | None, typer.Option(help="Run only the first N seeds.")] = None,
    epochs: Annotated[int | None, typer.Option(help="Override every dataset's epochs.")] = None,
    only: Annotated[str | None, typer.Option(help="Only these algorithms (NAME[,NAME]).")] = None,
    datasets: Annotated[str | None, typer.Option(
        "--datasets", help="Only these datasets (NAME[,NAME]).")] = None,
    subset: Annotated[int | None, typer.Option(
        help="Train on the first N training samples (quick trials; not the paper protocol).")
    ] = None,
    set_: Annotated[list[str], typer.Option(
        "--set", help="Override a suite value: KEY.PATH=VALUE (repeatable).")] = [],  # noqa: B006
    force: Annotated[bool, typer.Option(help="Re-run cells that already have a record.")] = False,
    device: Annotated[str, typer.Option(help="cpu, cuda or cuda:N.")] = "cpu",
    quiet: Annotated[bool, typer.Option(help="Plain log lines instead of a live display.")
                     ] = False,
    plugin: PluginOption = [],  # noqa: B006
) -> None:
    """Run a suite: every (dataset, algorithm, seed) cell without a finished record."""
    with _input_errors():
        registry = _registry(plugin)
        loaded = load_suite(suite, registry, set_)
        for name, value in (("--seeds", seeds), ("--epochs", epochs), ("--subset", subset)):
            if value is not None and value < 1:
                raise InputError(f"{name} must be a positive integer, got {value}")
        cells = loaded.cells(seeds=seeds, only=_names(only), datasets=_names(datasets),
                             epochs=epochs, subset=subset, registry=registry)
        settings = data_module.DataSettings(
            root=data_dir or data_module.default_data_dir(),
            download=download or os.environ.get("BIOPLAUS_DOWNLOAD") == "1",
            verify_checksums=not skip_checksums)
        for source in sorted({c.dataset.source for c in cells if not c.skip_reason}):
            data_module.check_available(source, settings)
        store = ResultStore(results or Path("results") / loaded.name)
        reporter = LogReporter() if quiet or not sys.stderr.isatty() else RichReporter()
        summary = run_serial(cells, registry, store, Environment(settings, device), reporter,
                             force=force)
    records = [r for r in (store.load(c) for c in cells) if r is not None]
    out.print(render(summarise(records_frame(records)), "markdown"), markup=False,
              highlight=False, soft_wrap=True)
    statuses = ", ".join(f"{count} {status}" for status, count in sorted(summary.statuses.items()))
    err.print(f"{len(cells)} cells ({statuses}; {summary.cached} from earlier runs); "
              f"records in {store.root}", markup=False, highlight=False)
    if summary.failed:
        raise typer.Exit(1)


@app.command()
def validate(
    suite: Annotated[Path, typer.Argument(help="The suite file (YAML).")],
    set_: Annotated[list[str], typer.Option("--set", help="KEY.PATH=VALUE overrides.")
                    ] = [],  # noqa: B006
    plugin: PluginOption = [],  # noqa: B006
) -> None:
    """Check a suite file without running it."""
    with _input_errors():
        registry = _registry(plugin)
        loaded = load_suite(suite, registry, set_)
        cells = loaded.cells(registry=registry)
    skipped = sum(1 for c in cells if c.skip_reason)
    out.print(f"{suite}: ok: {len(loaded.datasets)} datasets, {len(loaded.algorithms)} "
              f"algorithms, {len(loaded.seeds)} seeds, {len(cells)} cells "
              f"({skipped} skipped)", markup=False, highlight=False)


@app.command("list")
def list_algorithms(
    params: Annotated[bool, typer.Option("--params", help="Also list hyper-parameters.")] = False,
    plugin: PluginOption = [],  # noqa: B006
) -> None:
    """Every algorithm with its origin and capabilities (and hyper-parameters)."""
    with _input_errors():
        registry = _registry(plugin)
    table = Table()
    for column in ("name", "label", "origin", "capabilities"):
        table.add_column(column, no_wrap=column != "capabilities")
    for info in registry.algorithms.values():
        table.add_row(info.name, info.label, info.origin, info.cls.capabilities.describe())
    out.print(table)
    for info in registry.algorithms.values():
        if params:
            fields = ", ".join(f"{name}={default!r}" for name, _, default in
                               schema_fields(info.cls.Params)) or "none"
            out.print(f"{info.name} ({info.source}): {fields}", markup=False, highlight=False,
                      soft_wrap=True)


@app.command()
def table(
    results: Annotated[Path, typer.Argument(help="A results folder written by `bench run`.")],
    fmt: Annotated[str, typer.Option("--format", "-f", help="markdown, latex or csv.")
                   ] = "markdown",
    output: Annotated[Path | None, typer.Option("--out", "-o", help="Write to this file.")
                      ] = None,
    compare: Annotated[str | None, typer.Option(
        help="'paper': put the published numbers beside ours.")] = None,
) -> None:
    """Aggregate the records of a results folder into the paper's table layout."""
    with _input_errors():
        if fmt not in FORMATS:
            raise InputError(f"--format must be one of {', '.join(FORMATS)}, got '{fmt}'")
        if compare not in (None, "paper"):
            raise InputError(f"--compare takes 'paper', got '{compare}'")
        if not results.is_dir():
            raise InputError(f"results folder not found: {results}")
        records = list(ResultStore(results).records())
        if not records:
            raise InputError(f"no records in {results}")
    text = render(summarise(records_frame(records)), fmt, compare=compare == "paper")
    if output is None:
        out.print(text, markup=False, highlight=False, soft_wrap=True, end="")
    else:
        output.write_text(text)


def main() -> None:
    app()
