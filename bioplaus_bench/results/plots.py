"""Figures from records (matplotlib, an optional extra: ``pip install 'bioplaus-bench[plots]'``):

- ``angles``: Figure 4 — per layer (all, or one), the angle of each method's update with the BP
  gradient and with the GNT update: the rolling mean ± rolling SD over 30 logged points of all
  its seeds together (with one seed, the paper's curve; algorithms.md §9.2);
- ``nullspace``: Figure 2 — the mean nullspace ratio of a layer's update per method, ± SD;
- ``curves``: learning curves (test error, or test loss for regression) per dataset, mean ± SD
  over seeds.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from ..errors import InputError, did_you_mean
from ..files import write_atomically
from .record import Record

FIGURES = ("angles", "nullspace", "curves")
WINDOW = 30
ANGLES = (("bp_angle", "BP gradient"), ("gnt_angle", "GNT update"))


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


def plot(records: list[Record], figure: str, out: Path, layer: int | None = None,
         datasets: Sequence[str] = ()) -> tuple[Path, list[str]]:
    """Draw ``figure`` from ``records`` (of ``datasets`` only, by key, when given) into ``out``
    (PNG or PDF, from the suffix); also the sentences that say what the figure leaves out."""
    if figure not in FIGURES:
        raise InputError(f"unknown figure '{figure}'; expected one of {', '.join(FIGURES)}")
    if out.suffix.lower() not in (".png", ".pdf"):
        raise InputError(f"--out must end in .png or .pdf, got '{out.name}'")
    records = _of_datasets(records, datasets)
    plt = _pyplot()
    records = [r for r in _ordered(records) if r.status in ("ok", "diverged")]
    notes: list[str] = []
    if figure == "angles":
        fig, notes = _angles(plt, records, layer)
    else:
        fig = {"nullspace": _nullspace, "curves": _curves}[figure](plt, records, layer)
    try:  # the format from the suffix, as savefig(out) would; never through a link
        out.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(out, lambda file: fig.savefig(file, format=out.suffix.lower()[1:],
                                                       bbox_inches="tight"))
    except OSError as error:
        raise InputError(f"cannot write {out}: {error.strerror or error}") from None
    finally:
        plt.close(fig)
    return out, notes


def _of_datasets(records: list[Record], datasets: Sequence[str]) -> list[Record]:
    """The records of the named datasets (their keys, as in the suite and the results folder)."""
    known = sorted({r.dataset for r in records})
    for name in datasets:
        if name not in known:
            raise InputError(f"--dataset: no records of '{name}'{did_you_mean(name, known)}; "
                             f"the datasets here: {', '.join(known)}")
    return [r for r in records if r.dataset in datasets] if datasets else records


def _angles(plt, records: list[Record], layer: int | None):
    """``bench plot``'s Figure 4: the angles of one dataset (several would mix depths)."""
    logged = [r for r in records if r.metrics]
    if not logged:
        raise InputError("no logged angles in these records: set metrics.log_interval in the suite")
    datasets = sorted({r.dataset for r in logged})
    if len(datasets) > 1:
        raise InputError(f"angles are logged on {len(datasets)} datasets ({', '.join(datasets)}): "
                         "pick one with --dataset")
    return angle_figure(plt, logged, layer)


def layer_name(layer: int, depth: int | None) -> str:
    """Layers are numbered 1..L as the records list them; the last one is the output layer."""
    return f"layer {layer}" + (" (output)" if layer == depth else "")


def _angle(entry: dict, key: str, layer: int) -> float:
    """Layer ``layer``'s angle in one logged entry, NaN where it is missing or not a number
    (entries are read from disk)."""
    values = entry.get(key)
    if isinstance(values, list) and len(values) >= layer:
        value = values[layer - 1]
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    return math.nan


def _layers(records: list[Record], key: str) -> int:
    """How many layers have ``key`` logged, in any entry of any record."""
    return max((len(m[key]) for r in records for m in r.metrics or ()
                if isinstance(m.get(key), list)), default=0)


def depth(records: list[Record]) -> int | None:
    """The number of layers L, from the angles logged (BP's cover 1..L, GNT's the hidden
    layers 1..L-1); None when neither was logged."""
    bp, gnt = _layers(records, "bp_angle"), _layers(records, "gnt_angle")
    return max(bp, gnt + 1) if bp or gnt else None


def _rolling(runs: list[list[float]]) -> tuple[np.ndarray, np.ndarray]:
    """Mean and SD of the last ``WINDOW`` logged points of every seed together, at each point
    every seed reached: with one seed, the paper's rolling mean ± rolling SD (algorithms.md §9.2)."""
    length = min(len(run) for run in runs)
    values = np.array([run[:length] for run in runs], dtype=float)
    mean, sd = np.full(length, math.nan), np.full(length, math.nan)
    for t in range(length):
        window = values[:, max(0, t - WINDOW + 1):t + 1].ravel()
        window = window[np.isfinite(window)]
        if len(window):
            mean[t] = window.mean()
            sd[t] = window.std(ddof=1) if len(window) > 1 else 0.0
    return mean, sd


