"""``bench report``: one self-contained HTML page per results folder.

The page holds what a reader needs to judge a run without the records: the protocol, the table
as ``bench table`` prints it (with the paper's numbers beside ours), every seed, the learning
curves, the alignment metrics, every cell that did not finish and the provenance. It is one file
with inline CSS and inline SVG figures and no external URL, so it can be mailed, archived or
opened offline, and it reflows on a phone. Records are untrusted input: every string read from
them goes through ``html.escape``.
"""

from __future__ import annotations

import contextlib
import html
import io
import json
import math
import re
from collections import defaultdict
from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd

from ..errors import InputError
from .numbers import CODE_NOTE, code_mark
from .plots import angle_figure, band, depth, layer_name
from .paper import PAPER_EPOCHS, without_paper_numbers
from .record import Record
from .reference import COMPARISON_HEADER, comparison_heading, comparison_rows
from .report import caption, mean_sd, records_frame, seed_counts, summarise, unreadable_note

SECTIONS = ("protocol", "results", "seeds", "curves", "alignment", "status", "provenance")
CSS = """
body{font:15px/1.45 system-ui,sans-serif;margin:0;padding:0 .8em;color:#222;background:#fff}
main{max-width:60em;margin:0 auto}
h1{font-size:1.4em}h2{font-size:1.15em;border-bottom:1px solid #ccc;padding-bottom:.2em}
.wide{overflow-x:auto;-webkit-overflow-scrolling:touch}
table{border-collapse:collapse;margin:.5em 0}
th,td{border:1px solid #ddd;padding:.25em .5em;text-align:left;vertical-align:top}
th{background:#f4f4f4}td.num{text-align:right;white-space:nowrap}
.paper{color:#666;font-size:.9em}.note{color:#555;font-size:.92em}
svg{width:100%;height:auto;display:block}figure{margin:.5em 0}
nav{display:flex;flex-wrap:wrap;gap:.2em .7em}
"""


def esc(value: object) -> str:
    """Any value from a record, as HTML text: records are untrusted input."""
    return html.escape(" ".join(str(value).split()))


def build(records: Iterable[Record], unreadable: int = 0, *, summary: pd.DataFrame | None = None,
          reference: str | None = None, notes: Sequence[str] = ()) -> str:
    """The whole page as a string. Raises ``InputError`` without records or matplotlib.
    ``summary``: the table's summary when the caller made it (``bench table``'s, with a
    reference's cells beside the records' when ``reference`` names one). ``notes``: sentences
    on the files not counted, said under the table."""
    records = sorted(records, key=lambda r: (*r.order, r.seed))
    if not records:
        raise InputError("no records to report")
    plt = _pyplot()
    if summary is None:
        summary = summarise(records_frame(records))
    title = "Results: " + ", ".join(sorted({r.suite or "unnamed suite" for r in records}))
    parts = [
        _section("protocol", "Protocol", _protocol(records, summary)),
        _section("results", "Results", _results(summary, unreadable, reference, notes)),
        _section("seeds", "Seeds", _seeds(plt, records, summary)),
        _section("curves", "Learning curves", _curves(plt, records)),
    ]
    if any(r.metrics for r in records):
        parts.append(_section("alignment", "Alignment", _alignment(plt, records)))
    parts += [_section("status", "Status", _status(records)),
              _section("provenance", "Provenance", _provenance(records))]
    nav = "".join(f'<a href="#{name}">{name.capitalize()}</a>' for name in SECTIONS
                  if f'<section id="{name}">' in "".join(parts))
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{esc(title)}</title><style>{CSS}</style></head>\n<body><main>"
            f"<h1>{esc(title)}</h1><nav>{nav}</nav>\n" + "\n".join(parts)
            + "\n</main></body></html>\n")


def _pyplot():
    """matplotlib's pyplot on the Agg backend, or one line saying how to install it."""
    try:
        import matplotlib
    except ImportError:
        raise InputError("bench report needs matplotlib: pip install 'bioplaus-bench[plots]'"
                         ) from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _section(name: str, heading: str, body: str) -> str:
    return f'<section id="{name}"><h2>{heading}</h2>\n{body}\n</section>'


