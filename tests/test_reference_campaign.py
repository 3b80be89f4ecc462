"""The reference campaign's bookkeeping (benchmarks/reference.py): which cells are done, stale
or missing, how finished records travel from the work folder to the reference folder, and the
`bioplaus_bench.run` of a list's missing cells (the runs themselves are tested elsewhere)."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
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
    """A finished record of ``cell`` as `bench run` writes it, with ``changes``."""
    from bioplaus_bench.results.store import make_record

    data = make_record(cell, {"status": "ok", "wall_time": 600.0}, "cpu", "classification")
    data = json.loads(json.dumps(data.to_json()))
    data.update(changes)
    return data


def write(path: Path, data: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    return path


def campaign_on_tiny_mnist(reference, tmp_path):
    """A campaign whose data settings read a tiny MNIST (checksums skipped), for config hashes."""
    from .helpers import write_idx_dataset

    write_idx_dataset(tmp_path / "data")
    data = reference.DataSettings(root=tmp_path / "data", verify_checksums=False)
    return reference.Campaign(tmp_path / "out", tmp_path / "work", seeds=None, data=data)


def save_checkpoint(campaign, group, cell, *, epoch: int, pretrained: int, elapsed: float,
                    config_hash: str | None = None) -> Path:
    """A checkpoint as `bench run` writes it, of the cell as this code and data give it unless
    ``config_hash`` says otherwise."""
    from bioplaus_bench.execution.checkpoint import Checkpoint
    from bioplaus_bench.execution.inputs import with_inputs

    if config_hash is None:
        config_hash = with_inputs([cell], campaign.registry, campaign.data)[0].config_hash()
    path = campaign.work_store(group).checkpoint_path(cell)
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
    paths = [campaign.reference(cell).path(cell) for cell in cells]
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
    group = reference.Group("table1", "mnist", "dfa")
    work = campaign.work_store(group)
    cells = campaign.cells(reference.STAGES[0], group)
    finished = write(work.path(cells[0]), record(cells[0]))
    write(work.path(cells[1]), record(cells[1], status="timeout"))
    work.checkpoint_path(cells[1]).write_bytes(b"checkpoint")
    assert campaign.collect() == 1
    target = campaign.out / "table1" / "mnist" / "dfa"
    assert sorted(p.name for p in target.iterdir()) == ["seed-0.json"]
    assert (target / "seed-0.json").read_bytes() == finished.read_bytes()
    assert campaign.collect() == 0  # unchanged records are not copied again


class Runs:
    """`bioplaus_bench.run` as the campaign calls it, recorded; each run ends at once."""

    def __init__(self):
        self.calls = []

    def __call__(self, suite, **options):
        self.calls.append((suite, options))
        return type("Results", (), {"outcome": type("Outcome", (), {"failed": False})})()


def test_a_list_runs_the_shipped_suite_for_its_missing_cells_only(reference, tmp_path,
                                                                   monkeypatch):
    """One `bioplaus_bench.run` per suite of a list: its missing cells in the list's order
    (cheapest first), seeds stacked, the suite's protocol untouched, into the work folder."""
    import bioplaus_bench

    campaign = campaign_on_tiny_mnist(reference, tmp_path)
    bp, dfa = reference.Group("table1", "mnist", "bp"), reference.Group("table1", "mnist", "dfa")
    stage = reference.Stage("t", "two groups", (dfa, bp), 3)
    done = campaign.cells(stage, bp)[0]
    write(campaign.reference(done).path(done), record(done))
    runs = Runs()
    monkeypatch.setattr(bioplaus_bench, "run", runs)
    args = type("Args", (), {"device": "cpu", "data_dir": tmp_path / "data", "jobs": 2,
                             "skip_checksums": True, "threads": 1, "seed_chunk": None})
    assert reference.run(campaign, [stage], args) == 0
    [(suite, options)] = runs.calls
    assert suite == ROOT / "suites" / "table1.yaml"
    assert options["only_cells"] == [("mnist", "dfa", 0), ("mnist", "dfa", 1),
                                     ("mnist", "dfa", 2), ("mnist", "bp", 1), ("mnist", "bp", 2)]
    assert options["vectorize_seeds"] is True and options["jobs"] == 2
    assert options["threads"] == 1 and options["out"] == campaign.work / "table1"
    assert options["verify_checksums"] is False and options["data_dir"] == tmp_path / "data"
    for change in ("epochs", "subset", "overrides", "seeds", "force"):
        assert change not in options


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
    write(campaign.reference(cell).path(cell), record(cell, wall_time=twice))
    assert campaign.seconds_per_seed(bp) == (twice, True)
    assert campaign.seconds_per_seed(dtp) == (pytest.approx(2 * prior), False)


