"""Results you can trust: nothing read from a results folder runs code, a cell's status says what
happened, no record is reused for other code, a plugin cannot take the run down, and faults of
the disk and the folders end in one clear line. Each test failed on the code before these rules."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bioplaus_bench.results.store import ResultStore

from .helpers import HELD_PLUGIN, bench_process, invoke, records, wait_for, write

FAULTY_PLUGIN = '''\
import os
import time
from dataclasses import dataclass

import torch

from bioplaus_bench.api import Algorithm, Capabilities, hookimpl


@dataclass(frozen=True)
class FaultParams:
    fault: str = "none"  # none, exit, os_exit, nan_update, inf_eval, hang, fill_disk


class Faulty(Algorithm):
    """Backprop with a fault chosen by a hyper-parameter."""

    name = "faulty"
    version = "VERSION"  # a test edits this line: a change of code, not of a comment
    Params = FaultParams
    capabilities = Capabilities(mlp=True)
    record_graph = True

    def forward_updates(self, fwd):
        fault = self.params.fault
        grads = list(torch.autograd.grad(fwd.loss, list(self.network.parameters())))
        if fault == "exit":
            raise SystemExit(3)
        if fault == "os_exit":
            os._exit(7)
        if fault == "nan_update":
            grads[0] = torch.full_like(grads[0], float("nan"))
        if fault == "inf_eval":  # after this minibatch's loss: only the evaluation sees it
            with torch.no_grad():
                list(self.network.parameters())[-1].fill_(float("inf"))
            grads = [torch.zeros_like(g) for g in grads]
        if fault == "hang":
            time.sleep(600)
        if fault == "fill_disk" and not os.path.exists(os.environ["FILLED"]):
            open(os.environ["FILLED"], "w").close()  # once: a re-run finds free space
            with open(os.environ["FILLER"], "wb", buffering=0) as filler:
                try:
                    while True:
                        filler.write(bytes(4096))
                except OSError:
                    pass
        return grads


@hookimpl
def bioplaus_bench_algorithms():
    return [Faulty]
'''

SUITE = """\
name: trust
seeds: [0, 1]
precision: float64
datasets:
  teacher:
    source: teacher
    options: {n_train: 32, n_test: 16, hidden: [8]}
    architecture: {type: mlp, hidden: [8]}
    protocol: {epochs: 1, batch_size: 32, validation: 16}
algorithms:
  bp:
    optimizer: {lr: 1.0e-3, betas: [0.9, 0.999], eps: 1.0e-8}
"""


HELD_ENTRY = """\
  held:
    algorithm: held-bp
    optimizer: {lr: 1.0e-3, betas: [0.9, 0.999], eps: 1.0e-8}
