"""Tables from records: seeds aggregated with pandas into the paper's layout (methods as rows,
datasets as columns, mean ± SD with the seed count, the best non-BP method in bold), statistics
over seeds (95% confidence intervals, Welch's t-tests against the baseline entry), why cells did
not finish, and the comparison with the paper."""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from .numbers import (
    CODE_NOTE,
    FORMATS,
    NO_VALUE,
    P_VS_REF,
    REF,
    code_mark,
    markdown_table,
    mean_sd,
    one_line,
    p_text,
)
from .paper import paper_comparison, with_paper_numbers
from .record import Record

BASELINE = "bp"  # the algorithm (and default baseline entry) never "best": the paper's BP row
UNFINISHED = {"diverged": "diverged", "error": "failed", "timeout": "timed out"}  # status: word
STATUSES = ("ok", *UNFINISHED, "skipped")


def records_frame(records: Iterable[Record | Mapping[str, Any]]) -> pd.DataFrame:
    """One row per record with the number the table reports (``Record.reported_value``).
    Plain mappings are read as JSON records (``Record.from_json``)."""
    rows = []
    for r in map(_as_record, records):
        rows.append({
            "dataset": r.dataset, "dataset_label": r.dataset_label,
            "algorithm": r.algorithm, "algorithm_name": r.algorithm_name,
            "label": r.label, "seed": r.seed, "status": r.status, "task": r.task,
            "dataset_order": r.order[0], "algorithm_order": r.order[1],
            "metric": r.metric, "value": r.reported_value(), "epochs": r.epochs,
            "deviations": "; ".join(r.deviations), "reason": one_line(r.explanation),
            "baseline": r.baseline,  # None: no baseline
            "setting": _setting(r.config),
            "code": (r.provenance.get("code") or {}).get("source_sha256") or "",
            "settings_origin": settings_origin(r.provenance.get("settings")),
        })
    return pd.DataFrame(rows, columns=[
        "dataset", "dataset_label", "algorithm", "algorithm_name", "label", "seed", "status",
        "task", "dataset_order", "algorithm_order", "metric", "value", "epochs", "deviations",
        "reason", "baseline", "setting", "code", "settings_origin"])


NOT_TUNED = "not tuned"  # a record whose suite does not say how its settings were obtained


def settings_origin(origin: Any) -> str:
    """How a record's settings were obtained, in words: the suite entry's ``origin``
    ("paper"), "tuned (<budget>)" for values ``bench tune`` found, or "not tuned"."""
    if not isinstance(origin, Mapping) or not origin.get("origin"):
        return NOT_TUNED
    budget = origin.get("budget")
    if origin["origin"] != "tuned" or not isinstance(budget, Mapping):
        return one_line(str(origin["origin"]))
    pruning = budget.get("pruning") or {}
    parts = [_plural(budget.get("trials", 0), "trial"),
             _plural(budget["epochs"], "epoch") if budget.get("epochs") else "full epochs",
             f"{budget['subset']} training samples" if budget.get("subset") else None,
             _plural(budget.get("seeds", 1), "seed"), f"TPE seed {budget.get('sampler_seed')}",
             f"{pruning.get('rule')} pruning" if pruning.get("rule", "none") != "none" else None]
    return "tuned (" + ", ".join(p for p in parts if p) + ")"


def _setting(config: Mapping[str, Any]) -> str:
    """What a record was computed with, but for its seed: records of one row that differ here
    are not seeds of one configuration."""
    rest = {key: value for key, value in config.items() if key != "seed"}
    return hashlib.sha256(json.dumps(rest, sort_keys=True, default=str).encode()).hexdigest()


def _as_record(record: Record | Mapping[str, Any]) -> Record:
    return record if isinstance(record, Record) else Record.from_json(record)


def welch_p(a: np.ndarray, b: np.ndarray) -> float:
    """Welch's t-test p-value of two samples; NaN with fewer than 2 values in either."""
    if len(a) < 2 or len(b) < 2:
        return math.nan
    return float(stats.ttest_ind(a, b, equal_var=False).pvalue)


