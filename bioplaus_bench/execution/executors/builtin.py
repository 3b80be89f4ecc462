"""The built-in executors, registered through the ``bioplaus_bench_executors`` hook like
anyone's."""

from __future__ import annotations

from ...hookspecs import hookimpl
from .executor import Executor
from .local import LOCAL
from .ray import RAY


@hookimpl
def bioplaus_bench_executors() -> list[Executor]:
    return [LOCAL, RAY]
