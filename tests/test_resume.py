"""Killed runs resume with nothing lost: per-epoch checkpoints inside a cell, atomic records."""

import json
import os
import signal
import subprocess
from pathlib import Path

import pytest

from bioplaus_bench.execution.training import train_cell
from bioplaus_bench.registry import load_registry
from bioplaus_bench.suite import load_suite

from .helpers import HELD_PLUGIN, bench_process, wait_for, write

SUITE = """\
name: resume
seeds: [0, 1, 2]
precision: float64
datasets:
  teacher:
    source: teacher
    options: {n_train: 3000, n_test: 64, hidden: [32]}
    architecture: {type: mlp, hidden: [64, 64]}
    protocol: {epochs: EPOCHS, batch_size: 8, validation: 64}
algorithms:
  bp:
    optimizer: {lr: 1.0e-3, betas: [0.9, 0.999], eps: 1.0e-8}
  dfa:
    optimizer: {lr: 1.0e-3, betas: [0.9, 0.999], eps: 1.0e-8}
"""


class Stop(Exception):
    pass


def without_timing(result):
    history = [{k: v for k, v in row.items() if k != "seconds"} for row in result["history"]]
    return {**{k: v for k, v in result.items() if k not in ("history", "wall_time")},
            "history": history}


@pytest.mark.parametrize("algorithm", ["bp", "dfa"])
def test_a_cell_interrupted_after_an_epoch_resumes_to_the_same_result(tmp_path, algorithm):
    registry = load_registry()
    path = tmp_path / "s.yaml"
    path.write_text(SUITE.replace("EPOCHS", "3").replace("n_train: 3000", "n_train: 200"))
    cell = next(c for c in load_suite(path, registry).cells(only=[algorithm], seeds=1))
    cls = registry.get(algorithm).cls
    unbroken = train_cell(cell, cls)

    checkpoint = tmp_path / "cell.ckpt"

    def stop_after_first_epoch(phase, done, total):
        if done == 1:
            raise Stop

    with pytest.raises(Stop):
        train_cell(cell, cls, checkpoint=checkpoint, on_epoch=stop_after_first_epoch)
    assert checkpoint.is_file()
    resumed = train_cell(cell, cls, checkpoint=checkpoint)
    assert without_timing(resumed) == without_timing(unbroken)


@pytest.mark.slow
def test_sigkilled_run_resumes_only_the_missing_cells(tmp_path):
    # The held cell holds the run in its second epoch: SIGKILL comes after the BP records and the
    # held cell's first checkpoint, inside that cell, however fast or loaded the machine is.
    suite = write(tmp_path / "s.yaml", SUITE.replace("EPOCHS", "3").replace(
        "n_train: 3000", "n_train: 200").replace("  dfa:\n", "  held:\n    algorithm: held-bp\n"))
    held = write(tmp_path / "held.py", HELD_PLUGIN)
    out, inside = tmp_path / "r", tmp_path / "inside"
    command = ("run", suite, "--out", out, "--quiet", "--plugin", held)
    checkpoint = out / "teacher" / "held" / "seed-0.ckpt"
    process = bench_process(*command, env={"HOLD_AFTER": str(checkpoint),
                                           "HOLD_INSIDE": str(inside)},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(inside.exists, process, "the held cell")
    finally:
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
    assert checkpoint.is_file()
    done_before = {p: p.read_text() for p in out.glob("*/*/seed-*.json")}
    assert sorted(str(p.relative_to(out)) for p in done_before) == [
        "teacher/bp/seed-0.json", "teacher/bp/seed-1.json", "teacher/bp/seed-2.json"]
    for text in done_before.values():
        json.loads(text)  # every record on disk is whole

    resumed = bench_process(*command)
    _, stderr = resumed.communicate()
    assert resumed.returncode == 0, stderr
    assert "6 cells (6 ok; 3 from earlier runs)" in stderr
    assert "ignoring checkpoint" not in stderr  # the held cell went on from its checkpoint
    after = sorted(Path(p) for p in out.glob("*/*/seed-*.json"))
    assert len(after) == 6
    assert all(json.loads(p.read_text())["status"] == "ok" for p in after)
    for path, text in done_before.items():
        assert path.read_text() == text  # finished cells were not run again
    assert not list(out.rglob("*.tmp")) and not list(out.rglob(".*tmp"))
    assert not list(out.glob("*/*/*.ckpt"))
