"""The built-in executors, registered through the ``bioplaus_bench_executors`` hook like
anyone's. Apart from ``executors/__init__``, which ``local`` and ``ray`` import, so that imports
go one way."""

from __future__ import annotations

from ...hookspecs import hookimpl
from . import Executor
from .local import LOCAL
from .ray import RAY


@hookimpl
def bioplaus_bench_executors() -> list[Executor]:
    return [LOCAL, RAY]
