"""Tables from records: seeds aggregated with pandas into the paper's layout (methods as rows,
datasets as columns, mean ± SD with the seed count, the best non-BP method in bold)."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import pandas as pd

BASELINE = "bp"  # the algorithm name that is not a candidate for "best" (the paper's BP row)
FORMATS = ("markdown", "latex", "csv")


def records_frame(records: Iterable[dict[str, Any]]) -> pd.DataFrame:
    """One row per record with the number the table reports: test error (%) at the selected
    epoch for classification, test loss for regression."""
    rows = []
    for r in records:
        final = r.get("final") or {}
        metric = r.get("metric", "test_error")
        if metric == "train_loss":
            value = final.get("train_loss_last", math.nan)
        elif r["task"] == "classification":
            value = 100.0 * final["test_error"] if "test_error" in final else math.nan
        else:
            value = final.get("test_loss", math.nan)
        rows.append({
            "dataset": r["dataset"], "dataset_label": r["dataset_label"],
            "algorithm": r["algorithm"], "algorithm_name": r["algorithm_name"],
            "label": r["label"], "seed": r["seed"], "status": r["status"], "task": r["task"],
            "dataset_order": r["order"][0], "algorithm_order": r["order"][1],
            "paper_protocol": r.get("paper_protocol", True), "metric": metric, "value": value,
            "deviations": "; ".join(r.get("deviations", [])),
        })
    columns = ["dataset", "dataset_label", "algorithm", "algorithm_name", "label", "seed",
               "status", "task", "dataset_order", "algorithm_order", "paper_protocol", "metric",
               "value", "deviations"]
    return pd.DataFrame(rows, columns=columns)


def summarise(frame: pd.DataFrame) -> pd.DataFrame:
    """Mean and SD (ddof 1) over the seeds that finished, with counts of every status."""
    keys = ["dataset", "algorithm"]
    firsts = ["dataset_label", "algorithm_name", "label", "task", "metric", "dataset_order",
              "algorithm_order"]
    ok = frame[frame.status == "ok"]
    stats = ok.groupby(keys)["value"].agg(mean="mean", sd=lambda v: v.std(ddof=1), n="count")
    counts = frame.pivot_table(index=keys, columns="status", values="seed", aggfunc="count",
                               fill_value=0)
    summary = frame.groupby(keys)[firsts].first().join(stats).join(counts)
    for status in ("ok", "diverged", "error", "skipped"):
        if status not in summary:
            summary[status] = 0
    summary["n"] = summary["n"].fillna(0).astype(int)
    summary["paper_protocol"] = frame.groupby(keys)["paper_protocol"].all()
    summary = summary.reset_index().sort_values(["dataset_order", "algorithm_order"])
    best = summary[(summary.algorithm_name != BASELINE) & (summary.n > 0)]
    best_rows = best.loc[best.groupby("dataset")["mean"].idxmin().dropna()]
    summary["best"] = summary.index.isin(best_rows.index)
    return summary.reset_index(drop=True)


def _number(value: float, row) -> str:
    if math.isnan(value):
        return "–"
    return f"{value:.2f}" if row.task == "classification" and row.metric == "test_error" \
        else f"{value:.3g}"


def _cell_text(row: pd.Series, pm: str) -> tuple[str, str]:
    """(the value, the seed counts note) of one table cell."""
    if row.n == 0:
        if row.skipped and not (row.diverged or row.error):
            return "n/a", ""
        return "–", _counts(row)
    text = _number(row["mean"], row)
    if row.n > 1:
        text += f" {pm} {_number(row.sd, row)}"
    return text, _counts(row)


def _counts(row: pd.Series) -> str:
    parts = [f"n={row.n}"]
    if row.diverged:
        parts.append(f"{row.diverged} diverged")
    if row.error:
        parts.append(f"{row.error} failed")
    return ", ".join(parts)


def _layout(summary: pd.DataFrame) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    datasets = summary.drop_duplicates("dataset").sort_values("dataset_order")
    algorithms = summary.drop_duplicates("algorithm").sort_values("algorithm_order")
    return (list(zip(datasets.dataset, datasets.dataset_label, strict=True)),
            list(zip(algorithms.algorithm, algorithms.label, strict=True)))


def caption(summary: pd.DataFrame) -> str:
    tasks = set(summary.task)
    what = []
    if set(summary.metric) == {"train_loss"}:
        tasks = set()
        what.append("training loss (mean over the minibatches of the last epoch)")
    if "classification" in tasks:
        what.append("test error (%) at the first epoch of best validation accuracy "
                    "(the last epoch without a validation split)")
    if "regression" in tasks:
        what.append("test loss (MSE)" + (" for regression datasets" if len(tasks) > 1 else ""))
    text = "; ".join(what)
    text = text[0].upper() + text[1:] + ", mean ± SD over seeds (n = seeds that finished)."
    if not summary.paper_protocol.all():
        text += " Quick-trial runs on a subset of the data: not the paper protocol."
    return text


def render(summary: pd.DataFrame, fmt: str = "markdown") -> str:
    if fmt == "csv":
        columns = ["dataset", "dataset_label", "algorithm", "label", "task", "mean", "sd", "n",
                   "ok", "diverged", "error", "skipped", "best", "paper_protocol"]
        return summary[columns].to_csv(index=False)
    if summary.empty:
        return "(no records)\n"
    datasets, algorithms = _layout(summary)
    cells = {(r.dataset, r.algorithm): r for r in summary.itertuples(index=False)}
    if fmt == "markdown":
        return _markdown(datasets, algorithms, cells, summary)
    if fmt == "latex":
        return _latex(datasets, algorithms, cells, summary)
    raise ValueError(f"unknown table format '{fmt}'; expected one of {', '.join(FORMATS)}")


def _markdown(datasets, algorithms, cells, summary) -> str:
    lines = ["| Method | " + " | ".join(label for _, label in datasets) + " |",
             "|---" * (len(datasets) + 1) + "|"]
    for a_id, a_label in algorithms:
        entries = []
        for d_id, _ in datasets:
            row = cells.get((d_id, a_id))
            if row is None:
                entries.append("")
                continue
            text, note = _cell_text(pd.Series(row._asdict()), "±")
            if row.best:
                text = f"**{text}**"
            entries.append(f"{text} ({note})" if note else text)
        lines.append(f"| {a_label} | " + " | ".join(entries) + " |")
    return "\n".join(lines) + f"\n\n{caption(summary)}\n"


def _latex_escape(text: str) -> str:
    for char, escaped in (("\\", r"\textbackslash{}"), ("&", r"\&"), ("%", r"\%"),
                          ("_", r"\_"), ("#", r"\#"), ("$", r"\$")):
        text = text.replace(char, escaped)
    return text


def _latex(datasets, algorithms, cells, summary) -> str:
    lines = [r"\begin{table}[t]", r"\centering",
             r"\begin{tabular}{l" + "c" * len(datasets) + "}", r"\toprule",
             "Method & " + " & ".join(_latex_escape(label) for _, label in datasets) + r" \\",
             r"\midrule"]
    for a_id, a_label in algorithms:
        entries = []
        for d_id, _ in datasets:
            row = cells.get((d_id, a_id))
            if row is None:
                entries.append("")
                continue
            text, _ = _cell_text(pd.Series(row._asdict()), r"\pm")
            if text not in ("n/a", "–"):
                text = rf"$\mathbf{{{text}}}$" if row.best else f"${text}$"
            entries.append(text)
        lines.append(_latex_escape(a_label) + " & " + " & ".join(entries) + r" \\")
    text = _latex_escape(caption(summary)).replace("±", r"$\pm$")
    lines += [r"\bottomrule", r"\end{tabular}", rf"\caption{{{text}}}", r"\end{table}"]
    return "\n".join(lines) + "\n"
