"""One minibatch step: training, the conformance checks of `bench check-plugin` and the
speed benchmark all step through ``Runner.step``, so a change there is seen by every one of them:
what is checked and what is timed is what trains. ``Runner.step`` is patched to count its calls
and, once broken, to raise a marker instead of stepping."""

import importlib.util
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from bioplaus_bench.execution.runner import Runner
from bioplaus_bench.execution.training import train_cell
from bioplaus_bench.kit.conformance import check_algorithm, run_checks
from bioplaus_bench.kit.harness import teacher_cell
from bioplaus_bench.registry import load_registry

BENCHMARK = Path(__file__).resolve().parent.parent / "benchmarks" / "epoch_time.py"


class Marker(Exception):
    """What the broken step raises: only the patched step can have raised it."""


@pytest.fixture()
def step(monkeypatch):
    """``Runner.step``, patched: ``calls`` holds the keyword arguments of each call; set
    ``broken`` and it raises ``Marker``."""
    patched = SimpleNamespace(calls=[], broken=False)
    real = Runner.step

    def wrapped(runner, x, y, **options):
        patched.calls.append(options)
        if patched.broken:
            raise Marker("the patched runner step")
        return real(runner, x, y, **options)

    monkeypatch.setattr(Runner, "step", wrapped)
    return patched


@pytest.fixture(scope="module")
def bp():
    return load_registry().get("bp")


@pytest.fixture(scope="module")
def benchmark():
    """benchmarks/epoch_time.py as a module (it is a script, not part of the package)."""
    spec = importlib.util.spec_from_file_location("epoch_time", BENCHMARK)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look themselves up there
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        del sys.modules[spec.name]


def test_the_conformance_checks_step_through_the_runner(step, bp):
    results = check_algorithm(bp)
    assert results and all(r.passed for r in results), [r.line() for r in results]
    inspected = [options for options in step.calls if options.get("inspect")]
    assert inspected and len(inspected) < len(step.calls)  # the rest: train_cell (frozen layers)
    step.broken = True
    lines: list[str] = []
    summary = run_checks([bp], lines.append)
    assert not summary.ok
    assert "FAIL  step [mlp]: raised Marker: the patched runner step" in "\n".join(lines)
    assert "FAIL  step [cnn]: raised Marker: the patched runner step" in "\n".join(lines)


def test_the_speed_benchmark_times_the_runners_step(step, benchmark):
    trainer = benchmark.Trainer("bp", "mnist", torch.float32, "cpu")
    trainer.step()
    trainer.step(log=True)
    assert [options["metrics"] is not None for options in step.calls] == [False, True]
    step.broken = True
    with pytest.raises(Marker):
        trainer.seconds_per_step(1)


def test_training_steps_through_the_runner(step, bp):
    cell = teacher_cell(bp.cls)  # 48 training samples: 3 minibatches of 16
    assert train_cell(cell, bp.cls)["status"] == "ok"
    assert len(step.calls) == 3
    step.broken = True
    with pytest.raises(Marker):
        train_cell(cell, bp.cls)
