"""The Ray executor keeps the promises of the others: Ctrl-C and SIGTERM stop a run with one line
saying what is kept (exit 130 or 143), not with Ray's handler and stack dump; a cell that Ray
ran again after its worker was lost is said so. Each end-to-end test starts a local Ray: slow."""

import os
import signal
import sys

import pytest

from bioplaus_bench.errors import Terminated
from bioplaus_bench.execution.executors.ray import _suite_signal_handlers

from .helpers import HELD_PLUGIN, bench_process, records, wait_for, write

pytest.importorskip("ray", reason="ray is not installed (pip install 'bioplaus-bench[ray]')")

SUITE = """\
name: ray-signals
seeds: [0]
precision: float64
datasets:
  teacher:
    source: teacher
    options: {n_train: 32, n_test: 16, hidden: [8]}
    architecture: {type: mlp, hidden: [6]}
    protocol: {epochs: 2, batch_size: 16, validation: 16}
algorithms:
  held:
    algorithm: held-bp
    optimizer: {lr: 1.0e-3}
"""

# Backprop whose worker process dies in its first attempt (the marker file says it did).
CRASH_ONCE = HELD_PLUGIN.replace('"held-bp"', '"crash-once"').replace(
    "        after, inside =",
    "        if not os.path.exists(MARKER):\n"
    "            Path(MARKER).touch()\n"
    "            os._exit(1)  # the worker dies mid-cell, as on a lost node\n"
    "        after, inside =")


@pytest.mark.slow
@pytest.mark.parametrize("signum, code, said", [(signal.SIGINT, 130, "interrupted"),
                                                (signal.SIGTERM, 143, "terminated (SIGTERM)")])
def test_ctrl_c_and_sigterm_under_ray_print_one_line_and_keep_the_checkpoint(
        tmp_path, signum, code, said):
    suite, out = write(tmp_path / "suite.yaml", SUITE), tmp_path / "out"
    held = write(tmp_path / "held.py", HELD_PLUGIN)
    checkpoint, inside = out / "teacher" / "held" / "seed-0.ckpt", tmp_path / "inside"
    # In a session of its own: Ctrl-C in a terminal signals the whole process group.
    process = bench_process("run", suite, "--out", out, "--plugin", held, "--quiet",
                            "--executor", "ray", start_new_session=True,
                            env={"HOLD_AFTER": str(checkpoint), "HOLD_INSIDE": str(inside)})
    try:
        wait_for(inside.exists, process, "the held cell")
        if signum == signal.SIGINT:
            os.killpg(process.pid, signum)
        else:
            process.send_signal(signum)  # kill PID: the driver alone
        _, stderr = process.communicate(timeout=300)
    finally:
        process.kill()
    assert process.returncode == code, stderr
    last = stderr.strip().splitlines()[-1]
    assert last.startswith(f"{said}: 0 of 1 cells have records in {out}"), stderr
    assert "run the same command again to resume" in last
    assert "Traceback" not in stderr and "SIGTERM received" not in stderr, stderr
    assert checkpoint.is_file() and not records(out)  # the cell's first epoch is kept


@pytest.mark.slow
def test_a_cell_retried_after_its_worker_was_lost_is_said_so(tmp_path):
    marker = tmp_path / "crashed"
    plugin = write(tmp_path / "crash.py", CRASH_ONCE.replace("MARKER", repr(str(marker))))
    suite = write(tmp_path / "suite.yaml", SUITE.replace("held-bp", "crash-once")
                  .replace("epochs: 2", "epochs: 1"))
    out = tmp_path / "out"
    process = bench_process("run", suite, "--out", out, "--plugin", plugin, "--quiet",
                            "--executor", "ray")
    _, stderr = process.communicate(timeout=600)
    assert process.returncode == 0, stderr
    assert marker.exists()  # the first attempt died
    assert "cell teacher/held/seed-0 retried after its worker was lost (once)" in stderr
    assert records(out)["teacher/held/seed-0.json"]["status"] == "ok"


def test_the_run_keeps_its_signal_handlers_through_ray_init():
    def stop(signum, frame):
        raise Terminated()

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        with _suite_signal_handlers():
            signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(signum))  # as ray.init
        assert signal.getsignal(signal.SIGTERM) is stop
        # A SIGTERM that Ray's handler turned into an exit while Ray was starting.
        with pytest.raises(Terminated), _suite_signal_handlers():
            raise SystemExit(signal.SIGTERM)
    finally:
        signal.signal(signal.SIGTERM, previous)
