"""The built-in algorithms, installed as ``bioplaus_bench_plugins``.

Each module is written exactly like a third-party plugin: it imports only ``bioplaus_bench.api``
and implements ``bioplaus_bench_algorithms``. This package is the one entry point of the
``bioplaus_bench.plugins`` group for all of them (pyproject.toml), so a new built-in is added
here, in ``MODULES``, and nowhere else; a test fails for a module of this folder left out.
"""

from __future__ import annotations

from importlib import import_module

from bioplaus_bench.api import hookimpl

MODULES = ("bp", "target_propagation", "sign_symmetry", "kolen_pollack", "drtp",
           "predictive_coding",
           "equilibrium_propagation")


@hookimpl
def bioplaus_bench_algorithms() -> list[type]:
    return [cls for name in MODULES
            for cls in import_module(f"{__name__}.{name}").bioplaus_bench_algorithms()]
