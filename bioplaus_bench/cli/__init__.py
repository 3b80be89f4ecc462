"""The ``bench`` command: thin; it parses, calls the modules, prints.

Exit codes: 0 success (every cell ok or diverged), 1 some cell failed with an error, 2 invalid
input (suite, plugin, missing data, options).
"""

from __future__ import annotations

# Each module registers its commands, in the order `bench --help` lists them.
from . import running  # noqa: F401

# isort: split
from . import kit  # noqa: F401

# isort: split
from . import results  # noqa: F401

# isort: split
from . import tools  # noqa: F401
from .common import app

__all__ = ["app", "main"]


def main() -> None:
    app()