"""


def suite_with(tmp_path: Path, *faults: str, seeds: str = "[0, 1]", epochs: int = 1) -> Path:
    text = SUITE.replace("[0, 1]", seeds).replace("epochs: 1", f"epochs: {epochs}")
    for fault in faults:
        text += (f"  {fault}:\n    algorithm: faulty\n    params: {{fault: {fault}}}\n"
                 "    optimizer: {lr: 1.0e-3, betas: [0.9, 0.999], eps: 1.0e-8}\n")
    return write(tmp_path / "suite.yaml", text)


@pytest.fixture()
def plugin(tmp_path):
    return write(tmp_path / "faulty.py", FAULTY_PLUGIN)


def strict_json(path: Path) -> dict:
    def refuse(token):
        raise ValueError(f"{path}: non-standard JSON token {token}")
    return json.loads(path.read_text(), parse_constant=refuse)


# --- 1. checkpoints are data, never code -------------------------------------------------------

class Payload:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return exec, (f"open({str(self.marker)!r}, 'w').close()",)


def test_a_crafted_checkpoint_in_a_results_folder_runs_no_code(tmp_path):
    suite, out, marker = suite_with(tmp_path), tmp_path / "out", tmp_path / "MARKER"
    checkpoint = out / "teacher" / "bp" / "seed-0.ckpt"
    checkpoint.parent.mkdir(parents=True)
    torch.save({"network": Payload(marker)}, checkpoint)

    result = invoke("run", suite, "--out", out, "--quiet")

    assert result.exit_code == 0, result.output
    assert not marker.exists()
    assert f"ignoring checkpoint {checkpoint}" in result.output
    assert strict_json(out / "teacher" / "bp" / "seed-0.json")["status"] == "ok"


# --- 4. statuses say what happened, in standard JSON ---------------------------------------------

def test_an_infinite_evaluation_loss_is_divergence_with_its_reason(tmp_path, plugin):
    out = tmp_path / "out"
    result = invoke("run", suite_with(tmp_path, "inf_eval"), "--out", out, "--plugin", plugin,
                    "--quiet")
    assert result.exit_code == 0, result.output
    record = strict_json(out / "teacher" / "inf_eval" / "seed-0.json")
    assert record["status"] == "diverged"
    assert record["reason"] == "test loss is inf after epoch 1"
    assert record["history"][0]["test_loss"] is None  # inf, written as standard JSON


def test_a_non_finite_update_is_a_fault_of_the_rule_with_parameter_epoch_and_minibatch(
        tmp_path, plugin):
    out = tmp_path / "out"
    result = invoke("run", suite_with(tmp_path, "nan_update"), "--out", out, "--plugin", plugin,
                    "--quiet")
    assert result.exit_code == 1, result.output
    record = strict_json(out / "teacher" / "nan_update" / "seed-0.json")
    assert record["status"] == "error"
    assert record["reason"] == "update of parameter layer 1 weight non-finite at epoch 1, minibatch 1"
    table = invoke("table", out)
    assert "non-finite at epoch 1, minibatch 1" in table.output


# --- 5. no record is reused for other code --------------------------------------------------------

def test_editing_a_plugin_reruns_its_cells_and_the_record_names_the_code(tmp_path, plugin):
    suite, out = suite_with(tmp_path, "none", seeds="[0]"), tmp_path / "out"
    first = invoke("run", suite, "--out", out, "--plugin", plugin, "--quiet")
    assert first.exit_code == 0, first.output
    record = strict_json(out / "teacher" / "none" / "seed-0.json")
    code = record["provenance"]["code"]
    assert code["source_sha256"] and record["config"]["inputs"]["code"] == code

    again = invoke("run", suite, "--out", out, "--plugin", plugin, "--quiet")
    assert "2 from earlier runs" in again.output

    plugin.write_text(FAULTY_PLUGIN.replace("VERSION", "edited"))
    edited = invoke("run", suite, "--out", out, "--plugin", plugin, "--quiet")
    assert "1 from earlier runs" in edited.output  # bp cached, the edited plugin's cell re-run
    rerun = strict_json(out / "teacher" / "none" / "seed-0.json")
    assert rerun["provenance"]["code"]["source_sha256"] != code["source_sha256"]
    assert rerun["config_hash"] != record["config_hash"]


HOLD_LOCK = """
import sys, time
from bioplaus_bench.results.store import ResultStore
with ResultStore(sys.argv[1]).lock():
    print("held", flush=True)
    time.sleep(600)  # killed by the test: never a race with how long the test takes
