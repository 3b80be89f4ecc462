"""`bench table RESULTS --reference REF` (and `bench report`): a rule's cells beside a reference
folder's cells of the same protocol, with Welch's p against each reference method; another
protocol refuses with one line; cells run by code that changed since are marked. The reference
here is a tiny one made by `bench run` in a temp folder, never the committed one."""

import csv
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from bioplaus_bench.results.numbers import CODE_NOTE

from .helpers import TINY_SUITE, invoke, write

REFERENCE_SUITE = TINY_SUITE.replace("name: tiny", "name: ref").replace(
    "seeds: [0, 1]", "seeds: [0, 1, 2]")
# A rule of the user's own (DFA at another learning rate), and the reference's DFA run again
# under its own entry name: both names must stay apart from the reference's entries.
USER_SUITE = REFERENCE_SUITE.replace("name: ref", "name: mine").replace(
    "  bp:\n    optimizer: {lr: 1.0e-3,",
    "  my-rule:\n    algorithm: dfa\n    label: My rule\n    optimizer: {lr: 3.0e-3,")


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("reference")
    for name, text in (("ref", REFERENCE_SUITE), ("mine", USER_SUITE)):
        run = invoke("run", write(root / f"{name}.yaml", text), "--out", root / name, "--quiet")
        assert run.exit_code == 0, run.output
    return root


def losses(folder, dataset, entry) -> np.ndarray:
    """The reported numbers (test MSE at the selected epoch), read from the records directly."""
    return np.array([json.loads(path.read_text())["final"]["test_loss"]
                     for path in sorted((folder / dataset / entry).glob("seed-*.json"))])


def test_the_table_has_both_and_welch_p_against_each_reference_method(folders):
    mine, ref = folders / "mine", folders / "ref"
    result = invoke("table", mine, "--reference", ref)
    assert result.exit_code == 0, result.output
    table = result.stdout
    for label in ("| My rule |", "| DFA |", "| BP (reference) |", "| DFA (reference) |"):
        assert label in table
    assert f"Against the reference {ref}" in table

    rows = {row["algorithm"]: row for row in csv.DictReader(io.StringIO(
        invoke("table", mine, "--reference", ref, "--format", "csv").stdout))}
    assert set(rows) == {"my-rule", "dfa", "ref:bp", "ref:dfa"}
    for entry in ("my-rule", "dfa"):
        ours = losses(mine, "teacher", entry)
        assert float(rows[entry]["mean"]) == pytest.approx(ours.mean(), rel=1e-12)
        for reference in ("bp", "dfa"):
            theirs = losses(ref, "teacher", reference)
            p = stats.ttest_ind(ours, theirs, equal_var=False).pvalue
            assert float(rows[entry][f"p_vs_ref:{reference}"]) == pytest.approx(p, rel=1e-12)
            # the markdown row of this pair shows the same p-value
            line = next(line for line in table.splitlines() if line.startswith(
                f"| Teacher regression | {'My rule' if entry == 'my-rule' else 'DFA'} |")
                and f"| {reference.upper()} (reference) |" in line)
            assert line.endswith(f"| {p:.2g} |") or (p < 1e-4 and line.endswith("| <1e-4 |"))
        # no entry 'bp' of the user's own: p vs baseline is against the reference's BP
        p_bp = stats.ttest_ind(ours, losses(ref, "teacher", "bp"), equal_var=False).pvalue
        assert rows[entry]["baseline"] == "ref:bp"
        assert float(rows[entry]["p_vs_bp"]) == pytest.approx(p_bp, rel=1e-12)
    # the reference's own rows are the reference's numbers, not compared with themselves
    assert float(rows["ref:bp"]["mean"]) == pytest.approx(
        losses(ref, "teacher", "bp").mean(), rel=1e-12)
    assert rows["ref:bp"]["p_vs_ref:dfa"] == ""
    # the 95% interval of the user's cells is there too
    assert rows["my-rule"]["ci95_low"] and rows["my-rule"]["ci95_high"]


