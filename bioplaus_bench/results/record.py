"""A record: what one cell's run produced, and under which configuration, as one typed value.

The store writes a record as a JSON object and reads it back with ``Record.from_json``; tables,
plots, the executors and ``bench tune`` read its attributes, and the number a table reports is
read in one place, ``Record.reported_value``. The JSON layout is stable: every record written
since the first release still reads (older ones lack ``reason``, ``baseline`` and the inputs in
``config``, and may hold NaN), and ``to_json`` writes the keys, in the order, that records have
always had.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..spec.schema import PLAIN_NAME

FINISHED = ("ok", "diverged", "skipped")  # statuses that are not run again
STATUSES = (*FINISHED, "error", "timeout")
# Records written before the ``baseline`` field existed compared against the entry "bp".
OLD_BASELINE = "bp"


class RecordError(ValueError):
    """A JSON value that is not a record; the message says which field is wrong."""


def _result() -> Any:
    """A field of the run's result: absent from the JSON while None (a skipped cell has no
    history, a failed one no final metrics)."""
    return field(default=None, metadata={"omit": "if None"})


def _trained() -> Any:
    """A field every trained cell states, null meaning "none" (no selected epoch, not pruned);
    absent from the records of cells that did not train."""
    return field(default=None, metadata={"omit": "if untrained"})


@dataclass(frozen=True, kw_only=True)
class Record:
    """One cell's record. The fields are in the order of the JSON keys: first the cell (what
    ran, where it goes in a table, its configuration and provenance), then the result."""

    suite: str | None = None
    dataset: str
    dataset_label: str
    task: str  # "classification" or "regression"
    algorithm: str  # the suite's entry id
    algorithm_name: str  # the plugin's name
    label: str
    seed: int
    order: tuple[int, int]  # (dataset index, algorithm index) in the suite: the table's layout
    paper_protocol: bool = True
    deviations: tuple[str, ...] = ()
    metric: str = "test_error"  # "test_error" or "train_loss": what a table reports
    config: dict[str, Any]
    config_hash: str | None = None
    baseline: str | None = OLD_BASELINE  # the entry p-values compare against; None: none
    provenance: dict[str, Any] = field(default_factory=dict)
    status: str  # one of STATUSES
    history: list[dict[str, Any]] | None = _result()  # one row per epoch
    pretraining_feedback_loss: list[float] | None = _result()
    pruned_at_epoch: int | None = _trained()
    error: str | None = _result()
    reason: str | None = _result()  # why the cell did not finish
    traceback: str | None = _result()
    selected_epoch: int | None = _trained()
    final: dict[str, float | None] | None = _result()  # the metrics of the selected epoch
    wall_time: float | None = _result()
    # Seeds trained stacked (``--vectorize-seeds``): how many. Their wall time, and each history
    # row's seconds, is then an equal share of the stack's, not a time this seed took alone.
    stacked_seeds: int | None = _result()
    metrics: list[dict[str, Any]] | None = _result()  # alignment metrics, every log_interval
    probe: Any = _result()

    # --- reading -------------------------------------------------------------------------------

    @property
    def finished(self) -> bool:
        """Whether a re-run keeps this record instead of running the cell again."""
        return self.status in FINISHED

    @property
    def epochs(self) -> int:
        return self.config["dataset"]["protocol"]["epochs"]

    @property
    def explanation(self) -> str:
        """Why the cell did not finish: its reason, or its error for records written before
        reasons were; "" when there is none."""
        return self.reason or self.error or ""

    def reported_value(self) -> float:
        """The number a table reports for this record, NaN when it has none: the test error
        (%) at the selected epoch for classification, the test loss for regression, or the
        last epoch's training loss when the suite's metric is ``train_loss``."""
        if self.metric == "train_loss":
            key, scale = "train_loss_last", 1.0
        elif self.task == "classification":
            key, scale = "test_error", 100.0
        else:
            key, scale = "test_loss", 1.0
        return _number((self.final or {}).get(key), scale)

    def validation_error(self) -> float | None:
        """What ``bench tune`` minimises, at the selected epoch: 1 − the validation accuracy
        for classification, the validation loss for regression; None without a validation
        split (the test set is never used to choose)."""
        final = self.final or {}
        if "val_accuracy" in final:
            return 1.0 - _number(final["val_accuracy"])
        if "val_loss" in final:
            return _number(final["val_loss"])
        return None

    def test_curve(self) -> list[float]:
        """Per evaluated epoch, the test error (%) for classification or the test loss for
        regression (NaN where the value was not finite): the learning curve of the test
        metric that ``reported_value`` reads at the selected epoch."""
        rows = self.history or ()
        if self.task == "classification":
            return [100.0 * (1.0 - _number(row["test_accuracy"])) for row in rows
                    if "test_accuracy" in row]
        return [_number(row["test_loss"]) for row in rows if "test_loss" in row]

    def truncated(self, epochs: int) -> Record:
        """The record this cell's run would have given had it stopped after ``epochs`` epochs:
        the history cut there and the selection rule re-applied to it. Exact because the
        protocol has no schedule that depends on the epoch count (algorithms.md §12): the first
        N epochs of a longer run are an N-epoch run (same initialisation, data order, noise).
        A divergence or pruning after epoch N did not happen yet; the wall time is not known
        (None); ``deviations`` says what was done."""
        if not 0 < epochs <= self.epochs:
            raise ValueError(f"cannot truncate a {self.epochs}-epoch record to {epochs} epochs")
        if epochs == self.epochs or self.history is None:
            return self
        history = [row for row in self.history if row["epoch"] <= epochs]
        ran_on = len(history) < len(self.history)  # epochs 1..N all finished
        status, reason = ("ok", None) if ran_on else (self.status, self.reason)
        selected_epoch, final = select_epoch(history, self.task, any(
            "val_loss" in row for row in history))
        dataset = self.config["dataset"]
        config = {**self.config, "dataset": {**dataset, "protocol": {
            **dataset["protocol"], "epochs": epochs}}}
        return dataclasses.replace(
            self, config=config, history=history, status=status, reason=reason,
            error=None if ran_on else self.error, traceback=None if ran_on else self.traceback,
            pruned_at_epoch=self.pruned_at_epoch if (self.pruned_at_epoch or 0) <= epochs
            else None,
            selected_epoch=selected_epoch, final=final, wall_time=None,
            metrics=None if self.metrics is None
            else [entry for entry in self.metrics if entry.get("epoch", 0) <= epochs],
            paper_protocol=False,
            deviations=(*self.deviations, f"truncated to its first {epochs} of {self.epochs} "
                        "epochs"))

    # --- JSON ----------------------------------------------------------------------------------

    @classmethod
    def from_json(cls, data: Any) -> Record:
        """The record held by a parsed JSON value. Raises ``RecordError`` for a value that is
        not a record; keys this version does not know are ignored."""
        if not isinstance(data, Mapping):
            raise RecordError("not a JSON object")
        for name, kind in _REQUIRED.items():
            if not _is(data.get(name), kind):
                raise RecordError(f"field '{name}' missing or not {_kind_name(kind)}")
        for name, kind in _OPTIONAL.items():
            if name in data and not _is(data[name], kind):
                raise RecordError(f"field '{name}' is not {_kind_name(kind)}")
        _check_values(data)
        known = {f.name for f in dataclasses.fields(cls)}
        values = {name: value for name, value in data.items() if name in known}
        return cls(**{**values, "order": tuple(data["order"]),
                      "deviations": tuple(data.get("deviations", ()))})

    def to_json(self) -> dict[str, Any]:
        """The record as standard JSON data (non-finite numbers as null), in the records'
        layout: cell fields always, result fields only where the run has them."""
        trained = self.history is not None
        return {f.name: _finite(getattr(self, f.name)) for f in dataclasses.fields(self)
                if getattr(self, f.name) is not None
                or f.metadata.get("omit") is None
                or (f.metadata["omit"] == "if untrained" and trained)}


_NULL = type(None)
TASKS = ("classification", "regression")
METRICS = ("test_error", "train_loss")
_NUMBER = (int, float)

# The fields that tables and plots read: a JSON object without them is not a record.
_REQUIRED: dict[str, Any] = {
    "dataset": str, "dataset_label": str, "algorithm": str, "algorithm_name": str,
    "label": str, "task": str, "seed": int, "status": str, "order": list, "config": dict}
# The types of the other fields, where a record has them.
_OPTIONAL: dict[str, Any] = {
    "suite": (str, _NULL), "paper_protocol": bool, "deviations": list, "metric": str,
    "config_hash": (str, _NULL), "baseline": (str, _NULL), "provenance": dict,
    "history": (list, _NULL), "pretraining_feedback_loss": (list, _NULL),
    "pruned_at_epoch": (int, _NULL), "error": (str, _NULL), "reason": (str, _NULL),
    "traceback": (str, _NULL), "selected_epoch": (int, _NULL), "final": (dict, _NULL),
    "wall_time": (*_NUMBER, _NULL), "stacked_seeds": (int, _NULL), "metrics": (list, _NULL)}


def _is(value: Any, kind: type | tuple[type, ...]) -> bool:
    """``isinstance``, except that true and false are not numbers."""
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return isinstance(value, kinds) and (bool in kinds or not isinstance(value, bool))


def _kind_name(kind: type | tuple[type, ...]) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join("null" if k is _NULL else k.__name__ for k in kinds)


def _check_values(data: Mapping[str, Any]) -> None:
    """What the field types alone do not say."""
    if data["status"] not in STATUSES:
        raise RecordError(f"unknown status '{data['status']}'")
    if data["task"] not in TASKS:
        raise RecordError(f"unknown task '{data['task']}'")
    if data.get("metric", "test_error") not in METRICS:
        raise RecordError(f"unknown metric '{data['metric']}'")
    if len(data["order"]) != 2 or not all(_is(i, int) for i in data["order"]):
        raise RecordError("field 'order' is not two integers")
    dataset = data["config"].get("dataset")
    protocol = dataset.get("protocol") if isinstance(dataset, dict) else None
    if not _is(protocol.get("epochs") if isinstance(protocol, dict) else None, int):
        raise RecordError("field 'config.dataset.protocol.epochs' missing")
    if not all(_is(v, (*_NUMBER, _NULL)) for v in (data.get("final") or {}).values()):
        raise RecordError("field 'final' is not a mapping of numbers")
    if not all(_is(d, str) for d in data.get("deviations", ())):
        raise RecordError("field 'deviations' is not a list of strings")
    for row in data.get("history") or ():
        if not isinstance(row, dict) or not all(
                _is(v, (*_NUMBER, _NULL)) or (isinstance(v, list) and all(
                    _is(x, (*_NUMBER, _NULL)) for x in v)) for v in row.values()):
            raise RecordError("field 'history' is not a list of rows of numbers")


def select_epoch(history: list[dict[str, Any]], kind: str, has_val: bool
                 ) -> tuple[int | None, dict[str, float | None]]:
    """The selection rule (algorithms.md §7): the epoch a run reports and its final metrics.
    With a validation split, the first epoch of best validation accuracy (classification) or
    least validation loss (regression); without one, the last evaluated epoch. Epochs whose test
    or validation loss is not finite are never chosen. ``(None, {})`` when none was evaluated."""
    evaluated = [row for row in history if "test_loss" in row
                 and all(math.isfinite(row[key]) for key in ("test_loss", "val_loss") if key in row)]
    if not evaluated:
        return None, {}
    if has_val:
        if kind == "classification":  # the first epoch of maximal validation accuracy
            best = max(evaluated, key=lambda row: (row["val_accuracy"], -row["epoch"]))
        else:
            best = min(evaluated, key=lambda row: (row["val_loss"], row["epoch"]))
    else:
        best = evaluated[-1]
    final = {"test_loss": best["test_loss"], "train_loss_last": history[-1]["train_loss"]}
    if kind == "classification":
        final["test_error"] = 1.0 - best["test_accuracy"]
        final["test_accuracy"] = best["test_accuracy"]
    if has_val:
        final["val_loss"] = best["val_loss"]
        if kind == "classification":
            final["val_accuracy"] = best["val_accuracy"]
    return best["epoch"], final


# --- ranges --------------------------------------------------------------------------------------

# No measurement of this suite comes near this bound (the committed records' largest loss is
# about 170, a regression test MSE included); a larger number is a run that diverged without
# overflowing, or a forged file, and beside real numbers it would swamp a mean or overflow its
# statistics (1e306 squared is infinite).
VALUE_BOUND = 1e12
MAX_EPOCHS = 10**6  # far beyond any protocol, within every integer type a table uses
MAX_ORDER = 10**6  # a suite's dataset and entry indices
# Numbers a rule defines for itself (its feedback objective may be negative): only bounded.
_FREE = ("feedback_loss", "extra_feedback_loss")


def check_ranges(record: Record) -> None:
    """What a record read from a file must also satisfy to be counted: dataset and entry ids
    that are plain names (the folder names a suite gives them, so never a reference's 'ref:'
    label), and every number in its range: rates (accuracies, errors) in [0, 1], losses in
    [0, VALUE_BOUND], a rule's own feedback losses within ±VALUE_BOUND, times ≥ 0,
    epochs from 1 to the protocol's count (at most MAX_EPOCHS), the suite's indices (``order``)
    below MAX_ORDER. Null (and NaN, as older records wrote it) is "no
    value"; an infinite number is refused. Raises ``RecordError`` naming the field."""
    for kind, name in (("dataset", record.dataset), ("entry", record.algorithm)):
        if not PLAIN_NAME.test(name):
            raise RecordError(f"{kind} id {name!r} is not {PLAIN_NAME.expected}")
    epochs = record.epochs
    if not 1 <= epochs <= MAX_EPOCHS:
        raise RecordError(f"config.dataset.protocol.epochs {_shown(epochs)} is outside "
                          f"[1, {MAX_EPOCHS}]")
    for field_name in ("selected_epoch", "pruned_at_epoch"):
        epoch = getattr(record, field_name)
        if epoch is not None and not 1 <= epoch <= epochs:
            raise RecordError(f"{field_name} {_shown(epoch)} is outside [1, {epochs}]")
    if not all(0 <= index < MAX_ORDER for index in record.order):
        raise RecordError(f"order [{', '.join(map(_shown, record.order))}] is not two indices "
                          f"in [0, {MAX_ORDER})")
    if not 0 <= record.seed < 2**63:  # what a table's integer columns hold
        raise RecordError(f"seed {_shown(record.seed)} is outside [0, 2^63)")
    _check_number("wall_time", record.wall_time)
    for key, value in (record.final or {}).items():
        _check_number(f"final '{key}'", value, key)
    for loss in record.pretraining_feedback_loss or ():
        _check_number("pretraining_feedback_loss", loss, "feedback_loss")
    last = 0
    for row in record.history or ():
        epoch = row.get("epoch")
        if epoch is not None and not (_is(epoch, int) and last < epoch <= epochs):
            raise RecordError(f"history epoch {epoch} is not after epoch {last} and within "
                              f"[1, {epochs}]")
        last = epoch if epoch is not None else last
        for key, value in row.items():
            for item in value if isinstance(value, list) else (value,):
                _check_number(f"history '{key}' (epoch {epoch})", item, key)


