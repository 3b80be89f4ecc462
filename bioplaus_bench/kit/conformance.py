"""Conformance checks for algorithm plugins (``bench check-plugin NAME|FILE``).

Each check drives the algorithm through the suite's own runner (``run.runner.Runner``, the step
that ``train_cell`` takes): a forward pass (with a graph only if ``record_graph``),
``forward_updates(fwd)``, ``feedback_step(fwd)`` on the same pass, the updates written to
``.grad`` of the trainable forward parameters, one forward Adam step with
``lr / lr_normalizer()``. Networks are tiny (an MLP 6-7-5-3 and a CNN with one 3×3 conv
block), so all checks of one algorithm take about a second.

Checks, each reported as one PASS/FAIL line with its reason:

- ``loads``: capabilities declared; ``Params`` a frozen dataclass whose defaults pass the suite
  schema; ``forward_updates`` (and ``feedback_step`` with trainable feedback) implemented;
- per architecture it claims (MLP, CNN):
  ``step``: a few training steps run; one update per forward parameter with its shape and dtype,
  finite and not all zero; the algorithm does not write the forward weights itself; they move;
  ``precision``: the same in float32 and float64;
  ``deterministic``: two runs from the same seed propose identical updates and feedback losses;
  ``feedback`` (trainable feedback only): feedback steps lower the feedback loss on a fixed batch
  (measured with common noise samples) and leave the forward weights alone;
  ``frozen layers``: with only layer 1 trainable (MLP: ``train_cell`` on the teacher task, with a
  checkpoint), layers 2..L do not move, layer 1 does, trainable feedback still trains;
  ``checkpoint``: a run resumed from a checkpoint after 2 steps (network, forward Adam,
  ``state_dict``) proposes the same updates as the uninterrupted run for 6 more steps, and its
  plain Python attributes agree with it (a step counter outside the ``state_dict`` does not);
  ``vectorised seeds`` (``vectorize_seeds`` declared): three seeds stacked propose each seed's
  serial updates and feedback losses, step after step;
  ``relaxation`` (an ``InferenceRule``): every relaxation phase lowers its energy and its
  steps shrink (``kit/relaxation.py``).

``bench check-plugin`` prints, after the algorithm's name, the networks and tasks it runs on.

A check whose prerequisite did not pass (a failed ``step`` makes every later check fail the same
way) is reported as SKIP, so one defect gives one FAIL line; SKIP counts as not passed.

Here: finding the algorithms, running their checks, the summary. ``harness`` builds what the checks
step, ``loads`` and ``checks`` are the checks.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import PluginError, did_you_mean
from ..model.algorithm import Algorithm
from ..model.inference import InferenceRule
from ..registry import NOT_FOUND_HINT, AlgorithmInfo, Registry, default_registry
from .checks import PER_ARCHITECTURE
from .harness import ARCHITECTURES, Failure, describe, describe_settings
from .loads import check_loads


@dataclass(frozen=True)
class CheckResult:
    check: str
    passed: bool
    reason: str
    skipped: bool = False  # not run because a check it builds on failed (counts as not passed)

    def line(self) -> str:
        status = "SKIP" if self.skipped else "PASS" if self.passed else "FAIL"
        return f"{status}  {self.check}: {self.reason}"


def find_algorithms(target: str, registry: Registry) -> list[AlgorithmInfo]:
    """The algorithms named by ``target``: an algorithm name, a plugin file (loaded into
    ``registry`` with ``--plugin``), or a distribution / module that provides algorithms.
    Raises ``PluginError`` (exit 2) when nothing loadable matches."""
    path = Path(target)
    if target.endswith(".py"):
        resolved = str(path.resolve())
        found = [info for info in registry.algorithms.values()
                 if info.origin == "file" and info.source == resolved]
        if not found:
            raise PluginError(f"plugin file {resolved} provides no algorithm: it needs a "
                              "`bioplaus_bench_algorithms` hook marked with `@hookimpl` that "
                              "returns Algorithm subclasses")
        return found
    if target in registry:
        return [registry.get(target)]
    found = [info for info in registry.algorithms.values()
             if info.source.endswith(f"({target})") or info.source.split(" ")[0] == target
             or info.source.split(" ")[0].startswith(f"{target}.")]
    if found:
        return found
    for warning in registry.warnings:
        if f"plugin {target} " in warning or target in warning.split(" failed to load")[0]:
            raise PluginError(f"{target} cannot be loaded: {warning}")
    raise PluginError(f"no algorithm, plugin file or plugin package '{target}'"
                      f"{did_you_mean(target, registry.algorithms)}; known algorithms: "
                      f"{', '.join(registry.algorithms)}; {NOT_FOUND_HINT}")


@contextmanager
def _rng_preserved() -> Iterator[None]:
    """Checks seed the global RNGs; leave the caller's RNG state as it was."""
    state = (torch.get_rng_state(), np.random.get_state(), random.getstate())
    try:
        yield
    finally:
        torch.set_rng_state(state[0])
        np.random.set_state(state[1])
        random.setstate(state[2])


