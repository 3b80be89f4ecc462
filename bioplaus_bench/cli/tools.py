"""``bench damping`` and ``bench tune``: searches over a suite."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from ..errors import InputError
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
    data_settings,
    err,
    input_errors,
    load_suite_with_plugins,
    names,
    out,
    warn,
)


@app.command()
def damping(
    suite: SuiteArgument,
    algorithm: Annotated[str, typer.Option(help="The algorithm entry to search for.")],
    dataset: Annotated[str, typer.Option(help="The dataset entry.")],
    epochs: Annotated[int, typer.Option(min=1, help="Training epochs before the search pass.")
                      ] = 3,
    grid: Annotated[str | None, typer.Option(
        help="Comma-separated λ values [default: 0 and the powers of ten from 1e-5 to 10].")
    ] = None,
    seed: Annotated[int | None, typer.Option(help="Seed (default: the suite's first).")] = None,
    data_dir: DataDirOption = None,
    download: DownloadOption = False,
    skip_checksums: SkipChecksumsOption = False,
    device: DeviceOption = "cpu",
    set_: SetOption = [],  # noqa: B006
    plugin: PluginOption = [],  # noqa: B006
) -> None:
    """Search the GNT damping λ of every hidden layer (algorithms.md §9.2) and print it for the suite."""
    from .. import data as data_module
    from ..execution.damping import DAMPING_GRID, damping_search
    from ..execution.setup import Environment
    from ..execution.threads import set_torch_threads
    from ..suite import fragment, fragment_yaml

    with input_errors():
        set_torch_threads()  # as bench run: OMP_NUM_THREADS, else one
        registry, loaded = load_suite_with_plugins(suite, set_, plugin)
        try:
            values = DAMPING_GRID if grid is None else tuple(float(v) for v in grid.split(","))
        except ValueError:
            raise InputError(f"--grid expects comma-separated numbers, got '{grid}'") from None
        cell = loaded.cell(algorithm, dataset, seed=seed, epochs=epochs, registry=registry)
        settings = data_settings(data_dir, download, skip_checksums)
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
    only: Annotated[str | None, typer.Option(
        help="Only these algorithm entries (NAME[,NAME]) [default: every entry with a `search:` "
        "space].")] = None,
    datasets: Annotated[str | None, typer.Option(
        "--datasets", help="Only these datasets (NAME[,NAME]).")] = None,
    trials: Annotated[int | None, typer.Option(
        min=1, help="Finished trials per study [default: the suite's tuning.trials]; more "
        "continues the studies, it is not a change of protocol.")] = None,
    results: Annotated[Path | None, typer.Option(
        "--out", "-o", help="Folder of the studies (tuning/<dataset>/<entry>.db) and of the "
        "tuned suite (tuning/<suite>-tuned.yaml) [default: results/<suite name>].")] = None,
    jobs: Annotated[int, typer.Option(
        "--jobs", "-j", min=1, help="Run N trials at once: in local worker processes (each with "
        "--threads torch threads), or as Ray tasks with --executor ray.")] = 1,
    threads: Annotated[int | None, typer.Option(
        min=1, help="Torch threads per process [default: $OMP_NUM_THREADS, else 1].")] = None,
    executor: ExecutorOption = "local",
    ray_address: RayAddressOption = None,
    cpus_per_cell: CpusPerCellOption = 1,
    gpus_per_cell: GpusPerCellOption = 0,
    data_dir: DataDirOption = None,
    download: DownloadOption = False,
    skip_checksums: SkipChecksumsOption = False,
    device: DeviceOption = "cpu",
    set_: SetOption = [],  # noqa: B006
    plugin: PluginOption = [],  # noqa: B006
) -> None:
    """Tune every entry with a `search:` space under the suite's `tuning:` budget (Optuna TPE,
    pruned on each epoch's validation error, never the test error); stopped searches resume
    from their study files. Prints and writes the suite with the tuned values and their
    provenance."""
    from ..suite.running import tune as tune_suite

    with input_errors():
        tuning = tune_suite(suite, only=names(only), datasets=names(datasets), trials=trials,
                            overrides=set_, plugins=plugin, out=results, data_dir=data_dir,
                            download=download, verify_checksums=not skip_checksums,
                            device=device, jobs=jobs, threads=threads, executor=executor,
                            ray_address=ray_address, cpus_per_cell=cpus_per_cell,
                            gpus_per_cell=gpus_per_cell, log=warn)
    out.print(tuning.suite, markup=False, highlight=False, soft_wrap=True, end="")
    err.print(f"wrote {tuning.path}", markup=False, highlight=False)
