"""Running at scale: local worker processes (-j), the Ray executor, resuming killed parallel runs,
and `bench tune` with a resumable Optuna study."""

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from .helpers import HELD_PLUGIN, PLUGIN, TINY_SUITE, bench_process, invoke, records, wait_for, write

# The CLI tests' tiny suite without DFA, with a search space for BP and the --plugin rule.
TINY = TINY_SUITE.replace("name: tiny", "name: scale").split("  dfa:\n")[0] + """\
    search:
      optimizer.lr: {low: 1.0e-4, high: 1.0e-1, log: true}
      optimizer.normalize_lr: {choices: [true, false]}
  sign:
    algorithm: sign-bp
    optimizer: {lr: 1.0e-3, betas: [0.9, 0.999], eps: 1.0e-8}
"""

BROKEN = PLUGIN.replace('"sign-bp"', '"broken-bp"').replace("SignGradient", "Broken").replace(
    "grads = torch.autograd.grad",
    "raise ValueError('this rule is broken')\n        grads = torch.autograd.grad")


def comparable(record: dict) -> dict:
    """A record without what legitimately differs between runs: timings and provenance."""
    drop = ("wall_time", "provenance")
    history = [{k: v for k, v in row.items() if k != "seconds"} for row in record.get("history", [])]
    same = {**{k: v for k, v in record.items() if k not in drop}, "history": history}
    if "traceback" in record:  # the plugin file lies in another temporary folder
        same["traceback"] = re.sub(r'File "[^"]*/', 'File "', record["traceback"])
    return same


# Run tests: the tiny suite plus a rule from a --plugin file whose every cell fails.
RUN_SUITE = TINY + """\
  broken:
    algorithm: broken-bp
    optimizer: {lr: 1.0e-3, betas: [0.9, 0.999], eps: 1.0e-8}
"""


def make_suite(folder: Path) -> Path:
    write(folder / "sign.py", PLUGIN)
    write(folder / "broken.py", BROKEN)
    return write(folder / "scale.yaml", RUN_SUITE)


@pytest.fixture()
def suite(tmp_path):
    return make_suite(tmp_path)


def run_args(suite: Path, out: Path, *extra) -> list:
    return ["run", suite, "--out", out, "--quiet", "--plugin", suite.parent / "sign.py",
            "--plugin", suite.parent / "broken.py", *extra]


@pytest.fixture(scope="module")
def serial(tmp_path_factory):
    folder = tmp_path_factory.mktemp("serial")
    result = invoke(*run_args(make_suite(folder), folder / "r"))
    assert result.exit_code == 1, result.output  # the broken cells
    return {k: comparable(v) for k, v in records(folder / "r").items()}


@pytest.mark.slow
def test_parallel_run_gives_the_records_of_a_serial_run(suite, tmp_path, serial, monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)  # the default: one thread per process
    out = tmp_path / "r"
    result = invoke(*run_args(suite, out, "-j", "2"))
    assert result.exit_code == 1, result.output
    assert "6 cells (2 error, 4 ok; 0 from earlier runs)" in result.stderr
    parallel = records(out)
    assert len(parallel) == 6
    assert {k: comparable(v) for k, v in parallel.items()} == serial
    assert parallel["teacher/sign/seed-0.json"]["algorithm_name"] == "sign-bp"  # a --plugin file
    broken = parallel["teacher/broken/seed-1.json"]  # a failing cell, as in the serial executor
    assert broken["status"] == "error" and "this rule is broken" in broken["error"]
    assert "forward_updates" in broken["traceback"]
    assert all(r["provenance"]["torch_threads"] == 1 for r in parallel.values())
    assert not list(out.rglob("*.ckpt")) and not list(out.rglob("*.tmp"))
    again = invoke(*run_args(suite, out, "-j", "2", "--only", "bp,sign"))
    assert again.exit_code == 0 and "4 from earlier runs" in again.stderr




CRASHING = PLUGIN.replace('"sign-bp"', '"crash-once"').replace("SignGradient", "CrashOnce").replace(
    "grads = torch.autograd.grad",
    "marker = Path(MARKER)\n        if not marker.exists():\n            marker.touch()\n"
    "            os._exit(1)  # the worker process dies mid-cell\n        grads = torch.autograd.grad"
).replace("import torch\n", "import os\nfrom pathlib import Path\n\nimport torch\n", 1)


@pytest.mark.slow
def test_ray_executor_gives_the_records_of_a_serial_run_and_reruns_lost_cells(suite, tmp_path,
                                                                              serial):
    ray = pytest.importorskip("ray", reason="ray is not installed (pip install 'bioplaus-bench[ray]')")
    marker = tmp_path / "crashed"
    write(tmp_path / "crash.py", CRASHING.replace("MARKER", repr(str(marker))))
    crashing = write(tmp_path / "crash.yaml", TINY.replace("seeds: [0, 1]", "seeds: [0]").replace(
        "algorithm: sign-bp", "algorithm: crash-once"))
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        result = invoke(*run_args(suite, tmp_path / "r", "--executor", "ray"))
        lost = invoke("run", crashing, "--out", tmp_path / "c", "--quiet", "--executor", "ray",
                      "--plugin", tmp_path / "crash.py")
    finally:
        ray.shutdown()
    assert result.exit_code == 1, result.output
    assert {k: comparable(v) for k, v in records(tmp_path / "r").items()} == serial

    # A worker that dies mid-cell: Ray runs the task again; one record, written once.
    assert lost.exit_code == 0, lost.output
    assert marker.exists()  # the first attempt died
    saved = records(tmp_path / "c")
    assert sorted(saved) == ["teacher/bp/seed-0.json", "teacher/sign/seed-0.json"]
    assert all(r["status"] == "ok" for r in saved.values())


