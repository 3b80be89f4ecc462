"""The frictions a first plugin author met (issue 36, item 5): a quiet run that says it is
alive, stacked seeds' wall time labelled as the stack's, no wrapping of output that is not a
terminal, a strictly positive β for nudging rules, and the paper's numbers and the caption only
where they describe the cells beside them."""

import sys
import typing
from types import SimpleNamespace

import pytest
from bioplaus_bench_plugins.equilibrium_propagation import EPParams
from bioplaus_bench_plugins.predictive_coding import PCParams

from bioplaus_bench.errors import SuiteError
from bioplaus_bench.execution.progress import LogReporter
from bioplaus_bench.results.page import build
from bioplaus_bench.results.record import Record
from bioplaus_bench.results.reference import add_reference_statistics, combined_frame
from bioplaus_bench.results.report import records_frame, render, summarise
from bioplaus_bench.spec.schema import Source, coerce_dataclass

from .helpers import PLUGIN, TINY_SUITE, invoke, records, write

# --- a strictly positive β for nudging rules -------------------------------------------------


@pytest.mark.parametrize("params, field", [(EPParams, "beta"), (PCParams, "output_weight")])
def test_a_nudging_beta_is_strictly_positive_and_says_why(params, field):
    from bioplaus_bench.api import Beta, NudgingBeta

    assert typing.get_type_hints(params, include_extras=True)[field] == NudgingBeta
    for value in (0, 0.0, -0.5, float("inf")):
        with pytest.raises(SuiteError, match=f"params.{field}: expected a positive finite "
                           r"nudging strength \(the rule divides by it\)"):
            coerce_dataclass({field: value}, params, ("params",), Source("s.yaml"))
    assert getattr(coerce_dataclass({field: 1e-3}, params, ("params",), Source("s.yaml")),
                   field) == 1e-3
    # Adam's betas keep [0, 1): 0 is a valid decay there.
    assert typing.get_args(Beta)[1].test(0.0)
    assert not typing.get_args(NudgingBeta)[1].test(0.0)



