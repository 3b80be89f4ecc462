"""The committed reference records agree with themselves: the selected epoch and the final
metrics a table reports are what the selection rule gives on the record's own history, and the
history holds every epoch of the protocol. A hand-edited number would be found here."""

import json
from pathlib import Path

import pytest

from bioplaus_bench.results.record import Record, select_epoch

REFERENCE = Path(__file__).resolve().parents[1] / "results" / "reference"
PATHS = sorted(REFERENCE.glob("*/*/*/seed-*.json"))


def test_there_are_reference_records():
    assert len(PATHS) >= 50


@pytest.mark.parametrize("path", PATHS, ids=[str(p.relative_to(REFERENCE)) for p in PATHS])
def test_a_reference_record_agrees_with_its_history(path):
    record = Record.from_json(json.loads(path.read_text()))
    assert record.status == "ok" and record.paper_protocol
    assert [row["epoch"] for row in record.history] == list(range(1, record.epochs + 1))
    has_val = any("val_loss" in row for row in record.history)
    assert select_epoch(record.history, record.task, has_val) == (record.selected_epoch,
                                                                    record.final)
    assert record.truncated(record.epochs) is record


def test_a_changed_number_is_found(tmp_path):
    record = json.loads(PATHS[0].read_text())
    record["final"]["test_error"] -= 0.001
    forged = Record.from_json(record)
    assert select_epoch(forged.history, forged.task, True)[1] != forged.final