def _interval(values: np.ndarray) -> tuple[float, float, str]:
    """95% t-interval of the mean; none from fewer than 3 seeds. Every metric here (errors, losses)
    is ≥ 0: where the t-interval would go below 0, the t-interval of the log values (positive
    values only), which bounds the geometric mean."""
    n = len(values)
    if n < 3:
        return math.nan, math.nan, ""
    factor = stats.t.ppf(0.975, n - 1) / math.sqrt(n)
    mean, half = values.mean(), factor * values.std(ddof=1)
    if mean - half >= 0:
        return mean - half, mean + half, "t"
    if (values > 0).all():
        logs = np.log(values)
        mean, half = logs.mean(), factor * logs.std(ddof=1)
        return math.exp(mean - half), math.exp(mean + half), "log t"
    return math.nan, math.nan, ""


def summarise(frame: pd.DataFrame, baseline: str | None = None) -> pd.DataFrame:
    """Per (dataset, algorithm), over the seeds that finished ("ok") with a finite number: mean, SD
    (ddof 1), a 95% interval and Welch's t-test p-values against the dataset's baseline entry
    (a record's ``baseline``, else the entry "bp" if there is one) and against the best method
    (neither a BP algorithm nor the baseline); the counts of every status and why cells did not
    finish; how many configurations a row's records come from (``settings``: more than one
    means other settings, code or data, not seeds of one configuration). ``baseline``, when
    given, is the entry to compare against whatever the records say (the suite's choice now)."""
    keys = ["dataset", "algorithm"]
    firsts = ["dataset_label", "algorithm_name", "label", "task", "metric", "dataset_order",
              "algorithm_order"]
    summary = frame.groupby(keys)[firsts].first()
    counts = frame.pivot_table(index=keys, columns="status", values="seed", aggfunc="count",
                               fill_value=0)
    summary = summary.join(counts)
    for status in STATUSES:
        if status not in summary:
            summary[status] = 0
    values = finished_values(frame)
    summary["n"] = [len(values.get(key, ())) for key in summary.index]
    summary["mean"] = [values[k].mean() if k in values else math.nan for k in summary.index]
    summary["sd"] = [values[k].std(ddof=1) if len(values.get(k, ())) > 1 else math.nan
                     for k in summary.index]
    intervals = ["ci95_low", "ci95_high", "ci95_method"]
    summary[intervals] = pd.DataFrame([_interval(values.get(k, np.array([])))
                                       for k in summary.index], summary.index, intervals)
    summary["epochs"] = frame.groupby(keys)["epochs"].max()
    summary["settings"] = frame[frame.status != "skipped"].groupby(keys)["setting"].nunique()
    summary["settings"] = summary.settings.fillna(0).astype(int)
    summary["settings_origin"] = frame.groupby(keys)["settings_origin"].agg(
        lambda texts: "; ".join(sorted(set(texts))))
    summary["deviations"] = frame.groupby(keys)["deviations"].agg(
        lambda texts: "; ".join(sorted({t for t in texts if t})))
    unfinished = frame[frame.status.isin(list(UNFINISHED))].sort_values("seed")
    notes = ("seed " + unfinished.seed.astype(str) + " " + unfinished.status.map(UNFINISHED)
             + unfinished.reason.map(lambda reason: f" ({reason})" if reason else ""))
    summary["not_finished"] = notes.groupby([unfinished.dataset, unfinished.algorithm]).agg(
        "; ".join)
    summary["not_finished"] = summary.not_finished.fillna("")
    summary = summary.reset_index().sort_values(["dataset_order", "algorithm_order"])
    summary = summary.reset_index(drop=True)

    entries = summary.groupby("dataset")["algorithm"].agg(set)
    chosen = {d: baseline for d in entries.index} if baseline is not None else \
        frame.groupby("dataset")["baseline"].first().to_dict()
    baseline_of = {d: b for d, b in chosen.items() if b in entries[d]}
    summary["baseline"] = [baseline_of.get(d, "") for d in summary.dataset]  # "": none
    candidates = summary[(summary.algorithm_name != BASELINE)
                         & (summary.algorithm != summary.baseline) & (summary.n > 0)]
    best = candidates.loc[candidates.groupby("dataset")["mean"].idxmin()]
    summary["best"] = summary.index.isin(best.index)
    best_of = dict(zip(best.dataset, best.algorithm, strict=True))
    summary["p_vs_bp"] = _p_values(summary, values, baseline_of)
    summary["p_vs_best"] = _p_values(summary, values, best_of)
    return with_paper_numbers(summary)


