"""``bench run`` and ``bench validate``."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Annotated

import typer

from ..errors import InputError, RunInterrupted, StorageError
from .common import (
    CpusPerCellOption,
    DataDirOption,
    DeviceOption,
    DownloadOption,
    ExecutorOption,
    GpusPerCellOption,
    PluginOption,
    RayAddressOption,
    SetOption,
    SkipChecksumsOption,
    SuiteArgument,
    app,
    err,
    input_errors,
    load_suite_with_plugins,
    names,
    out,
    warn,
)


@app.command()
def run(
    suite: SuiteArgument,
    results_folder: Annotated[Path | None, typer.Option(
        "--out", "-o", help="Results folder [default: results/<suite name>].")] = None,
    data_dir: DataDirOption = None,
    download: DownloadOption = False,
    skip_checksums: SkipChecksumsOption = False,
    seeds: Annotated[int | None, typer.Option(min=1, help="Run only the first N seeds.")] = None,
    only_seeds: Annotated[str | None, typer.Option(
        "--only-seeds", help="Only these of the suite's seeds (S[,S]), e.g. to share a suite "
        "between machines; like --only, not a change of protocol.")] = None,
    epochs: Annotated[int | None, typer.Option(min=1, help="Override every dataset's epochs.")
                      ] = None,
    only: Annotated[str | None, typer.Option(
        help="Only these algorithm entries (NAME[,NAME]); only the installed plugins they need are "
        "loaded (every --plugin file is).")
    ] = None,
    datasets: Annotated[str | None, typer.Option(
        "--datasets", help="Only these datasets (NAME[,NAME]).")] = None,
    subset: Annotated[int | None, typer.Option(
        min=1, help="Train on the first N training samples (quick trials; not the paper protocol).")
    ] = None,
    set_: SetOption = [],  # noqa: B006
    force: Annotated[bool, typer.Option(help="Re-run cells that already have a record.")] = False,
    device: DeviceOption = "cpu",
    quiet: Annotated[bool, typer.Option(
        help="Plain log lines instead of a live display (with a line at least every 3 minutes "
        "saying what runs, its epoch and the time elapsed).")] = False,
    plugin: PluginOption = [],  # noqa: B006
    jobs: Annotated[int, typer.Option(
        "--jobs", "-j", min=1, help="Run cells in N local worker processes (each with "
        "--threads torch threads); the display then shows cells done and ETA, not per-epoch "
        "progress.")] = 1,
    threads: Annotated[int | None, typer.Option(
        min=1, help="Torch threads per process, -j workers included [default: $OMP_NUM_THREADS, "
        "else 1: small networks on a shared machine run fastest so; -j uses more cores].")
    ] = None,
    executor: ExecutorOption = "local",
    ray_address: RayAddressOption = None,
    cpus_per_cell: CpusPerCellOption = 1,
    gpus_per_cell: GpusPerCellOption = 0,
    vectorize_seeds: Annotated[bool | None, typer.Option(
        "--vectorize-seeds/--serial-seeds",
        help="Run the seeds of each cell as one computation (each seed's result is its serial "
        "run's, to rounding); with -j N, each such stack in a worker process of its own, N at "
        "once [default: the suite's vectorize_seeds, else serial].")] = None,
    seed_chunk: Annotated[int | None, typer.Option(
        min=1, help="With --vectorize-seeds: at most N seeds at once, also for networks that "
        "run serially by default (on a CPU: CNNs and large MLPs, where stacking does not pay); "
        "with -j N, each chunk in a worker of its own [default: as many as memory holds].")] = None,
    cell_timeout: Annotated[float | None, typer.Option(
        help="End a cell that runs longer than this many seconds (status "
        "timeout; a re-run continues it from its last epoch) [default: the suite's "
        "protocol.cell_timeout].")] = None,
) -> None:
    """Run a suite: every (dataset, algorithm, seed) cell without a finished record."""
    from ..suite.running import run as run_suite

    with input_errors(), _interruptible(), _storage_errors():
        results = run_suite(
            suite, datasets=names(datasets), only=names(only), seeds=seeds,
            only_seeds=_seeds(only_seeds), epochs=epochs, subset=subset, overrides=set_,
            plugins=plugin, out=results_folder, data_dir=data_dir, download=download,
            verify_checksums=not skip_checksums, device=device, executor=executor, jobs=jobs,
            threads=threads, ray_address=ray_address, cpus_per_cell=cpus_per_cell,
            gpus_per_cell=gpus_per_cell, vectorize_seeds=vectorize_seeds, seed_chunk=seed_chunk,
            force=force, cell_timeout=cell_timeout, progress="log" if quiet else "auto",
            warn=warn)
    outcome = results.outcome
    assert outcome is not None  # a run's results say how it went
    out.print(results.table(), markup=False, highlight=False, soft_wrap=True)
    statuses = ", ".join(f"{count} {status}" for status, count in sorted(outcome.statuses.items()))
    err.print(f"{len(outcome.records)} cells ({statuses}; {outcome.cached} from earlier runs); "
              f"records in {results.folder}", markup=False, highlight=False)
    if outcome.failed:
        raise typer.Exit(1)


def _seeds(text: str | None) -> list[int] | None:
    if text is None:
        return None
    try:
        return [int(item) for item in text.split(",") if item.strip()]
    except ValueError:
        raise InputError(f"--only-seeds: expected seeds separated by commas, got '{text}'"
                         ) from None


@contextlib.contextmanager
def _interruptible():
    """Ctrl-C and SIGTERM: one line saying what is kept and how to go on, and exit code 130
    (SIGINT) or 143 (SIGTERM), as a shell reports a process ended by that signal."""
    from ..suite.running import sigterm_stops

    with sigterm_stops() as sigterm:
        try:
            yield
        except RunInterrupted as stop:
            # Told by the signal, not only by the exception: an executor's library may turn
            # ``Terminated`` into a plain KeyboardInterrupt on its way (Ray's waits do).
            terminated = stop.terminated or sigterm.is_set()
            said = "terminated (SIGTERM)" if terminated else "interrupted"
            err.print(f"{said}: {stop.finished} of {stop.total} cells have records in "
                      f"{stop.folder}; run the same command again to resume (running cells "
                      "continue from their last epoch)", markup=False, highlight=False,
                      soft_wrap=True)
            raise typer.Exit(143 if terminated else 130) from None


@contextlib.contextmanager
def _storage_errors():
    """A write that fails mid-run (disk full): one line, exit 1; what was written stays."""
    try:
        yield
    except StorageError as error:
        err.print(f"error: {error}", markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None


@app.command()
def validate(
    suite: SuiteArgument,
    set_: SetOption = [],  # noqa: B006
    plugin: PluginOption = [],  # noqa: B006
) -> None:
    """Check a suite file without running it."""
    with input_errors():
        registry, loaded = load_suite_with_plugins(suite, set_, plugin)
        cells = loaded.cells(registry=registry)
    skipped = sum(1 for c in cells if c.skip_reason)
    out.print(f"{suite}: ok: {len(loaded.datasets)} datasets, {len(loaded.algorithms)} "
              f"algorithms, {len(loaded.seeds)} seeds, {len(cells)} cells "
              f"({skipped} skipped)", markup=False, highlight=False)
