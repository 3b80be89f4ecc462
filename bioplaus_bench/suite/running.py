"""Running a suite from Python: ``bioplaus_bench.run(suite, ...)`` runs every (dataset, algorithm,
seed) cell without a finished record and gives the run's records as a ``Results``, the object
``bioplaus_bench.load`` gives for a folder; ``bioplaus_bench.tune(suite, ...)`` tunes its searched
entries under its budget. ``bench run`` and ``bench tune`` are these functions behind a command
line (they add only the signal handling and the printing).

    import bioplaus_bench
    results = bioplaus_bench.run("suites/smoke.yaml", only=["bp", "dfa"], epochs=2)
    results.summary()          # the table as a DataFrame
    results.curves             # one row per record and epoch
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from ..errors import InputError, RunInterrupted, Terminated

if TYPE_CHECKING:
    from ..data import DataSettings
    from ..execution.executors import SeedVectorization
    from ..execution.progress import LogReporter
    from ..registry import Registry
    from ..results.folder import Results
    from ..spec.cell import Cell
    from .document import Suite
    from .tune import StudyResult

Progress = Literal["auto", "live", "log"]


def run(suite: str | Path, *,
        datasets: Sequence[str] | None = None,
        only: Sequence[str] | None = None,
        seeds: int | None = None,
        only_seeds: Iterable[int] | None = None,
        only_cells: Sequence[tuple[str, str, int]] | None = None,
        epochs: int | None = None,
        subset: int | None = None,
        overrides: Sequence[str] = (),
        plugins: Sequence[str | Path] = (),
        out: str | Path | None = None,
        data_dir: str | Path | None = None,
        download: bool = False,
        verify_checksums: bool = True,
        device: str = "cpu",
        executor: str = "local",
        jobs: int = 1,
        threads: int | None = None,
        ray_address: str | None = None,
        cpus_per_cell: float = 1,
        gpus_per_cell: float = 0,
        vectorize_seeds: bool | None = None,
        seed_chunk: int | None = None,
        force: bool = False,
        cell_timeout: float | None = None,
        progress: Progress | LogReporter = "auto",
        warn: Callable[[str], None] | None = None) -> Results:
    """Run the cells of ``suite`` (a suite file) that have no finished record in ``out``
    [default: ``results/<suite name>``] and return this run's records (those already there with
    the same code, data and settings included) as a ``Results``; ``Results.outcome`` says how
    each cell ended and how many were reused.

    The cells: ``datasets`` and ``only`` (algorithm entries) choose among the suite's, ``seeds``
    keeps the first N of its seeds and ``only_seeds`` those seeds, ``only_cells`` those
    (dataset, entry, seed) cells, run in that order (a share of the work, not a change of
    protocol: the reference campaign's missing cells, cheapest first); ``epochs`` and
    ``subset`` (the first N training samples) change the protocol, and ``overrides`` set suite
    values (``"KEY.PATH=VALUE"``, as ``--set``).
    ``plugins``: plugin files to load (they win over installed plugins of the same name).

    Where they run: ``executor`` ("local", "ray", or an executor plugin's name), ``jobs`` local
    worker processes, ``threads`` torch threads per process [default: $OMP_NUM_THREADS, else 1;
    this process's count is set], ``device``; ``vectorize_seeds`` runs the seeds of each cell as
    one computation [default: the suite's setting], at most ``seed_chunk`` at once (with
    ``jobs`` N, each such stack in a worker process of its own, N at once).
    ``cell_timeout`` (seconds) overrides the suite's limit per cell. ``force`` re-runs cells
    that have records. Data lies under ``data_dir`` [default: $BIOPLAUS_DATA, else ./data] and is
    downloaded only when ``download`` (or BIOPLAUS_DOWNLOAD=1).

    ``progress``: "live" (a rich display), "log" (plain lines on stderr), "auto" (live on a
    terminal, else log), or a reporter of your own (``execution.progress.LogReporter``).
    ``warn``: where warnings go, one line each [default: stderr].

    Raises ``InputError`` (one line saying what is wrong and where) for a bad suite, option or
    missing data, before any cell runs, and ``StorageError`` when a record cannot be written.
    A failing cell does not raise: its record says ``error`` (``Results.outcome.failed``).
    Ctrl-C raises ``RunInterrupted`` (a ``KeyboardInterrupt`` saying how many cells are kept).
    """
    from ..execution.executors import ExecutorOptions, run_cells
    from ..execution.inputs import with_inputs
    from ..execution.setup import Environment
    from ..execution.threads import set_torch_threads
    from ..results.folder import Results
    from ..results.store import ResultStore

    warn = warn or _to_stderr
    reporter = _reporter(progress)
    set_torch_threads(threads)
    registry, loaded = load_suite_with_plugins(suite, overrides, plugins, only=only,
                                               executor=executor, warn=warn)
    chosen = registry.executor(executor)
    settings = data_settings(data_dir, download, verify_checksums)
    environment = Environment(settings, device, cell_timeout)
    cells = loaded.cells(seeds=seeds, only=list(only) if only else None,
                         datasets=list(datasets) if datasets else None, epochs=epochs,
                         subset=subset, registry=registry)
    if only_seeds is not None:
        cells = _only_seeds(cells, only_seeds)
    if only_cells is not None:
        cells = _only_cells(cells, only_cells)
    _check_data({cell.dataset.source for cell in cells if not cell.skip_reason}, registry,
                settings)
    cells = with_inputs(cells, registry, settings)
    store = ResultStore(Path(out) if out is not None else Path("results") / loaded.name)
    vectorize = _seed_vectorization(
        vectorize_seeds if vectorize_seeds is not None else loaded.vectorize_seeds,
        seed_chunk, executor)
    options = ExecutorOptions(jobs, ray_address, cpus_per_cell, gpus_per_cell)
    with store.lock():
        store.make_folders(cells)
        try:
            outcome = run_cells(chosen, cells, registry=registry,
                                plugin_files=list(registry.files), store=store, env=environment,
                                reporter=reporter, options=options, force=force,
                                vectorize=vectorize)
        except KeyboardInterrupt as stop:
            finished = sum(store.is_finished(cell) for cell in cells)
            raise RunInterrupted(finished, len(cells), store.root,
                                 terminated=isinstance(stop, Terminated)) from stop
    return Results(store, outcome.in_order(), warn=warn, outcome=outcome,
                   baseline=loaded.baseline)


@dataclass(frozen=True)
class Tuning:
    """What ``tune`` found: each study's best trial (``studies``), and the tuned suite, as
    text (``suite``) and where it was written (``path``)."""

    studies: list[StudyResult]
    suite: str
    path: Path


def tune(suite: str | Path, *,
         only: Sequence[str] | None = None,
         datasets: Sequence[str] | None = None,
         trials: int | None = None,
         overrides: Sequence[str] = (),
         plugins: Sequence[str | Path] = (),
         out: str | Path | None = None,
         data_dir: str | Path | None = None,
         download: bool = False,
         verify_checksums: bool = True,
         device: str = "cpu",
         executor: str = "local",
         jobs: int = 1,
         threads: int | None = None,
         ray_address: str | None = None,
         cpus_per_cell: float = 1,
         gpus_per_cell: float = 0,
         log: Callable[[str], None] | None = None) -> Tuning:
    """Tune every entry of ``suite`` with a ``search:`` space (of ``only``), on each dataset
    (of ``datasets``), under the suite's ``tuning:`` budget, as ``bench tune`` does
    (docs/suites.md, "Tuning"): the studies are ``<out>/tuning/<dataset>/<entry>.db``
    [``out`` default: ``results/<suite name>``], resumed where they stopped, and the suite with
    the tuned values and their provenance is written, atomically, to
    ``<out>/tuning/<suite>-tuned.yaml``. ``trials`` overrides the budget's count (no change of
    protocol); ``jobs`` trials run at once, through ``executor``'s tasks (local: in worker
    processes; ray: as Ray tasks, which must reach the study file); ``log`` gets one line per
    trial [default: stderr]. The other arguments are ``run``'s. Raises ``InputError`` (one line) for a
    bad suite, missing data, or a study of another protocol."""
    from ..execution.executors import ExecutorOptions
    from ..execution.setup import Environment
    from ..execution.threads import set_torch_threads
    from ..files import write_atomically
    from ..results.numbers import one_line
    from .fragments import fragment_yaml
    from .tune import tune as search
    from .tune import tuned_document

    log = log or _to_stderr
    set_torch_threads(threads)
    registry, loaded = load_suite_with_plugins(suite, overrides, plugins, only=only,
                                               executor=executor, warn=log)
    settings = data_settings(data_dir, download, verify_checksums)
    # An unknown dataset id is left to Suite.cells, which names it.
    _check_data({loaded.datasets[d].source for d in datasets or loaded.datasets
                 if d in loaded.datasets}, registry, settings)
    folder = Path(out) if out is not None else Path("results") / loaded.name
    found = search(loaded, registry, folder, only=list(only) if only else None,
                   datasets=list(datasets) if datasets else None, trials=trials,
                   executor=registry.executor(executor),
                   options=ExecutorOptions(jobs, ray_address, cpus_per_cell, gpus_per_cell),
                   env=Environment(settings, device), plugin_files=list(registry.files),
                   log=log)
    text = (f"# Written by bench tune from {one_line(str(loaded.path))}: the tuned values of "
            "each entry are under datasets.<id>,\n# where they came from under tuned.<id>.\n"
            + fragment_yaml(tuned_document(loaded, found)))
    path = folder / "tuning" / f"{loaded.name}-tuned.yaml"
    try:
        write_atomically(path, text)
    except OSError as error:
        raise InputError(f"cannot write {path}: {error.strerror or error}") from None
    return Tuning(found, text, path)


def load_suite_with_plugins(suite: str | Path, overrides: Sequence[str],
                            plugins: Sequence[str | Path], *, only: Sequence[str] | None = None,
                            executor: str | None = None,
                            warn: Callable[[str], None] | None = None) -> tuple[Registry, Suite]:
    """The registry and the suite. With ``only``, only the installed plugins that the chosen
    entries, the suite's datasets and ``executor`` need are loaded (every plugin file is), and
    only those entries are checked against their plugins."""
    from ..registry import load_registry
    from .load import load_suite, wanted_plugins

    overrides, only = list(overrides), list(only) if only else None
    wanted = wanted_plugins(suite, overrides, only, executor) if only else None
    registry = load_registry([Path(p) for p in plugins], wanted)
    for warning in registry.warnings:
        (warn or _to_stderr)(f"warning: {warning}")
    return registry, load_suite(suite, registry, overrides, only=only)


def data_settings(data_dir: str | Path | None, download: bool, verify_checksums: bool
                  ) -> DataSettings:
    """Where the datasets lie [default: $BIOPLAUS_DATA, else ./data] and whether they may be
    downloaded (also BIOPLAUS_DOWNLOAD=1)."""
    from .. import data

    return data.DataSettings(
        root=Path(data_dir) if data_dir is not None else data.default_data_dir(),
        download=download or os.environ.get("BIOPLAUS_DOWNLOAD") == "1",
        verify_checksums=verify_checksums)


def _check_data(sources: set[str], registry: Registry, settings: DataSettings) -> None:
    """Every dataset of ``sources`` is there (or may be downloaded): one line naming the folder
    and the files expected, before anything runs."""
    from ..data import check_available

    for source in sorted(sources):
        check_available(registry.dataset(source), settings)


def _only_seeds(cells: list[Cell], seeds: Iterable[int]) -> list[Cell]:
    chosen, known = set(seeds), {cell.seed for cell in cells}
    if not chosen or chosen - known:
        missing = ", ".join(map(str, sorted(chosen - known))) or "none given"
        raise InputError(f"--only-seeds: not among the suite's seeds ({missing}); it has "
                         f"{', '.join(map(str, sorted(known)))}")
    return [cell for cell in cells if cell.seed in chosen]


def _only_cells(cells: list[Cell], chosen: Sequence[tuple[str, str, int]]) -> list[Cell]:
    by_key = {(cell.dataset_id, cell.algorithm_id, cell.seed): cell for cell in cells}
    unknown = [key for key in chosen if key not in by_key]
    if not chosen or unknown:
        named = "/".join(map(str, unknown[0])) if unknown else "none given"
        raise InputError(f"only_cells: {named} is not among the cells chosen; expected "
                         "(dataset, entry, seed) of the suite's cells")
    return [by_key[key] for key in dict.fromkeys(chosen)]


@contextlib.contextmanager
def sigterm_stops() -> Iterator[threading.Event]:
    """While cells run, SIGTERM raises ``Terminated`` (and sets the event yielded), which
    ``run`` turns into ``RunInterrupted`` as for Ctrl-C. An ignored SIGTERM stays ignored (the
    starter asked for it), and so does an ignored SIGINT, which a shell without job control
    gives a background job so that Ctrl-C stops only the foreground one: ``kill PID`` stops
    such a run gracefully. Outside the main thread, signals are not this code's to handle."""
    received = threading.Event()
    if threading.current_thread() is not threading.main_thread() \
            or signal.getsignal(signal.SIGTERM) == signal.SIG_IGN:
        yield received
        return

    def terminate(signum: int, frame: object) -> None:
        received.set()
        raise Terminated()

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        yield received
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)


def _seed_vectorization(on: bool, chunk: int | None, executor: str
                        ) -> SeedVectorization | None:
    if not on:
        if chunk is not None:
            raise InputError("--seed-chunk needs --vectorize-seeds (or vectorize_seeds: true in "
                             "the suite)")
        return None
    from ..execution.executors import SeedVectorization

    if executor != "local":
        raise InputError("--vectorize-seeds runs the seeds of each cell together in one process: "
                         "use it with the local executor (-j N runs N such stacks at once)")
    return SeedVectorization(chunk)


def _reporter(progress: Progress | LogReporter) -> LogReporter:
    from ..execution import progress as reporters

    if not isinstance(progress, str):
        return progress
    if progress not in ("auto", "live", "log"):
        raise InputError(f"progress: expected 'auto', 'live', 'log' or a reporter, "
                         f"got {progress!r}")
    live = progress == "live" or progress == "auto" and sys.stderr.isatty()
    return reporters.RichReporter() if live else reporters.LogReporter()


def _to_stderr(line: str) -> None:
    print(line, file=sys.stderr)

