"""``bench table`` and ``bench plot``: from a results folder."""

from __future__ import annotations

from collections.abc import Collection, Iterable
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
        frame, reference_name = _frame(records, theirs, reference)
        if baseline is not None and baseline not in set(frame.algorithm):
            raise InputError(f"--baseline: no entry '{baseline}' in {results}"
                             f"{did_you_mean(baseline, set(frame.algorithm))}")
        summary = _summary(frame, baseline, with_reference=reference is not None,
                           records=[*records, *(theirs or [])],
                           attested=_attested(results, reference))
    text = render(summary, fmt.value, compare=compare is Compare.paper, notes=notes)
    if reference is not None and fmt is TableFormat["markdown"]:
        text += "\n".join(reference_section(summary, reference_name)) + "\n"
    if output is None:
        out.print(text, markup=False, highlight=False, soft_wrap=True, end="")
    else:
        write_text(output, text)
    if fmt is TableFormat["csv"]:  # a CSV holds data only: the notes go to stderr
        for note in notes:
            err.print(note, markup=False, highlight=False, soft_wrap=True)
    if reference_name != str(reference) and fmt is not TableFormat["markdown"]:
        err.print(f"note: --reference {reference_name}", markup=False, highlight=False,
                  soft_wrap=True)


def _frame(records: list[Record], reference: list[Record] | None, name: Path | None
           ) -> tuple[pd.DataFrame, str]:
    """The table's frame: your records, with the reference's cells beside them when there is a
    reference of the same protocol, cut to your epoch count where you ran fewer (an InputError
    naming what differs when not); and the reference's name as the table shows it."""
    from ..results.reference import at_your_protocol, combined_frame, horizon_note
    from ..results.report import records_frame

    if reference is None:
        return records_frame(records), ""
    theirs, horizons = at_your_protocol(records, reference, str(name))
    note = horizon_note(horizons)
    return combined_frame(records, theirs), f"{name} ({note})" if note else str(name)


def _summary(frame: pd.DataFrame, baseline: str | None = None, *, with_reference: bool = False,
             records: Iterable[Record] = (), attested: Collection[tuple[str, str, str, str]] = ()
             ) -> pd.DataFrame:
    """The table's summary; cells run by code that has changed since, and not attested to
    reproduce them, are marked (``records``: the frame's, to tell which code made them)."""
    from ..results.reference import add_reference_statistics, mark_changed_code
    from ..results.report import summarise

    summary = summarise(frame, baseline)
    if with_reference:
        summary = add_reference_statistics(summary, frame)
    return mark_changed_code(summary, frame, _current_code(set(frame.algorithm_name), records),
                             attested)


def _attested(results: Path, reference: Path | None) -> set[tuple[str, str, str, str]]:
    """What the reference checks attested of the results folder's cells and of the reference
    folder's (its entries as the joint table names them)."""
    from ..results.attestation import attested_code
    from ..results.numbers import REF

    return attested_code(results) | (attested_code(reference, REF) if reference else set())


def _current_code(algorithms: set[str], records: Iterable[Record] = ()) -> dict[str, str]:
    """The source digest of each installed algorithm among ``algorithms`` as a run would record
    it now. Plugin files are not loaded here: their cells are not judged, not even by the code
    of an installed algorithm of the same name (one of ``records`` made by another
    implementation of a name leaves that name unjudged)."""
    from ..registry import Wanted
    from ..run.inputs import code_identity, same_implementation

    try:
        registry = load_plugins([], Wanted(algorithms=frozenset(algorithms)))
    except PluginError as error:  # a table needs no plugin: say why nothing is judged, go on
        err.print(f"warning: cells not checked against the current code: {error}",
                  markup=False, highlight=False, soft_wrap=True)
        return {}
    now = {name: code_identity(registry.get(name).cls) for name in algorithms if name in registry}
    others = {record.algorithm_name for record in records if record.algorithm_name in now
              and same_implementation(record.provenance.get("code") or {},
                                      now[record.algorithm_name]) is False}
    return {name: digest for name, identity in now.items() if name not in others
            if (digest := identity.get("source_sha256"))}


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
        _, records = _read_records(results)
        path, notes = draw(records, figure, output, layer, dataset or ())
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
    from ..results.page import build

    with input_errors():
        store, records = _read_records(results)
        their_store, theirs = _read_records(reference) if reference is not None else (None, None)
        frame, reference_name = _frame(records, theirs, reference)
        summary = _summary(frame, with_reference=theirs is not None,
                           records=[*records, *(theirs or [])],
                           attested=_attested(results, reference))
        text = build(records, summary=summary, notes=_skip_notes(store, their_store),
                     reference=reference_name or None)
    path = output if output is not None else results / "report.html"
    write_text(path, text)
    err.print(f"wrote {path}", markup=False, highlight=False, soft_wrap=True)
