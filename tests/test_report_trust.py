"""Tables you can trust: every count shown, labels escaped, an explicit baseline,
reasons for cells that did not finish, odd records survived, honest intervals for small n."""

import math
import re

import numpy as np
import pytest
from scipy import stats

from bioplaus_bench.results.report import records_frame, render, summarise

ORDER = ["bp", "bp-wide", "dfa", "dtp"]


def record(algorithm, seed, value=None, status="ok", *, name=None, label=None, dataset="mnist",
           dataset_label="MNIST", **extra):
    final = {} if value is None else {"test_error": value}
    return {"dataset": dataset, "dataset_label": dataset_label, "algorithm": algorithm,
            "algorithm_name": name or algorithm, "label": label or algorithm.upper(),
            "seed": seed, "status": status, "task": "classification", "metric": "test_error",
            "order": [0, ORDER.index(algorithm)], "config": {"dataset": {"protocol": {"epochs": 10}}},
            "final": final, "deviations": [], **extra}


def cells(algorithm, values, **extra):
    return [record(algorithm, seed, value, **extra) for seed, value in enumerate(values)]


BP = [0.020, 0.021, 0.019]
WIDE = [0.030, 0.032, 0.031]
DFA = [0.025, 0.024, 0.026]
DTP = [0.023, 0.022, 0.024]


def table(records, fmt="markdown", **options):
    return render(summarise(records_frame(records)), fmt, **options)


def by_entry(records):
    return summarise(records_frame(records)).set_index("algorithm")


# --- 1. LaTeX shows n and the counts -------------------------------------------------------------

def test_latex_cells_show_the_seed_count_and_what_did_not_finish():
    records = cells("bp", BP) + cells("dfa", DFA[:2]) + [
        record("dfa", 5, status="diverged"), record("dtp", 0, status="error", error="boom")]
    text = table(records, "latex")
    assert r"BP & $2.00 \pm 0.10$ {\scriptsize (n=3)} \\" in text
    assert r"$\mathbf{2.45 \pm 0.07}$ {\scriptsize (n=2, 1 diverged)}" in text
    assert r"DTP & -- {\scriptsize (n=0, 1 failed)} \\" in text


# --- 2. escaping ---------------------------------------------------------------------------------

def test_pipes_and_newlines_in_labels_do_not_break_markdown_tables():
    records = (cells("bp", BP, dataset_label="MNIST | small")
               + cells("dfa", DFA, dataset_label="MNIST | small", label="DFA\n(sign)"))
    text = table(records)
    assert "| Method | MNIST \\| small |" in text
    assert "| DFA (sign) | **2.50 ± 0.10** (n=3) |" in text
    assert "| MNIST \\| small | DFA (sign) | 3 | 2.50 ± 0.10 |" in text


def test_latex_escapes_every_special_character_in_labels():
    records = cells("bp", BP, label=r"B{P}~^\x") + cells("dfa", DFA, label="a|b")
    text = table(records, "latex")
    assert r"B\{P\}\textasciitilde{}\textasciicircum{}\textbackslash{}x & " in text
    assert r"a\textbar{}b & " in text


# --- 3. an explicit baseline ---------------------------------------------------------------------

def welch(a, b):
    return stats.ttest_ind(np.array(a) * 100, np.array(b) * 100, equal_var=False).pvalue


def test_baseline_is_the_entry_bp_not_whichever_bp_came_last():
    records = cells("bp", BP) + cells("bp-wide", WIDE, name="bp") + cells("dfa", DFA)
    summary = by_entry(records)
    assert summary.loc["dfa", "p_vs_bp"] == pytest.approx(welch(DFA, BP))
    assert summary.loc["bp-wide", "p_vs_bp"] == pytest.approx(welch(WIDE, BP))
    assert math.isnan(summary.loc["bp", "p_vs_bp"])
    assert "p vs BP (entry 'bp')" in table(records)


def test_records_name_their_baseline_entry():
    records = [{**r, "baseline": "bp-wide"}
               for r in cells("bp", BP) + cells("bp-wide", WIDE, name="bp") + cells("dfa", DFA)]
    summary = by_entry(records)
    assert summary.loc["dfa", "p_vs_bp"] == pytest.approx(welch(DFA, WIDE))
    assert math.isnan(summary.loc["bp-wide", "p_vs_bp"])
    assert "p vs BP-WIDE (entry 'bp-wide')" in table(records)
    unset = by_entry([{**r, "baseline": None} for r in records])
    assert unset.p_vs_bp.isna().all()


def test_datasets_with_different_baselines_name_each():
    cifar = {"dataset": "cifar", "dataset_label": "CIFAR", "baseline": None}
    records = cells("bp", BP) + [{**r, **cifar, "order": [1, r["order"][1]]}
                                 for r in cells("bp", BP) + cells("dfa", DFA)]
    assert "| p vs baseline (MNIST: entry 'bp'; CIFAR: none) |" in table(records)


