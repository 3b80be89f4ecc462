"""Tables from records: seeds aggregated with pandas into the paper's layout (methods as rows,
datasets as columns, mean ± SD with the seed count, the best non-BP method in bold), statistics
over seeds (95% confidence intervals, Welch's t-tests), and the comparison with the paper."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from .paper import PUBLISHED

BASELINE = "bp"  # the algorithm name that is not a candidate for "best" (the paper's BP row)
FORMATS = ("markdown", "latex", "csv")
NO_VALUE = "–"


def records_frame(records: Iterable[dict[str, Any]]) -> pd.DataFrame:
    """One row per record with the number the table reports: test error (%) at the selected
    epoch for classification, test loss for regression, or the last epoch's training loss."""
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
            "metric": metric, "value": value,
            "epochs": r["config"]["dataset"]["protocol"]["epochs"],
            "deviations": "; ".join(r.get("deviations", [])),
        })
    return pd.DataFrame(rows, columns=[
        "dataset", "dataset_label", "algorithm", "algorithm_name", "label", "seed", "status",
        "task", "dataset_order", "algorithm_order", "metric", "value", "epochs", "deviations"])


def _welch_p(a: np.ndarray, b: np.ndarray) -> float:
    if len(a) < 2 or len(b) < 2:
        return math.nan
    return float(stats.ttest_ind(a, b, equal_var=False).pvalue)


def summarise(frame: pd.DataFrame) -> pd.DataFrame:
    """Per (dataset, algorithm): mean, SD (ddof 1), a 95% t-interval and Welch's t-test p-values
    against BP and against the best non-BP method, over the seeds that finished ("ok"); the
    counts of every status; whether the row is the dataset's best non-BP method."""
    keys = ["dataset", "algorithm"]
    firsts = ["dataset_label", "algorithm_name", "label", "task", "metric", "dataset_order",
              "algorithm_order"]
    summary = frame.groupby(keys)[firsts].first()
    counts = frame.pivot_table(index=keys, columns="status", values="seed", aggfunc="count",
                               fill_value=0)
    summary = summary.join(counts)
    for status in ("ok", "diverged", "error", "skipped"):
        if status not in summary:
            summary[status] = 0
    values = {key: group.value.to_numpy() for key, group in
              frame[frame.status == "ok"].groupby(keys)}
    summary["n"] = [len(values.get(key, ())) for key in summary.index]
    summary["mean"] = [values[k].mean() if k in values else math.nan for k in summary.index]
    summary["sd"] = [values[k].std(ddof=1) if len(values.get(k, ())) > 1 else math.nan
                     for k in summary.index]
    half = [stats.t.ppf(0.975, n - 1) * sd / math.sqrt(n) if n > 1 else math.nan
            for n, sd in zip(summary.n, summary.sd, strict=True)]
    summary["ci95_low"] = summary["mean"] - half
    summary["ci95_high"] = summary["mean"] + half
    summary["epochs"] = frame.groupby(keys)["epochs"].max()
    summary["deviations"] = frame.groupby(keys)["deviations"].agg(
        lambda texts: "; ".join(sorted({t for t in texts if t})))
    summary = summary.reset_index().sort_values(["dataset_order", "algorithm_order"])
    summary = summary.reset_index(drop=True)

    candidates = summary[(summary.algorithm_name != BASELINE) & (summary.n > 0)]
    best = candidates.loc[candidates.groupby("dataset")["mean"].idxmin().dropna()]
    summary["best"] = summary.index.isin(best.index)
    best_of = dict(zip(best.dataset, best.algorithm, strict=True))
    baseline_of = {d: a for d, a, name in
                   zip(summary.dataset, summary.algorithm, summary.algorithm_name, strict=True)
                   if name == BASELINE}
    empty = np.array([])
    summary["p_vs_bp"] = [
        _welch_p(values.get((d, a), empty), values.get((d, baseline_of.get(d)), empty))
        if baseline_of.get(d) not in (None, a) else math.nan
        for d, a in zip(summary.dataset, summary.algorithm, strict=True)]
    summary["p_vs_best"] = [
        _welch_p(values.get((d, a), empty), values.get((d, best_of.get(d)), empty))
        if best_of.get(d) not in (None, a) else math.nan
        for d, a in zip(summary.dataset, summary.algorithm, strict=True)]
    published = [PUBLISHED.get((m, d, a), (math.nan, math.nan)) for m, d, a in
                 zip(summary.metric, summary.dataset, summary.algorithm, strict=True)]
    summary["paper_mean"] = [mean for mean, _ in published]
    summary["paper_sd"] = [sd for _, sd in published]
    summary["paper_delta_sd"] = (summary["mean"] - summary.paper_mean) / summary.paper_sd
    return summary


# --- formatting ----------------------------------------------------------------------------------

def _scientific(row) -> bool:
    return not (row.task == "classification" and row.metric == "test_error")


def _exponent(value: float) -> int:
    return int(math.floor(math.log10(abs(value)))) if value and math.isfinite(value) else 0


def _pair(mean: float, sd: float, row, latex: bool) -> str:
    """``mean ± sd``; small or large numbers as the paper writes them, ``(2.87 ± 4.11)e-8``."""
    pm = r" \pm " if latex else " ± "
    if math.isnan(mean):
        return NO_VALUE
    if not _scientific(row):
        return f"{mean:.2f}" + (f"{pm}{sd:.2f}" if not math.isnan(sd) else "")
    k = _exponent(mean)
    if -2 <= k < 3:
        return f"{mean:.3g}" + (f"{pm}{sd:.2g}" if not math.isnan(sd) else "")
    inner = f"{mean / 10 ** k:.2f}" + (f"{pm}{sd / 10 ** k:.2f}" if not math.isnan(sd) else "")
    if latex:
        return f"({inner}) \\times 10^{{{k}}}"
    return f"({inner})e{k}"