def test_the_report_page_takes_the_same_reference(folders, tmp_path):
    page = tmp_path / "page.html"
    result = invoke("report", folders / "mine", "--reference", folders / "ref", "--out", page)
    assert result.exit_code == 0, result.output
    text = page.read_text()
    assert "BP (reference)" in text and "Against the reference" in text
    ours = losses(folders / "mine", "teacher", "my-rule")
    p = stats.ttest_ind(ours, losses(folders / "ref", "teacher", "bp"),
                        equal_var=False).pvalue
    assert f"<td>{p:.2g}</td>" in text


MISMATCHES = [  # (what the user's run changes, the one line's account of it)
    (["--epochs", "3"], "epochs 3 here, 2 in the reference"),
    (["--set", "datasets.teacher.protocol.validation=16"],
     "data split (validation) 16 here, 32 in the reference"),
    (["--subset", "20"], "subset 20 here, none in the reference"),
    (["--set", "precision=float32"], "precision float32 here, float64 in the reference"),
    (["--set", "datasets.teacher.architecture.hidden=[8]"],
     "network (architecture.hidden) [8] here, [8, 8] in the reference"),
]


def remedy(epochs, subset=None):
    """The `bench run` a refusal names, for a run of ``epochs`` (on ``subset`` images)."""
    tail = f" --subset {subset} --out results/ref-reference-{epochs}-epochs-subset-{subset}" \
        if subset else f" --out results/ref-reference-{epochs}-epochs"
    return (f"; a reference at your protocol: bench run suites/ref.yaml --datasets teacher "
            f"--only bp,dfa --only-seeds 0,1,2 --epochs {epochs}" + tail)


@pytest.mark.parametrize(("change", "account"), MISMATCHES,
                         ids=["epochs", "split", "subset", "precision", "network"])
def test_another_protocol_refuses_with_one_line_naming_it(folders, tmp_path, change, account):
    out = tmp_path / "other"
    run = invoke("run", write(tmp_path / "mine.yaml", USER_SUITE), "--out", out, "--quiet",
                 "--only", "my-rule", "--only-seeds", "0", *change)
    assert run.exit_code == 0, run.output
    ref = folders / "ref"
    expected = f"error: --reference {ref}: not the same protocol, so no comparison: teacher: " \
               f"{account}"
    if "--epochs" in change:  # longer than the reference: the run that makes one is named
        expected += remedy(3)
    elif "--subset" in change:
        expected += remedy(2, subset=20)
    for command in (["table", out, "--reference", ref],
                    ["report", out, "--reference", ref, "--out", tmp_path / "p.html"]):
        result = invoke(*command)
        assert result.exit_code == 2
        assert result.stderr.strip() == expected
        assert result.stdout == ""


def comparable(record: dict) -> dict:
    """A record's result without what a run's timing and provenance make differ."""
    return {"status": record["status"], "selected_epoch": record["selected_epoch"],
            "final": record["final"], "pruned_at_epoch": record.get("pruned_at_epoch"),
            "history": [{k: v for k, v in row.items() if k != "seconds"}
                        for row in record["history"]],
            "epochs": record["config"]["dataset"]["protocol"]["epochs"]}


