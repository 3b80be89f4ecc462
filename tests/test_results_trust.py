"""Results and reference folders are untrusted input (issue 36, item 1): a record counts only at
its own path (<dataset>/<algorithm>/seed-<seed>.json, the one file of its seed), with values in
their range and the task and metric of its dataset column, under an entry id that cannot pass for
a reference's; only regular files of a bounded size are read (a FIFO never hangs); every file
skipped is named with the reason under the table, in the page, and on stderr for CSV, for the
reference folder as for the results folder."""

import json
import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from bioplaus_bench.results import store as store_module
from bioplaus_bench.results.store import ResultStore

from .helpers import invoke

ROOT = Path(__file__).parents[1]
DATASETS = ["mnist", "fashion_mnist"]
ENTRIES = ["bp", "dfa"]
MNIST_BP = [0.020, 0.021, 0.019]  # the honest seeds of MNIST / BP: 2.00 ± 0.10


def record(dataset="mnist", algorithm="bp", seed=0, error=0.02, **changes):
    """A complete record of a classification cell of two epochs."""
    rows = [{"epoch": epoch, "train_loss": 0.4, "train_accuracy": 0.9, "feedback_loss": None,
             "test_loss": 0.3, "test_accuracy": 1 - error, "seconds": 1.5} for epoch in (1, 2)]
    return {"suite": "s", "dataset": dataset, "dataset_label": dataset.upper(),
            "task": "classification", "algorithm": algorithm, "algorithm_name": algorithm,
            "label": algorithm.upper(), "seed": seed,
            "order": [DATASETS.index(dataset), ENTRIES.index(algorithm)],
            "paper_protocol": True, "deviations": [], "metric": "test_error",
            "config": {"dataset": {"source": dataset, "protocol": {"epochs": 2}}, "seed": seed},
            "baseline": "bp", "provenance": {}, "status": "ok", "history": rows,
            "pretraining_feedback_loss": [], "pruned_at_epoch": None, "selected_epoch": 2,
            "final": {"test_loss": 0.3, "train_loss_last": 0.4, "test_error": error,
                      "test_accuracy": 1 - error},
            "wall_time": 3.0, **changes}