def test_the_campaign_log_says_where_a_group_under_way_resumes(reference, tmp_path, monkeypatch,
                                                               capsys):
    campaign = campaign_on_tiny_mnist(reference, tmp_path)
    group = reference.Group("table1", "mnist", "bp")
    stage = reference.Stage("t", "one group", (group,), 2)
    save_checkpoint(campaign, group, campaign.cells(stage, group)[0], epoch=40, pretrained=0,
                    elapsed=100.0)
    import bioplaus_bench

    runs = Runs()
    monkeypatch.setattr(bioplaus_bench, "run", runs)
    args = type("Args", (), {"device": "cpu", "data_dir": tmp_path / "data", "skip_checksums": True,
                             "jobs": 1, "threads": 1, "seed_chunk": None})
    assert reference.run(campaign, [stage], args) == 0
    assert len(runs.calls) == 1 and runs.calls[0][1]["only_cells"] == [("mnist", "bp", 0),
                                                                        ("mnist", "bp", 1)]
    line = next(line for line in capsys.readouterr().out.splitlines() if " start " in line)
    assert line.endswith("; checkpoint at epoch 40/100 (pre-training included), resumes there")


def test_status_reads_records_as_bench_does_so_a_file_that_is_no_record_is_stale(
        reference, tmp_path, capsys):
    """A record without `config` (or any file that is no record) is no finished cell: status
    says stale, with the store's warning, instead of a KeyError traceback."""
    out = tmp_path / "out"
    campaign = reference.Campaign(out, tmp_path / "work", seeds=None)
    stage, group = reference.STAGES[0], reference.Group("table1", "mnist", "bp")
    cells = campaign.cells(stage, group)
    without_config = record(cells[0])
    del without_config["config"]
    write(campaign.reference(cells[0]).path(cells[0]), without_config)
    write(campaign.reference(cells[1]).path(cells[1]), record(cells[1], wall_time="slow"))
    assert [campaign.state(cell) for cell in cells] == ["stale", "stale", "missing"]
    assert reference.main(["status", "--stages", "a", "--out", str(out),
                           "--work", str(tmp_path / "work")]) == 0
    captured = capsys.readouterr()
    assert f"{group.name:40} 0/3 done; missing seeds 0,1,2 (2 stale)" in captured.out
    assert "field 'config' missing" in captured.err


