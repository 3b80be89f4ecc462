"""A results folder in Python: ``load(folder)`` gives a ``Results`` whose records, learning curves
and table are pandas DataFrames, and whose table and page are exactly what ``bench table`` and
``bench report`` print and write (those commands are this module behind a command line).

    import bioplaus_bench
    results = bioplaus_bench.load("results/reference/table1")
    results.summary()                       # the table as a DataFrame
    results.curves.query("dataset == 'mnist'")  # one row per record and epoch

A folder may come from anyone: it is read as untrusted input (``store.ResultStore``), and the
files that were not counted are listed with the reason in ``Results.skipped``.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import pandas as pd

from ..errors import InputError, PluginError, did_you_mean
from ..files import write_atomically
from .numbers import FORMATS
from .record import Record
from .reference import (
    REF,
    REF_LABEL,
    add_reference_statistics,
    at_your_protocol,
    combined_frame,
    horizon_note,
    mark_changed_code,
    reference_section,
)
from .report import csv_columns, records_frame, render, skipped_note, summarise
from .store import ResultStore, Skipped

if TYPE_CHECKING:
    from ..execution.executors import RunSummary

TableFormat = Literal["markdown", "latex", "csv"]
Compare = Literal["paper"]


def load(folder: Path | str, *, reference: Path | str | None = None,
         warn: Callable[[str], None] | None = None) -> Results:
    """The records of a results folder written by ``bench run`` (``<dataset>/<entry>/seed-N.json``).

    ``reference``: a reference results folder (e.g. ``results/reference/table1``) whose cells
    of your datasets stand beside yours, as ``bench table --reference`` sets them: as entries
    ``ref:<entry>`` labelled "<label> (reference)", cut to your epoch count where you ran fewer
    (``reference.at_your_protocol``). ``warn``: where warnings go, one line each [default:
    stderr]; a file that is not counted is warned of on stderr as it is read.

    Raises ``InputError`` (one line) when a folder is missing or holds no record, or when the
    reference is not of your protocol (the line names what differs).
    """
    warn = warn or _to_stderr
    store, records = _read(Path(folder))
    if reference is None:
        return Results(store, records, warn=warn)
    their_store, theirs = _read(Path(reference))
    beside, horizons = at_your_protocol(records, theirs, str(reference))
    yours = {record.dataset for record in records}
    beside = [record for record in beside if record.dataset in yours]
    note = horizon_note(horizons)
    return Results(store, records, warn=warn, reference=_Reference(
        their_store, theirs, beside, f"{reference} ({note})" if note else str(reference)))


def _read(folder: Path) -> tuple[ResultStore, list[Record]]:
    """The store of ``folder`` (it says what it skipped) and the records that count."""
    if not folder.is_dir():
        raise InputError(
            f"not a results folder: {folder} is a file; expected a folder of records "
            "(<dataset>/<algorithm>/seed-N.json)" if folder.exists()
            else f"results folder not found: {folder}")
    store = ResultStore(folder)
    records = list(store.records())
    if not records:
        raise InputError(f"no records in {folder}"
                         + (f" ({skipped_note(store.skipped)})" if store.skipped else ""))
    return store, records


def _to_stderr(line: str) -> None:
    print(line, file=sys.stderr)


@dataclass(frozen=True)
class _Reference:
    """A reference folder as loaded beside yours."""

    store: ResultStore
    records: list[Record]  # as read: tells which code made its cells
    beside: list[Record]  # as set beside yours: of your datasets, cut to your epoch count
    name: str  # the folder, and how it was cut, as the table names it


class Results:
    """The records of a results folder (and of a reference beside them), as DataFrames and as
    the table and page the command line prints. Made by ``load``, and by ``bioplaus_bench.run``
    with the records of that run only (``outcome`` then says how its cells ended)."""

    def __init__(self, store: ResultStore, records: list[Record], *,
                 warn: Callable[[str], None], reference: _Reference | None = None,
                 outcome: RunSummary | None = None, baseline: str | None = None):
        self.folder = store.root
        self.own_records = records
        # Made by ``bioplaus_bench.run``: how each cell ended and how many were reused, and
        # the suite's baseline now (cached records name the one they were run with).
        self.outcome = outcome
        self._baseline = baseline
        self._store = store
        self._reference = reference
        self._warn = warn

    def __repr__(self) -> str:
        beside = f", reference={self.reference_name!r}" if self._reference else ""
        return (f"<Results of {str(self.folder)!r}: {len(self.own_records)} records, "
                f"{len(self.skipped)} files skipped{beside}>")

    # --- what was read -------------------------------------------------------------------------

    @property
    def reference_records(self) -> list[Record]:
        """The reference's records of your datasets, as they stand beside yours (cut to your
        epoch count); none without a reference."""
        return self._reference.beside if self._reference else []

    @property
    def reference_name(self) -> str | None:
        """The reference as the table names it: its folder, and how it was cut."""
        return self._reference.name if self._reference else None

    @property
    def skipped(self) -> list[Skipped]:
        """The files of the results folder named like records that were not counted, each with
        its path, its name in the folder and why."""
        return list(self._store.skipped)

    @property
    def reference_skipped(self) -> list[Skipped]:
        """The same for the reference folder."""
        return list(self._reference.store.skipped) if self._reference else []

    @property
    def notes(self) -> list[str]:
        """The sentences under the table that name the files not counted, of the results folder
        and then of the reference folder."""
        folders = [(self._store, "the results folder")]
        if self._reference is not None:
            folders.append((self._reference.store,
                            f"the reference folder {self._reference.store.root}"))
        return [skipped_note(s.skipped, folder) for s, folder in folders if s.skipped]

    # --- DataFrames ----------------------------------------------------------------------------

    @cached_property
    def records(self) -> pd.DataFrame:
        """One row per record: the cell (``dataset``, ``entry``: the suite's entry id,
        ``algorithm``: its plugin, ``label``, ``seed``), how it ended (``status``, ``reason``),
        the number the table reports (``value``, of ``metric``) at ``selected_epoch``, its
        protocol (``epochs``, ``precision``, ``subset``, ``deviations``) and provenance
        (``wall_time``, ``code``: the algorithm's source digest, ``commit``, ``config_hash``,
        ``device``, ``torch``, ``finished_at``). A reference's rows follow yours, as the table
        names them (entry ``ref:<entry>``, label "<label> (reference)"; ``reference`` true)."""
        rows = [_record_row(r, False) for r in self.own_records]
        rows += [_record_row(r, True) for r in self.reference_records]
        return pd.DataFrame(rows, columns=RECORD_COLUMNS)

    @cached_property
    def curves(self) -> pd.DataFrame:
        """One row per record and evaluated epoch: ``dataset``, ``entry``, ``label``, ``seed``,
        ``reference``, ``epoch``, then what the run logged that epoch (``train_loss``,
        ``train_accuracy``, ``test_loss``, ``test_accuracy``, ``val_loss``, ``val_accuracy``,
        ``seconds``, a rule's feedback losses...; NaN where a record has no such value).
        Records that did not train have no rows."""
        rows = [{**_cell_of(r, reference), **row}
                for records, reference in ((self.own_records, False),
                                           (self.reference_records, True))
                for r in records for row in r.history or ()]
        frame = pd.DataFrame(rows)
        return frame if rows else pd.DataFrame(columns=[*CELL_COLUMNS, "epoch"])

    @cached_property
    def _frame(self) -> pd.DataFrame:
        """The table's frame (``report.records_frame``), with the reference's cells."""
        if self._reference is None:
            return records_frame(self.own_records)
        return combined_frame(self.own_records, self._reference.beside)

    def _summary(self, baseline: str | None) -> pd.DataFrame:
        frame = self._frame
        if baseline is not None and baseline not in set(frame.algorithm):
            raise InputError(f"--baseline: no entry '{baseline}' in {self.folder}"
                             f"{did_you_mean(baseline, set(frame.algorithm))}")
        summary = summarise(frame, baseline or self._baseline)
        if self._reference is not None:
            summary = add_reference_statistics(summary, frame)
        return mark_changed_code(summary, frame, self._current_code, self._attested)

    def summary(self, baseline: str | None = None, *, compare: Compare | None = None
                ) -> pd.DataFrame:
        """The table as a DataFrame, one row per dataset and entry: exactly what
        ``bench table --format csv`` holds (``summary().to_csv(index=False)`` is its text).
        Here, as in that CSV, ``algorithm`` is the entry id. ``baseline``: the entry p-values
        compare against [default: the one the records name, else "bp"; a reference entry is
        "ref:NAME"]; ``compare="paper"``: with the paper's numbers beside ours."""
        summary = self._summary(baseline)
        return summary[csv_columns(summary, _paper(compare))].reset_index(drop=True)

    # --- text ----------------------------------------------------------------------------------

    def table(self, format: TableFormat = "markdown", compare: Compare | None = None, *,
              baseline: str | None = None) -> str:
        """The text ``bench table`` prints: markdown, LaTeX or CSV, with the paper's numbers
        when ``compare="paper"`` and, in markdown, the comparison with a loaded reference.
        The notes on files not counted (``notes``) stand under a markdown table and in a
        comment after a LaTeX one; a CSV holds data only."""
        if format not in FORMATS:
            raise ValueError(f"unknown table format '{format}'; expected one of "
                             f"{', '.join(FORMATS)}")
        summary = self._summary(baseline)
        text = render(summary, format, compare=_paper(compare), notes=self.notes)
        if self._reference is not None and format == "markdown":
            text += "\n".join(reference_section(summary, self._reference.name)) + "\n"
        return text

    def page(self) -> str:
        """The HTML page ``bench report`` writes (``page.build``): protocol, table, seeds,
        curves, alignment, status and provenance, in one self-contained file."""
        from .page import build  # matplotlib: only for the page

        return build(self.own_records, summary=self._summary(None), notes=self.notes,
                     reference=self.reference_name)

    def report(self, path: Path | str | None = None) -> Path:
        """Write ``page()`` to ``path`` [default: ``<folder>/report.html``], renamed into place
        and never through a link; the path written. ``InputError`` when it cannot be written."""
        path = Path(path) if path is not None else self.folder / "report.html"
        text = self.page()
        try:
            write_atomically(path, text)
        except OSError as error:
            raise InputError(f"cannot write {path}: {error.strerror or error}") from None
        return path

    # --- the code that made the cells ----------------------------------------------------------

    @cached_property
    def _attested(self) -> set[tuple[str, str, str, str]]:
        """What the reference checks attested of the folder's cells and of the reference
        folder's (its entries as the table names them): a cell run by older code is not marked
        where the current code was attested to reproduce it (``attestation``)."""
        from .attestation import attested_code

        theirs = attested_code(self._reference.store.root, REF) if self._reference else set()
        return attested_code(self.folder) | theirs

    @cached_property
    def _current_code(self) -> dict[str, str]:
        """The source digest of each installed algorithm of the records as a run would record
        it now, to mark the cells run by code that has changed since (and not attested). Plugin files are not
        loaded here: their cells are not judged, not even by the code of an installed algorithm
        of the same name (a record made by another implementation of a name leaves that name
        unjudged)."""
        from ..registry import Wanted, load_registry
        from ..execution.inputs import code_identity, same_implementation

        records = [*self.own_records, *(self._reference.records if self._reference else [])]
        algorithms = set(self._frame.algorithm_name)
        try:
            registry = load_registry([], Wanted(algorithms=frozenset(algorithms)))
        except PluginError as error:  # a table needs no plugin: say why nothing is judged
            self._warn(f"warning: cells not checked against the current code: {error}")
            return {}
        for warning in registry.warnings:
            self._warn(f"warning: {warning}")
        now = {name: code_identity(registry.get(name).cls) for name in algorithms
               if name in registry}
        others = {record.algorithm_name for record in records if record.algorithm_name in now
                  and same_implementation(record.provenance.get("code") or {},
                                          now[record.algorithm_name]) is False}
        return {name: digest for name, identity in now.items() if name not in others
                if (digest := identity.get("source_sha256"))}


def _paper(compare: Compare | None) -> bool:
    if compare not in (None, "paper"):
        raise ValueError(f"unknown comparison '{compare}'; expected 'paper' or None")
    return compare == "paper"


CELL_COLUMNS = ["dataset", "entry", "label", "seed", "reference"]
RECORD_COLUMNS = [
    "dataset", "dataset_label", "entry", "algorithm", "label", "seed", "reference", "status",
    "reason", "task", "metric", "value", "selected_epoch", "pruned_at_epoch", "epochs",
    "precision", "subset", "paper_protocol", "deviations", "baseline", "suite", "wall_time",
    "stacked_seeds", "code", "commit", "config_hash", "device", "torch", "finished_at"]


def _cell_of(record: Record, reference: bool) -> dict[str, Any]:
    """A record's cell as the table names it (a reference's as ``ref:<entry>``)."""
    return {"dataset": record.dataset,
            "entry": REF + record.algorithm if reference else record.algorithm,
            "label": record.label + REF_LABEL if reference else record.label,
            "seed": record.seed, "reference": reference}


def _record_row(record: Record, reference: bool) -> dict[str, Any]:
    provenance = record.provenance
    return {**_cell_of(record, reference), "dataset_label": record.dataset_label,
            "algorithm": record.algorithm_name, "status": record.status,
            "reason": record.explanation, "task": record.task, "metric": record.metric,
            "value": record.reported_value(), "selected_epoch": record.selected_epoch,
            "pruned_at_epoch": record.pruned_at_epoch, "epochs": record.epochs,
            "precision": record.config.get("precision"), "subset": record.config.get("subset"),
            "paper_protocol": record.paper_protocol, "deviations": "; ".join(record.deviations),
            "baseline": record.baseline, "suite": record.suite, "wall_time": record.wall_time,
            "stacked_seeds": record.stacked_seeds,
            "code": (provenance.get("code") or {}).get("source_sha256"),
            "commit": provenance.get("git_commit"), "config_hash": record.config_hash,
            "device": provenance.get("device"), "torch": provenance.get("torch"),
            "finished_at": provenance.get("finished_at")}
