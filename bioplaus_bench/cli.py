"""The ``bench`` command: thin; it parses, calls the modules, prints.

Exit codes: 0 success (every cell ok or diverged), 1 some cell failed with an error, 2 invalid
input (suite, plugin, missing data, options).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import sys
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from . import data as data_module
from .errors import InputError, StorageError
from .registry import KINDS, Registry, load_registry
from .results.report import FORMATS, records_frame, render, summarise, unreadable_note
from .results.store import ResultStore
from .run.damping import DAMPING_GRID, damping_search
from .run.executors import ExecutorOptions, run_cells
from .run.inputs import with_inputs
from .run.progress import LogReporter, RichReporter
from .run.setup import Environment
from .spec.schema import schema_fields
from .suite import Suite, fragment, fragment_yaml, load_suite

app = typer.Typer(no_args_is_help=True, add_completion=False,
                  help="Benchmark biologically plausible credit-assignment algorithms.")
out = Console()
err = Console(stderr=True)

PluginOption = Annotated[list[Path], typer.Option(
    "--plugin", help="A Python file with algorithm plugins (repeatable).")]
SetOption = Annotated[list[str], typer.Option(
    "--set", help="Override a suite value: KEY.PATH=VALUE (repeatable).")]


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


def _data_settings(data_dir: Path | None, download: bool, skip_checksums: bool
                   ) -> data_module.DataSettings:
    return data_module.DataSettings(
        root=data_dir or data_module.default_data_dir(),
        download=download or os.environ.get("BIOPLAUS_DOWNLOAD") == "1",
        verify_checksums=not skip_checksums)


SuiteArgument = Annotated[Path, typer.Argument(help="The suite file (YAML).")]
DataDirOption = Annotated[Path | None, typer.Option(
    help=f"Dataset root (torchvision layout) [default: ${data_module.DATA_ENV} or ./data].")]
DownloadOption = Annotated[bool, typer.Option(
    help="Allow downloading missing datasets (also BIOPLAUS_DOWNLOAD=1).")]
SkipChecksumsOption = Annotated[bool, typer.Option(
    help="Accept dataset files whose checksums differ from torchvision's (warns).")]
DeviceOption = Annotated[str, typer.Option(help="cpu, cuda or cuda:N.")]


def _load_suite(suite: Path, overrides: list[str], plugins: list[Path]
                ) -> tuple[Registry, Suite]:
    registry = _registry(plugins)
    return registry, load_suite(suite, registry, overrides)


def _names(text: str | None) -> list[str] | None:
    return [name.strip() for name in text.split(",") if name.strip()] if text else None


@app.command()
def run(
    suite: SuiteArgument,
    results: Annotated[Path | None, typer.Option(
        "--out", "-o", help="Results folder [default: results/<suite name>].")] = None,
    data_dir: DataDirOption = None,
    download: DownloadOption = False,
    skip_checksums: SkipChecksumsOption = False,
    seeds: Annotated[int | None, typer.Option(min=1, help="Run only the first N seeds.")] = None,
    epochs: Annotated[int | None, typer.Option(min=1, help="Override every dataset's epochs.")
                      ] = None,
    only: Annotated[str | None, typer.Option(help="Only these algorithms (NAME[,NAME]).")] = None,
    datasets: Annotated[str | None, typer.Option(
        "--datasets", help="Only these datasets (NAME[,NAME]).")] = None,
    subset: Annotated[int | None, typer.Option(
        min=1, help="Train on the first N training samples (quick trials; not the paper protocol).")
    ] = None,
    set_: SetOption = [],  # noqa: B006
    force: Annotated[bool, typer.Option(help="Re-run cells that already have a record.")] = False,
    device: DeviceOption = "cpu",
    quiet: Annotated[bool, typer.Option(help="Plain log lines instead of a live display.")
                     ] = False,
    plugin: PluginOption = [],  # noqa: B006
    jobs: Annotated[int, typer.Option(
        "--jobs", "-j", min=1, help="Run cells in N local worker processes (cpu_count // N torch "
        "threads each); the display then shows cells done and ETA, not per-epoch progress.")] = 1,
    executor: Annotated[str, typer.Option(
        help="An executor plugin (bench list): local (this machine; see --jobs), ray (cells as "
        "Ray tasks), or one of yours.")] = "local",
    ray_address: Annotated[str | None, typer.Option(
        help="Ray cluster address (default: start a local Ray; 'auto': the running cluster).")
    ] = None,
    cpus_per_cell: Annotated[float, typer.Option(
        min=0.01, help="Ray: CPUs reserved per cell.")] = 1,
    gpus_per_cell: Annotated[float, typer.Option(min=0, help="Ray: GPUs reserved per cell.")] = 0,
    cell_timeout: Annotated[float | None, typer.Option(
        help="End a cell that runs longer than this many seconds (status "
        "timeout; a re-run continues it from its last epoch) [default: the suite's "
        "protocol.cell_timeout].")] = None,
) -> None:
    """Run a suite: every (dataset, algorithm, seed) cell without a finished record."""
    with _input_errors():
        registry, loaded = _load_suite(suite, set_, plugin)
        chosen = registry.executor(executor)
        settings = _data_settings(data_dir, download, skip_checksums)
        environment = Environment(settings, device, cell_timeout)
        cells = loaded.cells(seeds=seeds, only=_names(only), datasets=_names(datasets),
                             epochs=epochs, subset=subset, registry=registry)
        for source in sorted({c.dataset.source for c in cells if not c.skip_reason}):
            data_module.check_available(registry.dataset(source), settings)
        cells = [with_inputs(c, registry, settings) for c in cells]
        store = ResultStore(results or Path("results") / loaded.name)
        reporter = LogReporter() if quiet or not sys.stderr.isatty() else RichReporter()
        options = ExecutorOptions(jobs, ray_address, cpus_per_cell, gpus_per_cell)
        with store.lock(), _interruptible(store, cells), _storage_errors():
            summary = run_cells(chosen, cells, registry=registry, plugin_files=plugin,
                                store=store, env=environment, reporter=reporter,
                                options=options, force=force)
    # Only this run's records: a record of the same cell from other code, data or settings
    # is not a result of this run.
    records = [record for cell in cells if (record := store.load(cell)) is not None
               and record.config_hash == cell.config_hash()]
    out.print(render(summarise(records_frame(records)), "markdown"), markup=False,
              highlight=False, soft_wrap=True)
    statuses = ", ".join(f"{count} {status}" for status, count in sorted(summary.statuses.items()))
    err.print(f"{len(cells)} cells ({statuses}; {summary.cached} from earlier runs); "
              f"records in {store.root}", markup=False, highlight=False)
    if summary.failed:
        raise typer.Exit(1)


@contextlib.contextmanager
def _interruptible(store: ResultStore, cells: list):
    """Ctrl-C: one line saying what is kept and how to go on, and exit code 130."""
    try:
        yield
    except KeyboardInterrupt:
        finished = sum(store.is_finished(cell) for cell in cells)
        err.print(f"interrupted: {finished} of {len(cells)} cells have records in {store.root}; "
                  "run the same command again to resume (running cells continue from their "
                  "last epoch)", markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(130) from None


@contextlib.contextmanager
def _storage_errors():
    """A write that fails mid-run (disk full): one line, exit 1; what was written stays."""
    try:
        yield
    except StorageError as error:
        err.print(f"error: {error}; records written so far and the last checkpoints are kept: "
                  "free space and run the same command again to resume", markup=False,
                  highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None


@app.command()
def validate(
    suite: SuiteArgument,
    set_: SetOption = [],  # noqa: B006
    plugin: PluginOption = [],  # noqa: B006
) -> None:
    """Check a suite file without running it."""
    with _input_errors():
        registry, loaded = _load_suite(suite, set_, plugin)
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
    """Every plugin: algorithms with their origin and capabilities (and hyper-parameters), then
    the datasets, architectures, metrics and executors."""
    with _input_errors():
        registry = _registry(plugin)
    table = Table(title="algorithms")
    for column in ("name", "label", "origin", "capabilities"):
        table.add_column(column, no_wrap=column != "capabilities")
    for info in registry.algorithms.values():
        table.add_row(info.name, info.label, info.origin, info.cls.capabilities.describe())
    out.print(table)
    for kind in KINDS:
        table = Table(title=kind)
        for column in ("name", "origin", "what"):
            table.add_column(column, no_wrap=column != "what")
        for provided in registry.provided(kind).values():
            what = getattr(provided.value, "summary", "") or getattr(provided.value, "label", "")
            table.add_row(provided.name, provided.origin, what)
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
        store = ResultStore(results)
        records = list(store.records())
        if not records:
            raise InputError(f"no records in {results}"
                             + (f" ({unreadable_note(len(store.skipped))})" if store.skipped else ""))
    text = render(summarise(records_frame(records)), fmt, compare=compare == "paper",
                  unreadable=len(store.skipped))
    if output is None:
        out.print(text, markup=False, highlight=False, soft_wrap=True, end="")
    else:
        output.write_text(text)
    if store.skipped and fmt == "csv":  # a CSV holds data only: the note goes to stderr
        err.print(unreadable_note(len(store.skipped)), markup=False, highlight=False)


@app.command()
def plot(
    results: Annotated[Path, typer.Argument(help="A results folder written by `bench run`.")],
    figure: Annotated[str, typer.Option(help="angles, nullspace or curves.")] = "angles",
    output: Annotated[Path, typer.Option("--out", "-o", help="The figure file (.png or .pdf).")
                      ] = Path("figure.png"),
    layer: Annotated[int | None, typer.Option(
        help="The layer to show (default: the last hidden layer, or the logged one).")] = None,
) -> None:
    """Figure 4 style angle curves, Figure 2 nullspace bars, or learning curves."""
    from .results.plots import plot as draw

    with _input_errors():
        records = list(ResultStore(results).records()) if results.is_dir() else []
        if not records:
            raise InputError(f"no records in {results}")
        path = draw(records, figure, output, layer)
    err.print(f"wrote {path}", markup=False, highlight=False)


@app.command()
def damping(
    suite: SuiteArgument,
    algorithm: Annotated[str, typer.Option(help="The algorithm entry to search for.")],
    dataset: Annotated[str, typer.Option(help="The dataset entry.")],
    epochs: Annotated[int, typer.Option(min=1, help="Training epochs before the search pass.")
                      ] = 3,
    grid: Annotated[str, typer.Option(help="Comma-separated λ values.")] =
        ",".join(str(d) for d in DAMPING_GRID),
    seed: Annotated[int | None, typer.Option(help="Seed (default: the suite's first).")] = None,
    data_dir: DataDirOption = None,
    download: DownloadOption = False,
    skip_checksums: SkipChecksumsOption = False,
    device: DeviceOption = "cpu",
    set_: SetOption = [],  # noqa: B006
    plugin: PluginOption = [],  # noqa: B006
) -> None:
    """Search the GNT damping λ of every hidden layer (spec §9.2) and print it for the suite."""
    with _input_errors():
        registry, loaded = _load_suite(suite, set_, plugin)
        try:
            values = tuple(float(v) for v in grid.split(","))
        except ValueError:
            raise InputError(f"--grid expects comma-separated numbers, got '{grid}'") from None
        cells = [c for c in loaded.cells(only=[algorithm], datasets=[dataset], epochs=epochs)
                 if seed is None or c.seed == seed]
        if not cells:
            raise InputError(f"seed {seed} is not in {suite}")
        cell = cells[0]
        settings = _data_settings(data_dir, download, skip_checksums)
        data_module.check_available(registry.dataset(cell.dataset.source), settings)
        found = damping_search(cell, registry.get(cell.algorithm).cls,
                               Environment(settings, device, registry=registry), values)
    table = Table(title=f"mean GNT angle (degrees), {algorithm} on {dataset}")
    table.add_column("λ")
    layers = len(found["best"])
    for i in range(layers):
        table.add_column(f"h{i + 1}", justify="right")
    for damping_value, angles in found["mean_angle"].items():
        table.add_row(damping_value, *(f"{a:.1f}" for a in angles))
    out.print(table)
    key = f"datasets.{dataset}.metrics.gnt_damping"
    out.print(fragment_yaml(fragment(algorithm, {key: list(found["best"])})), markup=False,
              highlight=False, soft_wrap=True, end="")
    err.print(f"or on the command line: --set algorithms.{algorithm}.{key}="
              f"{json.dumps(list(found['best'])).replace(' ', '')}", markup=False,
              highlight=False, soft_wrap=True)


@app.command()
def tune(
    suite: SuiteArgument,
    algorithm: Annotated[str, typer.Option(help="The algorithm entry (with a `search:` mapping).")],
    dataset: Annotated[str, typer.Option(help="The dataset entry.")],
    trials: Annotated[int, typer.Option(
        min=1, help="Total number of finished trials in the study.")] = 20,
    study: Annotated[Path | None, typer.Option(
        help="SQLite file of the study [default: results/<suite>/tune-<algorithm>-<dataset>.db].")
    ] = None,
    seed: Annotated[int | None, typer.Option(
        help="Training seed, also the sampler's (default: the suite's first).")] = None,
    epochs: Annotated[int | None, typer.Option(min=1, help="Override the dataset's epochs.")
                      ] = None,
    output: Annotated[Path | None, typer.Option(
        "--out", "-o", help="Write the best configuration (a suite fragment) to this file.")
    ] = None,
    data_dir: DataDirOption = None,
    download: DownloadOption = False,
    skip_checksums: SkipChecksumsOption = False,
    device: DeviceOption = "cpu",
    set_: SetOption = [],  # noqa: B006
    plugin: PluginOption = [],  # noqa: B006
) -> None:
    """Search the hyper-parameters in the algorithm's `search:` mapping (Optuna TPE) on the
    validation error; stopped searches resume from the study file. Prints the best values as
    a suite fragment."""
    from .tune import tune as search

    with _input_errors():
        registry, loaded = _load_suite(suite, set_, plugin)
        if algorithm not in loaded.algorithms or dataset not in loaded.datasets:
            loaded.cells(only=[algorithm], datasets=[dataset])  # raises the named error
        settings = _data_settings(data_dir, download, skip_checksums)
        data_module.check_available(registry.dataset(loaded.datasets[dataset].source), settings)
        best = search(loaded, registry, algorithm, dataset, trials, study, seed=seed,
                      epochs=epochs, env=Environment(settings, device),
                      log=lambda line: err.print(line, markup=False, highlight=False,
                                                 soft_wrap=True))
    err.print(f"best: trial {best['trial']} of {best['trials']}, validation "
              f"{best['objective']:.6g} (study {best['study']})", markup=False, highlight=False)
    text = fragment_yaml(best["fragment"])
    if output is None:
        out.print(text, markup=False, highlight=False, soft_wrap=True, end="")
    else:
        output.write_text(text)
        err.print(f"wrote {output}", markup=False, highlight=False)
    err.print("or on the command line: " + " ".join(f"--set {item}" for item in best["set"]),
              markup=False, highlight=False, soft_wrap=True)


@app.command("check-plugin")
def check_plugin(
    target: Annotated[str, typer.Argument(
        help="An algorithm name, a plugin file (.py), or an installed plugin package.")],
    plugin: PluginOption = [],  # noqa: B006
) -> None:
    """Conformance checks of an algorithm plugin, one PASS/FAIL line each (docs/plugins.md).

    Exit 0 when every check passes, 1 when one fails, 2 when the plugin cannot be loaded."""
    from .kit.conformance import find_algorithms, run_checks

    started = time.perf_counter()
    files = [*plugin, Path(target)] if target.endswith(".py") else list(plugin)
    with _input_errors():
        infos = find_algorithms(target, _registry(files))

    def emit(line: str) -> None:
        out.print(line, markup=False, highlight=False, soft_wrap=True)

    summary = run_checks(infos, emit)
    emit(dataclasses.replace(summary, seconds=time.perf_counter() - started).line())
    if not summary.ok:
        raise typer.Exit(1)


@app.command("new-plugin")
def new_plugin(
    name: Annotated[str, typer.Argument(help="The algorithm's name, e.g. sign-sgd.")],
    directory: Annotated[Path | None, typer.Option(
        "--dir", help="Folder to create (absent or empty) [default: ./NAME].")] = None,
) -> None:
    """Write an installable plugin package: pyproject with the entry point, a working rule,
    a conformance test and a suite on the teacher task."""
    from .kit.scaffold import new_plugin as scaffold

    target = directory or Path(name)
    with _input_errors():
        registry = load_registry()
        names, written = scaffold(name, target, taken=registry.algorithms)
    out.print(f"created {names.distribution} (algorithm '{names.algorithm}', package "
              f"{names.package}) in {target}:", markup=False, highlight=False, soft_wrap=True)
    for path in written:
        out.print(f"  {path.relative_to(target)}", markup=False, highlight=False)
    out.print(f"next: pip install -e {target} && bench check-plugin {names.algorithm} && "
              f"(cd {target} && python -m pytest)", markup=False, highlight=False, soft_wrap=True)


def main() -> None:
    app()
