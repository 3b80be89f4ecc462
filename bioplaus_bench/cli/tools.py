"""``bench damping`` and ``bench tune``: searches over a suite."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from ..errors import InputError
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
    out,
    write_text,
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
    from .. import data as data_module
    from ..execution.setup import Environment
    from ..execution.threads import set_torch_threads
    from ..suite import fragment_yaml
    from ..suite.tune import tune as search

    with input_errors():
        set_torch_threads()  # as bench run: OMP_NUM_THREADS, else one
        registry, loaded = load_suite_with_plugins(suite, set_, plugin)
        if algorithm not in loaded.algorithms or dataset not in loaded.datasets:
            loaded.cells(only=[algorithm], datasets=[dataset])  # raises the named error
        settings = data_settings(data_dir, download, skip_checksums)
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
        write_text(output, text)
        err.print(f"wrote {output}", markup=False, highlight=False)
    err.print("or on the command line: " + " ".join(f"--set {item}" for item in best["set"]),
              markup=False, highlight=False, soft_wrap=True)