def test_the_baseline_entry_is_never_the_best_method():
    # DTP is the baseline here: DFA is best although DTP's mean is lower; BP rows never are.
    records = [{**r, "baseline": "dtp"} for r in
               cells("bp", [0.01, 0.011, 0.012]) + cells("dfa", DFA) + cells("dtp", DTP)]
    summary = by_entry(records)
    assert summary.best.to_dict() == {"bp": False, "dfa": True, "dtp": False}
    assert summary.loc["dfa", "p_vs_bp"] == pytest.approx(welch(DFA, DTP))


# --- 4. timeouts and reasons ---------------------------------------------------------------------

def test_timeouts_are_counted_and_every_unfinished_cell_says_why():
    records = cells("bp", BP) + cells("dfa", DFA) + [
        record("dfa", 7, status="timeout", reason="exceeded the cell time limit of 60 s"),
        record("dtp", 3, status="diverged", reason="evaluation loss is inf after epoch 3"),
        record("dtp", 4, status="error", error="RuntimeError: CUDA out of memory"),
        record("dtp", 5, status="error", reason="non-finite update of parameter layers.2.weight "
                                                "at epoch 1, minibatch 0", error="ignored"),
        record("dtp", 6, status="diverged"),
        record("bp", 9, status="skipped", reason="not in the paper")]
    text = table(records)
    assert "| DFA | **2.50 ± 0.10** (n=3, 1 timed out) |" in text
    assert "| DTP | – (n=0, 2 diverged, 2 failed) |" in text
    assert ("Not finished:\n"
            "- MNIST / DFA: seed 7 timed out (exceeded the cell time limit of 60 s)\n"
            "- MNIST / DTP: seed 3 diverged (evaluation loss is inf after epoch 3); "
            "seed 4 failed (RuntimeError: CUDA out of memory); "
            "seed 5 failed (non-finite update of parameter layers.2.weight at epoch 1, minibatch 0); "
            "seed 6 diverged\n") in text
    assert "not in the paper" not in text
    summary = by_entry(records)
    assert summary.loc["dfa", "timeout"] == 1
    assert "timeout" in table(records, "csv").splitlines()[0].split(",")


# --- 5. odd records and unreadable files ---------------------------------------------------------

def test_finished_cells_without_a_number_do_not_crash_any_format():
    no_final = record("dfa", 1)
    del no_final["final"]
    records = cells("bp", BP) + [record("dfa", 0, math.nan), no_final,
                                 {**record("dfa", 2), "final": {"test_error": None}},
                                 {**record("dtp", 0), "final": None}, record("dtp", 1, math.inf)]
    for fmt in ("markdown", "latex", "csv"):
        text = table(records, fmt, compare=True)
        assert not re.search(r"\bnan\b|\binf\b", text, re.IGNORECASE), text
    summary = by_entry(records)
    assert (summary.loc["dfa", "n"], summary.loc["dfa", "ok"]) == (0, 3)
    assert "| DFA | – (n=0, 3 without a value) |" in table(records)


def test_the_table_says_how_many_files_were_not_records():
    records = cells("bp", BP)
    assert "2 files in the results folder were not records and were skipped." in table(
        records, unreadable=2)
    assert "1 file in the results folder was not a record and was skipped." in table(
        records, unreadable=1)
    assert "was not a record" in table(records, "latex", unreadable=1)
    assert "were not records" in render(summarise(records_frame([])), "markdown", unreadable=3)
    assert "not a record" not in table(records)


# --- 6. no "nan" where "–" is meant ---------------------------------------------------------------

def test_missing_numbers_print_as_dashes_not_nan():
    records = cells("bp", BP[:2]) + cells("dfa", DFA[:1]) + [record("dtp", 0, status="diverged")]
    for fmt in ("markdown", "latex", "csv"):
        assert "nan" not in table(records, fmt, compare=True).lower()


# --- 7. honest intervals for small n -------------------------------------------------------------

def test_no_interval_from_fewer_than_three_seeds():
    records = cells("bp", [0.001, 0.03]) + cells("dfa", DFA)
    summary = by_entry(records)
    assert math.isnan(summary.loc["bp", "ci95_low"]) and math.isnan(summary.loc["bp", "ci95_high"])
    assert "| MNIST | BP | 2 | 1.55 ± 2.05 | – |" in table(records)


def test_an_interval_that_would_go_below_zero_is_taken_on_the_log_scale():
    spread = [0.001, 0.002, 0.04]
    summary = by_entry(cells("dfa", spread) + cells("bp", BP))
    logs = np.log(np.array(spread) * 100)
    half = stats.t.ppf(0.975, 2) * logs.std(ddof=1) / math.sqrt(3)
    row = summary.loc["dfa"]
    assert row.ci95_low == pytest.approx(math.exp(logs.mean() - half))
    assert row.ci95_high == pytest.approx(math.exp(logs.mean() + half))
    assert row.ci95_method == "log t"
    assert summary.loc["bp", "ci95_method"] == "t"  # the plain t-interval where it stays ≥ 0
    text = table(cells("dfa", spread) + cells("bp", BP))
    assert f"[{row.ci95_low:.2f}, {row.ci95_high:.2f}]*" in text
    assert "* on the log scale" in text


def test_one_seed_is_singular():
    text = table([record("bp", 0, 0.02)])
    assert "Mean ± SD over 1 seed (n:" in text
