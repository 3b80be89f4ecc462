"""What scripts built on the package (those under benchmarks/) share on their argparse command
lines: comma-separated lists checked against what they may hold, positive numbers, a device that
is there, and bad input as one line with exit code 2, as `bench` does (``one_line_errors``),
never a traceback. In the package, so that a script imports it like the rest of the package
(no script imports another, nor edits ``sys.path``)."""

from __future__ import annotations

import argparse
import math
import os
import sys
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any, TypeVar

import torch

from .errors import InputError

DTYPES = ("float32", "float64")
T = TypeVar("T")


def listing(choices: Collection[str]) -> Callable[[str], list[str]]:
    """An argparse type: some of ``choices``, separated by commas."""
    def parse(text: str) -> list[str]:
        items = text.split(",")
        unknown = [item for item in items if item not in choices]
        if unknown:
            raise argparse.ArgumentTypeError(
                f"expected some of {', '.join(choices)} separated by commas; "
                f"'{unknown[0]}' is none of them")
        return items
    return parse


def positive(kind: Callable[[str], int | float] = int) -> Callable[[str], int | float]:
    """An argparse type: a finite number above zero."""
    def parse(text: str) -> int | float:
        try:
            value = kind(text)
        except ValueError:
            value = 0
        if not (value > 0 and math.isfinite(value)):
            raise argparse.ArgumentTypeError(f"expected a positive number, got '{text}'")
        return value
    return parse


def positives(text: str) -> list[int]:
    """An argparse type: positive whole numbers separated by commas."""
    return [int(positive(int)(item)) for item in text.split(",")]


def device(text: str) -> str:
    """An argparse type: a torch device of this machine (cpu, cuda, cuda:1, mps)."""
    try:
        chosen = torch.device(text)
    except RuntimeError:
        raise argparse.ArgumentTypeError(f"expected a torch device (cpu, cuda, cuda:N), got "
                                         f"'{text}'") from None
    available = {"cpu": True, "cuda": torch.cuda.is_available(),
                 "mps": torch.backends.mps.is_available()}.get(chosen.type, False)
    if chosen.type == "cuda" and available and chosen.index is not None:
        available = chosen.index < torch.cuda.device_count()
    if not available:
        raise argparse.ArgumentTypeError(f"device '{text}' is not available on this machine")
    return text


def one_line_errors(action: Callable[[], T]) -> T | int:
    """What ``action`` returns (a script's exit code), or 2 for bad input (an ``InputError``: a
    missing dataset, an unknown algorithm, a file where a folder is expected), said in one line
    on stderr."""
    try:
        return action()
    except InputError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


def tune_logged(log: str, folder: Path, **tuning: Any) -> None:
    """``bioplaus_bench.tune(**tuning)`` from ``folder`` (paths in the provenance are written as
    given, relative to it), its lines appended to the file ``log``; exit code 2 for bad input
    (its line in the log), 1 for any other failure (its traceback there). The entry point of a
    process of its own (the reference campaign runs each study so), hence importable."""
    import traceback

    import bioplaus_bench

    os.chdir(folder)
    with open(log, "a", encoding="utf-8") as file:
        def say(line: str) -> None:
            print(line, file=file, flush=True)

        try:
            bioplaus_bench.tune(log=say, **tuning)
        except InputError as error:
            say(f"error: {error}")
            sys.exit(2)
        except Exception:
            say(traceback.format_exc())
            sys.exit(1)