def angle_figure(plt, records: list[Record], layer: int | None = None):
    """Figure 4 of one dataset's records: per layer (all, or ``layer``) a row of panels, the
    angle of each method's update with the BP gradient and with the GNT update; one colour per
    method across panels and one legend. A metric no method logged is left out, and a panel of
    a layer it does not cover (GNT: the output layer) is not drawn; the sentences returned say
    what is missing."""
    methods: dict[str, list[Record]] = defaultdict(list)
    for record in records:
        methods[record.label].append(record)
    logged = {key: [m for m, runs in methods.items() if _layers(runs, key)] for key, _ in ANGLES}
    kinds = [(key, name) for key, name in ANGLES if logged[key]]
    if not kinds:
        raise InputError("no angles with BP or GNT logged in these records: set "
                         "metrics.bp_angles or metrics.gnt_angles in the suite")
    notes = []
    for key, name in ANGLES:
        missing = [m for m in methods if m not in logged[key]]
        if len(missing) == len(methods):
            notes.append(f"Angles with the {name} were not logged (metrics.{key}s): left out.")
        elif missing:
            notes.append(f"Angles with the {name} were not logged for {', '.join(missing)}.")
    total = depth(records)
    available = max(_layers(records, key) for key, _ in kinds)
    if layer is not None and not 1 <= layer <= available:
        raise InputError(f"--layer {layer}: angles are logged for layers 1 to {available}")
    layers = [layer] if layer is not None else list(range(1, available + 1))
    fig, axes = plt.subplots(len(layers), len(kinds), figsize=(5.2 * len(kinds), 2.6 * len(layers)),
                             sharex=True, sharey=True, squeeze=False, layout="constrained")
    colours = {m: f"C{i % 10}" for i, m in enumerate(methods)}
    lowest = {}  # per metric, its lowest panel: the one that names the x axis
    for row, number in zip(axes, layers, strict=True):
        for ax, (key, name) in zip(row, kinds, strict=True):
            drawn = False
            for method in logged[key]:
                runs = [run for r in methods[method]
                        if (run := [_angle(m, key, number) for m in r.metrics or ()])]
                if not any(np.isfinite(run).any() for run in runs):
                    continue
                mean, sd = _rolling(runs)
                x = np.arange(len(mean)) * _interval(methods[method][0])
                ax.plot(x, mean, color=colours[method])
                ax.fill_between(x, mean - sd, mean + sd, color=colours[method], alpha=0.2)
                drawn = True
            if not drawn:  # this metric does not reach this layer (GNT: the output layer)
                ax.remove()
                continue
            ax.set_title(f"{layer_name(number, total).capitalize()}: angle with the {name}",
                         fontsize="medium")
            if ax is row[0]:
                ax.set_ylabel("angle (°)")
            ax.xaxis.set_tick_params(labelbottom=True)
            lowest[key] = ax
    for ax in lowest.values():
        ax.set_xlabel("minibatch")
    handles = [plt.Line2D([], [], color=colours[m], label=f"{m} (n={len(runs)})")
               for m, runs in methods.items()]
    fig.legend(handles=handles, loc="outside upper center", ncol=min(len(handles), 4),
               fontsize="small", title=f"{records[0].dataset_label}: line = mean over seeds "
               f"(rolling, {WINDOW} logged minibatches), band = ± SD")
    return fig, notes


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


def band(ax, curves: list[list[float]], name: str, **style) -> None:
    """Mean over seeds and a ±SD band, on the epochs every seed reached."""
    length = min(len(curve) for curve in curves)
    if not length:
        return
    values = np.array([curve[:length] for curve in curves], dtype=float)
    mean, sd = np.nanmean(values, axis=0), np.nanstd(values, axis=0)
    x = np.arange(1, length + 1)
    line, = ax.plot(x, mean, label=f"{name} (n={len(curves)})", **style)
    ax.fill_between(x, mean - sd, mean + sd, color=line.get_color(), alpha=0.2)


def _curves(plt, records, layer):
    """The test metric per epoch, one panel per dataset: per method the mean over seeds ± SD."""
    if not records:
        raise InputError("no finished record to draw")
    by_dataset: dict[str, list[Record]] = defaultdict(list)
    for record in records:
        by_dataset[record.dataset_label].append(record)
    fig, axes = plt.subplots(1, len(by_dataset), figsize=(5.5 * len(by_dataset), 4), squeeze=False)
    for ax, (dataset, rows) in zip(axes[0], by_dataset.items(), strict=True):
        curves: dict[str, list[list[float]]] = defaultdict(list)
        for record in rows:
            curves[record.label].append(record.test_curve())
        for label, runs in curves.items():
            band(ax, runs, label)
        ax.set_title(f"{dataset} (mean ± SD over seeds)")
        ax.set_xlabel("epoch")
        ax.set_ylabel("test error (%)" if rows[0].task == "classification" else "test loss")
        ax.legend(fontsize="small")
    return fig
