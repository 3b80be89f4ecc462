"""Records as one typed value: the JSON layout is stable, records written by earlier
versions still load and table identically, a file that is not a record is refused with the
reason, and the reported number is read in one place. Also ``bench tune``'s trial cells, built
from the suite's cell with ``dataclasses.replace``."""

import json
import math
from pathlib import Path

import pytest

from bioplaus_bench.errors import SuiteError
from bioplaus_bench.registry import load_registry
from bioplaus_bench.results.record import Record, RecordError
from bioplaus_bench.results.store import ResultStore, make_record
from bioplaus_bench.suite import load_suite
from bioplaus_bench.suite.tune import set_items, trial_cell

from .helpers import invoke

OLD = Path(__file__).parent / "data" / "old_records"
# Written by `bench run tests/data/old_records/tiny.yaml` of two earlier mains: 9a32005 (records
# without reason, baseline or inputs; NaN in the JSON) and 94ca1d6 (standard JSON). The
# diverging entry's records hold no final value.
MAINS = ("main-9a32005", "main-94ca1d6")
REGISTRY = load_registry()


def files(main: str) -> list[Path]:
    return sorted((OLD / main / "records").glob("*/*/seed-*.json"))


def standard(value):
    """JSON data as standard JSON has it: NaN and infinities as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: standard(v) for k, v in value.items()}
    if isinstance(value, list):
        return [standard(v) for v in value]
    return value


# --- old records ---------------------------------------------------------------------------------

@pytest.mark.parametrize("main", MAINS)
def test_old_records_table_as_they_did_before_records_were_typed(main):
    """table.md: what `bench table` printed for these records before the Record type."""
    assert len(files(main)) == 6
    result = invoke("table", OLD / main / "records")
    assert result.exit_code == 0, result.output
    # Since then the table marks records of older code where they name it (94ca1d6's do, and
    # their digests predate the digest of syntax trees); the rest is as it was.
    table, _, footnote = result.stdout.partition("\n\n† the algorithm's source has changed")
    cells = [line for line in table.splitlines() if line.startswith("| ") and "(n=" in line]
    digests = ["code" in json.loads(path.read_text())["provenance"] for path in files(main)]
    assert cells and all(("† (n=" in line) == all(digests) for line in cells)
    assert footnote.count("\n") == all(digests)
    assert table.replace("† (n=", " (n=") + ("\n" if footnote else "") == (
        OLD / main / "table.md").read_text()
    assert "warning" not in result.stderr


def test_the_records_of_9a32005_table_as_9a32005_did_them():
    """The grid and its caption are as 9a32005 printed them; only what later versions added on
    purpose differs below (no interval from fewer than 3 seeds, the baseline entry named, the
    cells that did not finish listed)."""
    ours = invoke("table", OLD / "main-9a32005" / "records").stdout
    theirs = (OLD / "main-9a32005" / "table-by-9a32005.md").read_text()
    assert ours.split("Statistics over seeds")[0] == theirs.split("Statistics over seeds")[0]
    rows = [line.split(" | ") for line in theirs.splitlines() if line.startswith("| Teacher")]
    for row in rows:  # dataset, method, n, mean ± SD as 9a32005 had them
        assert " | ".join(row[:4]) in ours


@pytest.mark.parametrize("main", MAINS)
def test_old_records_are_written_back_in_the_layout_they_were_read_in(main):
    """Exactly, but for what standard JSON cannot hold (NaN, written as null) and the baseline
    that 9a32005's records left implicit ("bp"), now written out."""
    for path in files(main):
        data = json.loads(path.read_text())
        written = Record.from_json(data).to_json()
        if "baseline" not in data:
            assert written.pop("baseline") == "bp"
        assert list(written) == list(data), path
        assert written == standard(data), path


def test_an_old_record_without_baseline_compares_against_bp():
    record = Record.from_json(json.loads(files("main-9a32005")[0].read_text()))
    assert record.baseline == "bp" and record.reason is None and record.suite == "tiny"


