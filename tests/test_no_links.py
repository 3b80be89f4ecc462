"""Nothing is written through a link (issue 36, item 2): a results folder received from someone
else may hold a symbolic link where the suite writes (``report.html -> ~/.bashrc``); every file
is written into a new file and renamed into place, and a link where it is to go is refused with
one line naming it, the link's target untouched."""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
from pathlib import Path

import pytest
import torch

from bioplaus_bench.errors import InputError, StorageError
from bioplaus_bench.execution.checkpoint import Checkpoint
from bioplaus_bench.results.record import Record
from bioplaus_bench.results.store import ResultStore

from .helpers import TINY_SUITE, invoke, write

ROOT = Path(__file__).resolve().parents[1]
MINE = "a file of the user's, outside the results folder\n"
ONE_SEED = TINY_SUITE.replace("seeds: [0, 1]", "seeds: [0]").replace("epochs: 2", "epochs: 1")


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished tiny run (teacher; bp and dfa, seed 0), copied by each test that changes it."""
    folder = tmp_path_factory.mktemp("finished")
    suite = write(folder / "s.yaml", ONE_SEED)
    run = invoke("run", suite, "--out", folder / "r", "--quiet")
    assert run.exit_code == 0, run.output
    return suite, folder / "r"


@pytest.fixture()
def received(finished, tmp_path):
    """A copy of the finished run, as a results folder received from someone else, and a file of
    the user's that its links point to."""
    suite, folder = finished
    copy = tmp_path / "received"
    shutil.copytree(folder, copy)
    victim = tmp_path / "home" / "victim.txt"
    victim.parent.mkdir()
    victim.write_text(MINE)
    return suite, copy, victim