def test_the_inference_template_and_the_guides_example_declare_a_nudging_beta(tmp_path,
                                                                              monkeypatch):
    """Where a first nudging rule starts from: both divide by their β."""
    import importlib.util

    from bioplaus_bench.kit.scaffold import PluginNames, files

    from .test_plugins_guide import examples

    code = files(PluginNames.from_name("rule"), "inference")["bioplaus_rule/algorithm.py"]
    sources = {"template": code, "guide": examples()["energy_pc.py"]}
    for where, source in sources.items():
        path = tmp_path / f"nudged_{where}.py"
        path.write_text(source)
        spec = importlib.util.spec_from_file_location(path.stem, path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        monkeypatch.setitem(sys.modules, path.stem, module)  # as an import would: dataclasses
        spec.loader.exec_module(module)
        params = next(value for name, value in vars(module).items() if name.endswith("Params"))
        with pytest.raises(SuiteError, match="output_weight: expected a positive finite nudging"):
            coerce_dataclass({"output_weight": 0}, params, ("params",), Source("s.yaml"))

# --- no wrapping when the output is not a terminal ---------------------------------------------


def unbroken(text: str, output: str) -> bool:
    """Whether ``text`` (longer than 80 columns) stands whole on one line of ``output``."""
    assert len(text) > 80
    return any(text in line for line in output.splitlines())


def test_output_to_a_file_or_pipe_is_not_wrapped(tmp_path):
    deep = tmp_path / ("a-folder-with-a-long-name-" * 3) / "and-another-one-below-it"
    deep.mkdir(parents=True)
    suite = write(deep / "tiny.yaml", TINY_SUITE)
    validated = invoke("validate", suite)
    assert validated.exit_code == 0, validated.output
    assert unbroken(f"{suite}: ok: 1 datasets, 2 algorithms, 2 seeds, 4 cells (0 skipped)",
                    validated.stdout)

    out = deep / "results"
    run = invoke("run", suite, "--out", out, "--quiet")
    assert run.exit_code == 0, run.output
    assert unbroken(f"4 cells (4 ok; 0 from earlier runs); records in {out}", run.stderr)
    table = invoke("table", out)
    assert unbroken("Test loss (MSE) at the epoch of lowest validation loss. Mean ± SD over 2 "
                    "seeds (n: seeds that finished); best non-BP method in bold.", table.stdout)
    page = deep / "report-with-a-long-name-too.html"
    reported = invoke("report", out, "--out", page)
    assert reported.exit_code == 0, reported.output
    assert unbroken(f"wrote {page}", reported.stderr)
    plugin = write(deep / "sign_bp.py", PLUGIN)
    checked = invoke("check-plugin", plugin)
    assert checked.exit_code == 0, checked.output
    assert unbroken(f"checking sign-bp (Sign BP) from {plugin} [file]", checked.stdout)
    missing = invoke("table", deep / "no-such-results-folder")
    assert missing.exit_code != 0 and str(deep / "no-such-results-folder") in missing.stderr


def test_the_plugin_list_keeps_each_row_on_one_line():
    from bioplaus_bench.registry import load_registry

    listed = invoke("list")
    assert listed.exit_code == 0, listed.output
    lines = listed.stdout.splitlines()
    for info in load_registry().algorithms.values():
        row = next((line for line in lines if f" {info.name} " in line), None)
        assert row is not None and info.cls.capabilities.describe() in row, info.name


# --- the paper's numbers only beside cells of its protocol; captions of the user's suite -------


def record(algorithm, seed, value, *, epochs=100, deviations=(), dataset="mnist"):
    """A finished MNIST record of the paper's ids (its Table 1 has BP: 1.98 ± 0.14)."""
    labels = {"bp": "BP", "dfa": "DFA", "my-rule": "My rule"}
    return Record.from_json({
        "dataset": dataset, "dataset_label": "MNIST", "algorithm": algorithm,
        "algorithm_name": algorithm, "label": labels[algorithm], "seed": seed, "status": "ok",
        "task": "classification", "order": [0, list(labels).index(algorithm)],
        "config": {"dataset": {"protocol": {"epochs": epochs}}},
        "final": {"test_error": value}, "deviations": list(deviations),
        "paper_protocol": not deviations})


def column(algorithm, seeds, **options):
    return [record(algorithm, s, 0.0198 + 0.001 * s, **options) for s in range(seeds)]


def table(records, reference=None, compare=True):
    frame = records_frame(records) if reference is None else combined_frame(records, reference)
    summary = summarise(frame)
    if reference is not None:
        summary = add_reference_statistics(summary, frame)
    return summary.set_index("algorithm"), render(summary, "markdown", compare=compare)


@pytest.mark.parametrize("options, why", [
    ({"epochs": 2}, "2 epochs"),
    ({"deviations": ("trained on 1000 samples",)}, "trained on 1000 samples"),
    ({"epochs": 3, "deviations": ("3 instead of 100 epochs",)}, "3 epochs; 3 instead of 100 epochs"),
])
def test_the_papers_numbers_stand_only_beside_cells_of_its_protocol(options, why):
    summary, text = table(column("bp", 3, **options))
    assert summary.paper_mean.isna().all() and summary.paper_delta_sd.isna().all()
    assert "1.98 ± 0.14" not in text
    assert ("Not beside the paper's numbers, which are of its protocol (100 epochs, no "
            f"quick-trial override): MNIST / BP ({why}).") in text
    # mixed in with records of the paper's protocol, they are not its cells either
    summary, text = table(column("bp", 3) + [record("bp", 5, 0.02, **options)])
    assert summary.paper_mean.isna().all() and "1.98 ± 0.14" not in text
    # the paper's own protocol keeps them
    summary, text = table(column("bp", 3))
    assert summary.loc["bp"].paper_mean == 1.98 and "| 1.98 ± 0.14 |" in text
    assert "Not beside" not in text


def test_a_truncated_reference_gets_no_paper_numbers_and_the_caption_is_the_suites():
    mine = column("my-rule", 3, epochs=2)
    summary, text = table(mine, reference=column("bp", 10, epochs=2) + column("dfa", 10, epochs=2))
    assert summary.paper_mean.isna().all(), summary.paper_mean
    assert "1.98 ± 0.14" not in text and "2.17 ± 0.14" not in text
    assert "Mean ± SD over 3 seeds (n: seeds that finished)" in text
    assert "Reference rows: over 10 seeds of the reference folder." in text
    assert "within 2 epochs" in text

    page = build(mine, summary=summary.reset_index(), reference="ref")
    assert '<span class="paper">' not in page
    assert "Mean ± SD over 3 seeds" in page and "over 10 seeds of the reference folder" in page
    assert "stand beside no other cells: MNIST / BP (reference) (2 epochs)" in page

    # a reference of the paper's protocol keeps its numbers, beside its own rows only
    summary, text = table(column("my-rule", 2), reference=column("bp", 10))
    assert summary.loc["ref:bp"].paper_mean == 1.98
    assert summary.paper_mean.notna().sum() == 1
    assert "Mean ± SD over 2 seeds" in text and "Reference rows: over 10 seeds" in text


# --- stacked seeds' wall time is labelled as the stack's ---------------------------------------


def test_the_wall_time_of_stacked_seeds_is_labelled_as_a_share_of_the_stack(tmp_path, tiny):
    stacked = invoke("run", tiny, "--out", tmp_path / "stacked", "--quiet", "--vectorize-seeds",
                     "--seed-chunk", "2")
    assert stacked.exit_code == 0, stacked.output
    serial = invoke("run", tiny, "--out", tmp_path / "serial", "--quiet")
    assert serial.exit_code == 0, serial.output
    for name, written in records(tmp_path / "stacked").items():
        assert written["stacked_seeds"] == 2, name
        assert list(written)[list(written).index("wall_time") + 1] == "stacked_seeds"
        assert Record.from_json(written).stacked_seeds == 2
    finished = [line for line in stacked.stderr.splitlines() if ": ok (" in line]
    assert len(finished) == 4 and all(
        line.endswith(" s (an equal share of 2 seeds trained stacked))") for line in finished), \
        stacked.stderr
    for name, written in records(tmp_path / "serial").items():
        assert "stacked_seeds" not in written, name
    assert "trained stacked" not in serial.stderr


# --- a quiet run says that it is alive ---------------------------------------------------------


class Clock:
    """A clock the test moves: no sleeping."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


CELL = SimpleNamespace(key="mnist/my-pc/seed-0", dataset_id="mnist", algorithm_id="my-pc")


def test_a_quiet_run_says_every_few_minutes_that_it_is_alive(capsys):
    clock = Clock()
    reporter = LogReporter(heartbeat=180, clock=clock)
    reporter.start(10)
    try:
        reporter.cell_started(CELL, 0, stacked=10)
        clock.now += 60
        reporter.epoch(CELL, "epoch", 1, 100)
        assert capsys.readouterr().err == ""  # not yet
        clock.now += 125
        reporter.epoch(CELL, "epoch", 2, 100)
        assert capsys.readouterr().err == ("still running: mnist/my-pc, 10 seeds vectorised, "
                                           "epoch 2/100; 0 of 10 cells done, 3 min 05 s "
                                           "elapsed\n")
        clock.now += 100
        reporter.epoch(CELL, "epoch", 3, 100)
        assert capsys.readouterr().err == ""  # said 100 s ago
        # an epoch longer than the interval: the timer thread's pulse says it meanwhile
        clock.now += 3 * 3600
        reporter.pulse()
        assert capsys.readouterr().err == ("still running: mnist/my-pc, 10 seeds vectorised, "
                                           "epoch 3/100; 0 of 10 cells done, 3 h 04 min "
                                           "elapsed\n")
        # any line says it too: the next is due a whole interval after a finished cell
        reporter.cell_finished(CELL, 0, "ok", "1.0 s")
        clock.now += 179
        reporter.pulse()
        assert capsys.readouterr().err == "[1/10] mnist/my-pc/seed-0: ok (1.0 s)\n"
        clock.now += 1
        reporter.pulse()  # nothing runs here that it knows of (-j N: workers report no epochs)
        assert capsys.readouterr().err == "still running; 1 of 10 cells done, 3 h 07 min elapsed\n"
        reporter.cell_started(CELL, 1)
        reporter.epoch(CELL, "feedback pre-training", 4, 6)
        assert capsys.readouterr().err == ""
        clock.now += 180
        reporter.epoch(CELL, "feedback pre-training", 5, 6)
        assert capsys.readouterr().err == ("still running: mnist/my-pc/seed-0, feedback "
                                           "pre-training 5/6; 1 of 10 cells done, 3 h 10 min "
                                           "elapsed\n")
    finally:
        reporter.close()
    assert reporter._timer is not None
    reporter._timer.join(timeout=10)
    assert not reporter._timer.is_alive()


def test_bench_run_quiet_reports_the_epochs_of_stacked_seeds(tmp_path, tiny, monkeypatch):
    from bioplaus_bench.execution import progress

    monkeypatch.setattr(progress, "LogReporter", lambda: LogReporter(heartbeat=0.0))
    run = invoke("run", tiny, "--out", tmp_path / "out", "--quiet", "--vectorize-seeds",
                 "--seed-chunk", "2")
    assert run.exit_code == 0, run.output
    for entry in ("bp", "dfa"):
        for epoch in (1, 2):
            assert (f"still running: teacher/{entry}, 2 seeds vectorised, epoch {epoch}/2; "
                    in run.stderr), run.stderr
    serial = invoke("run", tiny, "--out", tmp_path / "serial", "--quiet", "--only", "bp")
    assert "still running: teacher/bp/seed-1, epoch 2/2; 1 of 2 cells done" in serial.stderr