def _check_number(name: str, value: Any, key: str = "") -> None:
    if value is None:
        return
    if not _is(value, _NUMBER):
        raise RecordError(f"{name} is not a number")
    if isinstance(value, float) and math.isnan(value):
        return
    if isinstance(value, float) and not math.isfinite(value):
        raise RecordError(f"{name} {value} is not finite")
    if key.endswith(("accuracy", "error")):
        low, high = 0.0, 1.0
    elif key in _FREE:
        low, high = -VALUE_BOUND, VALUE_BOUND
    else:  # losses, times and what else a row holds
        low, high = 0.0, VALUE_BOUND
    if not low <= value <= high:  # exact for integers of any size too
        raise RecordError(f"{name} {_shown(value)} is outside [{low:g}, {high:g}]")


def _shown(value: float) -> str:
    """A number for a message: an integer of many digits by its length."""
    if isinstance(value, float) or abs(value) < 10**15:
        return f"{value:g}"
    return f"of {len(str(abs(value)))} digits"


def _number(value: float | None, scale: float = 1.0) -> float:
    return math.nan if value is None else scale * float(value)


def _finite(value: Any) -> Any:
    """Non-finite floats as null (standard JSON has no NaN or Infinity), tuples as lists, and
    the tensors and numpy values a metric plugin may return as plain numbers and lists."""
    if hasattr(value, "tolist") and callable(value.tolist):  # torch tensors, numpy values
        value = value.tolist()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value
