"""Suite fragments: values that merge into a suite, written as the shipped suites are (what
``bench tune`` and ``bench damping`` print)."""

from __future__ import annotations

from typing import Any

import yaml


def fragment(algorithm: str, values: dict[str, Any]) -> dict[str, Any]:
    """``values`` (dotted paths relative to an algorithm entry, e.g. ``optimizer.lr`` or
    ``datasets.mnist.metrics.gnt_damping``) as a suite fragment that merges into a suite:
    ``algorithms: {<id>: {optimizer: {lr: …}, …}}``."""
    entry: dict[str, Any] = {}
    for key, value in values.items():
        node = entry
        *parents, last = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    return {"algorithms": {algorithm: entry}}


class _FragmentDumper(yaml.SafeDumper):
    """Block style for the nesting, flow style for the innermost mappings and lists, as the
    shipped suites are written: ``metrics: {gnt_damping: [1.0e-3, 0.1]}``."""

    def represent_mapping(self, tag, mapping, flow_style=None):
        leaf = all(not isinstance(v, dict) for v in dict(mapping).values())
        return super().represent_mapping(tag, mapping, flow_style=leaf)


def fragment_yaml(document: dict[str, Any]) -> str:
    return yaml.dump(document, Dumper=_FragmentDumper, sort_keys=False)
