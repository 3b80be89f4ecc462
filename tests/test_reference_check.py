"""benchmarks/reference_check.py (`make reference-check`) on a tiny reference of its own: the first
epoch of every cell re-run through `bench run`, its seeds stacked as they were run, reproduces its
records; a changed number in any seed of the stack, or a suite whose settings are no longer the
record's, is a mismatch with exit code 1."""

import importlib.util
import json
import sys
from pathlib import Path

import pytest

from .conftest import TINY_SUITE, invoke, write

ROOT = Path(__file__).resolve().parents[1]


def load_script():
    spec = importlib.util.spec_from_file_location("reference_check",
                                                  ROOT / "benchmarks" / "reference_check.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


# A third entry, whose settings the suite file changes after the reference was run.
SUITE = TINY_SUITE + """\
  dfa-fast:
    algorithm: dfa
    optimizer: {lr: 2.0e-3, betas: [0.9, 0.999], eps: 1.0e-8}
"""


def test_the_first_epoch_of_every_reference_cell_is_reproduced_and_changes_are_caught(
        tmp_path, capsys):
    script = load_script()
    suites, results = tmp_path / "suites", tmp_path / "reference"
    suites.mkdir()
    suite = write(suites / "tiny.yaml", SUITE)
    # as the campaign runs: seeds stacked, the suite's protocol (two epochs)
    run = invoke("run", suite, "--out", results / "tiny", "--quiet", "--vectorize-seeds")
    assert run.exit_code == 0, run.output
    path = results / "tiny" / "teacher" / "bp" / "seed-1.json"  # the stack's second seed
    record = json.loads(path.read_text())
    changed = record["history"][0]["test_loss"] * (1 + 1e-6)  # beyond float64's 1e-9
    record["history"][0]["test_loss"] = changed
    path.write_text(json.dumps(record))
    suite.write_text(SUITE.replace("{lr: 2.0e-3", "{lr: 3.0e-3"))

    assert script.main(["--results", str(results), "--suites", str(suites),
                        "--data-dir", str(tmp_path)]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith(f"tiny teacher/bp seed 1: MISMATCH at epoch 1: test_loss "
                               f"{changed!r} in the record, ")
    assert lines[0].endswith("(relative 1.0e-06)")
    # re-run stacked as the campaign ran it, a seed's arithmetic is the record's, bit for bit
    assert lines[1] == "tiny teacher/dfa seeds 0,1 stacked as run: ok (largest relative " \
        "difference 0.0e+00)"
    assert lines[2] == ("tiny teacher/dfa-fast seed 0: MISMATCH, the suite's settings are not "
                        "the record's: optimizer.lr")
    assert lines[3] == "1 of 3 reference cells reproduce their first epoch; 2 cells fail the check"

    # a seed that finished at another moment ran in a run of its own: it is not of the stack
    other = results / "tiny" / "teacher" / "dfa" / "seed-1.json"
    record = json.loads(other.read_text())
    record["provenance"]["finished_at"] = "2026-01-01T00:00:00+00:00"
    other.write_text(json.dumps(record))
    found, problems = script.jobs(results, suites, None)
    assert problems == []
    assert {job.records[0].algorithm: job.seeds for job in found} == \
        {"bp": [0, 1], "dfa": [0], "dfa-fast": [0, 1]}


MNIST_SUITE = """\
name: m
seeds: [0]
precision: float32
datasets:
  mnist:
    source: mnist
    architecture: {type: mlp, hidden: [8]}
    protocol: {epochs: 1, batch_size: 16, validation: 10}
algorithms:
  bp:
    optimizer: {lr: 1.0e-3, betas: [0.9, 0.999], eps: 1.0e-8}
"""


def test_bad_input_is_one_line_and_exit_2_before_any_rerun(tmp_path, monkeypatch, capsys):
    """Folders that are not there or are files, and a cell's data missing from --data-dir,
    stop the check with one line before anything is re-run."""
    from bioplaus_bench.registry import load_registry
    from bioplaus_bench.results.store import ResultStore, make_record
    from bioplaus_bench.suite import load_suite

    script = load_script()
    suites, results = tmp_path / "suites", tmp_path / "reference"
    suites.mkdir()
    suite = write(suites / "m.yaml", MNIST_SUITE)
    cell = load_suite(suite, load_registry()).cells()[0]
    rows = [{"train_loss": 0.5, "test_loss": 0.6, "test_accuracy": 0.9}]
    ResultStore(results / "m").write(make_record(
        cell, {"status": "ok", "history": rows, "selected_epoch": 1, "wall_time": 1.0}, "cpu",
        "classification"), cell)
    a_file = write(tmp_path / "a-file", "")
    monkeypatch.setattr(script.subprocess, "run", lambda *a, **k: pytest.fail("a re-run started"))
    base = ["--results", str(results), "--suites", str(suites)]
    for arguments, expected in [
            (["--results", str(tmp_path / "nowhere")], "not found; expected a folder"),
            (["--results", str(a_file)], "not a folder; expected a folder"),
            ([*base, "--suites", str(a_file)], "not a folder; expected a folder"),
            ([*base, "--keep", str(a_file / "runs")], f"{a_file} is a file; expected a folder"),
            ([*base, "--data-dir", str(tmp_path / "nothing")],
             f"MNIST not found in {tmp_path / 'nothing'}")]:
        assert script.main(arguments) == 2, arguments
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("error: ") and expected in err, err