"""


def test_a_second_run_on_a_folder_in_use_stops_naming_the_holder(tmp_path):
    suite, out = suite_with(tmp_path), tmp_path / "out"
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(out)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        blocked = invoke("run", suite, "--out", out, "--quiet")
        assert blocked.exit_code == 2
        assert f"is in use by process {holder.pid}" in blocked.output
        assert not list(out.glob("*/*/seed-*"))
    finally:
        holder.kill()
        holder.wait()
    # The lock dies with its holder (even by SIGKILL): the folder is usable at once.
    assert invoke("run", suite, "--out", out, "--quiet").exit_code == 0


# --- 6. a plugin cannot kill the run ---------------------------------------------------------------

@pytest.mark.parametrize("jobs", [1, pytest.param(2, marks=pytest.mark.slow)])
def test_system_exit_in_a_plugin_is_an_error_record_and_the_run_goes_on(tmp_path, plugin, jobs):
    out = tmp_path / "out"
    result = invoke("run", suite_with(tmp_path, "exit"), "--out", out, "--plugin", plugin,
                    "-j", jobs, "--quiet")
    assert result.exit_code == 1, result.output
    found = records(out)
    assert {k: r["status"] for k, r in found.items()} == {
        "teacher/bp/seed-0.json": "ok", "teacher/bp/seed-1.json": "ok",
        "teacher/exit/seed-0.json": "error", "teacher/exit/seed-1.json": "error"}
    assert found["teacher/exit/seed-0.json"]["reason"] == "SystemExit: 3"


@pytest.mark.slow
def test_a_plugin_that_kills_its_worker_loses_no_other_cell_under_jobs(tmp_path, plugin):
    out = tmp_path / "out"
    result = invoke("run", suite_with(tmp_path, "os_exit"), "--out", out, "--plugin", plugin,
                    "-j", 2, "--quiet")
    assert result.exit_code == 1, result.output
    statuses = {k: r["status"] for k, r in records(out).items()}
    assert statuses == {"teacher/bp/seed-0.json": "ok", "teacher/bp/seed-1.json": "ok",
                        "teacher/os_exit/seed-0.json": "error",
                        "teacher/os_exit/seed-1.json": "error"}


def test_a_hanging_cell_ends_as_timeout_and_the_others_run(tmp_path, plugin):
    out = tmp_path / "out"
    suite = suite_with(tmp_path, "hang", seeds="[0]")
    # A BP cell first, without a limit: what a process does once (the first Adam imports
    # torch._dynamo, seconds on a busy machine) is done, so that the limit races with nothing
    # in the BP cell below but its milliseconds of work.
    assert invoke("run", suite, "--out", tmp_path / "warm", "--only", "bp", "--quiet").exit_code == 0
    result = invoke("run", suite, "--out", out, "--plugin", plugin, "--cell-timeout", "3",
                    "--quiet")
    assert result.exit_code == 1, result.output
    hung = strict_json(out / "teacher" / "hang" / "seed-0.json")
    assert hung["status"] == "timeout"
    # Ended by the limit's wall-clock alarm, not by the end of the plugin's 600 s sleep:
    assert hung["reason"] == "exceeded the cell time limit of 3 s"
    assert strict_json(out / "teacher" / "bp" / "seed-0.json")["status"] == "ok"


def test_the_suite_protocol_can_set_the_cell_time_limit(tmp_path, plugin):
    suite = suite_with(tmp_path, "hang", seeds="[0]")
    suite.write_text(suite.read_text().replace("validation: 16}", "validation: 16, "
                                               "cell_timeout: 1}"))
    out = tmp_path / "out"
    result = invoke("run", suite, "--out", out, "--plugin", plugin, "--only", "hang", "--quiet")
    assert strict_json(out / "teacher" / "hang" / "seed-0.json")["status"] == "timeout", \
        result.output


def test_the_processes_a_test_starts_get_the_default_signal_handlers():
    # Even when this run was started with SIGINT ignored (a background job of a script): the
    # Ctrl-C and SIGTERM tests below signal child processes (conftest restores the defaults).
    shown = subprocess.run([sys.executable, "-c", "import signal; print(signal.getsignal("
                            "signal.SIGINT) is signal.default_int_handler, signal.getsignal("
                            "signal.SIGTERM) is signal.SIG_DFL)"], capture_output=True, text=True)
    assert shown.stdout.split() == ["True", "True"], shown.stderr


@pytest.mark.slow
@pytest.mark.parametrize("signum, code, said", [(signal.SIGINT, 130, "interrupted"),
                                                (signal.SIGTERM, 143, "terminated (SIGTERM)")])
def test_ctrl_c_and_sigterm_print_one_line_keep_what_is_done_and_the_run_resumes(
        tmp_path, signum, code, said):
    # The held cell holds the run in its second epoch: the signal always comes inside a cell,
    # after its first checkpoint, however fast or loaded the machine is.
    suite, out = write(tmp_path / "suite.yaml",
                       SUITE.replace("epochs: 1", "epochs: 2") + HELD_ENTRY), tmp_path / "out"
    held = write(tmp_path / "held.py", HELD_PLUGIN)
    checkpoint, inside = out / "teacher" / "held" / "seed-0.ckpt", tmp_path / "inside"
    command = ("run", suite, "--out", out, "--plugin", held, "--quiet")
    process = bench_process(*command, env={"HOLD_AFTER": str(checkpoint),
                                           "HOLD_INSIDE": str(inside)})
    try:
        wait_for(inside.exists, process, "the held cell")
        process.send_signal(signum)
        stdout, stderr = process.communicate(timeout=600)
    finally:
        process.kill()
    assert process.returncode == code, stderr
    last = stderr.strip().splitlines()[-1]
    assert last.startswith(f"{said}: 2 of 4 cells have records in ")
    assert "run the same command again to resume" in last
    assert "Traceback" not in stderr
    assert sorted(records(out)) == ["teacher/bp/seed-0.json", "teacher/bp/seed-1.json"]
    assert checkpoint.is_file()  # the interrupted cell's first epoch is kept

    resumed = invoke(*command)
    assert resumed.exit_code == 0, resumed.output
    assert "4 cells (4 ok; 2 from earlier runs)" in resumed.stderr
    assert "ignoring checkpoint" not in resumed.output  # the held cell went on from it
    assert not list(out.rglob("*.ckpt"))


# --- 8. faults of the disk and the folders -----------------------------------------------------------

def test_out_naming_a_file_is_one_line_and_nothing_runs(tmp_path):
    target = tmp_path / "a-file"
    target.write_text("not a folder")
    result = invoke("run", suite_with(tmp_path), "--out", target, "--quiet")
    assert result.exit_code == 2
    assert result.output.strip() == f"error: results folder {target} is a file; expected a folder"


def _mount_tmpfs(folder: Path, options: str) -> None:
    folder.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({mounted.stderr.strip() or 'not root'})")


@pytest.fixture()
def tmpfs(tmp_path):
    folders = []

    def mount(name: str, options: str) -> Path:
        folder = tmp_path / name
        _mount_tmpfs(folder, options)
        folders.append(folder)
        return folder

    yield mount
    for folder in folders:
        subprocess.run(["umount", str(folder)], capture_output=True)


def test_a_read_only_results_folder_is_one_line_before_any_training(tmp_path, tmpfs):
    read_only = tmpfs("ro", "ro,size=1m")
    result = invoke("run", suite_with(tmp_path), "--out", read_only / "out", "--quiet")
    assert result.exit_code == 2
    assert result.output.strip().startswith(f"error: results folder {read_only / 'out'} is not "
                                            "writable: Read-only file system")


def test_a_full_disk_before_the_run_is_one_line_and_exit_2(tmp_path, tmpfs):
    full = tmpfs("full", "size=64k")
    with open(full / "filler", "wb", buffering=0) as filler, pytest.raises(OSError):
        while True:
            filler.write(bytes(4096))
    result = invoke("run", suite_with(tmp_path), "--out", full / "out", "--quiet")
    assert result.exit_code == 2
    assert result.output.strip() == (f"error: results folder {full / 'out'} is not writable: "
                                     "No space left on device")
    assert not (full / "out").exists()  # nothing left behind


def test_a_disk_that_fills_mid_run_exits_1_with_one_line_and_leaves_no_temporary_files(
        tmp_path, tmpfs, plugin, monkeypatch):
    small = tmpfs("small", "size=256k")
    out, filler = small / "out", small / "filler"
    monkeypatch.setenv("FILLER", str(filler))
    monkeypatch.setenv("FILLED", str(tmp_path / "filled-once"))
    suite = suite_with(tmp_path, "fill_disk", seeds="[0]")
    result = invoke("run", suite, "--out", out, "--plugin", plugin, "--quiet")
    assert result.exit_code == 1, result.output
    assert "No space left on device" in result.output
    assert "free space and run the same command again to resume" in result.output
    assert "Traceback" not in result.output
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]
    assert strict_json(out / "teacher" / "bp" / "seed-0.json")["status"] == "ok"
    filler.unlink()
    resumed = invoke("run", suite, "--out", out, "--plugin", plugin, "--quiet")
    assert resumed.exit_code == 0, resumed.output
    assert "1 from earlier runs" in resumed.output
    assert len(records(out)) == 2


def test_files_that_are_not_records_are_skipped_with_a_warning_and_said_under_the_table(
        tmp_path):
    suite, out = suite_with(tmp_path, seeds="[0]"), tmp_path / "out"
    assert invoke("run", suite, "--out", out, "--quiet").exit_code == 0
    stray = out / "teacher" / "bp" / "seed-7.json"
    stray.write_text('{"hello": "world"}')
    (out / "teacher" / "bp" / "seed-8.json").write_text("[1, 2, 3]")
    result = invoke("table", out)
    assert result.exit_code == 0, result.output
    assert f"warning: ignoring {stray}: not a record" in result.output
    assert "2 files" in result.output and "skipped" in result.output
    assert "Traceback" not in result.output


# --- 9. records are written with the user's umask ---------------------------------------------------

def test_records_follow_the_umask(tmp_path):
    previous = os.umask(0o022)
    try:
        out = tmp_path / "out"
        assert invoke("run", suite_with(tmp_path, seeds="[0]"), "--out", out,
                      "--quiet").exit_code == 0
    finally:
        os.umask(previous)
    assert (out / "teacher" / "bp" / "seed-0.json").stat().st_mode & 0o777 == 0o644


def test_a_stale_record_in_the_folder_is_not_shown_as_this_runs_result(tmp_path, monkeypatch):
    suite, out = suite_with(tmp_path, seeds="[0]"), tmp_path / "out"
    faster = ("--set", "algorithms.bp.optimizer.lr=5.0e-2", "--quiet")
    stale = invoke("run", suite, "--out", out, "--quiet")
    fresh = invoke("run", suite, "--out", tmp_path / "fresh", *faster)
    assert stale.exit_code == fresh.exit_code == 0

    def row(result) -> str:
        return next(line for line in result.stdout.splitlines() if line.startswith("| BP |"))

    assert row(stale) != row(fresh)
    # A record this run could not replace (here: the write is lost) must not be tabled as its:
    # the table is of the records this run made, not of what lies in the folder.
    monkeypatch.setattr(ResultStore, "write", lambda self, record, cell: None)
    result = invoke("run", suite, "--out", out, *faster)
    assert row(result) == row(fresh), result.output



def test_data_read_with_skipped_checksums_is_in_the_hash_and_the_provenance(
        tmp_path, make_idx_dataset, monkeypatch):
    make_idx_dataset(tmp_path / "data", "MNIST", n_train=60, n_test=12)
    monkeypatch.setenv("BIOPLAUS_CACHE", str(tmp_path / "cache"))
    suite = write(tmp_path / "mnist.yaml", """\
        name: mnist
        seeds: [0]
        datasets:
          mnist:
            source: mnist
            architecture: {type: mlp, hidden: [8]}
            protocol: {epochs: 1, batch_size: 20, validation: 20}
        algorithms:
          bp:
            optimizer: {lr: 1.0e-3, betas: [0.9, 0.999], eps: 1.0e-8}
        """)
    out = tmp_path / "out"
    run = ("run", suite, "--out", out, "--data-dir", tmp_path / "data", "--quiet")
    refused = invoke(*run)
    assert refused.exit_code == 2 and "--skip-checksums" in refused.output

    first = invoke(*run, "--skip-checksums")
    assert first.exit_code == 0, first.output
    assert "warning" in first.output and "checksums" in first.output
    record = strict_json(out / "mnist" / "bp" / "seed-0.json")
    data = record["provenance"]["data"]
    assert data["checksums"] == "skipped" and data["files"]
    assert record["config"]["inputs"]["data"] == data

    # Other bytes in the same files: the cell is computed again, never taken from the cache.
    images = tmp_path / "data" / "MNIST" / "raw" / "train-images-idx3-ubyte"
    content = bytearray(images.read_bytes())
    content[-1] ^= 0xFF
    images.write_bytes(bytes(content))
    second = invoke(*run, "--skip-checksums")
    assert "0 from earlier runs" in second.output, second.output
    assert strict_json(out / "mnist" / "bp" / "seed-0.json")["config_hash"] != record["config_hash"]


@pytest.mark.parametrize("device, message", [
    ("tpu", "--device must be cpu, cuda or cuda:N, got 'tpu'"),
    ("cuda:x", "--device must be cpu, cuda or cuda:N, got 'cuda:x'"),
    ("cuda:99", "--device cuda:99: "),
])
def test_an_unknown_or_absent_device_is_one_line_before_anything_runs(tmp_path, device, message):
    if device == "cuda:99" and not torch.cuda.is_available():
        message = "--device cuda:99: CUDA is not available on this machine"
    out = tmp_path / "out"
    result = invoke("run", suite_with(tmp_path), "--out", out, "--device", device, "--quiet")
    assert result.exit_code == 2
    assert result.output.strip().startswith(f"error: {message}")
    assert not out.exists()


def test_a_file_where_a_cell_folder_belongs_is_one_line_before_any_training(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "teacher").write_text("in the way")
    result = invoke("run", suite_with(tmp_path), "--out", out, "--quiet")
    assert result.exit_code == 2
    assert result.output.startswith(f"error: cannot create the results folder "
                                    f"{out / 'teacher' / 'bp'}: ")
    assert len(result.output.strip().splitlines()) == 1
    assert "warning" not in result.output


@pytest.mark.slow
def test_a_record_with_any_field_of_the_wrong_type_is_skipped_never_a_traceback(tmp_path):
    suite, out = suite_with(tmp_path, seeds="[0]"), tmp_path / "out"
    assert invoke("run", suite, "--out", out, "--quiet").exit_code == 0
    path = out / "teacher" / "bp" / "seed-0.json"
    original = json.loads(path.read_text())
    crashes = []
    for field in original:
        for value in (None, "x", 5, [], {}, -1, 1.5, True, [5]):
            path.write_text(json.dumps({**original, field: value}))
            result = invoke("table", out)
            if result.exit_code not in (0, 2) or not isinstance(result.exception,
                                                                 (SystemExit, type(None))):
                crashes.append(f"{field}={value!r}: {result.exception!r}")
    assert not crashes, crashes


def test_two_entries_of_one_algorithm_are_told_apart_and_the_baseline_can_be_chosen(tmp_path):
    suite = write(tmp_path / "two.yaml", SUITE.replace("seeds: [0, 1]", "seeds: [0, 1, 2]") + """\
  bp-fast:
    algorithm: bp
    optimizer: {lr: 1.0e-2, betas: [0.9, 0.999], eps: 1.0e-8}
