"""The Python API's read side, ``bioplaus_bench.load(folder, reference=...)``: records and curves
as DataFrames, and the very table and page that ``bench table`` and ``bench report`` print and
write (the commands are this API behind a command line)."""

import json
import re
import subprocess
import sys

import pandas as pd
import pytest

import bioplaus_bench
from bioplaus_bench.errors import InputError

from .helpers import invoke, records


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """A tiny run (2 epochs, bp and dfa, 2 seeds) with a file that is not a record, and a
    reference of the same suite run for 3 epochs."""
    from .helpers import TINY_SUITE, write

    root = tmp_path_factory.mktemp("api")
    suite = write(root / "tiny.yaml", TINY_SUITE)
    for out, extra in (("mine", ()), ("reference", ("--epochs", "3"))):
        result = invoke("run", suite, "--out", root / out, "--quiet", *extra)
        assert result.exit_code == 0, result.output
    (root / "mine" / "teacher" / "dfa" / "seed-7.json").write_text('{"not": "a record"}')
    return root / "mine", root / "reference"


def test_import_bioplaus_bench_imports_neither_torch_nor_pandas():
    code = ("import json, sys\nimport bioplaus_bench\nassert callable(bioplaus_bench.load)\n"
            "print(json.dumps(sorted(sys.modules)))")
    before = subprocess.run([sys.executable, "-c", code.replace("assert callable", "#")],
                            capture_output=True, text=True, check=True, timeout=300)
    loaded = set(json.loads(before.stdout.splitlines()[-1]))
    assert not {"torch", "pandas", "scipy", "bioplaus_bench.results.folder"} & loaded
    assert bioplaus_bench.load is bioplaus_bench.results.folder.load
    assert bioplaus_bench.Results.__name__ == "Results"
    with pytest.raises(AttributeError, match="no attribute 'nothing_of_that_name'"):
        bioplaus_bench.nothing_of_that_name  # noqa: B018


def test_records_and_curves_are_one_row_per_record_and_per_epoch(folders):
    mine, _ = folders
    results = bioplaus_bench.load(mine)
    on_disk = records(mine)
    assert len(on_disk) == 5 and len(results.records) == 4  # the forged file is not counted
    assert repr(results) == f"<Results of {str(mine)!r}: 4 records, 1 files skipped>"
    assert [str(s) for s in results.skipped] == [
        "teacher/dfa/seed-7.json (not a record: field 'dataset' missing or not str)"]
    frame = results.records.set_index(["entry", "seed"])
    for path, record in on_disk.items():
        if path.endswith("seed-7.json"):
            continue
        row = frame.loc[(record["algorithm"], record["seed"])]
        assert (row.dataset, row.algorithm, row.status, row.epochs, row.precision) == (
            "teacher", record["algorithm_name"], "ok", 2, "float64")
        assert row.value == pytest.approx(record["final"]["test_loss"])
        assert row.selected_epoch == record["selected_epoch"]
        assert row.wall_time == record["wall_time"]
        assert row.code == record["provenance"]["code"]["source_sha256"]
        assert row.commit == record["provenance"]["git_commit"]
        assert not row.reference
    curves = results.curves
    assert len(curves) == sum(len(r["history"]) for p, r in on_disk.items() if "seed-7" not in p)
    first = curves[(curves.entry == "dfa") & (curves.seed == 1) & (curves.epoch == 2)].iloc[0]
    logged = on_disk["teacher/dfa/seed-1.json"]["history"][1]
    assert {key: first[key] for key in logged} == pytest.approx(logged)


@pytest.mark.parametrize("fmt", ["markdown", "latex", "csv"])
@pytest.mark.parametrize("compare", [None, "paper"])
def test_table_is_what_bench_table_prints(folders, fmt, compare):
    mine, _ = folders
    results = bioplaus_bench.load(mine)
    printed = invoke("table", mine, "--format", fmt, *(["--compare", compare] if compare else []))
    assert printed.exit_code == 0, printed.output
    assert results.table(fmt, compare) == printed.stdout
    if fmt == "csv":
        assert results.summary(compare=compare).to_csv(index=False) == printed.stdout
    if fmt == "markdown":
        assert "1 file in the results folder was skipped: teacher/dfa/seed-7.json" in printed.stdout


