"""Tables from a synthetic record set: golden layouts and statistics against independent values."""

import math
import statistics

import numpy as np
import pytest

from bioplaus_bench.results.report import records_frame, render, summarise

ERRORS = {  # (dataset, algorithm) -> test errors (fractions) of the finished seeds
    ("mnist", "bp"): [0.0198, 0.0190, 0.0210],
    ("mnist", "ddtp-linear"): [0.0204, 0.0200, 0.0212],
    ("mnist", "dfa"): [0.0230, 0.0221, 0.0225],
    ("fashion_mnist", "bp"): [0.1074, 0.1080, 0.1069],
    ("fashion_mnist", "ddtp-linear"): [0.1190, 0.1150],
    ("fashion_mnist", "dfa"): [0.1126, 0.1130, 0.1119],
}
LABELS = {"bp": "BP", "ddtp-linear": "DDTP-linear", "dfa": "DFA"}
DATASETS = {"mnist": "MNIST", "fashion_mnist": "Fashion-MNIST"}


def record(dataset, algorithm, seed, status="ok", value=None, metric="test_error", deviations=()):
    final = {} if value is None else {"test_error": value, "train_loss_last": value}
    return {"dataset": dataset, "dataset_label": DATASETS[dataset], "algorithm": algorithm,
            "algorithm_name": algorithm, "label": LABELS[algorithm], "seed": seed,
            "status": status, "task": "classification", "metric": metric,
            "order": [list(DATASETS).index(dataset), list(LABELS).index(algorithm)],
            "config": {"dataset": {"protocol": {"epochs": 100}}}, "final": final,
            "deviations": list(deviations)}


def synthetic(metric="test_error", scale=1.0, deviations=()):
    records = [record(d, a, s, value=v * scale, metric=metric, deviations=deviations)
               for (d, a), values in ERRORS.items() for s, v in enumerate(values)]
    records.append(record("fashion_mnist", "ddtp-linear", 7, status="diverged", metric=metric))
    return records


def test_markdown_table_layout():
    text = render(summarise(records_frame(synthetic())), "markdown")
    assert text.splitlines()[:5] == [
        "| Method | MNIST | Fashion-MNIST |",
        "|---|---|---|",
        "| BP | 1.99 ± 0.10 (n=3) | 10.74 ± 0.06 (n=3) |",
        "| DDTP-linear | **2.05 ± 0.06** (n=3) | 11.70 ± 0.28 (n=2, 1 diverged) |",
        "| DFA | 2.25 ± 0.05 (n=3) | **11.25 ± 0.06** (n=3) |",
    ]
    assert "Test error (%) at the first epoch of best validation accuracy within 100 epochs" in text
    assert "Mean ± SD over 3 seeds" in text
    assert "| MNIST | DFA | 3 | 2.25 ± 0.05 | [2.14, 2.37] | 0.031 | 0.013 |" in text
    assert "not the paper protocol" not in text


def test_caption_names_the_range_of_seeds_when_cells_ran_different_numbers():
    records = synthetic() + [record("mnist", "bp", s, value=0.02) for s in range(3, 10)]
    text = render(summarise(records_frame(records)), "markdown")
    assert "Mean ± SD over 3 to 10 seeds (n: seeds that finished)" in text
    assert "| BP | 2.00 ± 0.05 (n=10) |" in text


def test_latex_table_layout():
    text = render(summarise(records_frame(synthetic())), "latex")
    assert text.splitlines()[:9] == [
        r"\begin{table}[t]",
        r"\centering",
        r"\begin{tabular}{lcc}",
        r"\toprule",
        r"Method & MNIST & Fashion-MNIST \\",
        r"\midrule",
        r"BP & $1.99 \pm 0.10$ {\scriptsize (n=3)} & $10.74 \pm 0.06$ {\scriptsize (n=3)} \\",
        r"DDTP-linear & $\mathbf{2.05 \pm 0.06}$ {\scriptsize (n=3)} & "
        r"$11.70 \pm 0.28$ {\scriptsize (n=2, 1 diverged)} \\",
        r"DFA & $2.25 \pm 0.05$ {\scriptsize (n=3)} & $\mathbf{11.25 \pm 0.06}$ {\scriptsize (n=3)} \\",
    ]
    assert r"\bottomrule" in text and r"\caption{Test error (\%) at the first epoch" in text
    assert r"Mean $\pm$ SD over 3 seeds" in text


def test_latex_uses_scientific_notation_for_training_losses():
    text = render(summarise(records_frame(synthetic("train_loss", scale=1e-6))), "latex")
    assert r"BP & $(1.99 \pm 0.10) \times 10^{-8}$" in text
    markdown = render(summarise(records_frame(synthetic("train_loss", scale=1e-6))), "markdown")
    assert "| BP | (1.99 ± 0.10)e-8 (n=3) |" in markdown
    assert "Training loss over the last of 100 epochs" in markdown