def _table(header: list[str], rows: list[list[str]]) -> str:
    """An HTML table of cells that are already HTML, wrapped so it scrolls on a narrow screen."""
    head = "".join(f"<th>{cell}</th>" for cell in header)
    body = "".join("<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>"
                   for row in rows)
    return f'<div class="wide"><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody>' \
           "</table></div>"


def _svg(plt, fig) -> str:
    """A figure as inline SVG: no XML header, doctype, metadata or namespace URLs, so the page
    holds no external address (HTML parses inline SVG without them)."""
    buffer = io.StringIO()
    fig.savefig(buffer, format="svg", bbox_inches="tight")
    plt.close(fig)
    text = buffer.getvalue()
    text = text[text.index("<svg"):]
    text = re.sub(r"<metadata>.*?</metadata>", "", text, flags=re.S)
    text = re.sub(r"<!--.*?-->", "", text, flags=re.S)
    return "<figure>" + re.sub(r'\s+xmlns(:\w+)?="[^"]*"', "", text) + "</figure>"


def _by_dataset(records: list[Record]) -> dict[str, list[Record]]:
    grouped: dict[str, list[Record]] = defaultdict(list)
    for record in records:
        grouped[record.dataset_label].append(record)
    return grouped


def _by_label(records: list[Record]) -> dict[str, list[Record]]:
    grouped: dict[str, list[Record]] = defaultdict(list)
    for record in records:
        grouped[record.label].append(record)
    return grouped


# --- sections ------------------------------------------------------------------------------------

def _protocol(records: list[Record], summary: pd.DataFrame) -> str:
    """What was run: a reader must see at once whether these are the paper's protocol or a
    quick trial."""
    rows = []
    for label, group in _by_dataset(records).items():
        seeds = sorted({r.seed for r in group})
        rows.append([esc(label), esc(group[0].task), esc(max(r.epochs for r in group)),
                     esc(len({r.algorithm for r in group})), esc(", ".join(map(str, seeds)))])
    suites = ", ".join(sorted({r.suite or "unnamed" for r in records}))
    deviations = sorted({d for r in records for d in r.deviations})
    text = f"<p>Suite: {esc(suites)}.</p>" + _table(
        ["Dataset", "Task", "Epochs", "Methods", "Seeds"], rows)
    text += f'<p class="note">{esc(caption(summary))}</p>'
    if deviations:
        text += "<p><strong>Quick trial, not the paper protocol:</strong></p><ul>" + "".join(
            f"<li>{esc(d)}</li>" for d in deviations) + "</ul>"
    else:
        text += "<p>No deviations from the suite's protocol.</p>"
    return text


def _cell(row) -> str:
    """One table cell as ``bench table`` writes it, in HTML, with the paper's number below."""
    if row.skipped and not (row.ok or row.diverged or row.error or row.timeout):
        text = "n/a"
    else:
        value = esc(mean_sd(row.mean, row.sd, row, False)) if row.n else "–"
        value = f"<strong>{value}</strong>" if row.best else value
        text = f"{value}{code_mark(row)} ({esc(seed_counts(row))})"
    if not math.isnan(row.paper_mean):
        paper = esc(mean_sd(row.paper_mean, row.paper_sd, row, False))
        text += f'<br><span class="paper">paper: {paper}</span>'
    return text


