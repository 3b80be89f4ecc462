"""How many torch threads a ``bench`` process computes with: ``--threads N`` if given, else
``OMP_NUM_THREADS`` if set, else one.

One by default because the benchmark's networks are small and machines are shared: OpenMP
threads wait for each other in every operation, so a thread that another job keeps off its core
stalls them all. One thread loses at most the core count on an idle machine; more threads lose
without bound on a busy one (``benchmarks/threads.py`` measures both; figures in the README).
More cores are used by running cells side by side (``-j N``), which scales with the cores
whatever the load, or asked for with ``--threads``.
"""

from __future__ import annotations

import os

from ..errors import InputError

ENV = "OMP_NUM_THREADS"


def torch_threads(requested: int | None = None) -> int:
    """The thread count for ``requested`` (``--threads``; None: not given)."""
    if requested is not None:
        return requested
    value = os.environ.get(ENV, "").strip()
    if not value:
        return 1
    if not value.isdigit() or int(value) < 1:
        raise InputError(f"{ENV}={value!r}: expected a positive whole number of threads")
    return int(value)


def set_torch_threads(requested: int | None = None) -> int:
    """Set this process's torch threads (``torch_threads``) and return the count."""
    import torch

    threads = torch_threads(requested)
    torch.set_num_threads(threads)
    return threads