def test_csv_has_every_statistic():
    text = render(summarise(records_frame(synthetic())), "csv", compare=True)
    lines = text.strip().splitlines()
    assert lines[0] == ("dataset,dataset_label,algorithm,label,task,metric,mean,sd,n,ci95_low,"
                        "ci95_high,p_vs_bp,p_vs_best,ok,diverged,error,skipped,best,epochs,"
                        "deviations,paper_mean,paper_sd,paper_delta_sd,timeout,baseline,ci95_method,"
                        "not_finished,settings_origin")
    assert len(lines) == 7
    assert all(line.endswith(",not tuned") for line in lines[1:])  # no record says otherwise
    assert lines[5].startswith("fashion_mnist,Fashion-MNIST,ddtp-linear,DDTP-linear,"
                               "classification,test_error,11.7")
    assert ",2,1,0,0,False,100,,11.11,0.35," in lines[5]


def t_quantile_df2(q):
    """The quantile of Student's t with 2 degrees of freedom, in closed form:
    F(t) = 1/2 + t / (2 sqrt(2 + t²))."""
    a = 2 * q - 1
    return a * math.sqrt(2 / (1 - a * a))


def test_statistics_against_independent_computations():
    summary = summarise(records_frame(synthetic())).set_index(["dataset", "algorithm"])
    dfa = [100 * v for v in ERRORS[("mnist", "dfa")]]
    bp = [100 * v for v in ERRORS[("mnist", "bp")]]
    row = summary.loc[("mnist", "dfa")]
    assert row["mean"] == pytest.approx(statistics.mean(dfa))
    assert row["sd"] == pytest.approx(statistics.stdev(dfa))  # ddof 1
    half = t_quantile_df2(0.975) * statistics.stdev(dfa) / math.sqrt(3)
    assert row.ci95_high - row["mean"] == pytest.approx(half, rel=1e-9)

    # Welch: t = (m1 − m2)/sqrt(s1²/n1 + s2²/n2), Welch–Satterthwaite degrees of freedom.
    v1, v2 = statistics.variance(dfa) / 3, statistics.variance(bp) / 3
    t = (statistics.mean(dfa) - statistics.mean(bp)) / math.sqrt(v1 + v2)
    df = (v1 + v2) ** 2 / (v1 ** 2 / 2 + v2 ** 2 / 2)
    x = np.linspace(abs(t), 400, 2_000_001)
    tail = np.trapezoid((1 + x ** 2 / df) ** (-(df + 1) / 2), x)
    norm = math.gamma((df + 1) / 2) / (math.sqrt(df * math.pi) * math.gamma(df / 2))
    assert row.p_vs_bp == pytest.approx(2 * norm * tail, rel=1e-3)
    # DDTP-linear is the best non-BP method on MNIST: DFA is tested against it, it against BP.
    assert summary.loc[("mnist", "ddtp-linear")].best
    assert math.isnan(summary.loc[("mnist", "ddtp-linear")].p_vs_best)
    assert not math.isnan(row.p_vs_best)
    assert math.isnan(summary.loc[("mnist", "bp")].p_vs_bp)
    assert summary.loc[("fashion_mnist", "ddtp-linear")].diverged == 1


def test_paper_comparison_in_units_of_the_papers_sd():
    summary = summarise(records_frame(synthetic())).set_index(["dataset", "algorithm"])
    row = summary.loc[("mnist", "bp")]
    assert (row.paper_mean, row.paper_sd) == (1.98, 0.14)
    assert row.paper_delta_sd == pytest.approx((row["mean"] - 1.98) / 0.14)
    text = render(summarise(records_frame(synthetic())), "markdown", compare=True)
    assert "| MNIST | BP | 1.99 ± 0.10 (n=3) | 1.98 ± 0.14 | +0.1 | yes |" in text
    assert "6 of 6 cells with a value lie within 2 paper-SD of the paper's mean." in text


def test_cells_outside_two_paper_sds_are_shown_and_named():
    records = [r for r in synthetic() if (r["dataset"], r["algorithm"]) != ("mnist", "dfa")]
    records += [record("mnist", "dfa", s, value=v) for s, v in enumerate([0.0260, 0.0258, 0.0262])]
    text = render(summarise(records_frame(records)), "markdown", compare=True)
    delta = (statistics.mean([2.60, 2.58, 2.62]) - 2.17) / 0.14  # the paper's DFA: 2.17 ± 0.14
    assert f"| MNIST | DFA | 2.60 ± 0.02 (n=3) | 2.17 ± 0.14 | {delta:+.1f} | no |" in text
    assert ("5 of 6 cells with a value lie within 2 paper-SD of the paper's mean; outside: "
            f"MNIST / DFA ({delta:+.1f} SD).") in text


def test_quick_trials_are_marked_as_not_the_paper_protocol():
    records = synthetic(deviations=("3 instead of 100 epochs", "2 of the suite's 10 seeds"))
    text = render(summarise(records_frame(records)), "markdown")
    assert ("Quick trial (2 of the suite's 10 seeds, 3 instead of 100 epochs): "
            "not the paper protocol.") in text
    assert "not the paper protocol" in render(summarise(records_frame(records)), "latex")


def test_skipped_cells_show_as_not_applicable():
    records = synthetic() + [record("mnist", "bp", 9, status="skipped")]
    records = [r for r in records if not (r["dataset"] == "fashion_mnist" and r["algorithm"] == "dfa")]
    records.append(record("fashion_mnist", "dfa", 0, status="skipped"))
    text = render(summarise(records_frame(records)), "markdown")
    assert "| DFA | 2.25 ± 0.05 (n=3) | n/a |" in text
