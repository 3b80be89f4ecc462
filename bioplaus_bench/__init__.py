"""bioplaus-bench: a benchmark suite for biologically plausible credit-assignment algorithms.

The Python API (for notebooks and scripts): ``bioplaus_bench.load(folder, reference=None)``
gives a ``Results``, the records of a results folder as pandas DataFrames and as the table and
page ``bench table`` and ``bench report`` make (docs/tutorial.md). It is imported on first use:
``import bioplaus_bench`` imports neither torch nor pandas.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .version import __version__

__all__ = ["Results", "__version__", "load"]

if TYPE_CHECKING:
    from .results.folder import Results, load


def __getattr__(name: str) -> Any:
    if name in __all__:
        from .results import folder

        return getattr(folder, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