def link(path: Path, target: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    path.symlink_to(target)
    return path


def refused(result, path: Path) -> None:
    """Exit 2 with one line naming ``path`` and why."""
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and str(path) in lines[0] and "symbolic link" in lines[0], lines
    assert "Traceback" not in result.output


def untouched(victim: Path, *links: Path) -> None:
    assert victim.read_text() == MINE
    for path in links:
        assert path.is_symlink(), f"{path} was replaced"


# --- bench report, table --out, plot ---------------------------------------------------------

def test_report_is_not_written_through_a_link_in_the_results_folder(received):
    _, folder, victim = received
    page = link(folder / "report.html", victim)
    refused(invoke("report", folder), page)
    untouched(victim, page)


def test_a_dangling_link_as_the_report_creates_nothing_where_it_points(received, tmp_path):
    _, folder, _ = received
    target = tmp_path / "home" / ".profile"
    page = link(folder / "report.html", target)
    refused(invoke("report", folder), page)
    assert not target.exists() and page.is_symlink()


def test_table_out_is_not_written_through_a_link(received):
    _, folder, victim = received
    table = link(folder / "table.md", victim)
    refused(invoke("table", folder, "--out", table), table)
    untouched(victim, table)


def test_plot_is_not_written_through_a_link(received):
    _, folder, victim = received
    figure = link(folder / "curves.png", victim)
    refused(invoke("plot", folder, "--figure", "curves", "--out", figure), figure)
    untouched(victim, figure)


def test_a_results_folder_that_is_itself_a_link_is_the_user_s_choice(received, tmp_path):
    _, folder, _ = received
    mine = link(tmp_path / "mine", folder)
    result = invoke("report", mine)
    assert result.exit_code == 0, result.output
    assert (folder / "report.html").is_file() and not (folder / "report.html").is_symlink()
    assert not list(folder.glob(".report.html.*"))  # no temporary file left


# --- records, checkpoints and the lock file of bench run -------------------------------------

def rerun(suite: Path, folder: Path):
    """The run again with another learning rate: every cell trains and writes anew."""
    return invoke("run", suite, "--out", folder, "--quiet", "--only", "bp",
                  "--set", "algorithms.bp.optimizer.lr=2.0e-3")


def test_a_record_that_is_a_link_is_refused_before_anything_trains(received):
    suite, folder, victim = received
    record = link(folder / "teacher" / "bp" / "seed-0.json", victim)
    refused(rerun(suite, folder), record)
    untouched(victim, record)


def test_a_checkpoint_that_is_a_link_is_refused_before_anything_trains(received):
    suite, folder, victim = received
    checkpoint = link(folder / "teacher" / "bp" / "seed-0.ckpt", victim)
    refused(rerun(suite, folder), checkpoint)
    untouched(victim, checkpoint)


def test_a_linked_folder_inside_the_results_folder_is_refused(received, tmp_path):
    """results/teacher -> elsewhere: records would land outside the results folder."""
    suite, folder, _ = received
    elsewhere = tmp_path / "elsewhere"
    shutil.move(folder / "teacher", elsewhere)
    before = sorted(p.name for p in elsewhere.rglob("*"))
    dataset = link(folder / "teacher", elsewhere)
    refused(rerun(suite, folder), dataset)
    assert sorted(p.name for p in elsewhere.rglob("*")) == before


def test_the_lock_file_is_never_followed(received):
    suite, folder, victim = received
    lock = link(folder / ".lock", victim)
    result = rerun(suite, folder)
    assert result.exit_code == 2 and ".lock" in result.stderr and "symbolic link" in \
        result.stderr, result.output
    untouched(victim, lock)


def test_a_lock_file_with_another_name_is_not_truncated(received):
    """A hard link: truncating the lock file would truncate the other name's file."""
    suite, folder, victim = received
    (folder / ".lock").unlink(missing_ok=True)
    os.link(victim, folder / ".lock")
    result = rerun(suite, folder)
    assert result.exit_code == 2 and ".lock" in result.stderr, result.output
    assert victim.read_text() == MINE


def record_of(folder: Path) -> tuple[Record, object]:
    from bioplaus_bench.results.store import read_record

    record = read_record(folder / "teacher" / "bp" / "seed-0.json")
    assert record is not None
    cell = type("Cell", (), {"dataset_id": "teacher", "algorithm_id": "bp", "seed": 0})()
    return record, cell


def test_store_write_refuses_a_record_that_is_a_link(received):
    _, folder, victim = received
    record, cell = record_of(folder)
    path = link(folder / "teacher" / "bp" / "seed-0.json", victim)
    with pytest.raises(StorageError, match="seed-0.json: it is a symbolic link"):
        ResultStore(folder).write(record, cell)
    untouched(victim, path)
    assert not list(path.parent.glob(".seed-0.json.*"))


def test_store_write_refuses_a_linked_folder(received, tmp_path):
    _, folder, _ = received
    record, cell = record_of(folder)
    elsewhere = tmp_path / "elsewhere"
    shutil.move(folder / "teacher" / "bp", elsewhere)
    (elsewhere / "seed-0.json").unlink()
    link(folder / "teacher" / "bp", elsewhere)
    with pytest.raises(StorageError, match="teacher/bp is a symbolic link"):
        ResultStore(folder).write(record, cell)
    assert not (elsewhere / "seed-0.json").exists()


def test_a_checkpoint_is_not_saved_through_a_link(tmp_path, capsys):
    victim = tmp_path / "victim.txt"
    victim.write_text(MINE)
    path = link(tmp_path / "r" / "seed-0.ckpt", victim)
    checkpoint = Checkpoint(path, "hash")
    checkpoint.save({"network": torch.zeros(2)})
    assert "symbolic link" in capsys.readouterr().err and checkpoint.unwritable
    untouched(victim, path)


def test_a_checkpoint_is_not_saved_through_a_link_at_its_temporary_name(tmp_path):
    """The temporary file is new (O_EXCL), never a name planted beforehand."""
    victim = tmp_path / "victim.txt"
    victim.write_text(MINE)
    path = tmp_path / "r" / "seed-0.ckpt"
    planted = link(path.with_name(f".{path.name}.{os.getpid()}.tmp"), victim)
    Checkpoint(path, "hash").save({"network": torch.zeros(2)})
    assert torch.load(path, weights_only=True)["config_hash"] == "hash"
    untouched(victim, planted)


@pytest.mark.parametrize("name, target", [("bp.db", "victim.txt"),
                                          ("bp.checkpoints", "elsewhere")])
def test_tune_refuses_a_study_file_or_its_checkpoints_folder_that_is_a_link(tmp_path, name,
                                                                             target):
    """SQLite writes the study in place, and a trial's seeds their checkpoints in the folder
    beside it: a link at either would be written through."""
    pytest.importorskip("optuna")
    suite = write(tmp_path / "s.yaml", ONE_SEED.replace("datasets:", "tuning: {trials: 1}\n"
                                                        "datasets:").split("  dfa:\n")[0] + (
        "    search:\n      optimizer.lr: {low: 1.0e-4, high: 1.0e-1, log: true}\n"))
    victim = tmp_path / "victim.txt"
    victim.write_text(MINE)
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "r" / "tuning" / "teacher").mkdir(parents=True)
    planted = link(tmp_path / "r" / "tuning" / "teacher" / name, tmp_path / target)
    refused(invoke("tune", suite, "--out", tmp_path / "r"), planted)
    untouched(victim, planted)
    assert not any((tmp_path / "elsewhere").iterdir())