def test_a_cache_folder_that_is_a_file_is_one_line_naming_the_variable(
        reference, tmp_path, monkeypatch, capsys):
    cache = write(tmp_path / "cache", {})  # a file where the cache folder should be
    monkeypatch.setenv("BIOPLAUS_CACHE", str(cache))
    for action in ("run", "status", "collect"):
        assert reference.main([action, "--out", str(tmp_path / "out")]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "Traceback" not in err
        assert "BIOPLAUS_CACHE" in err and str(cache) in err and "expected a folder" in err
    # the same for an --out or --work below a file, named by its option
    assert reference.main(["collect", "--out", str(cache / "reference"),
                           "--work", str(tmp_path / "work")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: --out {cache / 'reference'}: {cache} is a file; expected a")


def test_run_checks_the_data_of_every_group_before_starting_any(reference, tmp_path,
                                                                 monkeypatch, capsys):
    """A missing or wrong --data-dir stops the campaign with the data layer's one line (the
    folder and the files expected), before any group starts and hides it in its log."""
    import bioplaus_bench

    monkeypatch.setattr(bioplaus_bench, "run", lambda *a, **k: pytest.fail("a run started"))
    nothing, wrong = tmp_path / "nothing", write(tmp_path / "wrong" / "note.txt", {}).parent
    for data_dir in (nothing, wrong):
        assert reference.main(["run", "--stages", "a", "--out", str(tmp_path / "out"),
                               "--work", str(tmp_path / "work"), "--data-dir",
                               str(data_dir)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("error: ") and str(data_dir) in err
        assert "MNIST" in err
    assert not (tmp_path / "work").exists()


def test_special_files_named_like_records_or_checkpoints_are_not_read(reference, tmp_path):
    """A FIFO where a record or checkpoint would be, in the reference or the work folder, would
    block a reader: only regular files are read."""
    campaign = reference.Campaign(tmp_path / "out", tmp_path / "work", seeds=None)
    stage, group = reference.STAGES[0], reference.Group("table1", "mnist", "bp")
    cells = campaign.cells(stage, group)
    work = campaign.work_store(group)
    fifos = [campaign.reference(cells[0]).path(cells[0]), work.path(cells[0]),
             work.checkpoint_path(cells[1])]
    for fifo in fifos:
        fifo.parent.mkdir(parents=True, exist_ok=True)
        os.mkfifo(fifo)

    def hung(signum, frame):
        raise TimeoutError("blocked on a FIFO")

    previous = signal.signal(signal.SIGALRM, hung)
    signal.alarm(30)
    try:
        assert campaign.state(cells[0]) == "missing"
        assert campaign.partial(group, cells[1]) is None
        assert campaign.seconds_per_seed(group)[1] is False
        assert campaign.collect() == 0
        campaign.status([stage])
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def test_collect_never_replaces_a_record_of_the_full_protocol_with_another_protocol(
        reference, tmp_path, capsys):
    """A 1-epoch quick trial of a cell, run into the work folder, does not replace the cell's
    committed 100-epoch record (refused in one line); a full-protocol record does replace a
    quick trial."""
    campaign = reference.Campaign(tmp_path / "out", tmp_path / "work", seeds=None)
    stage, group = reference.STAGES[0], reference.Group("table1", "mnist", "bp")
    cells = campaign.cells(stage, group)
    work = campaign.work_store(group)

    def quick(cell, **changes):
        trial = record(cell, paper_protocol=False, deviations=["epochs: 1"], **changes)
        trial["config"]["dataset"]["protocol"]["epochs"] = 1
        return trial

    committed = write(campaign.reference(cells[0]).path(cells[0]), record(cells[0]))
    kept = committed.read_bytes()
    write(work.path(cells[0]), quick(cells[0]))
    # paper_protocol true but fewer epochs than the suite's is another protocol too
    write(campaign.reference(cells[1]).path(cells[1]), record(cells[1]))
    shorter = record(cells[1])
    shorter["config"]["dataset"]["protocol"]["epochs"] = 1
    write(work.path(cells[1]), shorter)
    # a quick trial in the reference folder is replaced by the full protocol's record
    write(campaign.reference(cells[2]).path(cells[2]), quick(cells[2]))
    full = write(work.path(cells[2]), record(cells[2], wall_time=700.0))

    assert campaign.collect() == 1
    assert committed.read_bytes() == kept
    assert campaign.reference(cells[2]).path(cells[2]).read_bytes() == full.read_bytes()
    refusals = capsys.readouterr().err.splitlines()
    assert len(refusals) == 2 and all(line.startswith("refused: ") for line in refusals)
    assert str(work.path(cells[0])) in refusals[0] and str(committed) in refusals[0]
    assert "(1 epochs, epochs: 1)" in refusals[0] and "(100 epochs)" in refusals[0]
    assert [campaign.state(cell) for cell in cells] == ["done", "done", "done"]


@pytest.mark.parametrize(("arguments", "expected"), [
    (["--stages", "a,x"], "--stages: expected some of a,b,c,d,e,f, got 'a,x'"),
    (["--jobs", "0"], "--jobs: expected a positive number, got 0"),  # would wait forever
    (["--seeds", "-1"], "--seeds: expected a positive number, got -1")])
def test_bad_options_of_the_campaign_are_one_line_and_exit_2(reference, tmp_path, capsys,
                                                             arguments, expected):
    with pytest.raises(SystemExit) as exit:
        reference.main(["run", "--out", str(tmp_path / "out"), "--work", str(tmp_path / "work"),
                        *arguments])
    assert exit.value.code == 2 and capsys.readouterr().err.splitlines()[-1].endswith(expected)
    assert not (tmp_path / "work").exists()


ADAM = {"lr": 1.0e-3, "betas": [0.9, 0.999], "eps": 1.0e-8}
# A suite named as Table 1's, of a tiny MNIST MLP and one epoch (a suite file is YAML, and JSON
# is YAML).
TINY_TABLE1 = {"name": "table1", "seeds": [0, 1, 2], "precision": "float64",
               "datasets": {"mnist": {"source": "mnist",
                                      "architecture": {"type": "mlp", "hidden": [8]},
                                      "protocol": {"epochs": 1, "batch_size": 16,
                                                   "validation": 10}}},
               "algorithms": {"bp": {"optimizer": ADAM}, "dfa": {"optimizer": ADAM}}}


def test_a_list_runs_through_bioplaus_bench_run_and_its_records_reach_the_reference(
        reference, tmp_path, monkeypatch, capsys):
    """The campaign on a tiny suite of its own: the list's missing cells run in this process
    (`--jobs 1`), each group's end is said once its records are copied into the reference
    folder, the run's lines go to the campaign's log, and a second run finds nothing to do."""
    import bioplaus_bench

    suites = write(tmp_path / "suites" / "table1.yaml", TINY_TABLE1).parent
    monkeypatch.setattr(reference, "suite_file", lambda name: suites / f"{name}.yaml")
    campaign = campaign_on_tiny_mnist(reference, tmp_path)
    dfa, bp = reference.Group("table1", "mnist", "dfa"), reference.Group("table1", "mnist", "bp")
    stage = reference.Stage("t", "two groups", (dfa, bp), 2)
    monkeypatch.setattr(reference, "STAGES", (stage,))
    args = type("Args", (), {"device": "cpu", "data_dir": tmp_path / "data", "jobs": 1,
                             "skip_checksums": True, "threads": 1, "seed_chunk": None})
    assert reference.run(campaign, [stage], args) == 0
    out = capsys.readouterr().out.splitlines()
    ends = [line.split(" ", 1)[1] for line in out if " end " in line]
    assert ends == ["end table1/mnist/dfa: 2 ok, 2 new records in the reference folder",
                    "end table1/mnist/bp: 2 ok, 2 new records in the reference folder"]
    for group in (dfa, bp):
        cells = campaign.cells(stage, group)
        assert [campaign.state(cell) for cell in cells] == ["done", "done"]
        copied = campaign.reference(cells[0]).path(cells[0])
        assert copied.read_bytes() == campaign.work_store(group).path(cells[0]).read_bytes()
    log = (campaign.work / "logs" / "campaign.log").read_text()
    assert "mnist/dfa/seed-1: ok (" in log and "mnist/bp/seed-0: ok (" in log
    monkeypatch.setattr(bioplaus_bench, "run", lambda *a, **k: pytest.fail("a run started"))
    assert reference.run(campaign, [stage], args) == 0


def test_checkpoints_of_a_campaign_before_bioplaus_bench_run_are_read_and_adopted(
        reference, tmp_path, capsys):
    """A group's folder of its own (<work>/<suite>/<dataset>/<entry>/, as each `bench run`
    of the campaign had): status reads its checkpoints, and a run moves them to the suite's
    folder, where they resume."""
    campaign = campaign_on_tiny_mnist(reference, tmp_path)
    stage, group = reference.STAGES[0], reference.Group("table1", "mnist", "bp")
    cell = campaign.cells(stage, group)[0]
    new = save_checkpoint(campaign, group, cell, epoch=40, pretrained=0, elapsed=100.0)
    legacy = reference.ResultStore(campaign.work / group.name).checkpoint_path(cell)
    legacy.parent.mkdir(parents=True)
    new.rename(legacy)
    assert campaign.partial(group, cell).done == 40
    campaign.adopt_legacy(group)
    assert new.is_file() and not legacy.exists()
    assert campaign.partial(group, cell).resumes is True


def test_a_skipped_record_finishes_a_skipped_cell_only(reference, tmp_path):
    """One meaning of finished (``Record.finished``, as `bench run` reuses records), but a
    `skipped` record does not stand for a cell that runs: such a reference cell is stale."""
    import dataclasses

    from bioplaus_bench.results.store import make_record

    campaign = reference.Campaign(tmp_path / "out", tmp_path / "work", seeds=None)
    cell = campaign.cells(reference.STAGES[0], reference.Group("table1", "mnist", "bp"))[0]
    skipped = dataclasses.replace(cell, skip_reason="not run on this dataset")
    store = campaign.reference(cell)
    store.write(make_record(skipped, {"status": "skipped", "reason": "not run on this dataset"},
                            "cpu", "classification"), skipped)
    assert campaign.state(cell) == "stale" and store.finished(cell) is None
    assert store.state(skipped) == "finished" and store.finished(skipped) is not None


def test_the_three_families_lists_hold_every_entry_of_the_suite_cheapest_first(reference,
                                                                                 tmp_path):
    """Lists e (the studies) and f (the cells) follow Table 1's and hold the entries of
    suites/three_families.yaml in the order of their prior cost: every entry for the studies
    (those with the paper's settings have no search), every entry but BP, DFA and DDTP-linear
    (the paper's: Table 1's cells) for the cells, where BP and DFA (tuned) run and the others
    wait for their studies."""
    campaign = reference.Campaign(tmp_path / "out", tmp_path / "work", seeds=None)
    studies, cells = reference.STAGES[-2:]
    assert [s.name for s in reference.STAGES] == ["a", "b", "c", "d", "e", "f"]
    suite = campaign.suite("three_families")
    assert sorted(reference.THREE_FAMILIES) == sorted(suite.algorithms)
    assert [g.algorithm for g in studies.groups] == list(reference.THREE_FAMILIES)
    assert [g.algorithm for g in cells.groups] == [
        e for e in reference.THREE_FAMILIES if e not in ("bp", "dfa", "ddtp-linear")]
    assert all(suite.algorithms[e].origin == "paper" for e in ("bp", "dfa", "ddtp-linear"))
    priors = [reference.PRIOR[entry] for entry in reference.THREE_FAMILIES]
    assert priors == sorted(priors)
    assert campaign.study_path(studies.groups[0]) == (
        campaign.out / "three_families" / "tuning" / "mnist" / "bp.db")
    # The calibration: BP and DFA, searched from spaces that hold the paper's values; with no
    # cells of theirs in the reference folder, every other study waits.
    assert studies.calibration == ("bp-tuned", "dfa-tuned")
    for entry, paper in (("bp-tuned", "bp"), ("dfa-tuned", "dfa")):
        assert suite.algorithms[entry].algorithm == paper
        [adam] = {cell.settings.optimizer for cell in campaign.group_cells(
            reference.Group("three_families", "mnist", paper))}
        optimizer = {"lr": adam.lr, "betas": list(adam.betas), "eps": adam.eps}
        for key, space in suite.algorithms[entry].search.items():
            value = optimizer[key.removeprefix("optimizer.")]
            assert (value in [list(c) for c in space.choices] if space.choices
                    else space.low <= value <= space.high), (entry, key)
    assert all(campaign.held_back(g) is not None for g in studies.groups
               if g.algorithm not in studies.calibration and suite.algorithms[g.algorithm].search)


def test_only_cuts_the_lists_to_the_groups_named(reference, tmp_path, capsys):
    folders = ["--out", str(tmp_path / "out"), "--work", str(tmp_path / "work")]
    named = "table1/fashion_mnist/dtp-drl,three_families/mnist/pc"
    assert reference.main(["status", "--only", named, *folders]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines if line.startswith("  ")] == [
        "table1/fashion_mnist/dtp-drl", "table1/fashion_mnist/dtp-drl",  # lists b and d
        "three_families/mnist/pc", "three_families/mnist/pc"]  # lists e and f
    assert [line.split(":")[0] for line in lines if line.startswith("list")] == [
        "list b", "list d", "list e", "list f"]
    for option, why in ((["--only", "table1/mnist/nope"], "--only: no group table1/mnist/nope"),
                        (["--seed-chunk", "0"], "--seed-chunk: expected a positive number")):
        with pytest.raises(SystemExit) as stop:
            reference.main(["status", *option, *folders])
        assert stop.value.code == 2 and why in capsys.readouterr().err


SEARCHED_LR = {"optimizer.lr": {"low": 1.0e-4, "high": 1.0e-2, "log": True}}
BUDGET = {"trials": 2, "epochs": 1, "seeds": 1, "pruning": {"rule": "none"}}
# A suite with a tuning budget on the generated teacher task: BP of the paper's settings, DFA to
# tune, and BP tuned already (its provenance as `bench tune` writes it).
TINY_FAMILIES = {
    "name": "tiny", "seeds": [0, 1, 2], "precision": "float64", "tuning": BUDGET,
    "datasets": {"teacher": {"source": "teacher",
                             "options": {"n_train": 64, "n_test": 32, "hidden": [16, 16]},
                             "architecture": {"type": "mlp", "hidden": [8]},
                             "protocol": {"epochs": 1, "batch_size": 16, "validation": 32}}},
    "algorithms": {
        "bp": {"origin": "paper", "optimizer": ADAM},
        "bp-tuned": {"algorithm": "bp", "optimizer": ADAM, "search": SEARCHED_LR,
                     "datasets": {"teacher": {"optimizer": {"lr": 0.002}}},
                     "tuned": {"teacher": {
                         "budget": BUDGET, "search": SEARCHED_LR,
                         "values": {"optimizer.lr": 0.002}, "study": "bp-tuned.db",
                         "sha256": "0" * 64, "trial": 1, "validation_error": 0.25}}},
        "dfa": {"optimizer": ADAM, "search": SEARCHED_LR}}}


def tiny_families(reference, tmp_path, monkeypatch, **budget):
    """The campaign of TINY_FAMILIES (its tuning budget changed by ``budget``), as suite 'tiny';
    its lists of studies and of cells."""
    suite = json.loads(json.dumps(TINY_FAMILIES))
    suite["tuning"].update(budget)
    suites = write(tmp_path / "suites" / "tiny.yaml", suite).parent
    monkeypatch.setattr(reference, "suite_file", lambda name: suites / f"{name}.yaml")
    campaign = reference.Campaign(tmp_path / "out", tmp_path / "work", seeds=None)
    entries = ("bp", "bp-tuned", "dfa")
    lists = (reference.Studies("s", "studies", "tiny", "teacher", entries),
             reference.Stage("c", "cells", reference._groups("tiny", ("teacher",), entries), 2))
    monkeypatch.setattr(reference, "STAGES", lists)
    return campaign, *lists


def test_the_cell_list_runs_the_paper_s_and_tuned_entries_and_waits_for_the_others(
        reference, tmp_path, monkeypatch, capsys):
    import bioplaus_bench

    campaign, studies, cells = tiny_families(reference, tmp_path, monkeypatch)
    runs = Runs()
    monkeypatch.setattr(bioplaus_bench, "run", runs)
    args = type("Args", (), {"device": "cpu", "data_dir": None, "jobs": 1,
                             "skip_checksums": False, "threads": 1, "seed_chunk": 1})
    assert reference.run(campaign, [cells], args) == 0
    [(suite, options)] = runs.calls
    assert options["seed_chunk"] == 1 and options["vectorize_seeds"]
    assert suite == tmp_path / "suites" / "tiny.yaml"
    assert options["only_cells"] == [("teacher", "bp", 0), ("teacher", "bp", 1),
                                     ("teacher", "bp-tuned", 0), ("teacher", "bp-tuned", 1)]
    capsys.readouterr()
    campaign.status([studies, cells])
    lines = capsys.readouterr().out.splitlines()
    assert "list s: studies (2 trials of 1 epochs each, in " in lines[0]
    assert lines[1].split() == ["tiny/teacher/bp-tuned", "tuned", "in", "the", "suite", "(best",
                                "trial", "1,", "validation", "error", "0.25)"]
    assert lines[2].startswith("  tiny/teacher/dfa") and " 0/2 trials, ~" in lines[2]
    waiting = next(line for line in lines[3:] if "tiny/teacher/dfa" in line)
    assert waiting.endswith("waiting for its study (list of tuning studies)")
    assert campaign.incomplete(studies) and campaign.incomplete(cells)
    # A link where the study would be is never read nor written through (bench tune refuses it).
    dfa = reference.Group("tiny", "teacher", "dfa")
    campaign.study_path(dfa).parent.mkdir(parents=True)
    campaign.study_path(dfa).symlink_to(write(tmp_path / "victim.db", {}))
    line = campaign.study_line(dfa, 1.0)[0]
    assert line.endswith("dfa.db is no study it can resume (it is a symbolic link); move it away")
    assert campaign.study_left(dfa)


def test_the_study_list_tunes_in_place_in_the_reference_folder_and_resumes(
        reference, tmp_path, monkeypatch, capsys):
    """Each untuned entry's study runs in a `bench tune` process of its own, its study file in
    the reference folder, the tuned suite written beside it (never into the suite file); status
    counts its trials; a larger budget resumes the same study, keeping its trials."""
    campaign, studies, _ = tiny_families(reference, tmp_path, monkeypatch)
    suite_text = (tmp_path / "suites" / "tiny.yaml").read_text()
    dfa = reference.Group("tiny", "teacher", "dfa")
    args = type("Args", (), {"device": "cpu", "data_dir": None, "jobs": 2,
                             "skip_checksums": False, "threads": 1,
                             "seed_chunk": None})
    monkeypatch.setattr(reference, "STUDY_POLL", 0.1)
    assert reference.run(campaign, [studies], args) == 0
    path = tmp_path / "out" / "tiny" / "tuning" / "teacher" / "dfa.db"
    assert campaign.study_path(dfa) == path and path.is_file()
    state = campaign.study(dfa)
    assert state.finished == 2 and not state.running and state.best is not None
    tuned = tmp_path / "out" / "tiny" / "tuning" / "tiny-tuned.yaml"
    assert "tuned:" in tuned.read_text() and str(path) in tuned.read_text()
    assert (tmp_path / "suites" / "tiny.yaml").read_text() == suite_text
    out = capsys.readouterr().out.splitlines()
    assert [line.split(" ", 1)[1].split(" (")[0] for line in out] == [
        "start study tiny/teacher/dfa", f"end study tiny/teacher/dfa: exit 0; 2/2 trials; done: "
        f"best trial {state.best[0]}, validation error {state.best[1]:.4g}; copy its values from "
        f"{tuned} into {tmp_path / 'suites' / 'tiny.yaml'}"]
    assert not campaign.incomplete(studies)
    first = [t.params for t in _trials(path)]

    campaign, studies, _ = tiny_families(reference, tmp_path, monkeypatch, trials=3)
    line, seconds, guessed = campaign.study_line(dfa, 1.0)
    assert line.startswith("2/3 trials, ") and seconds > 0 and not guessed  # measured
    # A search killed in a trial's epoch 2: status says where the trial stands (it resumes
    # there, from its seeds' checkpoints).
    import optuna

    study = optuna.load_study(study_name="tune", storage=f"sqlite:///{path}")
    lr = optuna.distributions.FloatDistribution(1e-4, 1e-1, log=True)  # the study's space
    killed = study.ask({"optimizer.lr": lr})
    killed.report(0.5, 1)
    killed.report(0.4, 2)
    epochs = campaign.budget(dfa).epochs
    assert campaign.study(dfa).running == (2,)
    assert campaign.study_line(dfa, 1.0)[0].startswith(
        f"2/3 trials (one under way or interrupted, at epoch 2 of {epochs}), ")
    assert reference.run(campaign, [studies], args) == 0
    assert campaign.study(dfa).finished == 3 and [t.params for t in _trials(path)][:2] == first
    assert "dfa: 2 of 3 trials finished earlier; running 1" in (
        campaign.work / "logs" / "campaign.log").read_text()
    monkeypatch.setattr(reference, "_tune", lambda *a: pytest.fail("a study started"))
    assert reference.run(campaign, [studies], args) == 0


def test_the_other_studies_wait_until_the_budget_passes_its_calibration(
        reference, tmp_path, monkeypatch, capsys):
    """The calibration's entries (tuned from spaces that hold the paper's values) are tuned
    first; every other study waits until each of them is tuned and its cells lie within 2
    paper-SD of the paper's number. A budget that fails it tunes nothing more."""
    import dataclasses

    campaign, studies, cells = tiny_families(reference, tmp_path, monkeypatch)
    studies = dataclasses.replace(studies, calibration=("bp-tuned",))
    monkeypatch.setattr(reference, "STAGES", (studies, cells))
    dfa, bp_tuned = (reference.Group("tiny", "teacher", e) for e in ("dfa", "bp-tuned"))
    assert campaign.held_back(dfa) == "bp-tuned's cells: 0/2 done"
    assert campaign.held_back(bp_tuned) is None
    assert not campaign.study_left(dfa) and not campaign.incomplete(studies)
    args = type("Args", (), {"device": "cpu", "data_dir": None, "jobs": 1,
                             "skip_checksums": False, "threads": 1,
                             "seed_chunk": None})
    monkeypatch.setattr(reference, "_tune", lambda *a: pytest.fail("a study started"))
    assert reference.run(campaign, [studies, cells], args) == 0  # the cells only
    assert campaign.held_back(dfa) == "no published number of bp on teacher to hold bp-tuned to"

    # The mean of bp-tuned's two records (the teacher task is a regression: its test loss),
    # read from the files themselves.
    folder = tmp_path / "out" / "tiny" / "teacher" / "bp-tuned"
    losses = [json.loads((folder / f"seed-{s}.json").read_text())["final"]["test_loss"]
              for s in (0, 1)]
    mean = sum(losses) / 2
    published = dict(reference.PUBLISHED)
    monkeypatch.setattr(reference, "PUBLISHED", published)
    published[("test_error", "teacher", "bp")] = (mean - 1.9, 1.0)
    assert campaign.held_back(dfa) is None and campaign.study_left(dfa)
    published[("test_error", "teacher", "bp")] = (mean + 2.5, 1.0)
    why = (f"bp-tuned {mean:.2f} is -2.5 paper-SD from {mean + 2.5:.2f} ± 1.00: the budget is "
           "too small; raise it")
    assert campaign.held_back(dfa) == why
    assert not campaign.study_left(dfa) and not campaign.incomplete(studies)
    capsys.readouterr()
    campaign.status([studies])
    assert "tiny/teacher/dfa" in (out := capsys.readouterr().out)
    assert f"waits for the budget's calibration ({why})" in out


def _trials(path: Path) -> list:
    import optuna

    return optuna.load_study(study_name=None, storage=f"sqlite:///{path}").get_trials()