def _results(summary: pd.DataFrame, unreadable: int, reference: str | None,
             notes: Sequence[str] = ()) -> str:
    """The methods × datasets table, and the comparison with a reference's cells when there is
    one; the markdown statistics stay in ``bench table``."""
    datasets = summary.drop_duplicates("dataset").sort_values("dataset_order")
    methods = summary.drop_duplicates("algorithm").sort_values("algorithm_order")
    cells = {(r.dataset, r.algorithm): r for r in summary.itertuples(index=False)}
    rows = [[esc(label)] + [_cell(cells[(d, a)]) if (d, a) in cells else ""
                            for d in datasets.dataset]
            for a, label in zip(methods.algorithm, methods.label, strict=True)]
    text = _table(["Method", *map(esc, datasets.dataset_label)], rows)
    text += f'<p class="note">{esc(caption(summary))}'
    if summary.paper_mean.notna().any():
        text += " Grey: the paper's published mean ± SD."
    if apart := without_paper_numbers(summary):
        text += (f" The paper's numbers are of its protocol ({PAPER_EPOCHS} epochs, no quick-trial "
                 f"override) and stand beside no other cells: {esc(', '.join(apart))}.")
    text += "</p>"
    if "code_changed" in summary and summary.code_changed.any():
        text += f'<p class="note">{esc(CODE_NOTE)}</p>'
    if unreadable:
        text += f'<p class="note">{esc(unreadable_note(unreadable))}</p>'
    text += "".join(f'<p class="note">{esc(note)}</p>' for note in notes)
    if reference is not None:
        text += f"<p>{esc(comparison_heading(reference))}</p>" + _table(
            COMPARISON_HEADER, [[esc(cell) for cell in row] for row in comparison_rows(summary)])
    return text


def _seeds(plt, records: list[Record], summary: pd.DataFrame) -> str:
    """Per dataset, every seed's number beside the mean: with few seeds the spread says more
    than the SD."""
    figures = []
    for label, group in _by_dataset(records).items():
        methods = _by_label([r for r in group if r.status == "ok"])
        if not methods:
            continue
        fig, ax = plt.subplots(figsize=(6.4, 1.0 + 0.4 * len(methods)))
        for y, runs in enumerate(methods.values()):
            values = np.array([r.reported_value() for r in runs])
            values = values[np.isfinite(values)]
            ax.scatter(values, [y] * len(values), alpha=0.6, color="tab:blue", zorder=2)
            if len(values):
                ax.scatter([values.mean()], [y], marker="|", s=400, color="black", zorder=3)
        ax.set_yticks(range(len(methods)), list(methods))
        ax.set_ylim(len(methods) - 0.5, -0.5)
        ax.set_xlabel(_metric_name(group[0]) + " (dots: seeds, bar: mean)")
        ax.set_title(label)
        figures.append(_svg(plt, fig))
    return "".join(figures) or "<p>No finished cell to show.</p>"


def _metric_name(record: Record) -> str:
    if record.metric == "train_loss":
        return "training loss"
    return "test error (%)" if record.task == "classification" else "test loss"


def _curves(plt, records: list[Record]) -> str:
    """Per dataset, training loss and the test metric per epoch, per method."""
    figures = []
    for label, group in _by_dataset(records).items():
        trained = [r for r in group if r.history and r.status in ("ok", "diverged")]
        if not trained:
            continue
        fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
        for method, runs in _by_label(trained).items():
            band(axes[0], [[_float(row.get("train_loss")) for row in r.history or ()]
                             for r in runs], method)  # every run here has a history
            band(axes[1], [r.test_curve() for r in runs], method)
        axes[0].set_ylabel("training loss")
        axes[1].set_ylabel(_metric_name(trained[0]).replace("training loss", "test loss"))
        for ax in axes:
            ax.set_xlabel("epoch")
            ax.xaxis.get_major_locator().set_params(integer=True)
        axes[1].legend(fontsize="small")
        fig.suptitle(label + " (mean ± SD over seeds)")
        figures.append(_svg(plt, fig))
    return "".join(figures) or "<p>No trained cell to show.</p>"


def _float(value) -> float:
    return math.nan if value is None else float(value)