def put(root: Path, data: dict, name: str | None = None, text: str | None = None) -> Path:
    """Write ``data`` into ``root`` at its own path, or under another file ``name`` (relative)."""
    path = root / (name or f"{data['dataset']}/{data['algorithm']}/seed-{data['seed']}.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text if text is not None else json.dumps(data))
    return path


@pytest.fixture()
def folder(tmp_path):
    """An honest results folder: MNIST / BP over three seeds, MNIST / DFA over three."""
    root = tmp_path / "results"
    for seed, error in enumerate(MNIST_BP):
        put(root, record(seed=seed, error=error))
        put(root, record(algorithm="dfa", seed=seed, error=error + 0.005))
    return root


def table(folder, *options):
    result = invoke("table", folder, *options)
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output
    return result


def honest_bp(text):
    assert "| BP | 2.00 ± 0.10 (n=3) |" in text, text


# --- a record counts only at its own path, once --------------------------------------------------

@pytest.mark.parametrize("name", [
    "mnist/bp/seed-2.bak.json", "mnist/bp/seed-02.json", "mnist/bp/seed-2.json.json",
    "mnist/bp/seed-+2.json", "mnist/bp/seed-2 copy.json", "mnist/bp/seed- 2.json",
])
def test_a_second_file_of_a_seed_is_named_and_skipped(folder, name):
    put(folder, record(seed=2, error=0.019), name)
    text = table(folder).stdout
    honest_bp(text)
    assert f"{name} (" in text and "skipped" in text


def test_a_file_name_with_a_line_break_stays_on_the_note_line(folder):
    put(folder, record(seed=2), "mnist/bp/seed-2\n| x |.json")
    result = table(folder)
    honest_bp(result.stdout)
    assert "mnist/bp/seed-2 | x |.json (not a record's name" in result.stdout
    assert "seed-2 | x |.json: not a record's name" in result.stderr


@pytest.mark.parametrize("name, problem", [
    ("fashion_mnist/bp/seed-0.json", "holds mnist/bp seed 0"),  # another dataset's folder
    ("mnist/dfa/seed-7.json", "holds mnist/bp seed 7"),  # another entry's folder
    ("mnist/bp/seed-5.json", "holds mnist/bp seed 7"),  # another seed's name
])
def test_a_record_in_another_cells_place_is_not_counted_there(folder, name, problem):
    put(folder, record(seed=0 if "fashion" in name else 7, error=0.5), name)
    text = table(folder).stdout
    honest_bp(text)
    assert "FASHION_MNIST" not in text
    assert "| DFA | **2.50 ± 0.10** (n=3) |" in text
    assert f"{name} ({problem}" in text


def test_an_entry_id_cannot_pass_for_a_reference_entry(folder, tmp_path):
    reference = tmp_path / "reference"
    for seed, error in enumerate([0.03, 0.031, 0.029]):
        put(reference, record(seed=seed, error=error))
    forged = record(algorithm="bp", seed=0, error=0.9, label="BP")
    put(folder, {**forged, "algorithm": "ref:bp"}, "mnist/ref:bp/seed-0.json")
    text = table(folder, "--reference", reference).stdout
    assert "| BP (reference) | 3.00 ± 0.10 (n=3) |" in text, text
    assert "90.0" not in text
    assert "mnist/ref:bp/seed-0.json (" in text and "entry id" in text


@pytest.mark.parametrize("field, value", [("dataset", "../mnist"), ("algorithm", "a/b"),
                                          ("algorithm", "")])
def test_ids_that_are_not_plain_names_are_refused(folder, field, value):
    put(folder, {**record(seed=9), field: value}, "mnist/bp/seed-9.json")
    text = table(folder).stdout
    honest_bp(text)
    assert "mnist/bp/seed-9.json (" in text


# --- values in their range -----------------------------------------------------------------------

BAD_VALUES = [
    ({"final": {"test_error": -0.5, "test_accuracy": 1.5}}, "outside [0, 1]"),
    ({"final": {"test_error": 5.0}}, "outside [0, 1]"),
    ({"final": {"test_error": 1e306}}, "outside [0, 1]"),
    ({"final": {"test_error": 0.02, "test_loss": 1e306}}, "test_loss"),
    ({"final": {"test_error": 0.02, "test_loss": -1.0}}, "test_loss"),
    ({"final": {"test_error": 0.02, "train_loss_last": 1e13}}, "train_loss_last"),
    ({"final": {"test_error": 0.02, "val_accuracy": 1.01}}, "val_accuracy"),
    ({"wall_time": -3.0}, "wall_time"),
    ({"selected_epoch": 3}, "selected_epoch"),
    ({"selected_epoch": 0}, "selected_epoch"),
    ({"pruned_at_epoch": 9}, "pruned_at_epoch"),
    ({"pretraining_feedback_loss": [1e306]}, "pretraining_feedback_loss"),
]


@pytest.mark.parametrize("changes, problem", BAD_VALUES)
def test_values_outside_their_range_refuse_the_record_with_its_path(folder, changes, problem):
    bad = record(seed=3, error=0.02, **changes)
    name = f"mnist/bp/seed-{bad['seed']}.json"
    put(folder, bad, name)
    text = table(folder).stdout
    honest_bp(text)
    note = text[text.index(name):]
    assert problem in note.splitlines()[0]


@pytest.mark.parametrize("field, value", [
    ("final", {"test_error": 10**400}), ("wall_time", 10**400), ("selected_epoch", 10**400),
    ("order", [10**400, 0]), ("order", [-1, 0]), ("seed", 10**200),
    ("config", {"dataset": {"protocol": {"epochs": 10**400}}}),
    ("config", {"dataset": {"protocol": {"epochs": 0}}}),
], ids=["final", "wall_time", "selected_epoch", "order", "negative-order", "seed", "epochs",
        "zero-epochs"])
def test_integers_beyond_any_range_refuse_the_record_never_a_traceback(folder, field, value):
    bad = {**record(seed=3), field: value}
    put(folder, bad, f"mnist/bp/seed-{bad['seed']}.json")
    text = table(folder).stdout
    honest_bp(text)
    assert f"mnist/bp/seed-{bad['seed']}.json ({field}" in text or "final 'test_error'" in text


def test_json_nested_too_deeply_is_refused_never_a_traceback(folder):
    put(folder, record(seed=3), text="[" * 200_000 + "]" * 200_000)
    text = table(folder).stdout
    honest_bp(text)
    assert "mnist/bp/seed-3.json (not JSON" in text


@pytest.mark.parametrize("row", [
    {"test_accuracy": 3.0}, {"train_accuracy": -0.1}, {"train_loss": -2.0}, {"test_loss": 1e306},
    {"epoch": 0}, {"epoch": 3}, {"seconds": -1.0}, {"feedback_loss": 1e306},
    {"extra_feedback_loss": [1e306]},
])
def test_history_rows_out_of_range_refuse_the_record(folder, row):
    bad = record(seed=3)
    bad["history"][1].update(row)
    put(folder, bad)
    text = table(folder).stdout
    honest_bp(text)
    assert "mnist/bp/seed-3.json (" in text and "history" in text


@pytest.mark.parametrize("number", ["Infinity", "-Infinity", "1e400"])
def test_non_finite_numbers_refuse_the_record(folder, number):
    text = json.dumps(record(seed=3)).replace('"test_error": 0.02', f'"test_error": {number}')
    put(folder, record(seed=3), text=text)
    out = table(folder).stdout
    honest_bp(out)
    assert "mnist/bp/seed-3.json (" in out and "finite" in out


def test_a_regression_record_is_not_averaged_into_a_classification_column(folder):
    regression = record(seed=3, task="regression", final={"test_loss": 0.05})
    put(folder, regression)
    text = table(folder).stdout
    honest_bp(text)
    assert "mnist/bp/seed-3.json (" in text and "regression" in text


def test_a_train_loss_record_is_not_averaged_into_a_test_error_column(folder):
    put(folder, record(seed=3, metric="train_loss"))
    text = table(folder).stdout
    honest_bp(text)
    assert "mnist/bp/seed-3.json (" in text and "train_loss" in text


def test_a_column_whose_records_disagree_evenly_on_the_task_counts_none(tmp_path):
    root = tmp_path / "results"
    put(root, record(seed=0))
    put(root, record(seed=1, task="regression", final={"test_loss": 0.05}))
    put(root, record(algorithm="dfa", dataset="fashion_mnist", seed=0))
    result = table(root)
    assert "| BP |" not in result.stdout
    assert "mnist/bp/seed-0.json (" in result.stdout
    assert "mnist/bp/seed-1.json (" in result.stdout


def test_a_reference_of_another_task_does_not_compare(folder, tmp_path):
    reference = tmp_path / "reference"
    for seed in range(3):
        put(reference, record(seed=seed, task="regression", final={"test_loss": 0.05}))
    result = invoke("table", folder, "--reference", reference)
    assert result.exit_code == 2, result.output  # an input error, as any other protocol's
    assert "task classification here, regression in the reference" in result.output


def test_a_reference_record_of_another_task_is_refused_too(folder, tmp_path):
    reference = tmp_path / "reference"
    for seed, error in enumerate([0.03, 0.031, 0.029]):
        put(reference, record(seed=seed, error=error))
    put(reference, record(seed=3, task="regression", final={"test_loss": 0.05}))
    text = table(folder, "--reference", reference).stdout
    assert "| BP (reference) | 3.00 ± 0.10 (n=3) |" in text, text
    assert f"reference folder {reference}" in text and "seed-3.json (" in text


# --- only regular files of a bounded size --------------------------------------------------------

def test_a_fifo_named_like_a_record_never_hangs(folder):
    os.mkfifo(folder / "mnist" / "bp" / "seed-3.json")
    process = subprocess.run([sys.executable, "-m", "bioplaus_bench", "table", str(folder)],
                             capture_output=True, text=True, timeout=120)
    assert process.returncode == 0, process.stderr
    honest_bp(process.stdout)
    assert "mnist/bp/seed-3.json (not a regular file" in process.stdout


def test_a_symlink_named_like_a_record_is_not_followed(folder, tmp_path):
    elsewhere = put(tmp_path / "elsewhere", record(seed=3, error=0.9))
    (folder / "mnist" / "bp" / "seed-3.json").symlink_to(elsewhere)
    (folder / "mnist" / "bp" / "seed-4.json").symlink_to("/dev/zero")
    text = table(folder).stdout
    honest_bp(text)
    assert "mnist/bp/seed-3.json (a symbolic link" in text
    assert "mnist/bp/seed-4.json (a symbolic link" in text


def test_a_linked_entry_folder_is_not_followed(folder, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    for seed in range(3):
        put(elsewhere, record(algorithm="dfa", seed=seed, error=0.9))
    (folder / "mnist" / "dfa-copy").symlink_to(elsewhere / "mnist" / "dfa")
    text = table(folder).stdout
    assert "90.0" not in text
    assert "mnist/dfa-copy (a symbolic link" in text


def test_a_folder_named_like_a_record_is_noted(folder):
    (folder / "mnist" / "bp" / "seed-3.json").mkdir()
    text = table(folder).stdout
    honest_bp(text)
    assert "mnist/bp/seed-3.json (not a regular file" in text


def test_a_file_over_the_size_bound_is_not_read(folder, monkeypatch):
    monkeypatch.setattr(store_module, "MAX_RECORD_BYTES", 4000)
    put(folder, record(seed=3, error=0.9, padding="x" * 5000))
    text = table(folder).stdout
    honest_bp(text)
    assert "mnist/bp/seed-3.json (larger than" in text


def test_the_size_bound_is_generous_for_every_committed_record():
    sizes = [path.stat().st_size for path in ROOT.glob("results/**/seed-*.json")]
    assert sizes and 100 * max(sizes) <= store_module.MAX_RECORD_BYTES


@pytest.fixture(scope="module")
def cell():
    from bioplaus_bench.registry import load_registry
    from bioplaus_bench.suite import load_suite

    suite = load_suite(ROOT / "tests" / "data" / "old_records" / "tiny.yaml", load_registry())
    return next(c for c in suite.cells() if c.algorithm_id == "bp" and c.seed == 0)


def test_a_run_never_hangs_on_a_fifo_at_a_cells_path(cell, tmp_path):
    store = ResultStore(tmp_path)
    store.path(cell).parent.mkdir(parents=True)
    os.mkfifo(store.path(cell))
    signal.signal(signal.SIGALRM, lambda *_: pytest.fail("reading a FIFO blocked"))
    signal.alarm(30)
    try:
        assert store.load(cell) is None
    finally:
        signal.alarm(0)


def test_a_run_does_not_take_another_cells_record_for_its_own(cell, tmp_path):
    store = ResultStore(tmp_path)
    theirs = record(dataset="mnist", algorithm="bp", seed=0)
    put(tmp_path, {**theirs, "dataset": cell.dataset_id, "seed": 1},
        str(store.path(cell).relative_to(tmp_path)))
    assert store.load(cell) is None


# --- every skip is said: markdown, LaTeX, CSV (stderr), the page; the reference folder too --------

def test_skips_are_named_under_every_format_and_on_the_page(folder, tmp_path):
    put(folder, record(seed=2), "mnist/bp/seed-2.bak.json")
    latex = table(folder, "--format", "latex").stdout
    assert "% 1 file in the results folder was skipped: mnist/bp/seed-2.bak.json (" in latex
    csv = table(folder, "--format", "csv")
    assert "seed-2.bak.json" not in csv.stdout
    assert "mnist/bp/seed-2.bak.json (" in csv.stderr
    page = invoke("report", folder, "--out", tmp_path / "page.html")
    assert page.exit_code == 0, page.output
    html = (tmp_path / "page.html").read_text()
    assert "mnist/bp/seed-2.bak.json (" in html


def test_unreadable_reference_records_are_noted_under_the_table_and_on_the_page(folder, tmp_path):
    reference = tmp_path / "reference"
    for seed, error in enumerate([0.03, 0.031, 0.029]):
        put(reference, record(seed=seed, error=error))
    put(reference, record(seed=2), text="{ not json")
    text = table(folder, "--reference", reference).stdout
    assert "| BP (reference) | 3.05 ± 0.07 (n=2) |" in text, text
    assert (f"1 file in the reference folder {reference} was skipped: mnist/bp/seed-2.json ("
            in text)
    latex = table(folder, "--reference", reference, "--format", "latex").stdout
    assert f"% 1 file in the reference folder {reference} was skipped" in latex
    csv = table(folder, "--reference", reference, "--format", "csv")
    assert "mnist/bp/seed-2.json (" in csv.stderr
    page = invoke("report", folder, "--reference", reference, "--out", tmp_path / "page.html")
    assert page.exit_code == 0, page.output
    assert f"reference folder {reference} was skipped" in (tmp_path / "page.html").read_text()


def test_many_skips_are_counted_and_named_on_stderr(folder):
    names = [f"mnist/bp/seed-{seed}.bak.json" for seed in range(12)]
    for name in names:
        put(folder, record(), name)
    result = table(folder)
    assert "12 files in the results folder were skipped" in result.stdout
    assert "stderr" in result.stdout
    assert all(name in result.stderr for name in names)


# --- what was committed still reads ---------------------------------------------------------------

@pytest.mark.parametrize("folder", [
    *sorted(p for p in (ROOT / "results" / "reference").iterdir() if p.is_dir()),
    *sorted((ROOT / "tests" / "data" / "old_records").glob("main-*/records")),
])
def test_every_committed_record_is_read(folder):
    store = ResultStore(folder)
    records = list(store.records())
    assert store.skipped == []
    assert len(records) == len(list(folder.glob("*/*/seed-*.json")))
    assert all(math.isfinite(r.reported_value()) or r.status != "ok" for r in records)