def test_a_latex_or_csv_table_without_a_reference_notes_none(folders):
    """It used to end with "note: --reference " on stderr, naming no reference."""
    mine, reference = folders
    for fmt in ("latex", "csv"):
        alone = invoke("table", mine, "--format", fmt)
        assert alone.exit_code == 0 and "--reference" not in alone.stderr, alone.stderr
        beside = invoke("table", mine, "--format", fmt, "--reference", reference)
        assert f"note: --reference {reference} (reference truncated to 2 epochs" in beside.stderr


def test_summary_takes_the_baseline_and_refuses_an_unknown_one(folders):
    mine, _ = folders
    results = bioplaus_bench.load(mine)
    summary = results.summary(baseline="dfa")
    assert isinstance(summary, pd.DataFrame) and set(summary.baseline) == {"dfa"}
    assert results.table(baseline="dfa") == invoke("table", mine, "--baseline", "dfa").stdout
    with pytest.raises(InputError, match="no entry 'dfx'.*did you mean 'dfa'"):
        results.summary(baseline="dfx")
    with pytest.raises(ValueError, match="unknown table format 'html'"):
        results.table("html")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown comparison 'papers'"):
        results.table(compare="papers")  # type: ignore[arg-type]


def test_a_reference_stands_beside_yours_cut_to_your_epoch_count(folders):
    mine, reference = folders
    results = bioplaus_bench.load(mine, reference=reference)
    assert results.reference_name == (f"{reference} (reference truncated to 2 epochs: its runs' "
                                      "first epochs, the selection rule re-applied)")
    assert {r.epochs for r in results.reference_records} == {2}
    theirs = results.records[results.records.reference]
    assert sorted(set(theirs.entry)) == ["ref:bp", "ref:dfa"] and set(theirs.epochs) == {2}
    assert set(results.curves[results.curves.reference].epoch) == {1, 2}
    for fmt in ("markdown", "latex", "csv"):
        printed = invoke("table", mine, "--reference", reference, "--format", fmt)
        assert printed.exit_code == 0, printed.output
        assert results.table(fmt) == printed.stdout
    assert "p_vs_ref:dfa" in results.summary()


def test_report_writes_the_page_of_bench_report(folders, tmp_path):
    mine, reference = folders
    written = bioplaus_bench.load(mine, reference=reference).report(tmp_path / "api.html")
    assert written == tmp_path / "api.html"
    result = invoke("report", mine, "--reference", reference, "--out", tmp_path / "cli.html")
    assert result.exit_code == 0, result.output
    assert same_page(written.read_text(), (tmp_path / "cli.html").read_text())
    assert bioplaus_bench.load(mine).report() == mine / "report.html"


def same_page(one: str, other: str) -> bool:
    """Whether two pages are the same but for the ids matplotlib draws at random in each SVG
    (markers, clip paths: a letter and ten hex digits)."""
    ids = re.compile(r"\b([mp])[0-9a-f]{10}\b")
    return ids.sub(r"\1-id", one) == ids.sub(r"\1-id", other)


