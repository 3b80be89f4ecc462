"""``bench table`` and ``bench plot``: from a results folder."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from ..errors import InputError, PluginError, did_you_mean
from .common import (
    Compare,
    TableFormat,
    app,
    err,
    input_errors,
    load_plugins,
    out,
    write_text,
)

if TYPE_CHECKING:
    import pandas as pd

    from ..results.record import Record
    from ..results.store import ResultStore

ReferenceOption = Annotated[Path | None, typer.Option(
    help="A reference results folder (e.g. results/reference/table1): its cells of your datasets "
    "stand beside yours, with Welch's p-value of each of your methods against each reference "
    "method; a different protocol (epochs, split, subset, network, precision...) refuses.")]


def _read_records(results: Path) -> tuple[ResultStore, list]:
    """The records of a results folder (its store says what it skipped); an InputError when
    there is no folder or no record."""
    from ..results.report import skipped_note
    from ..results.store import ResultStore

    if not results.is_dir():
        raise InputError(
            f"not a results folder: {results} is a file; expected a folder of records "
            "(<dataset>/<algorithm>/seed-N.json)" if results.exists()
            else f"results folder not found: {results}")
    store = ResultStore(results)
    records = list(store.records())
    if not records:
        raise InputError(f"no records in {results}"
                         + (f" ({skipped_note(store.skipped)})" if store.skipped else ""))
    return store, records


def _skip_notes(store: ResultStore, reference: ResultStore | None) -> list[str]:
    """The sentences that name the files of the results folder, and of the reference folder,
    that were not counted."""
    from ..results.report import skipped_note

    folders = [(store, "the results folder")]
    if reference is not None:
        folders.append((reference, f"the reference folder {reference.root}"))
    return [skipped_note(s.skipped, folder) for s, folder in folders if s.skipped]


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
    from ..results.reference import reference_section
    from ..results.report import render

    with input_errors():
        store, records = _read_records(results)
        their_store, theirs = _read_records(reference) if reference is not None else (None, None)
        notes = _skip_notes(store, their_store)
        frame = _frame(records, theirs, reference)
        if baseline is not None and baseline not in set(frame.algorithm):
            raise InputError(f"--baseline: no entry '{baseline}' in {results}"
                             f"{did_you_mean(baseline, set(frame.algorithm))}")
        summary = _summary(frame, baseline, with_reference=reference is not None)
    text = render(summary, fmt.value, compare=compare is Compare.paper, notes=notes)
    if reference is not None and fmt is TableFormat["markdown"]:
        text += "\n".join(reference_section(summary, str(reference))) + "\n"
    if output is None:
        out.print(text, markup=False, highlight=False, soft_wrap=True, end="")
    else:
        write_text(output, text)
    if fmt is TableFormat["csv"]:  # a CSV holds data only: the notes go to stderr
        for note in notes:
            err.print(note, markup=False, highlight=False, soft_wrap=True)


def _frame(records: list[Record], reference: list[Record] | None, name: Path | None
           ) -> pd.DataFrame:
    """The table's frame: your records, with the reference's cells beside them when there is a
    reference of the same protocol (an InputError naming what differs when not)."""
    from ..results.reference import check_protocol, combined_frame
    from ..results.report import records_frame

    if reference is None:
        return records_frame(records)
    check_protocol(records, reference, str(name))
    return combined_frame(records, reference)


def _summary(frame: pd.DataFrame, baseline: str | None = None, *, with_reference: bool = False
             ) -> pd.DataFrame:
    """The table's summary; cells run by code that has changed since are marked."""
    from ..results.reference import add_reference_statistics, mark_changed_code
    from ..results.report import summarise

    summary = summarise(frame, baseline)
    if with_reference:
        summary = add_reference_statistics(summary, frame)
    return mark_changed_code(summary, frame, _current_code(set(frame.algorithm_name)))


def _current_code(algorithms: set[str]) -> dict[str, str]:
    """The source digest of each installed algorithm among ``algorithms`` as a run would record
    it now (plugin files are not loaded here: their cells are not judged)."""
    from ..registry import Wanted
    from ..run.inputs import code_identity

    try:
        registry = load_plugins([], Wanted(algorithms=frozenset(algorithms)))
    except PluginError as error:  # a table needs no plugin: say why nothing is judged, go on
        err.print(f"warning: cells not checked against the current code: {error}",
                  markup=False, highlight=False, soft_wrap=True)
        return {}
    return {name: digest for name in algorithms if name in registry
            if (digest := code_identity(registry.get(name).cls).get("source_sha256"))}


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
    reference: ReferenceOption = None,
) -> None:
    """One self-contained HTML page: protocol, table, seeds, curves, alignment, status, provenance."""
    from ..results.page import build

    with input_errors():
        store, records = _read_records(results)
        their_store, theirs = _read_records(reference) if reference is not None else (None, None)
        summary = _summary(_frame(records, theirs, reference), with_reference=theirs is not None)
        text = build(records, summary=summary, notes=_skip_notes(store, their_store),
                     reference=str(reference) if reference is not None else None)
    path = output if output is not None else results / "report.html"
    write_text(path, text)
    err.print(f"wrote {path}", markup=False, highlight=False, soft_wrap=True)
