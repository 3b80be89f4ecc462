"""Your cells beside a reference results folder (``bench table RESULTS --reference REF``): the
reference's cells of the same datasets join the table as entries of their own, with Welch's
t-test of each of your methods against each reference method, so a new rule meets the baselines
without running them again. Only the same protocol compares: a reference cell of another epoch
count, data split, subset, network, dataset, data or metric (or a precision the reference does
not use) refuses with one line naming what differs (``protocol.protocol_of``).

Also: which cells were run by code that has changed since, unless a reference check attested
the current code for them (``mark_changed_code``)."""

from __future__ import annotations

import json
import math
from collections.abc import Collection, Iterable, Mapping
from typing import Any

import numpy as np
import pandas as pd

from ..errors import InputError
from .numbers import (
    NO_VALUE,
    P_VS_REF,
    REF,
    code_mark,
    markdown_table,
    mean_sd,
    one_line,
    p_text,
)
from .paper import with_paper_numbers
from .protocol import differing as differing_paths
from .protocol import protocol_of
from .record import Record
from .report import finished_values, records_frame, welch_p

REF_LABEL = " (reference)"
ORDER_AFTER = 10_000  # reference rows come after yours

# What a record's protocol is, by the name a refusal gives it; ``precision`` is apart: the
# paper sets it per method, so a reference column may hold several.
_PROTOCOL_NAMES = {"epochs": "epochs", "validation": "data split (validation)",
                   "subset": "subset", "architecture": "network", "dataset": "dataset",
                   "protocol": "protocol", "data": "data", "metric": "metric", "task": "task"}


def _show(value: Any) -> str:
    return "none" if value is None else value if isinstance(value, str) else json.dumps(value)


def _name(path: str) -> str:
    top, _, rest = path.partition(".")
    name = _PROTOCOL_NAMES.get(top, top)
    return f"{name} ({path})" if rest else name


def _account(path: str, ours: dict[str, Any], theirs: dict[str, Any]) -> str:
    return f"{_name(path)} {_show(ours.get(path))} here, {_show(theirs.get(path))} in the reference"


# What `bench run --epochs/--subset` change: a reference at your protocol is one such run away.
QUICK_TRIAL_PATHS = {"epochs", "subset"}


def at_your_protocol(records: list[Record], reference: list[Record], name: str
                     ) -> tuple[list[Record], dict[str, int]]:
    """The reference records to set beside ``records``, and per dataset the epoch count the
    reference was truncated to. Where your runs are shorter than the reference's but otherwise
    of its protocol, the reference's records are cut to your epoch count and the selection rule
    re-applied (``Record.truncated``: exactly the shorter run). Raise ``InputError`` (one line)
    unless every record of a dataset the reference also has then shares the protocol of every
    reference record of that dataset, and a precision the reference uses there; or when the two
    have no dataset in common. Where only the epoch count (longer than the reference's) or the
    subset differ, the line gives the ``bench run`` that makes a reference at your protocol."""
    ran = [r for r in records if r.status != "skipped"]
    by_dataset: dict[str, list[Record]] = {}
    for record in reference:
        if record.status != "skipped":
            by_dataset.setdefault(record.dataset, []).append(record)
    common = sorted({r.dataset for r in ran} & by_dataset.keys())
    if not common:
        raise InputError(f"--reference {name}: no dataset in common (yours: "
                         f"{', '.join(sorted({r.dataset for r in ran})) or 'none'}; the "
                         f"reference's: {', '.join(sorted(by_dataset)) or 'none'})")
    problems, horizons, remedies = [], {}, []
    for dataset in common:
        ours = [r for r in ran if r.dataset == dataset]
        lengths = {r.epochs for r in ours}
        if len(lengths) == 1 and all(min(lengths) < r.epochs for r in by_dataset[dataset]):
            horizons[dataset] = min(lengths)
            by_dataset[dataset] = [r.truncated(horizons[dataset]) for r in by_dataset[dataset]]
        found: list[str] = []
        quick_trial_only = True
        for theirs in _distinct(by_dataset[dataset]):
            for mine in _distinct(ours):
                flat_mine, flat_theirs = protocol_of(mine), protocol_of(theirs)
                differing = differing_paths(flat_mine, flat_theirs)
                found += [account for path in differing
                          if (account := _account(path, flat_mine, flat_theirs)) not in found]
                quick_trial_only &= set(differing) <= QUICK_TRIAL_PATHS
        precisions = sorted({str(r.config["precision"]) for r in by_dataset[dataset]
                             if r.config.get("precision")})
        for precision in sorted({str(r.config["precision"]) for r in ours
                                 if r.config.get("precision")} - set(precisions)):
            found.append(f"precision {precision} here, {' or '.join(precisions)} in the reference")
            quick_trial_only = False
        if found:
            problems.append(f"{dataset}: " + ", ".join(found))
            if quick_trial_only:
                remedies.append(_same_protocol_run(ours, by_dataset[dataset]))
    if problems:
        raise InputError(f"--reference {name}: not the same protocol, so no comparison: "
                         + "; ".join(problems) + "".join(
                             f"; a reference at your protocol: {command}" for command in remedies))
    return [r for dataset in sorted(by_dataset) for r in by_dataset[dataset]], horizons