def test_a_record_without_a_value_reports_nan_and_says_why():
    diverged = [Record.from_json(json.loads(p.read_text())) for p in files("main-94ca1d6")
                if "dfa-huge-lr" in str(p)]
    assert [r.status for r in diverged] == ["diverged", "diverged"]
    assert all(math.isnan(r.reported_value()) for r in diverged)
    assert diverged[0].explanation == "training loss non-finite at epoch 1, minibatch 1"


# --- the layout of new records -------------------------------------------------------------------

@pytest.fixture(scope="module")
def cell():
    suite = load_suite(OLD / "tiny.yaml", REGISTRY)
    return next(c for c in suite.cells() if c.algorithm_id == "bp" and c.seed == 0)


def test_a_new_record_has_the_keys_of_the_records_before_it_in_their_order(cell, tmp_path):
    old = json.loads((OLD / "main-94ca1d6" / "records" / "teacher" / "bp" / "seed-0.json")
                     .read_text())
    result = {key: old[key] for key in list(old)[list(old).index("status"):]}
    store = ResultStore(tmp_path)
    path = store.write(make_record(cell, result, "cpu", "regression"), cell)
    written = json.loads(path.read_text())
    assert list(written) == list(old)
    assert list(written["provenance"]) == [k for k in old["provenance"] if k not in
                                           ("code", "data")]  # the cell here has no inputs
    assert store.load(cell) == Record.from_json(written)
    assert store.load(cell).reported_value() == old["final"]["test_loss"]


@pytest.mark.parametrize("result, keys", [
    ({"status": "skipped", "reason": "not run"}, ["status", "reason"]),
    ({"status": "timeout", "reason": "too slow"}, ["status", "reason"]),
    ({"status": "error", "error": "E: x", "reason": "E: x", "traceback": "T"},
     ["status", "error", "reason", "traceback"]),
    ({"status": "diverged", "history": [], "pretraining_feedback_loss": [],
      "pruned_at_epoch": None, "reason": "loss", "selected_epoch": None, "final": {},
      "wall_time": 1.0},
     ["status", "history", "pretraining_feedback_loss", "pruned_at_epoch", "reason",
      "selected_epoch", "final", "wall_time"]),
])
def test_records_of_cells_that_did_not_finish_keep_their_keys(cell, result, keys):
    written = make_record(cell, result, "cpu", "regression").to_json()
    assert list(written)[list(written).index("status"):] == keys
    assert list(written)[:list(written).index("status")] == [
        "suite", "dataset", "dataset_label", "task", "algorithm", "algorithm_name", "label",
        "seed", "order", "paper_protocol", "deviations", "metric", "config", "config_hash",
        "baseline", "provenance"]


def test_non_finite_numbers_are_written_as_null(cell, tmp_path):
    record = make_record(cell, {"status": "ok", "final": {"test_loss": math.inf},
                                "history": [{"train_loss": math.nan}]}, "cpu", "regression")
    text = ResultStore(tmp_path).write(record, cell).read_text()
    assert "NaN" not in text and "Infinity" not in text
    assert json.loads(text)["final"] == {"test_loss": None}


def test_a_result_with_a_field_records_do_not_have_is_refused(cell):
    with pytest.raises(TypeError, match="steps"):
        make_record(cell, {"status": "ok", "steps": 3}, "cpu", "regression")


# --- what is not a record ------------------------------------------------------------------------

def minimal(**changes):
    record = {"dataset": "d", "dataset_label": "D", "algorithm": "a", "algorithm_name": "a",
              "label": "A", "task": "classification", "seed": 0, "status": "ok",
              "order": [0, 0], "config": {"dataset": {"protocol": {"epochs": 3}}}}
    return {**record, **changes}


@pytest.mark.parametrize("data, problem", [
    ([1, 2], "not a JSON object"),
    ({"hello": "world"}, "field 'dataset' missing or not str"),
    (minimal(seed=True), "field 'seed' missing or not int"),
    (minimal(status="lost"), "unknown status 'lost'"),
    (minimal(order=[0]), "field 'order' is not two integers"),
    (minimal(config={}), "field 'config.dataset.protocol.epochs' missing"),
    (minimal(final={"test_error": "low"}), "field 'final' is not a mapping of numbers"),
    (minimal(final=[0.1]), "field 'final' is not dict or null"),
    (minimal(deviations="quick"), "field 'deviations' is not list"),
    (minimal(deviations=[3]), "field 'deviations' is not a list of strings"),
    (minimal(wall_time="1 s"), "field 'wall_time' is not int or float or null"),
    (minimal(task="x"), "unknown task 'x'"),
    (minimal(metric="x"), "unknown metric 'x'"),
])
def test_what_is_not_a_record_is_refused_with_the_reason(data, problem):
    with pytest.raises(RecordError) as error:
        Record.from_json(data)
    assert str(error.value) == problem


