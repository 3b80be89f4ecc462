"""Helpers shared by the tests of the shipped paper suites (table1.yaml, table2.yaml)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from bioplaus_bench.spec.schema import load_yaml

SUITES = Path(__file__).resolve().parents[1] / "suites"
ROWS = ["bp", "ddtp-linear", "ddtp-rhl", "dtp-drl", "ddtp-control", "dtp", "dtp-pretrained", "dfa"]
DATASETS = ["mnist", "frozen_mnist", "fashion_mnist", "cifar10"]


def value(suite, algorithm, dataset, where, attribute):
    """A resolved value: ``where`` is "opt", "schedule", "params" or "precision"."""
    settings, params, precision = suite.resolved[(algorithm, dataset)]
    if where == "precision":
        return precision
    obj = {"opt": settings.optimizer, "schedule": settings.schedule, "params": params}[where]
    found = getattr(obj, attribute)
    return tuple(found) if isinstance(found, list | tuple) else found


def tp_blocks(path: Path) -> Iterator[dict]:
    """The raw YAML block of every target-propagation entry and of each of its dataset overrides."""
    document, _ = load_yaml(path.read_text(), str(path))
    for algorithm in ROWS[1:-1]:
        entry = document["algorithms"][algorithm]
        yield entry
        yield from (entry["datasets"][d] for d in DATASETS[1:])
