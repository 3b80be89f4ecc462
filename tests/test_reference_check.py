"""benchmarks/reference_check.py (`make reference-check`) on a tiny reference of its own: the first
epoch of every cell re-run through `bioplaus_bench.run`, its seeds stacked as they were run, reproduces its
records; a changed number in any seed of the stack, or a suite whose settings are no longer the
record's, is a mismatch with exit code 1."""

import importlib.util
import json
import shutil
import sys
from pathlib import Path

import pytest

import bioplaus_bench
from bioplaus_bench.results.attestation import ATTESTATION_FILE
from bioplaus_bench.results.numbers import CODE_NOTE

from .helpers import TINY_SUITE, invoke, write

ROOT = Path(__file__).resolve().parents[1]


def load_script():
    spec = importlib.util.spec_from_file_location("reference_check",
                                                  ROOT / "benchmarks" / "reference_check.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


# A third entry, whose settings the suite file changes after the reference was run.
SUITE = TINY_SUITE + """\
  dfa-fast:
    algorithm: dfa
    optimizer: {lr: 2.0e-3, betas: [0.9, 0.999], eps: 1.0e-8}
"""


def test_the_first_epoch_of_every_reference_cell_is_reproduced_and_changes_are_caught(
        tmp_path, capsys):
    script = load_script()
    suites, results = tmp_path / "suites", tmp_path / "reference"
    suites.mkdir()
    suite = write(suites / "tiny.yaml", SUITE)
    # as the campaign runs: seeds stacked, the suite's protocol (two epochs)
    run = invoke("run", suite, "--out", results / "tiny", "--quiet", "--vectorize-seeds")
    assert run.exit_code == 0, run.output
    path = results / "tiny" / "teacher" / "bp" / "seed-1.json"  # the stack's second seed
    record = json.loads(path.read_text())
    changed = record["history"][0]["test_loss"] * (1 + 1e-6)  # beyond float64's 1e-9
    record["history"][0]["test_loss"] = changed
    path.write_text(json.dumps(record))
    suite.write_text(SUITE.replace("{lr: 2.0e-3", "{lr: 3.0e-3"))

    # an earlier check's attestation, of a cell that fails now: kept as it is
    earlier = {"teacher/bp": [{"code": "ab" * 8, "record_code": "cd" * 8, "git_commit": None,
                               "checked_at": "2026-01-01T00:00:00+00:00"}]}
    (results / "tiny" / ATTESTATION_FILE).write_text(json.dumps({"cells": earlier}))

    assert script.main(["--results", str(results), "--suites", str(suites),
                        "--data-dir", str(tmp_path)]) == 1
    lines = capsys.readouterr().out.splitlines()
    # the records against the suite, before any re-run
    assert lines[0] == ("tiny teacher/dfa-fast seed 0: MISMATCH, the suite's settings are not "
                        "the record's: optimizer.lr")
    assert lines[1].startswith(f"tiny teacher/bp seed 1: MISMATCH at epoch 1: test_loss "
                               f"{changed!r} in the record, ")
    assert lines[1].endswith("(relative 1.0e-06)")
    # re-run stacked as the campaign ran it, a seed's arithmetic is the record's, bit for bit
    assert lines[2] == "tiny teacher/dfa seeds 0,1 stacked as run: ok (largest relative " \
        "difference 0.0e+00)"
    assert lines[3] == f"attested in {results / 'tiny' / ATTESTATION_FILE}"
    assert lines[4] == "1 of 3 reference cells reproduce their first epoch; 2 cells fail the check"
    # only the cell that reproduced is attested, under the code it ran with now
    cells = json.loads((results / "tiny" / ATTESTATION_FILE).read_text())["cells"]
    assert set(cells) == {"teacher/bp", "teacher/dfa"} and cells["teacher/bp"] == earlier["teacher/bp"]
    dfa = json.loads((results / "tiny" / "teacher" / "dfa" / "seed-0.json").read_text())
    [attested] = cells["teacher/dfa"]
    digest = dfa["provenance"]["code"]["source_sha256"]
    assert attested["code"] == attested["record_code"] == digest
    assert attested["git_commit"] == dfa["provenance"]["git_commit"]
    assert attested["checked_at"] >= dfa["provenance"]["finished_at"]

    # a seed that finished at another moment ran in a run of its own: it is not of the stack
    other = results / "tiny" / "teacher" / "dfa" / "seed-1.json"
    record = json.loads(other.read_text())
    record["provenance"]["finished_at"] = "2026-01-01T00:00:00+00:00"
    other.write_text(json.dumps(record))
    found, problems = script.jobs(results, suites, None)
    assert problems == []
    assert {job.records[0].algorithm: job.seeds for job in found} == \
        {"bp": [0, 1], "dfa": [0], "dfa-fast": [0, 1]}


def test_seeds_run_apart_within_the_same_second_are_not_taken_for_a_stack(tmp_path, capsys):
    # the campaign's --seed-chunk 1: a worker per seed, so two records of one commit can carry
    # the same finish time to the second without having been trained stacked
    script = load_script()
    suites, results = tmp_path / "suites", tmp_path / "reference"
    suites.mkdir()
    suite = write(suites / "tiny.yaml", TINY_SUITE)
    run = invoke("run", suite, "--out", results / "tiny", "--quiet", "--only", "dfa")
    assert run.exit_code == 0, run.output
    paths = [results / "tiny" / "teacher" / "dfa" / f"seed-{seed}.json" for seed in (0, 1)]
    records = [json.loads(path.read_text()) for path in paths]
    assert [r.get("stacked_seeds") for r in records] == [None, None]
    assert records[0]["wall_time"] != records[1]["wall_time"]
    records[1]["provenance"]["finished_at"] = records[0]["provenance"]["finished_at"]
    paths[1].write_text(json.dumps(records[1]))

    found, problems = script.jobs(results, suites, None)
    assert problems == [] and [job.seeds for job in found] == [[0]]
    assert script.main(["--results", str(results), "--suites", str(suites),
                        "--data-dir", str(tmp_path)]) == 0
    assert "tiny teacher/dfa seed 0: ok" in capsys.readouterr().out

    # a record from before `stacked_seeds` was written: its stack is told by the wall time
    for record in records:
        record["stacked_seeds"] = None
        record["wall_time"] = 1.5
    for path, record in zip(paths, records, strict=True):
        path.write_text(json.dumps(record))
    found, _ = script.jobs(results, suites, None)
    assert [job.seeds for job in found] == [[0, 1]]


def test_a_cell_that_amplifies_rounding_is_compared_within_its_own_spread(
        tmp_path, capsys, monkeypatch):
    # another CPU's kernels round otherwise; a cell that amplifies it (Frozen-MNIST DDTP-linear
    # by 1e-5) is measured again on the checking machine, in another order of its arithmetic
    script = load_script()
    suites, results = tmp_path / "suites", tmp_path / "reference"
    suites.mkdir()
    suite = write(suites / "tiny.yaml", TINY_SUITE)
    run = invoke("run", suite, "--out", results / "tiny", "--quiet", "--vectorize-seeds",
                 "--only", "dfa")
    assert run.exit_code == 0, run.output
    path = results / "tiny" / "teacher" / "dfa" / "seed-1.json"
    record = json.loads(path.read_text())
    exact = record["history"][0]["test_loss"]

    # measured for real: this small cell's other order (seed 0 alone) moves it by rounding only
    [job] = script.jobs(results, suites, None)[0]
    news = script.rerun(job, tmp_path / "again", tmp_path, "cpu")
    spread = script.rounding_spread(job, news, tmp_path / "alone", tmp_path, "cpu",
                                    script.split_sizes(job, tmp_path))
    assert 0 <= spread.relative <= 1e-12 and spread.samples == 0

    def check_with(relative_change, spread):
        record["history"][0]["test_loss"] = exact * (1 + relative_change)
        path.write_text(json.dumps(record))
        monkeypatch.setattr(script, "rounding_spread", lambda *args: script.Spread(spread, 0))
        code = script.main(["--results", str(results), "--suites", str(suites),
                            "--data-dir", str(tmp_path)])
        return code, capsys.readouterr().out.splitlines()[0]

    # within 10 × the spread: ok, and the line says why
    code, line = check_with(3e-6, 1e-6)
    assert code == 0, line
    assert line.startswith("tiny teacher/dfa seeds 0,1 stacked as run: ok (largest relative "
                           "difference 3.0e-06, test_loss, seed 1) (amplifies rounding: ")
    assert "moves it by 1.0e-06 and 0 samples here, so compared within 1.0e-05 and 10 " \
        "samples" in line
    # beyond it, or where the cell does not amplify rounding: a mismatch, as before
    for change, spread in ((3e-4, 1e-6), (3e-6, 0.0)):
        code, line = check_with(change, spread)
        assert code == 1
        assert line.startswith("tiny teacher/dfa seed 1: MISMATCH at epoch 1: test_loss "), line


MNIST_SUITE = """\
name: m
seeds: [0]
precision: float32
datasets:
  mnist:
    source: mnist
    architecture: {type: mlp, hidden: [8]}
    protocol: {epochs: 1, batch_size: 16, validation: 10}
algorithms:
  bp:
    optimizer: {lr: 1.0e-3, betas: [0.9, 0.999], eps: 1.0e-8}
"""


def test_bad_input_is_one_line_and_exit_2_before_any_rerun(tmp_path, monkeypatch, capsys):
    """Folders that are not there or are files, and a cell's data missing from --data-dir,
    stop the check with one line before anything is re-run."""
    from bioplaus_bench.registry import load_registry
    from bioplaus_bench.results.store import ResultStore, make_record
    from bioplaus_bench.suite import load_suite

    script = load_script()
    suites, results = tmp_path / "suites", tmp_path / "reference"
    suites.mkdir()
    suite = write(suites / "m.yaml", MNIST_SUITE)
    cell = load_suite(suite, load_registry()).cells()[0]
    rows = [{"train_loss": 0.5, "test_loss": 0.6, "test_accuracy": 0.9}]
    ResultStore(results / "m").write(make_record(
        cell, {"status": "ok", "history": rows, "selected_epoch": 1, "wall_time": 1.0}, "cpu",
        "classification"), cell)
    a_file = write(tmp_path / "a-file", "")
    monkeypatch.setattr(bioplaus_bench, "run", lambda *a, **k: pytest.fail("a re-run started"))
    base = ["--results", str(results), "--suites", str(suites)]
    for arguments, expected in [
            (["--results", str(tmp_path / "nowhere")], "not found; expected a folder"),
            (["--results", str(a_file)], "not a folder; expected a folder"),
            ([*base, "--suites", str(a_file)], "not a folder; expected a folder"),
            ([*base, "--keep", str(a_file / "runs")], f"{a_file} is a file; expected a folder"),
            ([*base, "--data-dir", str(tmp_path / "nothing")],
             f"MNIST not found in {tmp_path / 'nothing'}")]:
        assert script.main(arguments) == 2, arguments
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("error: ") and expected in err, err


# --- the records against themselves, and the attestation of the code that reproduces them -----

@pytest.fixture(scope="module")
def tiny_reference(tmp_path_factory):
    """A tiny reference made as the campaign makes one (seeds stacked, the suite's protocol):
    ROOT/suites/tiny.yaml and ROOT/reference/tiny/; copy it before changing it."""
    root = tmp_path_factory.mktemp("tiny-reference")
    (root / "suites").mkdir()
    suite = write(root / "suites" / "tiny.yaml", TINY_SUITE)
    run = invoke("run", suite, "--out", root / "reference" / "tiny", "--quiet",
                 "--vectorize-seeds")
    assert run.exit_code == 0, run.output
    return root


def copy_of(tiny_reference, tmp_path) -> Path:
    shutil.copytree(tiny_reference, tmp_path, dirs_exist_ok=True)
    return tmp_path


def edit(path: Path, change) -> None:
    record = json.loads(path.read_text())
    change(record)
    path.write_text(json.dumps(record))


def check_arguments(root: Path) -> list[str]:
    return ["--results", str(root / "reference"), "--suites", str(root / "suites"),
            "--data-dir", str(root)]


def _final_test_error(record):
    record["final"]["test_loss"] *= 0.5


def _selected_epoch(record):
    record["selected_epoch"] = 3 - record["selected_epoch"]


def _history_short(record):
    record["history"] = record["history"][:1]


def _epoch_renumbered(record):  # a record out of range: the store does not count it
    record["history"][1]["epoch"] = 3


@pytest.mark.parametrize("change, expected", [
    (_final_test_error, "INCONSISTENT, final test_loss "),
    (_selected_epoch, "INCONSISTENT, selected epoch "),
    (_history_short, "INCONSISTENT, its history holds epochs 1, not 1 to 2 as its protocol runs"),
    (_epoch_renumbered, "FAILED, not counted: history epoch 3 is not after epoch 1 and within "
     "[1, 2]")])
def test_a_record_that_disagrees_with_itself_fails_before_any_rerun(
        tiny_reference, tmp_path, monkeypatch, capsys, change, expected):
    """A hand-edited record (its final metrics, its selected epoch, its history) is a failed
    cell with one line; it is not re-run, and nothing is attested for it."""
    script = load_script()
    root = copy_of(tiny_reference, tmp_path)
    edit(root / "reference" / "tiny" / "teacher" / "bp" / "seed-1.json", change)
    reruns = []
    monkeypatch.setattr(script, "check", lambda job, *a: reruns.append(job.cell) or (
        True, f"{job.cell}: ok", []))
    assert script.main(check_arguments(root)) == 1
    lines = capsys.readouterr().out.splitlines()
    if change is _epoch_renumbered:  # not the cell's record: its other seeds are checked
        assert lines[0] == f"tiny teacher/bp/seed-1.json: {expected}"
        assert reruns == ["tiny teacher/bp", "tiny teacher/dfa"]
        assert lines[-1] == ("2 of 2 reference cells reproduce their first epoch; 1 cells fail "
                             "the check")
        return
    assert lines[0].startswith(f"tiny teacher/bp seed 1: {expected}"), lines[0]
    assert reruns == ["tiny teacher/dfa"]
    assert lines[-1] == "1 of 2 reference cells reproduce their first epoch; 1 cells fail the check"


def current_digest(algorithm: str) -> str:
    """The code digest a run of the algorithm records now."""
    from bioplaus_bench.execution.inputs import code_identity
    from bioplaus_bench.registry import load_registry

    return code_identity(load_registry().get(algorithm).cls)["source_sha256"]


def marked(result, label: str) -> bool:
    return "†" in next(line for line in result.stdout.splitlines() if line.startswith(label))


def test_the_check_attests_the_code_it_reproduced_under_and_the_table_drops_the_dagger(
        tiny_reference, tmp_path, capsys):
    """Records made by other code (their digest not the current one) are marked † until the
    check has re-run them under the current code and they reproduced; an attestation of another
    digest does not count."""
    script = load_script()
    root = copy_of(tiny_reference, tmp_path)
    reference = root / "reference" / "tiny"
    older = "0123456789abcdef"  # as if run before an edit of a base class

    def older_code(record):
        record["provenance"]["code"]["source_sha256"] = older
        record["config"]["inputs"]["code"]["source_sha256"] = older
    for path in sorted((reference / "teacher" / "bp").glob("seed-*.json")):
        edit(path, older_code)
    before = invoke("table", reference)
    assert marked(before, "| BP |") and not marked(before, "| DFA |") and CODE_NOTE in before.stdout
    assert invoke("report", reference, "--out", root / "before.html").exit_code == 0
    assert "†" in (root / "before.html").read_text()

    assert script.main(check_arguments(root)) == 0
    assert capsys.readouterr().out.splitlines()[-1] == \
        "2 of 2 reference cells reproduce their first epoch"
    cells = json.loads((reference / ATTESTATION_FILE).read_text())["cells"]
    now = current_digest("bp")
    assert [(c["code"], c["record_code"]) for c in cells["teacher/bp"]] == [(now, older)]
    after = invoke("table", reference)
    assert after.exit_code == 0 and after.stderr == ""
    assert "†" not in after.stdout and CODE_NOTE not in after.stdout
    assert invoke("report", reference, "--out", root / "after.html").exit_code == 0
    assert "†" not in (root / "after.html").read_text()  # the page reads it too
    # the same beside a trial of one's own: the reference folder's attestation is read
    mine = root / "mine"
    shutil.copytree(reference, mine)
    (mine / ATTESTATION_FILE).unlink()
    beside = invoke("table", mine, "--reference", reference)
    assert marked(beside, "| BP |") and not marked(beside, "| BP (reference) |")

    # a second check adds to the attestation, drops nothing
    text = json.loads((reference / ATTESTATION_FILE).read_text())
    text["cells"]["teacher/bp"][0]["code"] = "fe" * 8  # attests another code, not the current
    (reference / ATTESTATION_FILE).write_text(json.dumps(text))
    assert marked(invoke("table", reference), "| BP |")
    assert script.main(check_arguments(root)) == 0
    capsys.readouterr()
    cells = json.loads((reference / ATTESTATION_FILE).read_text())["cells"]
    assert [(c["code"], c["record_code"]) for c in cells["teacher/bp"]] == [
        ("fe" * 8, older), (now, older)]
    assert not marked(invoke("table", reference), "| BP |")


ATTESTED = {"cells": {"teacher/bp": [{"code": "ab" * 8, "record_code": "0123456789abcdef",
                                      "git_commit": "1234567", "checked_at": "2026-12-07"}]}}


def _bad(field, value):
    text = json.loads(json.dumps(ATTESTED))
    text["cells"]["teacher/bp"][0][field] = value
    return json.dumps(text)


@pytest.mark.parametrize("content, why", [
    ("[1, 2]", "not an attestation: expected {\"cells\""),
    ("{\"cells\": ", "not JSON"),
    (json.dumps({"cells": {"teacher/bp/x": []}}), "not an attestation: cell \"teacher/bp/x\""),
    (json.dumps({"cells": {"teacher/bp": {}}}), "not an attestation: cell \"teacher/bp\""),
    (_bad("code", "../x"), 'not an attestation: cells."teacher/bp"[0].code is "../x"'),
    (_bad("record_code", 7), 'cells."teacher/bp"[0].record_code is 7'),
    (_bad("checked_at", "yesterday"), 'cells."teacher/bp"[0].checked_at is "yesterday"'),
    (_bad("git_commit", ["1234567"]), 'cells."teacher/bp"[0].git_commit is ["1234567"]'),
    ("oversized", "larger than 1048576 bytes"),
    ("link", "a symbolic link, not followed"),
    ("folder", "not a regular file")])
def test_an_attestation_that_is_not_one_is_one_warning_and_ignored(
        tiny_reference, tmp_path, monkeypatch, capsys, content, why):
    """A bad attestation file is untrusted input like a record: the table warns in one line
    naming it and what was expected, and the marks stay; the check stops before any re-run
    (writing over it would drop what it attests)."""
    script = load_script()
    root = copy_of(tiny_reference, tmp_path)
    reference = root / "reference" / "tiny"
    for path in sorted((reference / "teacher" / "bp").glob("seed-*.json")):
        edit(path, lambda record: record["provenance"]["code"].update(
            source_sha256="0123456789abcdef"))
    attestation = reference / ATTESTATION_FILE
    if content == "oversized":
        attestation.write_text(json.dumps(ATTESTED) + " " * 2**20)
    elif content == "link":
        target = write(tmp_path / "elsewhere.json", json.dumps(ATTESTED))
        attestation.symlink_to(target)
    elif content == "folder":
        attestation.mkdir()
    else:
        attestation.write_text(content)
    table = invoke("table", reference)
    assert table.exit_code == 0
    assert table.stderr.count("\n") == 1 and table.stderr.startswith(
        f"warning: ignoring {attestation}: "), table.stderr
    assert why in table.stderr
    assert marked(table, "| BP |")

    monkeypatch.setattr(bioplaus_bench, "run", lambda *a, **k: pytest.fail("a re-run started"))
    assert script.main(check_arguments(root)) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"error: {attestation}: ") and why in err


