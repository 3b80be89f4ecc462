"""``bench run`` and ``bench validate``."""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from ..errors import InputError, StorageError, Terminated
from ..execution.threads import set_torch_threads
from .common import (
    DataDirOption,
    DeviceOption,
    DownloadOption,
    PluginOption,
    SetOption,
    SkipChecksumsOption,
    SuiteArgument,
    app,
    data_settings,
    err,
    input_errors,
    load_suite_with_plugins,
    names,
    out,
)

if TYPE_CHECKING:
    from ..execution.executors import SeedVectorization
    from ..results.store import ResultStore


@app.command()
def run(
    suite: SuiteArgument,
    results: Annotated[Path | None, typer.Option(
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
    executor: Annotated[str, typer.Option(
        help="An executor plugin (bench list): local (this machine; see --jobs), ray (cells as "
        "Ray tasks), or one of yours.")] = "local",
    ray_address: Annotated[str | None, typer.Option(
        help="Ray cluster address (default: start a local Ray; 'auto': the running cluster).")
    ] = None,
    cpus_per_cell: Annotated[float, typer.Option(
        min=0.01, help="Ray: CPUs reserved per cell.")] = 1,
    gpus_per_cell: Annotated[float, typer.Option(min=0, help="Ray: GPUs reserved per cell.")] = 0,
    vectorize_seeds: Annotated[bool | None, typer.Option(
        "--vectorize-seeds/--serial-seeds",
        help="Run the seeds of each cell as one computation (each seed's result is its serial "
        "run's, to rounding) [default: the suite's vectorize_seeds, else serial].")] = None,
    seed_chunk: Annotated[int | None, typer.Option(
        min=1, help="With --vectorize-seeds: at most N seeds at once, also for networks that "
        "run serially by default (on a CPU: CNNs and large MLPs, where stacking does not pay) "
        "[default: as many as memory holds].")] = None,
    cell_timeout: Annotated[float | None, typer.Option(
        help="End a cell that runs longer than this many seconds (status "
        "timeout; a re-run continues it from its last epoch) [default: the suite's "
        "protocol.cell_timeout].")] = None,
) -> None:
    """Run a suite: every (dataset, algorithm, seed) cell without a finished record."""
    from .. import data as data_module
    from ..execution.executors import ExecutorOptions, run_cells
    from ..execution.inputs import with_inputs
    from ..execution.progress import LogReporter, RichReporter
    from ..execution.setup import Environment
    from ..results.report import records_frame, render, summarise
    from ..results.store import ResultStore

    with input_errors():
        set_torch_threads(threads)
        registry, loaded = load_suite_with_plugins(suite, set_, plugin, only=names(only),
                                                   executor=executor)
        chosen = registry.executor(executor)
        settings = data_settings(data_dir, download, skip_checksums)
        environment = Environment(settings, device, cell_timeout)
        cells = loaded.cells(seeds=seeds, only=names(only), datasets=names(datasets),
                             epochs=epochs, subset=subset, registry=registry)
        if only_seeds is not None:
            cells = _only_seeds(cells, only_seeds)
        for source in sorted({c.dataset.source for c in cells if not c.skip_reason}):
            data_module.check_available(registry.dataset(source), settings)
        cells = with_inputs(cells, registry, settings)
        store = ResultStore(results or Path("results") / loaded.name)
        reporter = LogReporter() if quiet or not sys.stderr.isatty() else RichReporter()
        options = ExecutorOptions(jobs, ray_address, cpus_per_cell, gpus_per_cell)
        vectorize = _seed_vectorization(vectorize_seeds if vectorize_seeds is not None
                                        else loaded.vectorize_seeds, seed_chunk, jobs, executor)
        with store.lock(), _interruptible(store, cells), _storage_errors():
            store.make_folders(cells)
            summary = run_cells(chosen, cells, registry=registry,
                                plugin_files=list(registry.files),
                                store=store, env=environment, reporter=reporter,
                                options=options, force=force, vectorize=vectorize)
    # Only this run's records: a record of the same cell from other code, data or settings
    # is not a result of this run.
    records = [record for cell in cells if (record := store.load(cell)) is not None
               and record.config_hash == cell.config_hash()]
    out.print(render(summarise(records_frame(records), loaded.baseline), "markdown"), markup=False,
              highlight=False, soft_wrap=True)
    statuses = ", ".join(f"{count} {status}" for status, count in sorted(summary.statuses.items()))
    err.print(f"{len(cells)} cells ({statuses}; {summary.cached} from earlier runs); "
              f"records in {store.root}", markup=False, highlight=False)
    if summary.failed:
        raise typer.Exit(1)


def _only_seeds(cells: list, text: str) -> list:
    try:
        chosen = {int(item) for item in text.split(",") if item.strip()}
    except ValueError:
        raise InputError(f"--only-seeds: expected seeds separated by commas, got '{text}'"
                         ) from None
    known = {cell.seed for cell in cells}
    if not chosen or chosen - known:
        missing = ", ".join(map(str, sorted(chosen - known))) or "none given"
        raise InputError(f"--only-seeds: not among the suite's seeds ({missing}); it has "
                         f"{', '.join(map(str, sorted(known)))}")
    return [cell for cell in cells if cell.seed in chosen]


def _seed_vectorization(on: bool, chunk: int | None, jobs: int, executor: str
                        ) -> SeedVectorization | None:
    if not on:
        if chunk is not None:
            raise InputError("--seed-chunk needs --vectorize-seeds (or vectorize_seeds: true in "
                             "the suite)")
        return None
    from ..execution.executors import SeedVectorization

    if jobs != 1 or executor != "local":
        raise InputError("--vectorize-seeds runs the seeds of each cell together in this process: "
                         "use it with the local executor and without --jobs")
    return SeedVectorization(chunk)


@contextlib.contextmanager
def _interruptible(store: ResultStore, cells: list):
    """Ctrl-C and SIGTERM: one line saying what is kept and how to go on, and exit code 130
    (SIGINT) or 143 (SIGTERM), as a shell reports a process ended by that signal."""
    with _sigterm_stops() as sigterm:
        try:
            yield
        except KeyboardInterrupt as stop:
            # Told by the signal, not only by the exception: an executor's library may turn
            # ``Terminated`` into a plain KeyboardInterrupt on its way (Ray's waits do).
            terminated = isinstance(stop, Terminated) or sigterm.is_set()
            said = "terminated (SIGTERM)" if terminated else "interrupted"
            finished = sum(store.is_finished(cell) for cell in cells)
            err.print(f"{said}: {finished} of {len(cells)} cells have records in {store.root}; "
                      "run the same command again to resume (running cells continue from their "
                      "last epoch)", markup=False, highlight=False, soft_wrap=True)
            raise typer.Exit(143 if terminated else 130) from None


@contextlib.contextmanager
def _sigterm_stops():
    """While cells run, SIGTERM raises ``Terminated`` (and sets the event yielded). An ignored
    SIGTERM stays ignored (the starter asked for it), and so does an ignored SIGINT, which a
    shell without job control gives a background job so that Ctrl-C stops only the foreground
    one: ``kill PID`` stops such a run gracefully."""
    received = threading.Event()
    if threading.current_thread() is not threading.main_thread() \
            or signal.getsignal(signal.SIGTERM) == signal.SIG_IGN:
        yield received
        return

    def terminate(signum, frame) -> None:
        received.set()
        raise Terminated()

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        yield received
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)


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
