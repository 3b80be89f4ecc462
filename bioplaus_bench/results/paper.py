"""The published numbers of Meulemans et al. 2020 (algorithms.md §12), keyed like the shipped suites:
(metric, dataset id, algorithm id) -> (mean, SD over 10 seeds). Test errors are in %. And the
comparison of a table with them (``bench table --compare paper``)."""

from __future__ import annotations

import math
from collections.abc import Callable

import pandas as pd

from .numbers import NO_VALUE, REF, code_mark, markdown_table, mean_sd, one_line

_TABLE1 = {  # test error (%) at the best-validation epoch, 100 epochs
    "mnist": {"bp": (1.98, 0.14), "ddtp-linear": (2.04, 0.08), "ddtp-rhl": (2.10, 0.14),
              "dtp-drl": (2.21, 0.09), "ddtp-control": (2.51, 0.08), "dtp": (2.39, 0.19),
              "dtp-pretrained": (2.26, 0.18), "dfa": (2.17, 0.14)},
    "frozen_mnist": {"bp": (4.39, 0.13), "ddtp-linear": (6.42, 0.17), "ddtp-rhl": (5.11, 0.19),
                     "dtp-drl": (6.10, 0.17), "ddtp-control": (9.70, 0.31), "dtp": (10.64, 0.53),
                     "dtp-pretrained": (9.31, 0.40)},
    "fashion_mnist": {"bp": (10.74, 0.16), "ddtp-linear": (11.11, 0.35), "ddtp-rhl": (11.53, 0.31),
                      "dtp-drl": (11.22, 0.20), "ddtp-control": (11.71, 0.28), "dtp": (11.49, 0.23),
                      "dtp-pretrained": (11.52, 0.31), "dfa": (11.26, 0.25)},
    "cifar10": {"bp": (45.60, 0.50), "ddtp-linear": (50.36, 0.26), "ddtp-rhl": (51.94, 0.49),
                "dtp-drl": (50.80, 0.43), "ddtp-control": (51.75, 0.43), "dtp": (51.74, 0.30),
                "dtp-pretrained": (52.20, 0.50), "dfa": (51.28, 0.41)},
}

_TABLE2 = {  # training loss after 100 epochs (no validation split)
    "mnist": {"bp": (2.87e-8, 4.11e-8), "ddtp-linear": (1.99e-9, 1.90e-9),
              "ddtp-rhl": (2.29e-7, 0.56e-7), "dtp-drl": (3.43e-9, 2.57e-9),
              "ddtp-control": (4.74e-6, 9.51e-6), "dtp": (1.28e-7, 1.04e-7),
              "dtp-pretrained": (5.72e-4, 5.91e-4), "dfa": (1.57e-6, 2.10e-6)},
    "frozen_mnist": {"bp": (0.191, 0.019), "ddtp-linear": (0.349, 0.029),
                     "ddtp-rhl": (0.289, 0.014), "dtp-drl": (0.317, 0.016),
                     "ddtp-control": (0.995, 0.049), "dtp": (1.184, 0.072),
                     "dtp-pretrained": (0.928, 0.002)},
    "fashion_mnist": {"bp": (6.46e-5, 0.25e-5), "ddtp-linear": (1.03e-5, 0.15e-5),
                      "ddtp-rhl": (3.51e-3, 0.80e-3), "dtp-drl": (1.36e-3, 0.48e-3),
                      "ddtp-control": (3.88e-3, 2.63e-3), "dtp": (4.07e-2, 0.42e-2),
                      "dtp-pretrained": (2.73e-2, 0.67e-2), "dfa": (1.98e-2, 0.24e-2)},
    "cifar10": {"bp": (1.01e-7, 0.57e-7), "ddtp-linear": (1.77e-6, 0.06e-6),
                "ddtp-rhl": (4.26e-2, 3.61e-2), "dtp-drl": (2.13e-6, 0.83e-6),
                "ddtp-control": (6.14e-5, 0.92e-5), "dtp": (9.81e-5, 6.42e-5),
                "dtp-pretrained": (6.77e-5, 1.89e-5), "dfa": (2.05e-5, 1.3e-5)},
}

_TABLE3 = {  # CIFAR-10 small CNN, test error (%)
    "cifar10_cnn": {"bp": (24.38, 0.29), "ddtp-linear": (23.99, 0.31),
                    "ddtp-control": (28.69, 0.87), "dfa": (30.00, 0.74)},
}

PUBLISHED: dict[tuple[str, str, str], tuple[float, float]] = {
    (metric, dataset, algorithm): value
    for metric, table in (("test_error", _TABLE1), ("train_loss", _TABLE2), ("test_error", _TABLE3))
    for dataset, rows in table.items()
    for algorithm, value in rows.items()
}