def _same_protocol_run(ours: list[Record], theirs: list[Record]) -> str:
    """The `bench run` of the reference's suite that gives its cells at your epoch count and
    subset (a reference is cut to a shorter run, never extended or subsampled)."""
    mine = ours[0]
    suites = sorted({r.suite for r in theirs if r.suite}) or ["SUITE"]
    entries = sorted({r.algorithm for r in theirs}, key=lambda a: min(
        r.order[1] for r in theirs if r.algorithm == a))
    seeds = sorted({r.seed for r in theirs})
    tag = f"{mine.epochs}-epochs" + (f"-subset-{mine.config['subset']}"
                                     if mine.config.get("subset") else "")
    command = (f"bench run suites/{suites[0]}.yaml --datasets {mine.dataset} "
               f"--only {','.join(entries)} --only-seeds {','.join(map(str, seeds))} "
               f"--epochs {mine.epochs}")
    if mine.config.get("subset"):
        command += f" --subset {mine.config['subset']}"
    return command + f" --out results/{suites[0]}-reference-{tag}"


def horizon_note(horizons: Mapping[str, int]) -> str:
    """What a truncated reference is, for the table and the page ("" when none was cut)."""
    if not horizons:
        return ""
    cuts = sorted(set(horizons.values()))
    at = (_epochs(cuts[0]) if len(cuts) == 1 else
          ", ".join(f"{_epochs(epochs)} ({dataset})" for dataset, epochs in sorted(horizons.items())))
    return f"reference truncated to {at}: its runs' first epochs, the selection rule re-applied"


def _epochs(count: int) -> str:
    return f"{count} epoch{'' if count == 1 else 's'}"


def _distinct(records: list[Record]) -> list[Record]:
    """One record per distinct protocol (a folder's seeds usually share one)."""
    seen: dict[str, Record] = {}
    for record in records:
        seen.setdefault(json.dumps(protocol_of(record), sort_keys=True, default=str), record)
    return list(seen.values())


def combined_frame(records: list[Record], reference: list[Record]) -> pd.DataFrame:
    """Your records and the reference's records of your datasets as one table frame: reference
    entries as ``ref:<entry>`` labelled "<label> (reference)", after yours, in your dataset
    columns. Where you ran no entry of your baseline, p-values compare against the reference's."""
    ours = records_frame(records)
    theirs = records_frame([r for r in reference if r.dataset in set(ours.dataset)])
    columns = ours.drop_duplicates("dataset").set_index("dataset")
    theirs["algorithm"] = REF + theirs.algorithm
    theirs["label"] = theirs.label + REF_LABEL
    theirs["algorithm_order"] = theirs.algorithm_order + ORDER_AFTER
    theirs["dataset_label"] = theirs.dataset.map(columns.dataset_label)
    theirs["dataset_order"] = theirs.dataset.map(columns.dataset_order)
    frame = pd.concat([ours, theirs], ignore_index=True)
    for dataset, rows in frame.groupby("dataset"):
        entries = set(rows.algorithm)
        own = ours[ours.dataset == dataset].baseline.iloc[0]
        other = theirs[theirs.dataset == dataset].baseline
        if own not in entries and len(other) and REF + str(other.iloc[0]) in entries:
            own = REF + str(other.iloc[0])
        frame.loc[frame.dataset == dataset, "baseline"] = own
    return frame