def test_unknown_keys_of_a_later_version_are_ignored():
    assert Record.from_json(minimal(future=1)) == Record.from_json(minimal())


# --- the reported number -------------------------------------------------------------------------

@pytest.mark.parametrize("changes, value", [
    ({"final": {"test_error": 0.025, "test_loss": 0.1}}, 2.5),
    ({"task": "regression", "final": {"test_error": 0.025, "test_loss": 0.1}}, 0.1),
    ({"metric": "train_loss", "final": {"test_error": 0.025, "train_loss_last": 1e-7}}, 1e-7),
    ({"final": {"test_error": None}}, math.nan),
    ({"final": None}, math.nan),
    ({}, math.nan),
])
def test_the_reported_value_is_read_in_one_place(changes, value):
    reported = Record.from_json(minimal(**changes)).reported_value()
    assert reported == pytest.approx(value, nan_ok=True)


def test_the_test_curve_and_the_validation_error():
    history = [{"epoch": 1, "test_accuracy": 0.9, "test_loss": 0.3},
               {"epoch": 2, "test_accuracy": 0.95, "test_loss": None}]
    record = Record.from_json(minimal(history=history, final={"val_accuracy": 0.97}))
    assert record.test_curve() == pytest.approx([10.0, 5.0])
    assert record.validation_error() == pytest.approx(0.03)
    regression = Record.from_json(minimal(task="regression", history=history,
                                          final={"val_loss": 0.2}))
    assert regression.test_curve()[0] == 0.3 and math.isnan(regression.test_curve()[1])
    assert regression.validation_error() == 0.2
    assert Record.from_json(minimal(final={"test_loss": 0.1})).validation_error() is None


# --- bench tune's trial cells --------------------------------------------------------------------

@pytest.fixture(scope="module")
def dfa_cell():
    suite = load_suite(OLD / "tiny.yaml", REGISTRY)
    return next(c for c in suite.cells() if c.algorithm_id == "dfa" and c.seed == 0)


@pytest.mark.parametrize("values", [
    {"optimizer.lr": 3e-3, "params.target_stepsize": 0.5},
    {"optimizer.normalize_lr": False, "schedule.extra_feedback_epochs": 2},
    {"precision": "float32", "metrics.log_interval": 5},
])
def test_a_trial_cell_is_the_cell_a_suite_with_those_values_gives(dfa_cell, values):
    trial = trial_cell(dfa_cell, REGISTRY.get("dfa").cls, values)
    expected = next(c for c in load_suite(OLD / "tiny.yaml", REGISTRY,
                                          set_items("dfa", values)).cells()
                    if c.key == dfa_cell.key)
    assert trial.config() == expected.config()
    assert (trial.settings, trial.params, trial.precision) == (
        expected.settings, expected.params, expected.precision)


@pytest.mark.parametrize("values, message", [
    ({"optimizer.lr": -1.0}, "algorithms.dfa.optimizer.lr: expected a positive finite number"),
    ({"params.target_stepsize": "big"}, "algorithms.dfa.params.target_stepsize: expected a "
                                        "number"),
    ({"precision": "float16"}, "algorithms.dfa.precision: expected one of"),
])
def test_a_trial_value_the_spec_rejects_fails_clearly(dfa_cell, values, message):
    with pytest.raises(SuiteError, match=message):
        trial_cell(dfa_cell, REGISTRY.get("dfa").cls, values)


def test_history_rows_that_are_not_numbers_are_refused():
    with pytest.raises(RecordError) as error:
        Record.from_json(minimal(history=[{"epoch": 1, "test_accuracy": "high"}]))
    assert str(error.value) == "field 'history' is not a list of rows of numbers"
