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
