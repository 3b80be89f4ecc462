"""``bench table`` and ``bench plot``: from a results folder."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..errors import InputError, did_you_mean
from ..results.report import records_frame, render, summarise, unreadable_note
from ..results.store import ResultStore
from .common import (
    Compare,
    TableFormat,
    app,
    err,
    input_errors,
    out,
    write_text,
)


def _read_records(results: Path) -> tuple[ResultStore, list]:
    """The records of a results folder (its store says what it skipped); an InputError when
    there is no folder or no record."""
    if not results.is_dir():
        raise InputError(f"results folder not found: {results}")
    store = ResultStore(results)
    records = list(store.records())
    if not records:
        raise InputError(f"no records in {results}"
                         + (f" ({unreadable_note(len(store.skipped))})" if store.skipped else ""))
    return store, records


@app.command()
def table(
    results: Annotated[Path, typer.Argument(help="A results folder written by `bench run`.")],
    fmt: Annotated[TableFormat, typer.Option("--format", "-f")] = TableFormat.markdown,
    output: Annotated[Path | None, typer.Option("--out", "-o", help="Write to this file.")
                      ] = None,
    compare: Annotated[Compare | None, typer.Option(
        help="paper: put the published numbers beside ours.")] = None,
    baseline: Annotated[str | None, typer.Option(
        help="The algorithm entry p-values compare against [default: the one the records "
        "name, else 'bp'].")] = None,
) -> None:
    """Aggregate the records of a results folder into the paper's table layout."""
    with input_errors():
        store, records = _read_records(results)
        frame = records_frame(records)
        if baseline is not None and baseline not in set(frame.algorithm):
            raise InputError(f"--baseline: no entry '{baseline}' in {results}"
                             f"{did_you_mean(baseline, set(frame.algorithm))}")
    text = render(summarise(frame, baseline), fmt.value,
                  compare=compare is Compare.paper, unreadable=len(store.skipped))
    if output is None:
        out.print(text, markup=False, highlight=False, soft_wrap=True, end="")
    else:
        write_text(output, text)
    if store.skipped and fmt is TableFormat.csv:  # a CSV holds data only: the note goes to stderr
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
    from ..results.plots import plot as draw

    with input_errors():
        _, records = _read_records(results)
        path = draw(records, figure, output, layer)
    err.print(f"wrote {path}", markup=False, highlight=False)


@app.command()
def report(
    results: Annotated[Path, typer.Argument(help="A results folder written by `bench run`.")],
    output: Annotated[Path | None, typer.Option(
        "--out", "-o", help="The HTML file [default: RESULTS/report.html].")] = None,
) -> None:
    """One self-contained HTML page: protocol, table, seeds, curves, alignment, status, provenance."""
    from ..results.page import build

    with input_errors():
        store, records = _read_records(results)
        text = build(records, unreadable=len(store.skipped))
    path = output if output is not None else results / "report.html"
    write_text(path, text)
    err.print(f"wrote {path}", markup=False, highlight=False, soft_wrap=True)