def test_a_missing_or_empty_folder_is_one_line(tmp_path):
    with pytest.raises(InputError, match="results folder not found: .*nowhere"):
        bioplaus_bench.load(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no records in .*empty"):
        bioplaus_bench.load(tmp_path / "empty")


# --- the run side: bioplaus_bench.run(suite, ...) ----------------------------------------------


def test_run_gives_this_runs_records_and_the_table_bench_run_prints(tmp_path):
    from .helpers import TINY_SUITE, write

    suite = write(tmp_path / "tiny.yaml", TINY_SUITE)
    results = bioplaus_bench.run(suite, out=tmp_path / "api", only=["bp", "dfa"],
                                 progress="log")
    assert results.folder == tmp_path / "api"
    assert results.outcome.statuses == {"ok": 4} and results.outcome.cached == 0
    assert not results.outcome.failed
    assert sorted(zip(results.records.entry, results.records.seed, strict=True)) == [
        ("bp", 0), ("bp", 1), ("dfa", 0), ("dfa", 1)]
    # The very records on disk, and the table `bench run` prints for the same cells.
    on_disk = records(tmp_path / "api")
    assert [r.to_json() for r in results.own_records] == [
        on_disk[f"teacher/{entry}/seed-{seed}.json"] for entry in ("bp", "dfa") for seed in (0, 1)]
    cli = invoke("run", suite, "--out", tmp_path / "cli", "--only", "bp,dfa", "--quiet")
    assert cli.exit_code == 0, cli.output
    assert cli.stdout == results.table() + "\n"
    # Run again: every cell is reused, the records are the same.
    again = bioplaus_bench.run(suite, out=tmp_path / "api", progress="log")
    assert again.outcome.cached == 4 and again.outcome.statuses == {"ok": 4}
    assert [r.to_json() for r in again.own_records] == [r.to_json() for r in results.own_records]


def test_run_keeps_only_this_runs_cells(tmp_path):
    """A record of another protocol in the folder (here: 3 epochs) is not of this run."""
    from .helpers import TINY_SUITE, write

    suite = write(tmp_path / "tiny.yaml", TINY_SUITE)
    bioplaus_bench.run(suite, out=tmp_path / "out", only=["bp"], only_seeds=[0], epochs=3,
                       progress="log")
    results = bioplaus_bench.run(suite, out=tmp_path / "out", only=["dfa"], only_seeds=[1],
                                 progress="log")
    cells = results.records[["entry", "seed", "epochs"]]
    assert cells.values.tolist() == [["dfa", 1, 2]]
    assert len(bioplaus_bench.load(tmp_path / "out").records) == 2


def test_only_cells_runs_those_cells_in_their_order(tmp_path):
    """A share of a suite chosen cell by cell (the reference campaign's missing cells, cheapest
    first): only those run, in that order, at the suite's protocol."""
    from .helpers import TINY_SUITE, write

    suite = write(tmp_path / "tiny.yaml", TINY_SUITE)
    results = bioplaus_bench.run(suite, out=tmp_path / "out", progress="log",
                                 only_cells=[("teacher", "dfa", 1), ("teacher", "bp", 0)])
    assert [(r.algorithm, r.seed) for r in results.outcome.in_order()] == [("dfa", 1), ("bp", 0)]
    assert sorted(records(tmp_path / "out")) == ["teacher/bp/seed-0.json",
                                                 "teacher/dfa/seed-1.json"]
    assert all(r.paper_protocol for r in results.own_records)


def test_run_refuses_bad_input_in_one_line_before_any_cell_runs(tmp_path):
    from .helpers import TINY_SUITE, write

    suite = write(tmp_path / "tiny.yaml", TINY_SUITE)
    with pytest.raises(InputError, match=r"--only-seeds: not among the suite's seeds \(5\)"):
        bioplaus_bench.run(suite, out=tmp_path / "out", only_seeds=[5])
    with pytest.raises(InputError, match="only_cells: teacher/bp/5 is not among the cells "
                       "chosen; expected"):
        bioplaus_bench.run(suite, out=tmp_path / "out", only_cells=[("teacher", "bp", 5)])
    with pytest.raises(InputError, match="progress: expected 'auto', 'live', 'log'"):
        bioplaus_bench.run(suite, out=tmp_path / "out", progress="loud")
    with pytest.raises(InputError, match="cannot read suite"):
        bioplaus_bench.run(tmp_path / "missing.yaml")
    assert not (tmp_path / "out").exists()  # refused before the folder is touched


def test_ctrl_c_in_a_run_says_what_is_kept(tmp_path, monkeypatch):
    from bioplaus_bench.errors import RunInterrupted
    from bioplaus_bench.execution.executors import RunContext

    from .helpers import TINY_SUITE, write

    suite = write(tmp_path / "tiny.yaml", TINY_SUITE)
    execute = RunContext.execute
    started = []

    def second_cell_interrupted(self, cell, index=None):
        started.append(cell)
        if len(started) == 2:
            raise KeyboardInterrupt
        return execute(self, cell, index)

    monkeypatch.setattr(RunContext, "execute", second_cell_interrupted)
    with pytest.raises(RunInterrupted) as stopped:
        bioplaus_bench.run(suite, out=tmp_path / "out", only=["bp"], progress="log")
    assert (stopped.value.finished, stopped.value.total, stopped.value.terminated) == (
        1, 2, False)
    assert str(stopped.value) == (
        f"1 of 2 cells have records in {tmp_path / 'out'}; the same run again resumes "
        "(running cells continue from their last epoch)")


def test_run_is_the_function_even_after_the_execution_layer_is_imported():
    import bioplaus_bench.execution.training  # noqa: F401
    from bioplaus_bench.suite.running import run

    assert bioplaus_bench.run is run