def test_a_valid_attestation_of_the_current_code_clears_the_mark_of_its_cell_only(
        tiny_reference, tmp_path):
    root = copy_of(tiny_reference, tmp_path)
    reference = root / "reference" / "tiny"
    for entry in ("bp", "dfa"):
        for path in sorted((reference / "teacher" / entry).glob("seed-*.json")):
            edit(path, lambda record: record["provenance"]["code"].update(
                source_sha256="0123456789abcdef"))
    assert marked(invoke("table", reference), "| BP |")
    text = json.loads(json.dumps(ATTESTED))
    text["cells"]["teacher/bp"][0]["code"] = current_digest("bp")
    (reference / ATTESTATION_FILE).write_text(json.dumps(text))
    table = invoke("table", reference)
    assert table.stderr == ""
    assert not marked(table, "| BP |") and marked(table, "| DFA |")


def test_the_committed_reference_agrees_with_itself_and_its_suites():
    """What the check verifies before any re-run, on the committed records (no training): a
    suite edited since its reference was run is found in CI, not after an hour of re-runs."""
    script = load_script()
    found, problems = script.jobs(ROOT / "results" / "reference", ROOT / "suites", None)
    assert problems == [] and len(found) >= 18
    assert script.inconsistencies(found) == {}


def test_cells_checks_only_the_named_cells_and_refuses_an_unknown_one(tmp_path, capsys):
    script = load_script()
    suites, results = tmp_path / "suites", tmp_path / "reference"
    suites.mkdir()
    suite = write(suites / "tiny.yaml", TINY_SUITE)
    run = invoke("run", suite, "--out", results / "tiny", "--quiet", "--vectorize-seeds")
    assert run.exit_code == 0, run.output
    base = ["--results", str(results), "--suites", str(suites), "--data-dir", str(tmp_path)]
    assert script.main([*base, "--cells", "teacher/dfa"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(" seeds ")[0] for line in lines if line.startswith("tiny ")] == [
        "tiny teacher/dfa"]
    assert lines[-1] == "1 of 1 reference cells reproduce their first epoch"
    attested = json.loads((results / "tiny" / ATTESTATION_FILE).read_text())["cells"]
    assert set(attested) == {"teacher/dfa"}
    assert script.main([*base, "--cells", "teacher/dfa,teacher/nope"]) == 2
    assert "--cells: no reference cell teacher/nope" in capsys.readouterr().err