def _counts(row) -> str:
    parts = [f"n={row.n}"]
    if row.diverged:
        parts.append(f"{row.diverged} diverged")
    if row.error:
        parts.append(f"{row.error} failed")
    return ", ".join(parts)


def _cell(row, latex: bool) -> str:
    if row.n == 0:
        if row.skipped and not (row.diverged or row.error):
            return "n/a"
        return NO_VALUE if latex else f"{NO_VALUE} ({_counts(row)})"
    text = _pair(row.mean, row.sd, row, latex)
    if latex:
        return f"$\\mathbf{{{text}}}$" if row.best else f"${text}$"
    return (f"**{text}**" if row.best else text) + f" ({_counts(row)})"


def _layout(summary: pd.DataFrame):
    datasets = summary.drop_duplicates("dataset").sort_values("dataset_order")
    algorithms = summary.drop_duplicates("algorithm").sort_values("algorithm_order")
    return (list(zip(datasets.dataset, datasets.dataset_label, strict=True)),
            list(zip(algorithms.algorithm, algorithms.label, strict=True)))


def caption(summary: pd.DataFrame) -> str:
    """What the numbers are, and under which protocol they were measured."""
    parts = []
    metrics = set(summary.metric)
    epochs = int(summary.epochs.max())
    within = f"{epochs} epoch" + ("s" if epochs != 1 else "")
    if "train_loss" in metrics:
        parts.append(f"training loss over the last of {within}")
    if "test_error" in metrics:
        tasks = set(summary[summary.metric == "test_error"].task)
        if "classification" in tasks:
            parts.append(f"test error (%) at the first epoch of best validation accuracy within "
                         f"{within} (the last epoch without a validation split)")
        if "regression" in tasks:
            parts.append("test loss (MSE) at the epoch of lowest validation loss")
    seeds = int(summary.n.max()) if len(summary) else 0
    text = "; ".join(parts)
    text = text[0].upper() + text[1:] + f". Mean ± SD over {seeds} seeds (n: seeds that " \
        "finished); best non-BP method in bold."
    deviations = sorted({d for texts in summary.deviations for d in texts.split("; ") if d})
    if deviations:
        text += f" Quick trial ({', '.join(deviations)}): not the paper protocol."
    return text


def render(summary: pd.DataFrame, fmt: str = "markdown", compare: bool = False) -> str:
    if fmt not in FORMATS:
        raise ValueError(f"unknown table format '{fmt}'; expected one of {', '.join(FORMATS)}")
    if fmt == "csv":
        columns = ["dataset", "dataset_label", "algorithm", "label", "task", "metric", "mean",
                   "sd", "n", "ci95_low", "ci95_high", "p_vs_bp", "p_vs_best", "ok", "diverged",
                   "error", "skipped", "best", "epochs", "deviations"]
        if compare:
            columns += ["paper_mean", "paper_sd", "paper_delta_sd"]
        return summary[columns].to_csv(index=False)
    if summary.empty:
        return "(no records)\n"
    if fmt == "latex":
        return _latex(summary)
    return _markdown(summary, compare)


def _markdown_table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
            *("| " + " | ".join(row) + " |" for row in rows)]


def _markdown(summary: pd.DataFrame, compare: bool) -> str:
    datasets, algorithms = _layout(summary)
    cells = {(r.dataset, r.algorithm): r for r in summary.itertuples(index=False)}
    rows = [[label] + [_cell(cells[(d, a)], False) if (d, a) in cells else "" for d, _ in datasets]
            for a, label in algorithms]
    lines = _markdown_table(["Method", *(label for _, label in datasets)], rows)
    lines += ["", caption(summary)]

    tested = summary[summary.n > 1]
    if not tested.empty:
        lines += ["", "Statistics over seeds (Welch's t-test p-values):", ""]
        lines += _markdown_table(
            ["Dataset", "Method", "n", "mean ± SD", "95% CI", "p vs BP", "p vs best"],
            [[r.dataset_label, r.label, str(r.n), _pair(r.mean, r.sd, r, False),
              f"[{_pair(r.ci95_low, math.nan, r, False)}, {_pair(r.ci95_high, math.nan, r, False)}]",
              _p(r.p_vs_bp), _p(r.p_vs_best)] for r in tested.itertuples(index=False)])
    if compare:
        compared = summary[summary.paper_mean.notna()]
        lines += ["", "Comparison with the paper (Δ in units of the paper's SD):", ""]
        lines += _markdown_table(
            ["Dataset", "Method", "ours", "paper", "Δ / SD"],
            [[r.dataset_label, r.label,
              _pair(r.mean, r.sd, r, False) + f" (n={r.n})", _pair(r.paper_mean, r.paper_sd, r, False),
              NO_VALUE if math.isnan(r.paper_delta_sd) else f"{r.paper_delta_sd:+.1f}"]
             for r in compared.itertuples(index=False)])
        if compared.empty:
            lines.append("(no published numbers for these datasets and methods)")
    return "\n".join(lines) + "\n"


def _p(value: float) -> str:
    if math.isnan(value):
        return NO_VALUE
    return f"{value:.2g}" if value >= 1e-4 else "<1e-4"


def _latex_escape(text: str) -> str:
    for char, escaped in (("\\", r"\textbackslash{}"), ("&", r"\&"), ("%", r"\%"),
                          ("_", r"\_"), ("#", r"\#"), ("$", r"\$")):
        text = text.replace(char, escaped)
    return text


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