# --- the scripts -------------------------------------------------------------------------------

def load(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def test_readme_table_is_not_written_through_a_link(tmp_path):
    script = load("readme_table")
    victim = tmp_path / "victim.md"
    stale = "".join(f"{block.start}\nstale\n{block.end}\n" for block in script.BLOCKS)
    victim.write_text(stale)
    readme = link(tmp_path / "checkout" / "README.md", victim)
    with pytest.raises(SystemExit, match="README.md: it is a symbolic link"):
        script.main(["--root", str(tmp_path / "checkout")])
    assert victim.read_text() == stale
    assert readme.is_symlink()


def test_collect_does_not_write_through_a_link_in_the_reference_folder(tmp_path):
    reference = load("reference")
    try:
        campaign = reference.Campaign(tmp_path / "out", tmp_path / "work", seeds=None)
        source = campaign.work_store(next(  # the work folder of table1's runs
            g for stage in reference.STAGES for g in stage.groups if g.suite == "table1")
        ).root / "mnist" / "dfa" / "seed-0.json"
        source.parent.mkdir(parents=True)
        committed = Path(__file__).resolve().parents[1] / "results" / "reference" / "table1"
        source.write_text((committed / "mnist" / "dfa" / "seed-0.json").read_text())
        victim = tmp_path / "victim.txt"
        victim.write_text(MINE)
        target = link(campaign.out / "table1" / "mnist" / "dfa" / "seed-0.json", victim)
        with pytest.raises(InputError, match="seed-0.json: it is a symbolic link"):
            campaign.collect()
        untouched(victim, target)
    finally:
        del sys.modules["reference"]


# --- the helper ----------------------------------------------------------------------------------

def test_a_new_file_follows_the_umask_and_an_old_one_is_replaced_whole(tmp_path):
    from bioplaus_bench.files import write_atomically

    previous = os.umask(0o027)
    try:
        path = write_atomically(tmp_path / "a" / "b.txt", "one", inside=tmp_path)
    finally:
        os.umask(previous)
    assert path.read_text() == "one" and path.stat().st_mode & 0o777 == 0o640

    def half_then_fail(file):
        file.write(b"half")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space"):
        write_atomically(path, half_then_fail)
    assert path.read_text() == "one" and os.listdir(path.parent) == ["b.txt"]


def test_a_link_below_the_vouched_folder_is_refused_but_the_folder_itself_may_be_one(tmp_path):
    from bioplaus_bench.files import LinkRefused, write_atomically

    (tmp_path / "real" / "sub").mkdir(parents=True)
    vouched = link(tmp_path / "vouched", tmp_path / "real")
    write_atomically(vouched / "sub" / "x.txt", b"x", inside=vouched)
    assert (tmp_path / "real" / "sub" / "x.txt").read_bytes() == b"x"
    link(tmp_path / "real" / "inner", tmp_path / "real" / "sub")
    with pytest.raises(LinkRefused, match="inner is a symbolic link"):
        write_atomically(vouched / "inner" / "y.txt", b"y", inside=vouched)
    assert not (tmp_path / "real" / "sub" / "y.txt").exists()