def test_a_shorter_run_meets_the_reference_truncated_to_its_epochs(folders, tmp_path):
    """The reference (2 epochs) cut to 1 epoch is, record for record, a fresh 1-epoch run of the
    same cells: the table compares your 1-epoch run with it and says so."""
    from bioplaus_bench.results.record import Record

    fresh = tmp_path / "fresh"
    run = invoke("run", folders / "ref.yaml", "--out", fresh, "--quiet", "--epochs", "1")
    assert run.exit_code == 0, run.output
    paths = sorted((folders / "ref").glob("teacher/*/seed-*.json"))
    assert len(paths) == 6
    for path in paths:
        full = Record.from_json(json.loads(path.read_text()))
        assert full.epochs == 2 and len(full.history) == 2
        cut = full.truncated(1).to_json()
        again = json.loads((fresh / path.relative_to(folders / "ref")).read_text())
        assert comparable(cut) == comparable(again)  # bit for bit: == on floats
        assert cut["paper_protocol"] is False and "truncated to its first 1 of 2 epochs" in \
            cut["deviations"][-1]

    short = tmp_path / "short"
    run = invoke("run", write(tmp_path / "mine.yaml", USER_SUITE), "--out", short, "--quiet",
                 "--only", "my-rule", "--epochs", "1")
    assert run.exit_code == 0, run.output
    ref = folders / "ref"
    table = invoke("table", short, "--reference", ref)
    assert table.exit_code == 0, table.output
    assert f"Against the reference {ref} (reference truncated to 1 epoch" in table.stdout
    rows = {row["algorithm"]: row for row in csv.DictReader(io.StringIO(
        invoke("table", short, "--reference", ref, "--format", "csv").stdout))}
    expected = np.array([json.loads(p.read_text())["final"]["test_loss"]
                         for p in sorted((fresh / "teacher" / "bp").glob("seed-*.json"))])
    assert float(rows["ref:bp"]["mean"]) == pytest.approx(expected.mean(), rel=1e-12)
    assert rows["ref:bp"]["epochs"] == "1"
    page = invoke("report", short, "--reference", ref, "--out", tmp_path / "p.html")
    assert page.exit_code == 0, page.output
    assert "reference truncated to 1 epoch" in (tmp_path / "p.html").read_text()


def test_the_named_run_makes_a_reference_that_compares(folders, tmp_path):
    """A trial longer than the reference refuses with a `bench run`; that run's folder then
    compares."""
    mine = tmp_path / "mine"
    run = invoke("run", write(tmp_path / "mine.yaml", USER_SUITE), "--out", mine, "--quiet",
                 "--only", "my-rule", "--only-seeds", "0,1", "--epochs", "3")
    assert run.exit_code == 0, run.output
    refused = invoke("table", mine, "--reference", folders / "ref")
    assert refused.exit_code == 2
    command = refused.stderr.strip().split("a reference at your protocol: bench ", 1)[1].split()
    command[1] = str(folders / "ref.yaml")  # suites/ref.yaml is where the suite lives here
    out = command.index("--out") + 1
    assert command[out] == "results/ref-reference-3-epochs"
    command[out] = str(tmp_path / command[out])
    made = invoke(*command, "--quiet")
    assert made.exit_code == 0, made.output
    table = invoke("table", mine, "--reference", command[out])
    assert table.exit_code == 0, table.output
    assert "| DFA (reference) |" in table.stdout


def renamed_copy(source, target, dataset="mnist", keep=False):
    """A copy of a results folder whose teacher records claim another dataset id."""
    shutil.copytree(source, target)
    for path in target.glob("teacher/*/seed-*.json"):
        record = json.loads(path.read_text())
        record.update(dataset=dataset, dataset_label="Other", order=[1, record["order"][1]])
        (target / dataset / path.parent.name).mkdir(parents=True, exist_ok=True)
        (target / dataset / path.parent.name / path.name).write_text(json.dumps(record))
    if not keep:
        shutil.rmtree(target / "teacher")
    return target


def test_no_dataset_in_common_refuses(folders, tmp_path):
    other = renamed_copy(folders / "mine", tmp_path / "other")
    result = invoke("table", other, "--reference", folders / "ref")
    assert result.exit_code == 2
    assert result.stderr.strip() == (f"error: --reference {folders / 'ref'}: no dataset in "
                                     "common (yours: mnist; the reference's: teacher)")


@pytest.mark.parametrize("make, expected", [
    (lambda path: path, "results folder not found: {path}"),
    (lambda path: write(path, "{}"), "not a results folder: {path} is a file; expected a folder "
                                     "of records (<dataset>/<algorithm>/seed-N.json)")])
def test_a_reference_that_is_no_results_folder_refuses_with_one_line(folders, tmp_path, make,
                                                                     expected):
    path = make(tmp_path / "ref.json")
    result = invoke("table", folders / "mine", "--reference", path)
    assert result.exit_code == 2
    assert result.stderr == f"error: {expected.format(path=path)}\n"