""")
    out = tmp_path / "out"
    result = invoke("run", suite, "--out", out, "--quiet")
    assert result.exit_code == 0, result.output
    assert "| BP |" in result.stdout and "| BP (bp-fast) |" in result.stdout
    assert "p vs BP (entry 'bp')" in result.stdout
    # The suite's baseline now, not the one stored in the cached records.
    again = invoke("run", suite, "--out", out, "--set", "baseline=bp-fast", "--quiet")
    assert "(entry 'bp-fast')" in again.stdout, again.stdout
    table = invoke("table", out, "--baseline", "bp-fast")
    assert "(entry 'bp-fast')" in table.stdout
    wrong = invoke("table", out, "--baseline", "bp-fats")
    assert wrong.exit_code == 2 and "did you mean 'bp-fast'" in wrong.output


def test_a_table_of_records_from_different_configurations_says_so(tmp_path):
    suite, out = suite_with(tmp_path), tmp_path / "out"
    assert invoke("run", suite, "--out", out, "--quiet").exit_code == 0
    assert invoke("run", suite, "--out", out, "--seeds", 1, "--set",
                  "algorithms.bp.optimizer.lr=2.0e-3", "--quiet").exit_code == 0
    table = invoke("table", out)
    assert "Mixed configurations" in table.stdout and "Teacher regression / BP: 2 configurations" \
        in table.stdout