def finished_values(frame: pd.DataFrame) -> dict[tuple[str, str], np.ndarray]:
    """Per (dataset, algorithm), the numbers of the seeds that finished ("ok") with a finite
    number: what means, SDs, intervals and p-values are computed from."""
    finished = frame[(frame.status == "ok") & np.isfinite(frame.value.astype(float))]
    return {key: group.value.to_numpy(float)
            for key, group in finished.groupby(["dataset", "algorithm"])}


def _p_values(summary: pd.DataFrame, values: dict, reference_of: dict[str, str]) -> list[float]:
    """Each row's Welch p-value against its dataset's reference entry (none for the reference)."""
    empty = np.array([])
    return [welch_p(values.get((d, a), empty), values.get((d, reference_of[d]), empty))
            if reference_of.get(d) not in (None, a) else math.nan
            for d, a in zip(summary.dataset, summary.algorithm, strict=True)]


# --- formatting ----------------------------------------------------------------------------------

def seed_counts(row) -> str:
    parts = [f"n={row.n}"] + [f"{row.ok - row.n} without a value"] * (row.ok > row.n)
    return ", ".join(parts + [f"{getattr(row, status)} {word}"
                              for status, word in UNFINISHED.items() if getattr(row, status)])


def _cell(row, latex: bool) -> str:
    if row.skipped and not (row.ok or any(getattr(row, status) for status in UNFINISHED)):
        return "n/a"
    if row.n == 0:
        text = "--" if latex else NO_VALUE
    else:
        text = mean_sd(row.mean, row.sd, row, latex)
        if latex:
            text = f"$\\mathbf{{{text}}}$" if row.best else f"${text}$"
        elif row.best:
            text = f"**{text}**"
    text += code_mark(row, latex)
    return f"{text} {{\\scriptsize ({seed_counts(row)})}}" if latex else f"{text} ({seed_counts(row)})"


def _layout(summary: pd.DataFrame):
    datasets = summary.drop_duplicates("dataset").sort_values("dataset_order")
    algorithms = summary.drop_duplicates("algorithm").sort_values("algorithm_order")
    return (list(zip(datasets.dataset, datasets.dataset_label, strict=True)),
            list(zip(algorithms.algorithm, algorithms.label, strict=True)))


def caption(summary: pd.DataFrame) -> str:
    """What the numbers are, and under which protocol they were measured: the suite's own cells;
    a reference's cells beside them (``ref:`` entries) are said apart, with their own seeds."""
    reference = summary.algorithm.str.startswith(REF)
    text = _caption(summary[~reference] if not reference.all() else summary)
    if reference.any() and not reference.all():
        text += f" Reference rows: over {_seeds(summary[reference])} of the reference folder"
        deviations = _deviations(summary[reference])
        text += f", a quick trial ({deviations})." if deviations else "."
    return text


def _caption(summary: pd.DataFrame) -> str:
    parts = []
    metrics = set(summary.metric)
    epochs = int(summary.epochs.max())
    within = _plural(epochs, "epoch")
    if "train_loss" in metrics:
        parts.append(f"training loss over the last of {within}")
    if "test_error" in metrics:
        tasks = set(summary[summary.metric == "test_error"].task)
        if "classification" in tasks:
            parts.append(f"test error (%) at the first epoch of best validation accuracy within "
                         f"{within} (the last epoch without a validation split)")
        if "regression" in tasks:
            parts.append("test loss (MSE) at the epoch of lowest validation loss")
    text = "; ".join(parts)
    text = text[0].upper() + text[1:] + f". Mean ± SD over {_seeds(summary)} (n: seeds " \
        "that finished); best non-BP method in bold."
    deviations = _deviations(summary)
    if deviations:
        text += f" Quick trial ({deviations}): not the paper protocol."
    return text + _origins(summary)


