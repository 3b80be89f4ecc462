"""The reference campaign's bookkeeping (benchmarks/reference.py): which cells are done, stale
or missing, and how finished records travel from the work folder to the reference folder. The
runs themselves are ordinary `bench run`s, tested elsewhere."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def reference():
    spec = importlib.util.spec_from_file_location("reference", ROOT / "benchmarks" / "reference.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["reference"] = module
    spec.loader.exec_module(module)
    yield module
    del sys.modules["reference"]


def record(cell, **changes) -> dict:
    data = {"status": "ok", "paper_protocol": True, "config": json.loads(json.dumps(cell.config())),
            "wall_time": 600.0}
    data.update(changes)
    return data


def write(path: Path, data: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    return path


def campaign_on_tiny_mnist(reference, tmp_path):
    """A campaign whose data settings read a tiny MNIST (checksums skipped), for config hashes."""
    from .conftest import write_idx_dataset

    write_idx_dataset(tmp_path / "data")
    data = reference.DataSettings(root=tmp_path / "data", verify_checksums=False)
    return reference.Campaign(tmp_path / "out", tmp_path / "work", seeds=None, data=data)


def save_checkpoint(campaign, group, cell, *, epoch: int, pretrained: int, elapsed: float,
                    config_hash: str | None = None) -> Path:
    """A checkpoint as `bench run` writes it, of the cell as this code and data give it unless
    ``config_hash`` says otherwise."""
    from bioplaus_bench.run.checkpoint import Checkpoint
    from bioplaus_bench.run.inputs import with_inputs

    if config_hash is None:
        config_hash = with_inputs([cell], campaign.registry, campaign.data)[0].config_hash()
    path = (campaign.work / group.name / cell.dataset_id / cell.algorithm_id
            / f"seed-{cell.seed}.ckpt")
    state = {"epoch": epoch, "pretrained": pretrained, "elapsed": elapsed, "history": []}
    Checkpoint(path, config_hash).save({"network": {}, "algorithm": {}, "optimisers": {},
                                        "rng": {}, "state": state})
    return path


def test_a_cell_is_done_only_with_a_finished_record_of_the_suite_s_settings(reference, tmp_path):
    campaign = reference.Campaign(tmp_path / "out", tmp_path / "work", seeds=None)
    stage = reference.STAGES[0]
    group = reference.Group("table1", "mnist", "bp")
    cells = campaign.cells(stage, group)
    assert [c.seed for c in cells] == [0, 1, 2]
    assert all(cell.dataset.protocol.epochs == 100 for cell in cells)  # the shipped protocol
    paths = [campaign.record_path(campaign.out, cell) for cell in cells]
    write(paths[0], record(cells[0]))
    write(paths[1], record(cells[1], status="error"))
    changed = record(cells[2])
    changed["config"]["optimizer"]["lr"] *= 2
    write(paths[2], changed)
    assert [campaign.state(cell) for cell in cells] == ["done", "stale", "stale"]
    # Older code still gives a reference cell (the table marks it); a quick trial does not.
    older = record(cells[1])
    older["config"]["inputs"] = {"code": {"source_sha256": "0" * 16}}
    write(paths[1], older)
    write(paths[2], record(cells[2], paper_protocol=False))
    assert [campaign.state(cell) for cell in cells] == ["done", "done", "stale"]
    assert [c.seed for c in campaign.missing(stage, group)] == [2]
    seconds, measured = campaign.seconds_per_seed(group)
    assert measured and seconds == 600.0
    # Frozen-MNIST has no DFA cell in the paper: the group is empty, not missing.
    assert campaign.cells(stage, reference.Group("table1", "frozen_mnist", "dfa")) == []


def test_collect_copies_finished_records_of_the_work_folder_only(reference, tmp_path):
    campaign = reference.Campaign(tmp_path / "out", tmp_path / "work", seeds=None)
    group_folder = campaign.work / "table1" / "mnist" / "dfa"
    finished = write(group_folder / "mnist" / "dfa" / "seed-0.json", {"status": "ok"})
    write(group_folder / "mnist" / "dfa" / "seed-1.json", {"status": "timeout"})
    (group_folder / "mnist" / "dfa" / "seed-1.ckpt").write_bytes(b"checkpoint")
    assert campaign.collect() == 1
    target = campaign.out / "table1" / "mnist" / "dfa"
    assert sorted(p.name for p in target.iterdir()) == ["seed-0.json"]
    assert (target / "seed-0.json").read_bytes() == finished.read_bytes()
    assert campaign.collect() == 0  # unchanged records are not copied again


def test_a_group_runs_the_shipped_suite_for_its_missing_seeds_only(reference, tmp_path):
    campaign = reference.Campaign(tmp_path / "out", tmp_path / "work", seeds=None)
    args = type("Args", (), {"device": "cpu", "data_dir": tmp_path, "skip_checksums": False})
    command = campaign.command(reference.Group("table1", "mnist", "bp"), [1, 2], args)
    assert command[3:5] == ["run", str(ROOT / "suites" / "table1.yaml")]
    for option in ("--only-seeds", "--vectorize-seeds", "--datasets", "--only", "--out"):
        assert option in command
    assert command[command.index("--only-seeds") + 1] == "1,2"
    assert "--epochs" not in command and "--set" not in command and "--subset" not in command


def test_status_reads_the_checkpoints_of_cells_under_way_and_whether_they_resume(
        reference, tmp_path, capsys):
    """A checkpoint written as `bench run` writes it (its config hash from the cell's code and
    data) resumes, and its own pace gives its time left; one of other settings starts over;
    a file that is no checkpoint is no progress."""
    campaign = campaign_on_tiny_mnist(reference, tmp_path)
    stage = reference.STAGES[0]
    group = reference.Group("table1", "mnist", "ddtp-linear")
    cells = campaign.cells(stage, group)
    pretraining = cells[0].settings.schedule.feedback_pretraining_epochs
    assert pretraining > 0  # so that the totals below count it
    total = pretraining + cells[0].dataset.protocol.epochs
    progress = {"epoch": 10, "pretrained": pretraining, "elapsed": 160.0}
    save_checkpoint(campaign, group, cells[0], **progress)
    save_checkpoint(campaign, group, cells[1], **progress, config_hash="0" * 16)  # other code
    save_checkpoint(campaign, group, cells[2], **progress).write_bytes(b"not a checkpoint")

    first = campaign.partial(group, cells[0])
    assert (first.done, first.total, first.resumes) == (pretraining + 10, total, True)
    assert first.seconds_left() == pytest.approx(160.0 * (total - 10 - pretraining)
                                                 / (10 + pretraining))
    assert campaign.partial(group, cells[1]).resumes is False
    assert campaign.partial(group, cells[2]) is None
    # Without the data its hash names, whether it resumes is unknown, and the line says why.
    elsewhere = reference.Campaign(campaign.out, campaign.work, seeds=None,
                                   data=reference.DataSettings(root=tmp_path / "nothing"))
    unknown = elsewhere.partial(group, cells[0])
    assert unknown.resumes is None and "nothing" in unknown.why

    seconds, measured = campaign.seconds_per_seed(group)
    left, guessed, note = campaign._left(group, cells)
    assert left == pytest.approx(first.seconds_left() + 2 * seconds) and guessed == (not measured)
    assert "some checkpoints of other code or settings" in note
    campaign.status([stage])
    line = next(line for line in capsys.readouterr().out.splitlines() if group.name in line)
    assert f"checkpoint at epoch {pretraining + 10}/{total}" in line


def test_the_prior_of_a_group_without_records_follows_this_machine_s_pace(reference, tmp_path):
    campaign = reference.Campaign(tmp_path / "out", tmp_path / "work", seeds=None)
    stage = reference.STAGES[0]
    bp, dtp = reference.Group("table1", "mnist", "bp"), reference.Group("table1", "mnist", "dtp")
    prior, measured = campaign.seconds_per_seed(dtp)
    assert not measured
    cell = campaign.cells(stage, bp)[0]
    twice = 2 * campaign.seconds_per_seed(bp)[0]  # BP ran at half the prior's speed
    write(campaign.record_path(campaign.out, cell), record(cell, wall_time=twice))
    assert campaign.seconds_per_seed(bp) == (twice, True)
    assert campaign.seconds_per_seed(dtp) == (pytest.approx(2 * prior), False)


def test_the_campaign_log_says_where_a_group_under_way_resumes(reference, tmp_path, monkeypatch,
                                                               capsys):
    campaign = campaign_on_tiny_mnist(reference, tmp_path)
    group = reference.Group("table1", "mnist", "bp")
    stage = reference.Stage("t", "one group", (group,), 2)
    save_checkpoint(campaign, group, campaign.cells(stage, group)[0], epoch=40, pretrained=0,
                    elapsed=100.0)
    started = []

    class Finished:  # a `bench run` that ends at once
        returncode = 0

        def __init__(self, command, **kwargs):
            started.append(command)

        def poll(self):
            return 0

    monkeypatch.setattr(reference.subprocess, "Popen", Finished)
    monkeypatch.setattr(reference.time, "sleep", lambda seconds: None)
    monkeypatch.setattr(reference.signal, "signal", lambda *handler: None)  # pytest keeps its own
    args = type("Args", (), {"device": "cpu", "data_dir": tmp_path / "data", "skip_checksums": True,
                             "jobs": 1, "threads": 1})
    assert reference.run(campaign, [stage], args) == 0
    assert len(started) == 1 and started[0][started[0].index("--only-seeds") + 1] == "0,1"
    line = next(line for line in capsys.readouterr().out.splitlines() if " start " in line)
    assert line.endswith("; checkpoint at epoch 40/100 (pre-training included), resumes there")
