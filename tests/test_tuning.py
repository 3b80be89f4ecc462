"""The tuning protocol (`bench tune` with a suite's `tuning:` budget and its entries' `search:`
spaces): two methods tuned under one tiny budget on the generated teacher task, resumed, a study
of another protocol refused, pruning, and the tuned suite with its provenance in records and
tables."""

import hashlib
import math
import shutil
from pathlib import Path

import pytest
import yaml

from bioplaus_bench.execution import training
from bioplaus_bench.execution.executors import execute_cell
from bioplaus_bench.execution.inputs import with_inputs
from bioplaus_bench.execution.setup import Environment
from bioplaus_bench.registry import load_registry
from bioplaus_bench.results.report import records_frame, render, summarise
from bioplaus_bench.suite import load_suite

from .helpers import TINY_SUITE, invoke, write

optuna = pytest.importorskip("optuna", reason="optuna is not installed "
                                              "(pip install 'bioplaus-bench[tune]')")

from bioplaus_bench.suite.document import Tuned  # noqa: E402  (after the optuna check)
from bioplaus_bench.suite.fragments import fragment_yaml  # noqa: E402
from bioplaus_bench.suite.studies import (  # noqa: E402
    STUDY_NAME,
    PruningRule,
    StudyPlan,
    TrialLink,
    open_study,
)
from bioplaus_bench.suite.tune import StudyResult, plan, tune, tuned_document  # noqa: E402

BUDGET = """\
tuning:
  trials: 3
  epochs: 2
  subset: 48
  seeds: 2
  sampler_seed: 5
  pruning: {rule: median, warmup_epochs: 1, startup_trials: 1}
"""
# The tiny suite with the budget: BP with the paper's settings, DFA and FA searched.
SUITE = TINY_SUITE.replace("name: tiny", "name: tuning").replace(
    "datasets:", BUDGET + "datasets:").replace("  dfa:\n", "    origin: paper\n  dfa:\n") + """\
    search:
      optimizer.lr: {low: 1.0e-4, high: 1.0e-1, log: true}
  fa:
    algorithm: feedback-alignment
    optimizer: {lr: 1.0e-3, betas: [0.9, 0.999], eps: 1.0e-8}
    search:
      optimizer.lr: {low: 1.0e-4, high: 1.0e-1, log: true}
      params.feedback_scale: {low: 0.5, high: 2.0}
"""
REGISTRY = load_registry()


def study_of(path):
    return optuna.load_study(study_name=STUDY_NAME, storage=f"sqlite:///{path}")


@pytest.fixture(scope="module")
def tuned(tmp_path_factory):
    """The suite tuned once: (suite file, results folder, the command's result)."""
    folder = tmp_path_factory.mktemp("tuned")
    suite = write(folder / "tuning.yaml", SUITE)
    result = invoke("tune", suite, "--out", folder / "r")
    assert result.exit_code == 0, result.output
    return suite, folder / "r", result


def test_every_searched_method_is_tuned_under_the_one_budget(tuned):
    _, out, result = tuned
    for entry in ("dfa", "fa"):
        study = study_of(out / "tuning" / "teacher" / f"{entry}.db")
        assert len(study.trials) == 3
        assert f"teacher/{entry}: 0 of 3 trials finished earlier; running 3" in result.stderr
    assert not (out / "tuning" / "teacher" / "bp.db").exists()  # no search space: not tuned
    # The printed suite is the written one.
    written = out / "tuning" / "tuning-tuned.yaml"
    assert result.stdout == written.read_text()
    assert f"wrote {written}" in result.stderr