def _origins(summary: pd.DataFrame) -> str:
    """The sentence that says how each method's settings were obtained; none when no record
    states it (records made before suites said so)."""
    if "settings_origin" not in summary or (summary.settings_origin == NOT_TUNED).all():
        return ""
    labels: dict[str, list[str]] = {}
    for row in summary.drop_duplicates(["algorithm", "settings_origin"]).itertuples(
            index=False):
        labels.setdefault(row.settings_origin, []).append(row.label)
    return " Settings: " + "; ".join(f"{', '.join(names)}: {origin}"
                                     for origin, names in labels.items()) + "."


def _seeds(summary: pd.DataFrame) -> str:
    """How many seeds the rows' cells ran: "3 seeds", or "3 to 10 seeds"."""
    runs = summary[["ok", *UNFINISHED]].sum(axis=1)  # seeds run per cell; skipped: never run
    runs = runs[runs > 0]
    low, high = (int(runs.min()), int(runs.max())) if len(runs) else (0, 0)
    return _plural(high, "seed") if low == high else f"{low} to {high} seeds"


def _deviations(summary: pd.DataFrame) -> str:
    return ", ".join(sorted({d for texts in summary.deviations for d in texts.split("; ") if d}))


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" + ("s" if count != 1 else "")


def unreadable_note(count: int) -> str:
    """The sentence under a table that says how many files in the results folder were skipped."""
    if count == 1:
        return "1 file in the results folder was not a record and was skipped."
    return f"{count} files in the results folder were not records and were skipped."


MANY_SKIPPED = 10  # more files skipped than this are counted under a table, named on stderr


def skipped_note(skipped: Sequence[object], folder: str = "the results folder") -> str:
    """The sentence under a table that names the files of ``folder`` that were not counted,
    each as "name (why)" (``str`` of each item), or counts them when there are many."""
    count = len(skipped)
    files = f"1 file in {folder} was" if count == 1 else f"{count} files in {folder} were"
    if count > MANY_SKIPPED:
        return f"{files} skipped; each is named with the reason on stderr."
    return one_line(f"{files} skipped: " + "; ".join(map(str, skipped)) + ".")


def csv_columns(summary: pd.DataFrame, compare: bool = False) -> list[str]:
    """The columns of the table as CSV, in order (``compare``: with the paper's numbers)."""
    columns = ["dataset", "dataset_label", "algorithm", "label", "task", "metric", "mean",
               "sd", "n", "ci95_low", "ci95_high", "p_vs_bp", "p_vs_best", "ok", "diverged",
               "error", "skipped", "best", "epochs", "deviations"]
    if compare:
        columns += ["paper_mean", "paper_sd", "paper_delta_sd"]
    columns += ["timeout", "baseline", "ci95_method", "not_finished",  # later additions last
                "settings_origin"]
    return columns + [c for c in summary.columns
                      if c == "code_changed" or c.startswith(P_VS_REF)]


