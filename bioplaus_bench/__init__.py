"""bioplaus-bench: a benchmark suite for biologically plausible credit-assignment algorithms.

The Python API (for notebooks and scripts; docs/tutorial.md):

- ``bioplaus_bench.run(suite, ...)`` runs a suite's cells, as ``bench run`` does, and gives
  this run's records as a ``Results``;
- ``bioplaus_bench.load(folder, reference=None)`` gives a ``Results`` for a results folder;
- ``bioplaus_bench.tune(suite, ...)`` tunes a suite's searched entries under its budget, as
  ``bench tune`` does, and writes the tuned suite.

A ``Results`` holds the records as pandas DataFrames (``records``, ``curves``, ``summary()``)
and makes the table and page that ``bench table`` and ``bench report`` make. Both are imported on
first use: ``import bioplaus_bench`` imports neither torch nor pandas.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .version import __version__

__all__ = ["Results", "__version__", "load", "run", "tune"]

if TYPE_CHECKING:
    from .results.folder import Results, load
    from .suite.running import run, tune


def __getattr__(name: str) -> Any:
    if name in ("run", "tune"):
        from .suite import running

        return getattr(running, name)
    if name in ("Results", "load"):
        from .results import folder

        return getattr(folder, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
