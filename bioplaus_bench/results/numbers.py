"""How the tables write numbers and marks: mean ± SD as the paper writes it, p-values, markdown
rows, and the dagger of cells whose algorithm's source changed since they were run. Shared by
``bench table`` (``report``), the paper comparison (``paper``), the reference comparison
(``reference``) and the HTML page."""

from __future__ import annotations

import math

FORMATS = ("markdown", "latex", "csv")  # bench table --format
NO_VALUE = "–"
CODE_MARK = "†"
CODE_NOTE = ("† the algorithm's source has changed since these records were run (their code "
             "digest is not the current code's, nor attested by `make reference-check` to "
             "reproduce them): the numbers are the old code's; re-running the suite re-runs "
             "them.")
P_VS_REF = "p_vs_ref:"  # the columns of p-values against each reference entry (--reference)
REF = "ref:"  # the reference's entry ids in a joint table; suite entry ids never hold a ':'


def one_line(text: object) -> str:
    return " ".join(str(text).split())


def _scientific(row) -> bool:
    return not (row.task == "classification" and row.metric == "test_error")


def _exponent(value: float) -> int:
    return int(math.floor(math.log10(abs(value)))) if value and math.isfinite(value) else 0


def mean_sd(mean: float, sd: float, row, latex: bool) -> str:
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


def p_text(value: float) -> str:
    if math.isnan(value):
        return NO_VALUE
    return f"{value:.2g}" if value >= 1e-4 else "<1e-4"


def code_mark(row, latex: bool = False) -> str:
    """The dagger of a cell whose algorithm's source changed since its records were run."""
    if not getattr(row, "code_changed", False):
        return ""
    return r"$^\dagger$" if latex else CODE_MARK


def markdown_table(header: list[str], rows: list[list[str]]) -> list[str]:
    def line(cells: list[str]) -> str:
        return "| " + " | ".join(one_line(cell).replace("|", r"\|") for cell in cells) + " |"
    return [line(header), "|" + "---|" * len(header), *map(line, rows)]