def render(summary: pd.DataFrame, fmt: str = "markdown", compare: bool = False, *,
           unreadable: int = 0, notes: Sequence[str] = ()) -> str:
    """The table in ``fmt``. ``unreadable``: files in the results folder that were not records;
    ``notes``: sentences on the files not counted (``skipped_note``); both said under a markdown
    table and in a comment after a LaTeX one (a CSV holds only data)."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown table format '{fmt}'; expected one of {', '.join(FORMATS)}")
    if fmt == "csv":
        return summary[csv_columns(summary, compare)].to_csv(index=False)
    notes = [unreadable_note(unreadable)] * bool(unreadable) + [one_line(n) for n in notes]
    if summary.empty:
        return "\n".join(["(no records)", *notes]) + "\n"
    if fmt == "latex":
        if "code_changed" in summary and summary.code_changed.any():
            notes.append(CODE_NOTE)
        return _latex(summary) + "".join(f"% {note}\n" for note in notes)
    return _markdown(summary, compare) + "".join(f"\n{note}\n" for note in notes)


def _markdown(summary: pd.DataFrame, compare: bool) -> str:
    datasets, algorithms = _layout(summary)
    cells = {(r.dataset, r.algorithm): r for r in summary.itertuples(index=False)}
    rows = [[label] + [_cell(cells[(d, a)], False) if (d, a) in cells else "" for d, _ in datasets]
            for a, label in algorithms]
    lines = markdown_table(["Method", *(label for _, label in datasets)], rows)
    lines += ["", caption(summary)]

    tested = summary[summary.n > 1]
    if not tested.empty:
        lines += ["", "Statistics over seeds (95% CI: Student's t, none from fewer than 3 seeds; "
                  "Welch's t-test p-values):", ""]
        lines += markdown_table(
            ["Dataset", "Method", "n", "mean ± SD", "95% CI", _baseline_column(summary),
             "p vs best"],
            [[r.dataset_label, r.label, str(r.n), mean_sd(r.mean, r.sd, r, False), _ci(r),
              p_text(r.p_vs_bp), p_text(r.p_vs_best)] for r in tested.itertuples(index=False)])
        if (tested.ci95_method == "log t").any():
            lines += ["", "* on the log scale (an interval for the geometric mean): the "
                      "t-interval would go below 0, which an error or a loss cannot."]
    mixed = summary[summary.settings > 1]
    if not mixed.empty:
        lines += ["", "Mixed configurations (records of other settings, code or data, not seeds "
                  "of one configuration; re-run the suite to replace them, or use another "
                  "results folder):"] + [
            f"- {one_line(r.dataset_label)} / {one_line(r.label)}: {r.settings} configurations"
            for r in mixed.itertuples(index=False)]
    unfinished = summary[summary.not_finished != ""]
    if not unfinished.empty:
        lines += ["", "Not finished:"] + [
            f"- {one_line(r.dataset_label)} / {one_line(r.label)}: {r.not_finished}"
            for r in unfinished.itertuples(index=False)]
    if compare:
        lines += paper_comparison(summary)
    if "code_changed" in summary and summary.code_changed.any():
        lines += ["", CODE_NOTE]
    return "\n".join(lines) + "\n"


def _ci(row) -> str:
    if math.isnan(row.ci95_low):
        return NO_VALUE
    mark = "*" if row.ci95_method == "log t" else ""
    return f"[{mean_sd(row.ci95_low, math.nan, row, False)}, " \
           f"{mean_sd(row.ci95_high, math.nan, row, False)}]{mark}"


def _baseline_column(summary: pd.DataFrame) -> str:
    """The p-value column's header, naming the baseline entry when every dataset has the same."""
    named = {(r.algorithm, r.label) for r in summary.itertuples(index=False)
             if r.algorithm == r.baseline}
    if len(named) == 1 and (summary.baseline != "").all():
        entry, label = named.pop()
        return f"p vs {label} (entry '{entry}')"
    return "p vs baseline (" + "; ".join(
        f"{r.dataset_label}: " + (f"entry '{r.baseline}'" if r.baseline else "none")
        for r in summary.drop_duplicates("dataset").itertuples(index=False)) + ")"


_LATEX = {"\\": r"\textbackslash{}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
          "|": r"\textbar{}", "<": r"\textless{}", ">": r"\textgreater{}",
          **{char: "\\" + char for char in "&%_#${}"}}


def _latex_escape(text: str) -> str:
    return re.sub(r"[\\~^|<>&%_#${}]", lambda match: _LATEX[match.group()], one_line(text))


def _latex(summary: pd.DataFrame) -> str:
    datasets, algorithms = _layout(summary)
    cells = {(r.dataset, r.algorithm): r for r in summary.itertuples(index=False)}
    lines = [r"\begin{table}[t]", r"\centering",
             r"\begin{tabular}{l" + "c" * len(datasets) + "}", r"\toprule",
             "Method & " + " & ".join(_latex_escape(label) for _, label in datasets) + r" \\",
             r"\midrule"]
    for a, label in algorithms:
        entries = [_cell(cells[(d, a)], True) if (d, a) in cells else "" for d, _ in datasets]
        lines.append(_latex_escape(label) + " & " + " & ".join(entries) + r" \\")
    text = _latex_escape(caption(summary)).replace("±", r"$\pm$")
    lines += [r"\bottomrule", r"\end{tabular}", rf"\caption{{{text}}}", r"\end{table}"]
    return "\n".join(lines) + "\n"
