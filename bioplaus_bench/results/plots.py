"""Figures from records (matplotlib, an optional extra: ``pip install 'bioplaus-bench[plots]'``):

- ``angles``: Figure 4 — per method, the angle of a layer's update with the BP gradient and with
  the GNT update, rolling mean ± rolling SD over 30 logged points (algorithms.md §9.2);
- ``nullspace``: Figure 2 — the mean nullspace ratio of a layer's update per method, ± SD;
- ``curves``: learning curves (test error, or test loss for regression) per dataset.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import InputError
from ..files import write_atomically
from .record import Record

FIGURES = ("angles", "nullspace", "curves")
WINDOW = 30


def _pyplot():
    try:
        import matplotlib
    except ImportError:
        raise InputError("bench plot needs matplotlib: pip install 'bioplaus-bench[plots]'") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _ordered(records: Iterable[Record]) -> list[Record]:
    return sorted(records, key=lambda r: (*r.order, r.seed))


def _interval(record: Record) -> int:
    """Minibatches between two logged metrics (the x axis of the angle curves)."""
    return record.config.get("metrics", {}).get("log_interval") or 1


def plot(records: list[Record], figure: str, out: Path, layer: int | None = None) -> Path:
    """Draw ``figure`` from ``records`` into ``out`` (PNG or PDF, from the suffix)."""
    if figure not in FIGURES:
        raise InputError(f"unknown figure '{figure}'; expected one of {', '.join(FIGURES)}")
    if out.suffix.lower() not in (".png", ".pdf"):
        raise InputError(f"--out must end in .png or .pdf, got '{out.name}'")
    plt = _pyplot()
    records = [r for r in _ordered(records) if r.status in ("ok", "diverged")]
    draw = {"angles": _angles, "nullspace": _nullspace, "curves": _curves}[figure]
    fig = draw(plt, records, layer)
    try:  # the format from the suffix, as savefig(out) would; never through a link
        out.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(out, lambda file: fig.savefig(file, format=out.suffix.lower()[1:],
                                                       bbox_inches="tight"))
    except OSError as error:
        raise InputError(f"cannot write {out}: {error.strerror or error}") from None
    finally:
        plt.close(fig)
    return out


def _angles(plt, records, layer):
    logged = [r for r in records if r.metrics]
    if not logged:
        raise InputError("no logged angles in these records: set metrics.log_interval in the suite")
    hidden = len(logged[0].metrics[0].get("gnt_angle", [])) or None
    layer = layer or hidden or 1
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    for key, ax, title in (("bp_angle", axes[0], "BP gradient"),
                           ("gnt_angle", axes[1], "GNT update")):
        for record in logged:
            values = [m[key][layer - 1] for m in record.metrics if key in m
                      and len(m[key]) >= layer]
            if not values:
                continue
            series = pd.Series(values)
            mean = series.rolling(WINDOW, min_periods=1).mean()
            sd = series.rolling(WINDOW, min_periods=1).std().fillna(0)
            x = np.arange(len(values)) * _interval(record)
            name = record.label + (f" (seed {record.seed})" if len(logged) > 1 and
                                   sum(r.label == record.label for r in logged) > 1 else "")
            line, = ax.plot(x, mean, label=name)
            ax.fill_between(x, mean - sd, mean + sd, color=line.get_color(), alpha=0.2)
        ax.set_title(f"Angle with the {title}, layer {layer}")
        ax.set_xlabel("minibatch")
    axes[0].set_ylabel("angle (degrees)")
    axes[1].legend(fontsize="small")
    return fig


def _nullspace(plt, records, layer):
    ratios: dict[str, list[float]] = defaultdict(list)
    chosen = None
    for record in records:
        for m in record.metrics or ():
            values = m.get("nullspace_ratio", {})
            key = str(layer) if layer else next(iter(values), None)
            if key in values:
                ratios[record.label].append(values[key])
                chosen = key
    if not ratios:
        raise InputError("no nullspace ratios in these records: set metrics.nullspace_layers")
    fig, ax = plt.subplots(figsize=(4, 4))
    labels = list(ratios)
    ax.bar(labels, [np.mean(ratios[k]) for k in labels], yerr=[np.std(ratios[k]) for k in labels],
           capsize=6, color=["tab:blue", "tab:orange", "tab:green", "tab:red"][:len(labels)])
    ax.set_ylabel(f"nullspace ratio of the W_{chosen} update")
    ax.set_ylim(0, 1)
    return fig


def _curves(plt, records, layer):
    by_dataset: dict[str, list[Record]] = defaultdict(list)
    for record in records:
        by_dataset[record.dataset_label].append(record)
    fig, axes = plt.subplots(1, len(by_dataset), figsize=(5 * len(by_dataset), 4), squeeze=False)
    for ax, (dataset, rows) in zip(axes[0], by_dataset.items(), strict=True):
        curves: dict[str, list[list[float]]] = defaultdict(list)
        for record in rows:
            curves[record.label].append(record.test_curve())
        for label, runs in curves.items():
            length = min(len(run) for run in runs)
            mean = np.mean([run[:length] for run in runs], axis=0)
            ax.plot(np.arange(1, length + 1), mean, label=f"{label} (n={len(runs)})")
        ax.set_title(dataset)
        ax.set_xlabel("epoch")
        ax.set_ylabel("test error (%)" if rows[0].task == "classification" else "test loss")
        ax.legend(fontsize="small")
    return fig