def test_the_written_suite_loads_with_the_tuned_values_and_their_provenance(tuned):
    _, out, _ = tuned
    suite = load_suite(out / "tuning" / "tuning-tuned.yaml", REGISTRY)
    assert suite.name == "tuning-tuned"
    cells = {c.algorithm_id: c for c in suite.cells() if c.seed == 0}
    for entry in ("dfa", "fa"):
        path = out / "tuning" / "teacher" / f"{entry}.db"
        study = study_of(path)
        best = study.best_trial
        cell = cells[entry]
        assert cell.settings.optimizer.lr == best.params["optimizer.lr"]
        assert cell.settings.optimizer.betas == (0.9, 0.999)  # the entry's own, kept
        origin = cell.settings_origin
        assert origin["origin"] == "tuned"
        assert origin["values"] == best.params
        assert origin["study"] == str(path)
        assert origin["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
        assert (origin["trial"], origin["validation_error"]) == (best.number, best.value)
        assert origin["budget"] == {"trials": 3, "epochs": 2, "subset": 48, "seeds": 2,
                                    "sampler_seed": 5, "pruning": {
                                        "rule": "median", "warmup_epochs": 1,
                                        "startup_trials": 1, "reduction_factor": 3}}
        assert set(origin["search"]) == set(suite.algorithms[entry].search)
    assert cells["fa"].params.feedback_scale == study_of(
        out / "tuning" / "teacher" / "fa.db").best_params["params.feedback_scale"]
    assert cells["bp"].settings_origin == {"origin": "paper"}
    assert cells["bp"].config() == next(  # an entry without a search is the suite's as it was
        c for c in load_suite(tuned[0], REGISTRY).cells() if c.key == cells["bp"].key).config()


def test_the_objective_is_the_mean_validation_error_of_the_budgets_seeds(tuned):
    """Each trial is scored by its records' validation error (never the test error): the best
    trial's cells, run again as `bench run` runs cells, give exactly the study's value."""
    _, out, _ = tuned
    suite = load_suite(out / "tuning" / "tuning-tuned.yaml", REGISTRY)
    cells = suite.cells(seeds=2, only=["dfa"], epochs=2, subset=48)
    records = [execute_cell(c, REGISTRY, Environment(), None, False)
               for c in with_inputs(cells, REGISTRY, Environment().data)]
    study = study_of(out / "tuning" / "teacher" / "dfa.db")
    errors = [r.validation_error() for r in records]
    assert study.best_value == pytest.approx(sum(errors) / 2, rel=1e-12)
    assert study.best_trial.user_attrs["validation_errors"] == pytest.approx(errors, rel=1e-12)
    assert study.best_trial.user_attrs["config_hashes"] == [r.config_hash for r in records]
    tests = [r.final["test_loss"] for r in records]
    assert not math.isclose(study.best_value, sum(tests) / 2)


def test_a_tuned_suites_tables_say_how_each_methods_settings_were_obtained(tuned, tmp_path):
    _, out, _ = tuned
    ran = invoke("run", out / "tuning" / "tuning-tuned.yaml", "--out", tmp_path / "r",
                 "--seeds", "1", "--epochs", "1", "--quiet")
    assert ran.exit_code == 0, ran.output
    text = invoke("table", tmp_path / "r").stdout
    assert ("Settings: BP: paper; DFA, FA: tuned (3 trials, 2 epochs, 48 training samples, "
            "2 seeds, TPE seed 5, median pruning).") in text
    header, *rows = invoke("table", tmp_path / "r", "--format", "csv").stdout.splitlines()
    column = header.split(",").index("settings_origin")
    assert [row.split(",")[column] for row in rows][0] == "paper"
    assert invoke("report", tmp_path / "r").exit_code == 0
    assert "Settings: BP: paper; DFA, FA: tuned (3 trials" in (tmp_path / "r" / "report.html"
                                                                ).read_text()


def test_records_that_do_not_state_their_settings_keep_their_caption():
    record = {"dataset": "d", "dataset_label": "D", "algorithm": "bp", "algorithm_name": "bp",
              "label": "BP", "task": "regression", "seed": 0, "status": "ok", "order": [0, 0],
              "config": {"dataset": {"protocol": {"epochs": 1}}}, "final": {"test_loss": 1.0}}
    assert "Settings" not in render(summarise(records_frame([record])))


def test_entries_written_through_one_yaml_alias_are_tuned_apart(tmp_path):
    """fa_family.yaml shares one entry among several (`usf: *bp_protocol`): each keeps its own
    tuned values in the written suite."""
    text = SUITE.replace("  fa:\n", "  fa: &shared\n") + "  fa2: *shared\n"
    suite = load_suite(write(tmp_path / "s.yaml", text), REGISTRY)
    found = [StudyResult(StudyPlan("teacher", entry, tmp_path / f"{entry}.db", [], {}, {}),
                         Tuned(suite.tuning, suite.algorithms[entry].search,
                               {"optimizer.lr": lr}, str(tmp_path / f"{entry}.db"), "0" * 64,
                               0, 0.5))
             for entry, lr in (("fa", 0.01), ("fa2", 0.02))]
    written = write(tmp_path / "tuned.yaml", fragment_yaml(tuned_document(suite, found)))
    cells = {c.algorithm_id: c for c in load_suite(written, REGISTRY).cells() if c.seed == 0}
    assert (cells["fa"].settings.optimizer.lr, cells["fa2"].settings.optimizer.lr) == (0.01, 0.02)
    assert cells["fa2"].settings_origin["values"] == {"optimizer.lr": 0.02}
    assert cells["dfa"].settings_origin == {}  # searched, not tuned in this call: not stated


def test_a_killed_tune_resumes_with_its_finished_trials_kept(tmp_path):
    suite = write(tmp_path / "s.yaml", SUITE)
    args = ["tune", suite, "--only", "dfa", "--out", tmp_path / "r"]
    assert invoke(*args, "--trials", "2").exit_code == 0
    path = tmp_path / "r" / "tuning" / "teacher" / "dfa.db"
    before = [(t.params, t.value, t.datetime_complete) for t in study_of(path).trials]
    # A kill in the middle of the third trial leaves it running in the study.
    running = study_of(path).ask({"optimizer.lr": optuna.distributions.FloatDistribution(
        1e-4, 1e-1, log=True)})
    resumed = invoke(*args, "--trials", "3")
    assert resumed.exit_code == 0, resumed.output
    assert ("teacher/dfa: trial 2 was interrupted; its values are tried again, from the "
            "last epoch each seed finished") in resumed.stderr
    assert "teacher/dfa: 2 of 3 trials finished earlier; running 1" in resumed.stderr
    trials = study_of(path).trials
    assert [(t.params, t.value, t.datetime_complete) for t in trials[:2]] == before
    assert trials[2].state == optuna.trial.TrialState.FAIL
    assert trials[3].params == running.params and trials[3].state.is_finished()
    assert len({t.params["optimizer.lr"] for t in trials[:2]} | {running.params[
        "optimizer.lr"]}) == 3  # the resumed sampler does not repeat values


@pytest.mark.parametrize("killed_in, kept", [
    ((0, 2), [(0, 1)]),  # the first seed's second epoch: its epoch-1 checkpoint is kept
    ((1, 2), [(0, 1), (0, 2), (0, 3), (1, 1)]),  # the second seed's: the first seed's whole run
])
def test_a_trial_killed_mid_way_resumes_at_its_last_epoch(tmp_path, monkeypatch, killed_in,
                                                          kept):
    """Killed in a seed's second epoch, a trial is run again from its seeds' checkpoints: no
    epoch is trained twice, the study gets the trial's whole curve (of the first seed, restored
    finished or not), and the result is an unbroken trial's, to the bit."""
    suite = load_suite(write(tmp_path / "s.yaml", SUITE.replace("epochs: 2\n  subset",
                                                                 "epochs: 3\n  subset")), REGISTRY)
    trained, kill = [], [killed_in]

    def training_epoch(engine, runs, epoch, active, out_of_time):
        if (runs[0].cell.seed, epoch) in kill:
            kill.clear()
            raise KeyboardInterrupt
        trained.append((runs[0].cell.seed, epoch))
        return real_training_epoch(engine, runs, epoch, active, out_of_time)

    real_training_epoch = training._training_epoch
    monkeypatch.setattr(training, "_training_epoch", training_epoch)

    def search(out, log=lambda line: None):
        [study_plan] = plan(suite, REGISTRY, out, Environment(), only=["dfa"])
        open_study(study_plan, suite.tuning, REGISTRY.get("dfa").cls).enqueue_trial(
            {"optimizer.lr": 0.01})
        return tune(suite, REGISTRY, out, only=["dfa"], trials=1, log=log), study_plan

    with pytest.raises(KeyboardInterrupt):
        search(tmp_path / "r")
    checkpoints = tmp_path / "r" / "tuning" / "teacher" / "dfa.checkpoints"
    assert len(list(checkpoints.glob("*.ckpt"))) == len({seed for seed, _ in kept})
    stale = write(checkpoints / f"{'0' * 16}.ckpt", "of a trial of other code, killed")
    assert trained == kept
    lines: list[str] = []
    [resumed], study_plan = search(tmp_path / "r", lines.append)
    assert ("teacher/dfa: trial 0 was interrupted; its values are tried again, from the "
            "last epoch each seed finished") in lines
    assert trained == [(0, 1), (0, 2), (0, 3), (1, 1), (1, 2), (1, 3)]
    killed, again = study_of(study_plan.path).trials[:2]
    assert killed.state == optuna.trial.TrialState.FAIL
    assert sorted(again.intermediate_values) == [1, 2, 3]
    assert killed.intermediate_values.items() <= again.intermediate_values.items()
    assert not stale.exists() and not checkpoints.exists()  # the trial told, nothing is left
    trained.clear()
    [unbroken], other = search(tmp_path / "unbroken")
    assert len(trained) == 6
    assert study_of(other.path).trials[0].intermediate_values == again.intermediate_values
    assert unbroken.tuned.validation_error == resumed.tuned.validation_error


@pytest.mark.parametrize("override, key, made, now", [
    ("tuning.epochs=3", "tuning.epochs", "2", "3"),
    ("tuning.subset=40", "tuning.subset", "48", "40"),
    ("tuning.seeds=1", "tuning.seeds", "[0, 1]", "[0]"),
    ("tuning.pruning.warmup_epochs=0", "tuning.pruning.warmup_epochs", "1", "0"),
    ("algorithms.dfa.search={optimizer.lr: {low: 1.0e-4, high: 0.5, log: true}}",
     "search.optimizer.lr.high", "0.1", "0.5"),
    ("datasets.teacher.protocol.batch_size=8", "dataset.protocol.batch_size", "16", "8"),
    ("algorithms.dfa.optimizer.betas=[0.5, 0.999]", "optimizer.betas", "[0.9, 0.999]",
     "[0.5, 0.999]"),
])
def test_a_study_of_another_protocol_is_refused_in_one_line(tuned, tmp_path, override, key,
                                                           made, now):
    suite, out, _ = tuned
    copy = tmp_path / "r"
    shutil.copytree(out, copy)
    study = copy / "tuning" / "teacher" / "dfa.db"
    before = study.read_bytes()
    result = invoke("tune", suite, "--only", "dfa", "--out", copy, "--set", override)
    assert result.exit_code == 2, result.output
    assert result.stderr.strip().splitlines() == [
        f"error: {study}: this study was made under {key}={made}, not {key}={now}: its trials "
        "are not mixed with another protocol's; move the file away to start afresh"]
    assert study.read_bytes() == before


def test_a_file_that_is_not_a_study_is_refused_in_one_line(tmp_path):
    suite = write(tmp_path / "s.yaml", SUITE)
    study = tmp_path / "r" / "tuning" / "teacher" / "dfa.db"
    study.parent.mkdir(parents=True)
    study.write_text("not a database\n" * 100)
    result = invoke("tune", suite, "--only", "dfa", "--out", tmp_path / "r")
    assert result.exit_code == 2, result.output
    [line] = result.stderr.strip().splitlines()
    assert line.startswith(f"error: {study}: not a study of bench tune (")
    assert line.endswith("); move the file away to start afresh")


def test_a_study_is_tuned_by_one_process_at_a_time(tuned, tmp_path):
    import fcntl
    import os

    suite, finished, _ = tuned
    out = tmp_path / "r"
    shutil.copytree(finished, out)
    lock = out / "tuning" / "teacher" / "fa.db.lock"
    fd = os.open(lock, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # another tune of fa holds it
        result = invoke("tune", suite, "--out", out)
        assert result.exit_code == 2, result.output
        assert result.stderr.strip().splitlines() == [
            f"error: {out / 'tuning' / 'teacher' / 'fa.db'} is being tuned by another bench "
            "tune; wait for it to finish"]
        assert invoke("tune", suite, "--only", "dfa", "--out", out).exit_code == 0  # beside it
    finally:
        os.close(fd)


def test_more_trials_or_the_tuned_values_themselves_are_the_same_protocol(tuned, tmp_path):
    """`trials` says when to stop, and the suite's value at a searched key is replaced by each
    trial's: a tuned suite tunes on in its studies."""
    _, out, _ = tuned
    copy = tmp_path / "r"
    shutil.copytree(out, copy)
    tuned_suite = copy / "tuning" / "tuning-tuned.yaml"
    study = copy / "tuning" / "teacher" / "dfa.db"
    before = study.read_bytes()
    result = invoke("tune", tuned_suite, "--only", "dfa", "--out", copy)
    assert result.exit_code == 0, result.output
    assert "teacher/dfa: all 3 trials finished earlier" in result.stderr
    assert study.read_bytes() == before  # so its digest in the tuned suite stays true


def test_pruning_stops_a_trial_worse_than_the_median_after_its_warm_up(tmp_path):
    suite = load_suite(write(tmp_path / "s.yaml", SUITE), REGISTRY)
    budget = suite.tuning
    [study_plan, _] = plan(suite, REGISTRY, tmp_path / "r", Environment())
    study = open_study(study_plan, budget, REGISTRY.get("dfa").cls)
    distributions = {"optimizer.lr": optuna.distributions.FloatDistribution(1e-4, 1e-1, log=True)}
    first = study.ask(distributions)
    for epoch, value in ((1, 0.5), (2, 0.4)):
        first.report(value, epoch)
    study.tell(first, 0.4)

    def stop_rule():
        trial = study.ask(distributions)
        link = TrialLink(study_plan.storage, trial._trial_id, budget, tmp_path / "checkpoints")
        rule = PruningRule(link)
        history = []

        def after_epoch(row):  # as the epoch loop calls it: with the history so far
            history.append(row)
            return rule(history)

        return after_epoch

    poor = stop_rule()
    assert not poor({"epoch": 1, "val_loss": 0.9})  # the warm-up epoch: never pruned
    assert poor({"epoch": 2, "val_loss": 0.8})  # worse than the median (0.4) at epoch 2
    good = stop_rule()
    assert not good({"epoch": 1, "val_loss": 0.9})
    assert not good({"epoch": 2, "val_loss": 0.3})
    # Classification: the error is 1 − accuracy, the lowest so far.
    better_earlier = stop_rule()
    assert not better_earlier({"epoch": 1, "val_accuracy": 0.7, "val_loss": 9.0})
    assert not better_earlier({"epoch": 2, "val_accuracy": 0.1, "val_loss": 9.0})
    # A run resumed from its checkpoint: its restored epochs are reported at its first new one.
    resumed = study.ask(distributions)
    rule = PruningRule(TrialLink(study_plan.storage, resumed._trial_id, budget, tmp_path))
    assert not rule([{"epoch": 1, "val_loss": 0.9}, {"epoch": 2, "val_loss": 0.3}])
    assert study_of(study_plan.path).trials[resumed.number].intermediate_values == {1: 0.9,
                                                                                   2: 0.3}


def test_a_tune_prunes_the_poor_trial_after_the_warm_up(tmp_path):
    """Two trials whose values are fixed beforehand: a learning rate that learns, then one
    that does not move the network. The second stops after epoch 2, its first seed only."""
    path = write(tmp_path / "s.yaml", SUITE.replace("epochs: 2\n  subset", "epochs: 4\n  subset"))
    suite = load_suite(path, REGISTRY)
    [study_plan, _] = plan(suite, REGISTRY, tmp_path / "r", Environment())
    study = open_study(study_plan, suite.tuning, REGISTRY.get("dfa").cls)
    study.enqueue_trial({"optimizer.lr": 0.05})
    study.enqueue_trial({"optimizer.lr": 1e-4})
    result = invoke("tune", path, "--only", "dfa", "--out", tmp_path / "r", "--trials", "2")
    assert result.exit_code == 0, result.output
    learns, stuck = study_of(study_plan.path).trials
    assert learns.state == optuna.trial.TrialState.COMPLETE
    assert sorted(learns.intermediate_values) == [1, 2, 3, 4]
    assert stuck.state == optuna.trial.TrialState.PRUNED
    assert sorted(stuck.intermediate_values) == [1, 2]
    assert stuck.user_attrs["status"] == "pruned after epoch 2"
    assert len(stuck.user_attrs["validation_errors"]) == 1  # the second seed never ran
    assert "teacher/dfa: trial 1: optimizer.lr=0.0001: pruned after epoch 2" in result.stderr


@pytest.mark.parametrize("edit, message", [
    (("trials: 3", "trials: 0"), "tuning.trials: expected a positive integer, got 0"),
    (("rule: median", "rule: medain"), "tuning.pruning.rule: expected one of 'median', "
                                       "'successive-halving', 'none', got 'medain' (did you "
                                       "mean 'median'?)"),
    (("  seeds: 2\n", "  seeds: 2\n  budget: 1\n"), "tuning.budget: unknown key"),
])
def test_a_bad_tuning_block_names_its_line(tmp_path, edit, message):
    text = SUITE.replace(*edit)
    path = write(tmp_path / "s.yaml", text)
    result = invoke("validate", path)
    assert result.exit_code == 2
    line = next(i for i, row in enumerate(text.splitlines(), 1)
                if edit[1].strip().splitlines()[-1] in row)
    assert f"s.yaml:{line}: {message}" in result.stderr, result.stderr


def test_tuned_values_the_entry_no_longer_has_are_refused(tuned, tmp_path):
    _, out, _ = tuned
    document = yaml.safe_load((out / "tuning" / "tuning-tuned.yaml").read_text())
    document["algorithms"]["dfa"]["datasets"]["teacher"]["optimizer"]["lr"] = 0.02
    path = write(tmp_path / "edited.yaml", yaml.safe_dump(document, sort_keys=False))
    result = invoke("validate", path)
    assert result.exit_code == 2
    assert "algorithms.dfa.tuned.teacher.values.optimizer.lr: the entry has 0.02 on teacher, " \
           "not the tuned value" in result.stderr
    document["algorithms"]["dfa"]["tuned"]["mnist"] = document["algorithms"]["dfa"]["tuned"][
        "teacher"]
    result = invoke("validate", write(tmp_path / "edited.yaml", yaml.safe_dump(document)))
    assert "algorithms.dfa.tuned.mnist: unknown dataset 'mnist'" in result.stderr


def test_a_suite_without_a_budget_or_a_search_space_says_so(tmp_path):
    no_budget = write(tmp_path / "a.yaml", SUITE.split("tuning:")[0] + "datasets:" +
                      SUITE.split("datasets:")[1])
    result = invoke("tune", no_budget, "--out", tmp_path / "r")
    assert result.exit_code == 2
    assert "no `tuning:` block" in result.stderr
    result = invoke("tune", write(tmp_path / "s.yaml", SUITE), "--only", "bp",
                    "--out", tmp_path / "r")
    assert result.exit_code == 2
    assert "no algorithm entry of bp has a `search:` space" in result.stderr


@pytest.mark.slow
def test_trials_run_side_by_side_with_jobs(tmp_path):
    suite = write(tmp_path / "s.yaml", SUITE.replace("seeds: 2\n", "seeds: 1\n"))
    result = invoke("tune", suite, "--only", "dfa", "--out", tmp_path / "r", "-j", "2")
    assert result.exit_code == 0, result.output
    trials = study_of(tmp_path / "r" / "tuning" / "teacher" / "dfa.db").trials
    assert len(trials) == 3 and all(t.state.is_finished() for t in trials)


@pytest.mark.slow
def test_trials_run_as_ray_tasks_and_report_their_epochs_to_the_pruner(tmp_path):
    """`bench tune --executor ray`: the trials are Ray tasks, two at once, and each first seed
    reports its epochs to the study file from its Ray worker."""
    ray = pytest.importorskip("ray", reason="ray is not installed (pip install 'bioplaus-bench[ray]')")
    suite = write(tmp_path / "s.yaml", SUITE.replace("seeds: 2\n", "seeds: 1\n"))
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        result = invoke("tune", suite, "--only", "dfa", "--out", tmp_path / "r", "-j", "2",
                        "--executor", "ray")
    finally:
        ray.shutdown()
    assert result.exit_code == 0, result.output
    trials = study_of(tmp_path / "r" / "tuning" / "teacher" / "dfa.db").trials
    assert len(trials) == 3 and all(t.state.is_finished() for t in trials)
    epochs = yaml.safe_load(suite.read_text())["tuning"]["epochs"]
    assert all(sorted(t.intermediate_values) == list(range(1, epochs + 1)) for t in trials
               if t.state.name == "COMPLETE")
    assert (tmp_path / "r" / "tuning" / "tuning-tuned.yaml").is_file()


CELLS_ONLY = """\
from bioplaus_bench.api import hookimpl
from bioplaus_bench.execution.executors import Executor


def run_reversed(todo, context):
    for index, cell in reversed(todo):
        context.finish(index, cell, context.execute(cell))


@hookimpl
def bioplaus_bench_executors():
    return [Executor("reversed", run_reversed, "the cells in this process, last first")]
"""


def test_an_executor_that_runs_cells_only_is_refused_for_tuning(tmp_path):
    plugin = write(tmp_path / "reversed.py", CELLS_ONLY)
    result = invoke("tune", write(tmp_path / "s.yaml", SUITE), "--only", "dfa", "--out",
                    tmp_path / "r", "--executor", "reversed", "--plugin", plugin)
    assert result.exit_code == 2
    assert "executor 'reversed' runs cells only, not tuning trials" in result.stderr
    assert not (tmp_path / "r" / "tuning" / "teacher" / "dfa.db").exists()


def test_structured_choices_such_as_adams_betas_are_searched_and_written_as_they_are(tmp_path):
    """Optuna stores plain choices only: a list of betas pairs is searched by index, and the
    tuned suite holds the pair chosen (the one the best trial ran with)."""
    choices = [[0.9, 0.999], [0.99, 0.999], [0.9, 0.99]]
    text = SUITE.replace("      params.feedback_scale: {low: 0.5, high: 2.0}\n",
                         f"      optimizer.betas: {{choices: {choices}}}\n")
    suite = write(tmp_path / "betas.yaml", text)
    result = invoke("tune", suite, "--out", tmp_path / "r", "--only", "fa")
    assert result.exit_code == 0, result.output
    best = study_of(tmp_path / "r" / "tuning" / "teacher" / "fa.db").best_trial
    assert best.params["optimizer.betas"] in range(len(choices))
    chosen = choices[best.params["optimizer.betas"]]
    cells = {c.algorithm_id: c for c in load_suite(
        tmp_path / "r" / "tuning" / "tuning-tuned.yaml", REGISTRY).cells() if c.seed == 0}
    assert cells["fa"].settings.optimizer.betas == tuple(chosen)
    assert cells["fa"].settings_origin["values"]["optimizer.betas"] == chosen
    # The trial ran with that pair: its shown values name it.
    assert f"optimizer.betas={chosen}" in best.user_attrs["shown"]


REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("suite_file", sorted((REPO / "suites").glob("*.yaml")),
                         ids=lambda path: path.name)
def test_every_committed_tuned_value_is_its_committed_study_s_best_trial(suite_file):
    """Tuned values reach ``suites/`` by a person's copy: each must be the best trial of the
    study it names, that study the committed file of its digest, and the entry's own settings
    for that dataset the tuned values (a categorical is stored as its index into the choices)."""
    document = yaml.safe_load(suite_file.read_text())
    for name, entry in document["algorithms"].items():
        for dataset, origin in (entry.get("tuned") or {}).items():
            path = REPO / origin["study"]
            assert hashlib.sha256(path.read_bytes()).hexdigest() == origin["sha256"], path
            best = study_of(path).best_trial
            assert (best.number, best.value) == (origin["trial"], origin["validation_error"])
            found = {key: origin["search"][key]["choices"][value]
                     if "choices" in origin["search"][key] else value
                     for key, value in best.params.items()}
            assert found == origin["values"], name
            settings = entry["datasets"][dataset]
            for key, value in origin["values"].items():
                group, field = key.split(".")
                assert settings[group][field] == value, f"{name}: {key}"