def test_ray_executor_without_ray_is_a_one_line_error(suite, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)
    result = invoke(*run_args(suite, tmp_path / "r", "--executor", "ray"))
    assert result.exit_code == 2
    assert "the Ray executor needs ray: pip install 'bioplaus-bench[ray]'" in result.stderr
    assert invoke(*run_args(suite, tmp_path / "r", "--executor", "dask")).exit_code == 2
    assert invoke(*run_args(suite, tmp_path / "r", "-j", "0")).exit_code == 2


@pytest.mark.slow
def test_sigkilled_parallel_run_resumes_without_duplicates_or_gaps(tmp_path):
    # A held cell holds its worker in its second epoch: SIGKILL comes inside a cell, after a
    # record, however fast or loaded the machine is.
    path = write(tmp_path / "s.yaml", TINY.replace("algorithm: sign-bp", "algorithm: held-bp"))
    held = write(tmp_path / "held.py", HELD_PLUGIN)
    out, inside = tmp_path / "r", tmp_path / "inside"
    command = ("run", path, "--out", out, "--quiet", "-j", "2", "--plugin", held)
    process = bench_process(*command, env={"HOLD_AFTER": str(out / "teacher" / "sign" /
                                                             "seed-0.ckpt"),
                                           "HOLD_INSIDE": str(inside)},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        wait_for(lambda: inside.exists() and list(out.glob("*/*/seed-*.json")), process,
                 "a record and the held cell")
    finally:
        os.killpg(process.pid, signal.SIGKILL)  # the parent and its workers
        process.wait()
    done_before = {p: p.read_text() for p in out.glob("*/*/seed-*.json")}
    assert 1 <= len(done_before) < 4
    for text in done_before.values():
        json.loads(text)

    resumed = bench_process(*command)
    _, stderr = resumed.communicate()
    assert resumed.returncode == 0, stderr
    assert f"4 cells (4 ok; {len(done_before)} from earlier runs)" in stderr
    after = sorted(out.glob("*/*/seed-*.json"))
    assert [str(p.relative_to(out)) for p in after] == [
        "teacher/bp/seed-0.json", "teacher/bp/seed-1.json",
        "teacher/sign/seed-0.json", "teacher/sign/seed-1.json"]
    assert all(json.loads(p.read_text())["status"] == "ok" for p in after)
    for p, text in done_before.items():
        assert p.read_text() == text  # finished cells were not run again
    assert not list(out.rglob("*.ckpt")) and not list(out.rglob("*tmp"))


def test_tune_resumes_its_study_and_writes_a_suite_that_validates(tmp_path):
    optuna = pytest.importorskip("optuna", reason="optuna is not installed "
                                                  "(pip install 'bioplaus-bench[tune]')")
    path = write(tmp_path / "s.yaml", TINY.replace(
        "  sign:\n    algorithm: sign-bp\n    optimizer: {lr: 1.0e-3, betas: [0.9, 0.999], eps: 1.0e-8}\n",
        "").replace("epochs: 2", "epochs: 1").replace("datasets:", "tuning: {trials: 3}\ndatasets:"))
    study = tmp_path / "r" / "tuning" / "teacher" / "bp.db"
    args = ["tune", path, "--out", tmp_path / "r"]
    first = invoke(*args)
    assert first.exit_code == 0, first.output
    assert "running 3" in first.stderr
    assert "algorithms:" in first.stdout and "lr:" in first.stdout

    second = invoke(*args, "--trials", "5")
    assert second.exit_code == 0, second.output
    assert "3 of 5 trials finished earlier; running 2" in second.stderr
    loaded = optuna.load_study(study_name="tune", storage=f"sqlite:///{study}")
    assert len(loaded.trials) == 5
    values = [t.params["optimizer.lr"] for t in loaded.trials]
    assert len(set(values)) == 5  # the resumed search does not repeat the first trials

    tuned = tmp_path / "r" / "tuning" / "scale-tuned.yaml"
    entry = yaml.safe_load(tuned.read_text())["algorithms"]["bp"]["datasets"]["teacher"]
    assert entry["optimizer"]["lr"] == loaded.best_params["optimizer.lr"]
    assert set(entry["optimizer"]) == {"lr", "normalize_lr"}
    assert invoke(*args, "--trials", "5").stderr.count("all 5 trials finished earlier") == 1
    # The tuned suite validates and runs those values.
    assert invoke("validate", tuned).exit_code == 0


def test_invalid_search_spaces_name_the_line(tmp_path):
    for space, message in (("{low: 1.0, high: 0.1}", "must be below high"),
                           ("{low: 0, high: 1, log: true}", "log-scale range needs low > 0"),
                           ("{choices: [0.9]}", "is not valid"),
                           ("{lo: 1}", "unknown key")):
        bad = TINY.replace("optimizer.normalize_lr: {choices: [true, false]}",
                           f"optimizer.betas: {space}")
        path = write(tmp_path / "bad.yaml", bad)
        write(tmp_path / "sign.py", PLUGIN)
        result = invoke("validate", path, "--plugin", tmp_path / "sign.py")
        assert result.exit_code == 2, space
        assert f"bad.yaml:{bad.splitlines().index('      optimizer.betas: ' + space) + 1}:" \
            in result.stderr, result.stderr
        assert message in result.stderr, result.stderr
    path = write(tmp_path / "bad.yaml", TINY.replace("optimizer.normalize_lr:", "learning_rate:"))
    result = invoke("validate", path, "--plugin", tmp_path / "sign.py")
    assert result.exit_code == 2 and "starting with one of" in result.stderr
