"""``bench table``, ``bench plot`` and ``bench report``: from a results folder, through the
Python API (``results.folder``: ``bioplaus_bench.load``)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from .common import Compare, TableFormat, app, err, input_errors, out, write_text

if TYPE_CHECKING:
    from ..results.folder import Results

ReferenceOption = Annotated[Path | None, typer.Option(
    help="A reference results folder (e.g. results/reference/table1): its cells of your datasets "
    "stand beside yours, with Welch's p-value of each of your methods against each reference "
    "method; a different protocol (epochs, split, subset, network, precision...) refuses.")]


def _warn(line: str) -> None:
    err.print(line, markup=False, highlight=False, soft_wrap=True)


def _load(results: Path, reference: Path | None = None) -> Results:
    """The API's ``load``, its warnings on the error console."""
    from ..results.folder import load

    return load(results, reference=reference, warn=_warn)


@app.command()
def table(
    results: Annotated[Path, typer.Argument(help="A results folder written by `bench run`.")],
    fmt: Annotated[TableFormat, typer.Option("--format", "-f")] = TableFormat["markdown"],
    output: Annotated[Path | None, typer.Option("--out", "-o", help="Write to this file.")
                      ] = None,
    compare: Annotated[Compare | None, typer.Option(
        help="paper: put the published numbers beside ours.")] = None,
    baseline: Annotated[str | None, typer.Option(
        help="The algorithm entry p-values compare against [default: the one the records "
        "name, else 'bp'; a reference entry is 'ref:NAME'].")] = None,
    reference: ReferenceOption = None,
) -> None:
    """Aggregate the records of a results folder into the paper's table layout. Cells whose
    algorithm's source changed since they were run are marked with a dagger."""
    with input_errors():
        loaded = _load(results, reference)
        text = loaded.table(fmt.value, compare.value if compare else None, baseline=baseline)
    if output is None:
        out.print(text, markup=False, highlight=False, soft_wrap=True, end="")
    else:
        write_text(output, text)
    if fmt is TableFormat["csv"]:  # a CSV holds data only: the notes go to stderr
        for note in loaded.notes:
            _warn(note)
    if reference is not None and loaded.reference_name != str(reference) \
            and fmt is not TableFormat["markdown"]:  # the markdown table says how it was cut
        _warn(f"note: --reference {loaded.reference_name}")


@app.command()
def plot(
    results: Annotated[Path, typer.Argument(help="A results folder written by `bench run`.")],
    figure: Annotated[str, typer.Option(help="angles, nullspace or curves.")] = "angles",
    output: Annotated[Path, typer.Option("--out", "-o", help="The figure file (.png or .pdf).")
                      ] = Path("figure.png"),
    layer: Annotated[int | None, typer.Option(
        help="angles: the one layer to show [default: every layer, one row each]; nullspace: "
        "the layer [default: the logged one].")] = None,
    dataset: Annotated[list[str] | None, typer.Option(
        help="Only this dataset's records (its key, e.g. mnist); repeat for several.")] = None,
) -> None:
    """Figure 4 style angle curves, Figure 2 nullspace bars, or learning curves."""
    from ..results.plots import plot as draw

    with input_errors():
        path, notes = draw(_load(results).own_records, figure, output, layer, dataset or ())
    for note in notes:
        err.print(f"note: {note}", markup=False, highlight=False, soft_wrap=True)
    err.print(f"wrote {path}", markup=False, highlight=False)


@app.command()
def report(
    results: Annotated[Path, typer.Argument(help="A results folder written by `bench run`.")],
    output: Annotated[Path | None, typer.Option(
        "--out", "-o", help="The HTML file [default: RESULTS/report.html].")] = None,
    reference: ReferenceOption = None,
) -> None:
    """One self-contained HTML page: protocol, table, seeds, curves, alignment, status, provenance."""
    with input_errors():
        path = _load(results, reference).report(output)
    err.print(f"wrote {path}", markup=False, highlight=False, soft_wrap=True)
