"""When two records are of the same settings or the same protocol: the one definition that
``--reference`` (``bench table``, ``load(reference=)``), ``ResultStore.finished(any_code=True)``
(the reference campaign) and the reference check use. Settings are compared as flat paths
(``optimizer.lr``), so that what differs can be named.

- The same settings (``settings_differences``): two configs (``Record.config``,
  ``Cell.config()``) equal at every path but those ignored (a campaign ignores ``inputs``, the
  code and data identities: older code still gives a reference cell, which the table marks).
- The same protocol (``protocol_of``): what two records of different rules must share for their
  numbers to compare: the dataset and its protocol, the data, the metric and the task. The
  config hash cannot decide it: it also covers the algorithm's code, which differs between your
  rule and the reference by nature."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..spec.cell import Cell
    from .record import Record


def settings_differences(ours: Mapping[str, Any], theirs: Mapping[str, Any],
                         ignored: Collection[str] = ()) -> list[str]:
    """The paths at which two configs differ, but those at or under an ``ignored`` path."""
    return [path for path in differing(dict(flat(ours)), dict(flat(theirs)))
            if not any(path == top or path.startswith(top + ".") for top in ignored)]


def same_settings(record: Record, cell: Cell) -> bool:
    """Whether ``record`` is of the cell's settings and protocol (as the suite gives it, or
    with the same quick-trial deviations), whatever code and data it was run with."""
    return record.paper_protocol == (not cell.deviations) and not settings_differences(
        record.config, cell.config(), ignored=("inputs",))


def protocol_of(record: Record) -> dict[str, Any]:
    """The settings two records must share for their numbers to compare, as flat paths
    (``architecture.hidden``): everything of the dataset's protocol but the evaluation batch
    size, the subset, the dataset and its options, the data's identity, the reported metric and
    the task."""
    dataset = record.config.get("dataset") or {}
    protocol = dict(dataset.get("protocol") or {})
    protocol.pop("eval_batch_size", None)  # evaluation is an exact per-sample mean either way
    fields = {"epochs": protocol.pop("epochs", None), "validation": protocol.pop("validation", None),
              "subset": record.config.get("subset"), "architecture": dataset.get("architecture"),
              "dataset": {"source": dataset.get("source"), "options": dataset.get("options")},
              "protocol": protocol, "metric": record.metric, "task": record.task}
    data = (record.config.get("inputs") or {}).get("data")
    if data is not None:  # records older than the data's identity compare without it
        fields["data"] = data
    return dict(flat(fields))


def flat(value: Any, path: str = "") -> Iterable[tuple[str, Any]]:
    """(path, value) of every leaf of nested mappings; an empty mapping is a leaf."""
    if isinstance(value, Mapping) and value:
        for key, item in value.items():
            yield from flat(item, f"{path}.{key}" if path else str(key))
    else:
        yield path, value


def differing(ours: dict[str, Any], theirs: dict[str, Any]) -> list[str]:
    """The flat paths whose values differ (the data's identity, top-level ``data``, only where
    both have one)."""
    paths = sorted(ours.keys() | theirs.keys())
    if not (_has_data(ours) and _has_data(theirs)):  # an old record: no data identity to compare
        paths = [path for path in paths if path.partition(".")[0] != "data"]
    return [path for path in paths if ours.get(path) != theirs.get(path)]


def _has_data(fields: dict[str, Any]) -> bool:
    return any(path.partition(".")[0] == "data" for path in fields)