def add_reference_statistics(summary: pd.DataFrame, frame: pd.DataFrame) -> pd.DataFrame:
    """The summary of a ``combined_frame`` with the paper's numbers for the reference's rows
    (known by their own entry ids; only where they ran the paper's protocol) and, per reference
    entry, a column ``p_vs_ref:<entry>``: Welch's p-value of each of your rows against that
    reference cell of its dataset."""
    summary = with_paper_numbers(summary, lambda entry: entry.removeprefix(REF))
    reference = summary.algorithm.str.startswith(REF)
    values = finished_values(frame)
    none = np.array([])
    for entry in sorted(set(summary.algorithm[reference])):
        summary[P_VS_REF + entry[len(REF):]] = [
            welch_p(values.get((d, a), none), values.get((d, entry), none)) if not ref else math.nan
            for d, a, ref in zip(summary.dataset, summary.algorithm, reference, strict=True)]
    return summary


def comparison_rows(summary: pd.DataFrame) -> list[list[str]]:
    """Per dataset, each of your methods against each reference method: yours, the reference's,
    the difference of the means and Welch's p-value (plain text cells)."""
    reference = summary.algorithm.str.startswith(REF)
    rows = []
    for i in summary.index[~reference]:
        ours = summary.loc[i]
        for j in summary.index[reference & (summary.dataset == ours.dataset)]:
            theirs = summary.loc[j]
            delta = ours["mean"] - theirs["mean"]
            rows.append([ours.dataset_label, ours.label, _value(ours), theirs.label,
                         _value(theirs), NO_VALUE if math.isnan(delta) else f"{delta:+.3g}",
                         p_text(ours[P_VS_REF + theirs.algorithm[len(REF):]])])
    return rows


def _value(row: pd.Series) -> str:
    return mean_sd(row["mean"], row.sd, row, False) + code_mark(row) + f" (n={row.n})"


COMPARISON_HEADER = ["Dataset", "Method", "here", "Reference method", "reference", "Δ mean", "p"]


def comparison_heading(name: str) -> str:
    return (f"Against the reference {one_line(name)} (same datasets and protocol; Welch's t-test "
            "p-values of each method here against each reference method):")


def reference_section(summary: pd.DataFrame, name: str) -> list[str]:
    """The markdown lines of the comparison with the reference, after the table."""
    rows = comparison_rows(summary)
    lines = ["", comparison_heading(name), ""] + (
        markdown_table(COMPARISON_HEADER, rows) if rows else ["(no cells to compare)"])
    missing = unreferenced(summary)
    return lines + (["", f"No reference cells for: {', '.join(missing)}."] if missing else [])


def unreferenced(summary: pd.DataFrame) -> list[str]:
    """The labels of your datasets that the reference does not have."""
    reference = summary.algorithm.str.startswith(REF)
    covered = set(summary.dataset[reference])
    return [one_line(label) for label in
            summary[~summary.dataset.isin(covered)].drop_duplicates("dataset").dataset_label]


def mark_changed_code(summary: pd.DataFrame, frame: pd.DataFrame, current: Mapping[str, str],
                      attested: Collection[tuple[str, str, str, str]] = ()) -> pd.DataFrame:
    """``code_changed`` per row: whether a record of the cell names a code digest (its
    provenance) other than ``current`` (algorithm name -> the digest of its source now) that
    no reference check has attested for it (``attested``: (dataset, entry, record digest,
    digest that reproduced it), see ``attestation``). Algorithms missing from ``current`` (not
    installed here) are not judged."""
    now = frame.algorithm_name.map(current)
    changed = frame[(frame.code != "") & now.notna() & (frame.code != now)]
    keys = {(d, a) for d, a, code, digest in zip(changed.dataset, changed.algorithm, changed.code,
                                                 now[changed.index], strict=True)
            if (d, a, code, digest) not in attested}
    summary = summary.copy()
    summary["code_changed"] = [(d, a) in keys for d, a in
                               zip(summary.dataset, summary.algorithm, strict=True)]
    return summary