def test_a_dataset_the_reference_lacks_is_shown_and_said(folders, tmp_path):
    both = renamed_copy(folders / "mine", tmp_path / "both", keep=True)
    result = invoke("table", both, "--reference", folders / "ref")
    assert result.exit_code == 0, result.output
    assert "| Method | Teacher regression | Other |" in result.stdout
    assert result.stdout.rstrip().endswith("No reference cells for: Other.")


def test_the_papers_numbers_never_stand_beside_a_truncated_reference(tmp_path):
    """Against the committed Table 1 reference (100 epochs): a 100-epoch column of one's own
    sees the paper's numbers beside the reference's rows, a 2-epoch one (the reference cut to
    2 epochs) never. The user's records are the reference's own BP records, renamed."""
    from bioplaus_bench.results.record import Record

    reference = Path(__file__).resolve().parents[1] / "results" / "reference" / "table1"
    for name, epochs in (("full", 100), ("short", 2)):
        for path in sorted((reference / "mnist" / "bp").glob("seed-*.json")):
            record = Record.from_json(json.loads(path.read_text())).truncated(epochs)
            mine = tmp_path / name / "mnist" / "my-rule" / path.name
            mine.parent.mkdir(parents=True, exist_ok=True)
            mine.write_text(json.dumps({**record.to_json(), "algorithm": "my-rule",
                                        "label": "My rule", "deviations": []}))
        result = invoke("table", tmp_path / name, "--reference", reference, "--format", "csv",
                        "--compare", "paper")
        assert result.exit_code == 0, result.output
        rows = {row["algorithm"]: row for row in csv.DictReader(io.StringIO(result.stdout))}
        assert rows["ref:bp"]["epochs"] == str(epochs)
        assert (rows["ref:bp"]["paper_mean"] == "1.98") is (epochs == 100)
        assert ("reference truncated to 2 epochs" in result.stderr) is (epochs == 2)


def test_cells_whose_code_changed_since_they_ran_are_marked(folders, tmp_path):
    ref = tmp_path / "ref"
    shutil.copytree(folders / "ref", ref)
    plain = invoke("table", ref).stdout
    assert "†" not in plain and CODE_NOTE not in plain  # records of the code as it is now
    path = ref / "teacher" / "bp" / "seed-1.json"
    record = json.loads(path.read_text())
    record["provenance"]["code"]["source_sha256"] = "0" * 16  # as if run by older code
    path.write_text(json.dumps(record))
    marked = invoke("table", ref, "--compare", "paper").stdout
    bp_row = next(line for line in marked.splitlines() if line.startswith("| BP |"))
    dfa_row = next(line for line in marked.splitlines() if line.startswith("| DFA |"))
    assert "†" in bp_row and "†" not in dfa_row
    assert CODE_NOTE in marked
    beside = invoke("table", folders / "mine", "--reference", ref).stdout
    assert next(line for line in beside.splitlines()
                if line.startswith("| BP (reference) |")).count("†") == 1
    assert "†" not in next(line for line in beside.splitlines() if line.startswith("| My rule |"))
    rows = list(csv.DictReader(io.StringIO(invoke("table", ref, "--format", "csv").stdout)))
    assert {row["algorithm"]: row["code_changed"] for row in rows} == {"bp": "True",
                                                                        "dfa": "False"}


def test_a_plugin_that_fails_to_load_leaves_the_table_unjudged_not_broken(folders, monkeypatch):
    from bioplaus_bench import registry
    from bioplaus_bench.errors import PluginError

    def clash(*args, **kwargs):
        raise PluginError("two plugins claim the algorithm name 'bp'")

    monkeypatch.setattr(registry, "load_registry", clash)
    result = invoke("table", folders / "ref")
    assert result.exit_code == 0, result.output
    assert "| BP |" in result.stdout and "†" not in result.stdout
    assert result.stderr.strip() == ("warning: cells not checked against the current code: two "
                                     "plugins claim the algorithm name 'bp'")