WITHIN = 2.0  # how many of the paper's SDs from its mean still count as reproducing it
PAPER_EPOCHS = 100  # every published number above is of a 100-epoch run


def of_paper_protocol(row) -> bool:
    """Whether a summary row's cells ran the paper's protocol, so that its published numbers
    may stand beside them: 100 epochs, no quick-trial override (fewer epochs or seeds, a
    subset, ``--set``), and one configuration (not records of other settings mixed in)."""
    return row.epochs == PAPER_EPOCHS and not row.deviations and row.settings <= 1


def with_paper_numbers(summary: pd.DataFrame,
                       entry: Callable[[str], str] = lambda algorithm: algorithm) -> pd.DataFrame:
    """The summary with the paper's mean and SD of each row that has one and ran the paper's
    protocol (``of_paper_protocol``; NaN elsewhere), and the difference in the paper's SDs.
    ``entry``: the shipped suites' entry id of a row's algorithm (a reference's ``ref:bp`` is
    ``bp``)."""
    summary = summary.copy()
    published = [PUBLISHED.get((row.metric, row.dataset, entry(row.algorithm)), (math.nan,) * 2)
                 if of_paper_protocol(row) else (math.nan, math.nan)
                 for row in summary.itertuples(index=False)]
    summary["paper_mean"] = [mean for mean, _ in published]
    summary["paper_sd"] = [sd for _, sd in published]
    summary["paper_delta_sd"] = (summary["mean"] - summary.paper_mean) / summary.paper_sd
    return summary


def without_paper_numbers(summary: pd.DataFrame) -> list[str]:
    """The rows the paper has numbers for that do not stand beside them (another protocol),
    each with why: "MNIST / BP (2 epochs)"."""
    named = []
    for row in summary[summary.paper_mean.isna()].itertuples(index=False):
        entry = str(row.algorithm).removeprefix(REF)
        if (row.metric, row.dataset, entry) in PUBLISHED:
            why = [] if row.epochs == PAPER_EPOCHS else [f"{row.epochs} epochs"]
            why += [row.deviations] if row.deviations else []
            why += [f"{row.settings} configurations"] if row.settings > 1 else []
            named.append(f"{one_line(row.dataset_label)} / {one_line(row.label)} "
                         f"({one_line('; '.join(why))})")
    return named


def paper_comparison(summary: pd.DataFrame) -> list[str]:
    """Markdown lines: ours beside the paper's mean ± SD, the difference in the paper's SDs and
    whether it is within ``WITHIN`` of them; the cells outside are named again below the table,
    so that none is left to be found."""
    compared = summary[summary.paper_mean.notna()]
    lines = ["", f"Comparison with the paper (Δ in units of the paper's SD; within {WITHIN:g} "
             f"SD: |Δ| ≤ {WITHIN:g}):", ""]
    lines += markdown_table(
        ["Dataset", "Method", "ours", "paper", "Δ / SD", f"within {WITHIN:g} SD"],
        [[r.dataset_label, r.label,
          mean_sd(r.mean, r.sd, r, False) + code_mark(r) + f" (n={r.n})",
          mean_sd(r.paper_mean, r.paper_sd, r, False),
          NO_VALUE if math.isnan(r.paper_delta_sd) else f"{r.paper_delta_sd:+.1f}",
          _within(r.paper_delta_sd)]
         for r in compared.itertuples(index=False)])
    apart = without_paper_numbers(summary)
    note = [f"Not beside the paper's numbers, which are of its protocol ({PAPER_EPOCHS} epochs, "
            f"no quick-trial override): {', '.join(apart)}."] if apart else []
    if compared.empty:
        return lines + ["(no published numbers for these datasets and methods)"] + \
            ([""] + note if note else [])
    judged = compared[compared.paper_delta_sd.notna()]
    outside = judged[judged.paper_delta_sd.abs() > WITHIN]
    text = (f"{len(judged) - len(outside)} of {len(judged)} cells with a value lie within "
            f"{WITHIN:g} paper-SD of the paper's mean")
    if not outside.empty:
        text += "; outside: " + ", ".join(
            f"{one_line(r.dataset_label)} / {one_line(r.label)} ({r.paper_delta_sd:+.1f} SD)"
            for r in outside.itertuples(index=False))
    return lines + ["", text + "."] + ([""] + note if note else [])


def _within(delta_sd: float) -> str:
    if math.isnan(delta_sd):
        return NO_VALUE
    return "yes" if abs(delta_sd) <= WITHIN else "no"