def _run(name: str, function: Callable[[], str]) -> CheckResult:
    try:
        with _rng_preserved():
            return CheckResult(name, True, function())
    except Failure as failure:
        return CheckResult(name, False, str(failure))
    except Exception as error:  # the plugin crashed: that is a failure of this check
        return CheckResult(name, False, f"raised {describe(error)}")


def check_algorithm(info: AlgorithmInfo | type[Algorithm],
                    report: Callable[[CheckResult], None] | None = None) -> list[CheckResult]:
    """Run every check on one algorithm; ``report`` is called with each result as it comes."""
    cls = info.cls if isinstance(info, AlgorithmInfo) else info
    results: list[CheckResult] = []

    def add(result: CheckResult) -> None:
        results.append(result)
        if report is not None:
            report(result)

    add(_run("loads", lambda: check_loads(cls)))
    if not results[0].passed:
        return results
    caps = cls.capabilities
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny networks: threads cost more than they give
    try:
        for kind in architectures_of(cls):  # the ones the suite would run it on
            done: dict[str, bool] = {}
            for name, function, needs in PER_ARCHITECTURE:
                if name == "feedback" and not caps.trainable_feedback \
                        or name == "vectorised seeds" and not caps.vectorize_seeds \
                        or name == "relaxation" and not issubclass(cls, InferenceRule):
                    continue
                label = f"{name} [{kind}]"
                failed = [f"{need} [{kind}]" for need in needs if not done.get(need, True)]
                if failed:
                    result = CheckResult(label, False, f"not run: {', '.join(failed)} did not "
                                         "pass", skipped=True)
                else:
                    # mypy cannot infer a lambda with default arguments (bound per check).
                    result = _run(label, lambda f=function, k=kind: f(cls, k))  # type: ignore[misc]
                done[name] = result.passed
                add(result)
    finally:
        torch.set_num_threads(threads)
    return results


def architectures_of(cls: type[Algorithm]) -> list[str]:
    """The checks' architectures (``harness.ARCHITECTURES``) that ``cls`` claims to support."""
    return [kind for kind in ARCHITECTURES
            if cls.capabilities.supports(default_registry().architecture(kind).layer_kinds)]


def check_loads_quietly(cls: type[Algorithm]) -> bool:
    """Whether ``cls`` passes the ``loads`` check (so its capabilities can be read)."""
    return _run("loads", lambda: check_loads(cls)).passed


@dataclass(frozen=True)
class Summary:
    passed: int
    failed: int
    skipped: int
    seconds: float

    @property
    def ok(self) -> bool:
        return self.failed == 0 and self.skipped == 0

    def line(self) -> str:
        skipped = f", {self.skipped} skipped" if self.skipped else ""
        return f"{self.passed} passed, {self.failed} failed{skipped} in {self.seconds:.1f} s"


def run_checks(infos: Sequence[AlgorithmInfo], emit: Callable[[str], None]) -> Summary:
    """Check every algorithm, emitting one line per check."""
    started = time.perf_counter()
    counts = {"passed": 0, "failed": 0, "skipped": 0}
    for info in infos:
        emit(f"checking {info.name} ({info.label}) from {info.source} [{info.origin}]")
        if check_loads_quietly(info.cls):
            emit(f"on: {describe_settings(info.cls, architectures_of(info.cls))}")
        for result in check_algorithm(info, lambda r: emit(r.line())):
            key = "skipped" if result.skipped else "passed" if result.passed else "failed"
            counts[key] += 1
    return Summary(**counts, seconds=time.perf_counter() - started)
