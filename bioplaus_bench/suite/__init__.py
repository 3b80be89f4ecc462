"""The YAML layer: suites (``docs/suites.md``) read and validated with ``file:line: key.path``
errors, expanded into cell specs (``spec.cell.Cell``), and the tuner that searches a suite's
``search:`` spaces. Nothing below this layer imports it."""

from __future__ import annotations

from .document import AlgorithmEntry, SearchSpace, Suite, SuiteHeader
from .fragments import fragment, fragment_yaml
from .load import apply_overrides, load_suite

__all__ = ["AlgorithmEntry", "SearchSpace", "Suite", "SuiteHeader", "apply_overrides", "fragment",
           "fragment_yaml", "load_suite"]