def _alignment(plt, records: list[Record]) -> str:
    """Mean angles with BP and GNT, and the nullspace ratio, per layer and method: the paper's
    Figures 2 and 4 in numbers, then per dataset the angle curves of every layer (Figure 4)."""
    rows = []
    for record_group in _by_dataset([r for r in records if r.metrics]).values():
        layers = depth(record_group)
        for method, runs in _by_label(record_group).items():
            logged = [m for r in runs for m in r.metrics or ()]
            ratios = {str(k) for m in logged for k in (m.get("nullspace_ratio") or {})}
            for layer in range(1, max([layers or 0, *map(_int, ratios)]) + 1):
                rows.append([esc(runs[0].dataset_label), esc(method),
                             esc(layer_name(layer, layers).removeprefix("layer ")),
                             _mean_of(_angles_of(logged, "bp_angle", layer), ".1f"),
                             _mean_of(_angles_of(logged, "gnt_angle", layer), ".1f"),
                             _mean_of(_ratios_of(logged, str(layer)), ".3f")])
    text = _table(["Dataset", "Method", "Layer", "angle to BP (°)", "angle to GNT (°)",
                   "nullspace ratio"], rows)
    text += '<p class="note">Means over every logged minibatch and seed; – where not logged.</p>'
    trained = [r for r in records if r.status in ("ok", "diverged") and r.metrics]
    for group in _by_dataset(trained).values():
        with contextlib.suppress(InputError):  # no angle logged here: the table says so
            fig, notes = angle_figure(plt, group)
            text += _svg(plt, fig) + "".join(f'<p class="note">{esc(note)}</p>' for note in notes)
    from .plots import _nullspace
    with contextlib.suppress(InputError, IndexError, KeyError, TypeError, ValueError):
        text += _svg(plt, _nullspace(plt, trained, None))
    return text


def _int(text: str) -> int:
    return int(text) if text.isdigit() else 0


def _mean_of(values: list, spec: str) -> str:
    values = [float(v) for v in values if isinstance(v, int | float) and math.isfinite(v)]
    return format(np.mean(values), spec) if values else "–"


def _angles_of(logged: list[dict], key: str, layer: int) -> list:
    return [m[key][layer - 1] for m in logged
            if isinstance(m.get(key), list) and len(m[key]) >= layer]


def _ratios_of(logged: list[dict], layer: str) -> list:
    return [(m.get("nullspace_ratio") or {}).get(layer) for m in logged]


def _status(records: list[Record]) -> str:
    """Every cell that did not finish ok, with its reason: a table's mean hides them."""
    rows = [[esc(r.dataset_label), esc(r.label), esc(r.seed), esc(r.status),
             esc(r.explanation or "–")] for r in records if r.status != "ok"]
    counts = pd.Series([r.status for r in records]).value_counts()
    text = "<p>" + esc(", ".join(f"{n} {status}" for status, n in counts.items())) + ".</p>"
    if not rows:
        return text + "<p>Every cell finished ok.</p>"
    return text + _table(["Dataset", "Method", "Seed", "Status", "Reason"], rows)


def _values(records: list[Record], key: str) -> str:
    found = sorted({str(r.provenance.get(key)) for r in records if r.provenance.get(key)})
    return ", ".join(found) or "–"


def _provenance(records: list[Record]) -> str:
    """With what and where the numbers were computed, and whether the data were checked."""
    rows = [[label, esc(_values(records, key))] for label, key in (
        ("bioplaus-bench", "bioplaus_bench"), ("torch", "torch"), ("Python", "python"),
        ("platform", "platform"), ("device", "device"), ("dtype", "dtype"),
        ("git commit", "git_commit"))]
    hashes = {r.config_hash for r in records if r.config_hash}
    rows.append(["config hashes", esc(f"{len(hashes)} distinct over {len(records)} records")])
    text = _table(["", "value"], rows)
    checks = defaultdict(set)
    for record in records:
        data = record.provenance.get("data")
        if isinstance(data, dict):
            checks[record.dataset_label].add(_data_check(data))
    rows = [[esc(label), "<br>".join(map(esc, sorted(found)))] for label, found in checks.items()]
    text += "<h3>Data checks</h3>"
    return text + (_table(["Dataset", "data"], rows) if rows
                   else "<p>No data provenance in these records.</p>")


def _data_check(data: dict) -> str:
    """One line per data identity; file digests are counted, not listed."""
    parts = []
    for key, value in data.items():
        if isinstance(value, dict):
            value = f"{len(value)} files"
        elif not isinstance(value, str):
            value = json.dumps(value, default=str)
        parts.append(f"{key}: {value}")
    return "; ".join(parts)
