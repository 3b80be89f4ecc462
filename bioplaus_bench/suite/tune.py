"""``bench tune``: the tuning protocol of a suite (docs/suites.md, "Tuning").

Every algorithm entry with a ``search:`` space is tuned on each dataset with the suite's one
``tuning:`` budget: Optuna's TPE sampler (seeded), ``trials`` trials, each of which trains the
suite's first ``seeds`` seeds for ``epochs`` epochs on ``subset`` training samples and scores the
mean validation error at the selected epoch (``Record.validation_error``; the test set is never
used to choose). A trial's cells are the suite's cells with the trial's values put in
(``trial_cell``), run by ``execute_cell`` as ``bench run`` runs any cell; each epoch's
validation error of a trial's first seed goes to Optuna's pruner, which stops a poor trial early.

Each (dataset, entry) is one study (``studies``: its file, locked while tuned, tied to its
protocol): a killed search continues where it stopped (finished trials are kept, a trial that
was running is run again with its values from its seeds' last epoch checkpoints, kept beside
the study while it runs; the budget's ``trials`` counts the total). The result
is the suite with the tuned values and, for each, where they came from (``Tuned``: the budget,
the space, the study file and its SHA-256, the best trial).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import hashlib
import json
import math
import pickle
import typing
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import InputError
from ..execution.executors import Executor, ExecutorOptions, execute_cell
from ..execution.executors.local import LOCAL
from ..execution.executors.workers import unpickled
from ..execution.inputs import with_inputs
from ..execution.setup import Environment
from ..files import open_folder
from ..model.algorithm import Algorithm
from ..registry import Registry
from ..results.protocol import flat
from ..results.record import Record
from ..spec.cell import Cell
from ..spec.schema import Path_, Source, coerce, coerce_dataclass
from .document import SearchSpace, Suite, Tuned, TuningBudget
from .fragments import fragment
from .load import read_document
from .studies import (
    PruningRule,
    StudyPlan,
    TrialLink,
    checkpoint_folder,
    open_study,
    study_lock,
    suggest,
    trial_checkpoint,
    trial_values,
)

# --- one trial's cells -----------------------------------------------------------------------

def set_items(algorithm: str, values: dict[str, Any]) -> list[str]:
    """``--set`` overrides that give the algorithm entry these values."""
    return [f"algorithms.{algorithm}.{key}={json.dumps(value)}" for key, value in values.items()]


def trial_cell(cell: Cell, cls: type[Algorithm], values: dict[str, Any]) -> Cell:
    """``cell`` with one trial's values (KEY.PATH of the algorithm entry -> value, as in its
    ``search:`` mapping), each checked against the type the spec declares for it, as the
    suite checks what a file says: a value the spec rejects raises ``SuiteError`` naming the
    key (the ranges themselves were checked when the suite was loaded)."""
    source, where = Source("search"), ("algorithms", cell.algorithm_id)
    settings = cell.settings
    for key, value in values.items():
        settings = _replaced(settings, key.split("."), value, where, source)
    params = coerce_dataclass(settings.params, cls.Params, (*where, "params"), source)
    return dataclasses.replace(cell, settings=settings, params=params,
                               precision=settings.precision or cell.precision)


def _replaced(node: Any, path: list[str], value: Any, where: Path_, source: Source) -> Any:
    """``node`` (a spec dataclass, or the algorithm's raw ``params`` mapping, which its Params
    class checks as a whole) with ``value`` at ``path``."""
    name, *rest = path
    at = (*where, name)
    if isinstance(node, dict):
        return {**node, name: _replaced(node.get(name, {}), rest, value, at, source)
                if rest else value}
    new = (_replaced(getattr(node, name), rest, value, at, source) if rest else
           coerce(value, typing.get_type_hints(type(node), include_extras=True)[name], at, source))
    return dataclasses.replace(node, **{name: new})


# --- the studies to tune -----------------------------------------------------------------------

def plan(suite: Suite, registry: Registry, out: Path, env: Environment, *,
         only: list[str] | None = None, datasets: list[str] | None = None) -> list[StudyPlan]:
    """The studies of the suite's entries that have a ``search:`` space (of ``only``), on its
    datasets (of ``datasets``); an InputError when there is nothing to tune or no budget."""
    budget = suite.tuning
    if budget is None:
        raise InputError(f"{suite.path}: no `tuning:` block; bench tune needs the budget every "
                         "searched entry gets (see docs/suites.md)")
    searched = [a for a, entry in suite.algorithms.items() if entry.search
                and (only is None or a in only)]
    if not searched:
        raise InputError(f"{suite.path}: no algorithm entry" + (f" of {', '.join(only)}" if only
                         else "") + " has a `search:` space (see docs/suites.md)")
    cells = suite.cells(seeds=budget.seeds, only=searched, datasets=datasets,
                        epochs=budget.epochs, subset=budget.subset, registry=registry)
    plans = []
    for entry in searched:
        for dataset in (d for d in suite.datasets if not datasets or d in datasets):
            base = [c for c in cells if (c.algorithm_id, c.dataset_id) == (entry, dataset)]
            if base[0].skip_reason:
                continue
            if base[0].dataset.protocol.validation is None:
                raise InputError(f"{suite.path}: datasets.{dataset}.protocol.validation is null; "
                                 "tuning selects on a validation split, never on the test set")
            base = with_inputs(base, registry, env.data)
            spaces = suite.algorithms[entry].search
            protocol = _protocol(budget, spaces, base, registry.get(base[0].algorithm).cls)
            plans.append(StudyPlan(dataset, entry, out / "tuning" / dataset / f"{entry}.db", base,
                                   spaces, protocol))
    if not plans:
        raise InputError(f"{suite.path}: nothing to tune: {', '.join(searched)} "
                         f"{'is' if len(searched) == 1 else 'are'} skipped on every dataset chosen")
    return plans


def _protocol(budget: TuningBudget, spaces: dict[str, SearchSpace], cells: list[Cell],
              cls: type[Algorithm]) -> dict[str, str]:
    """What a study's trials depend on, as flat keys: the budget (but ``trials``, which only
    says when to stop), the seeds, the space, and the trial cell's settings with the searched
    values at a fixed point (so that the suite's own values there, tuned or not, do not
    count). The code is checked apart (``open_study``): an edit of the same
    algorithm keeps its study."""
    canonical = trial_cell(cells[0], cls, {key: _first_value(s) for key, s in spaces.items()})
    settings = canonical.config()
    settings.pop("seed")
    settings.pop("inputs", {}).pop("code", None)
    settings["data"] = cells[0].inputs.get("data")
    tuning = {key: value for key, value in dataclasses.asdict(budget).items() if key != "trials"}
    tuning["seeds"] = [cell.seed for cell in cells]
    return {**_flat(tuning, "tuning"), **_flat({k: dataclasses.asdict(s) for k, s in
                                                spaces.items()}, "search"), **_flat(settings, "")}


def _flat(value: Any, prefix: str) -> dict[str, str]:
    """Every leaf's path (``results.protocol.flat``, the one flattening) and its value as JSON
    text, which a study's user attributes hold."""
    return {path: json.dumps(leaf, sort_keys=True) for path, leaf in flat(value, prefix)}


def _first_value(space: SearchSpace) -> Any:
    return space.choices[0] if space.choices is not None else space.low


# --- running trials ----------------------------------------------------------------------------

def run_trial(cells: list[Cell], plugins: Registry | list[str], env: Environment,
              link: TrialLink) -> list[Record]:
    """A trial's cells, one seed after the other, the first reporting to the pruner; a seed
    pruned or not ``ok`` ends the trial (its records so far are returned)."""
    records = []
    for index, cell in enumerate(cells):
        stop = PruningRule(link) if index == 0 else None
        record = execute_cell(cell, plugins, env, link.checkpoint(cell), False, stop=stop)
        if stop is not None and record.history:  # restored finished, it ran no epoch here
            stop.report(record.history)
        records.append(record)
        if record.status != "ok" or record.pruned_at_epoch is not None:
            break
    return records


def run_pickled_trial(payload: bytes, plugin_files: list[str], env: Environment,
                      link: TrialLink) -> list[Record]:
    """A task's entry point (an executor's ``TaskPool``): the trial's cells, pickled by this
    search's parent process, unpickled as every worker does (``workers.unpickled``)."""
    return run_trial(unpickled(payload, plugin_files), plugin_files, env, link)


@dataclass(frozen=True)
class StudyResult:
    plan: StudyPlan
    tuned: Tuned


def tune(suite: Suite, registry: Registry, out: Path, *, only: list[str] | None = None,
         datasets: list[str] | None = None, trials: int | None = None,
         executor: Executor | None = None, options: ExecutorOptions = ExecutorOptions(),
         env: Environment | None = None, plugin_files: Sequence[str] = (),
         log: Callable[[str], None] = print) -> list[StudyResult]:
    """Tune every searched entry of the suite on each dataset under its ``tuning:`` budget
    (``trials`` overrides the budget's count, which only says when to stop); return each
    study's best trial as the provenance of its values. The trials run through ``executor``'s
    tasks, ``options.jobs`` at once [default: the local executor's: in this process, or with
    jobs > 1 in worker processes]."""
    env = env or Environment()
    executor = executor or LOCAL
    if executor.tasks is None:
        raise InputError(f"executor '{executor.name}' runs cells only, not tuning trials (it "
                         "has no tasks); use local or ray")
    plans = plan(suite, registry, out, env, only=only, datasets=datasets)
    assert suite.tuning is not None  # plan() requires it
    budget = suite.tuning if trials is None else dataclasses.replace(suite.tuning, trials=trials)
    with contextlib.ExitStack() as held:
        for p in plans:
            held.enter_context(study_lock(p.path))
        studies = [(p, open_study(p, budget, registry.get(p.cells[0].algorithm).cls))
                   for p in plans]
        return [StudyResult(p, _search(p, study, budget, registry, env, executor, options,
                                       list(plugin_files), log)) for p, study in studies]


def _search(plan: StudyPlan, study: Any, budget: TuningBudget, registry: Registry,
            env: Environment, executor: Executor, options: ExecutorOptions,
            plugin_files: list[str], log: Callable[[str], None]) -> Tuned:
    from optuna.trial import TrialState

    name = f"{plan.dataset}/{plan.entry}"
    checkpoints = checkpoint_folder(plan)
    try:  # created here, under the study's lock, and never through a link
        with open_folder(checkpoints, inside=plan.path.parent):
            pass
    except OSError as error:
        raise InputError(f"cannot write the trials' checkpoints in {checkpoints}: "
                         f"{error.strerror or error}") from None
    # A trial left running by a killed search is failed and its values are tried again: the
    # same cells, which resume from their checkpoints.
    for stale in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        study._storage.set_trial_state_values(stale._trial_id, TrialState.FAIL)
        study.enqueue_trial(stale.params)
        log(f"{name}: trial {stale.number} was interrupted; its values are tried again, from the "
            "last epoch each seed finished")
    finished = (TrialState.COMPLETE, TrialState.PRUNED)
    done = len(study.get_trials(deepcopy=False, states=finished))
    cls = registry.get(plan.cells[0].algorithm).cls
    if done < budget.trials:
        log(f"{name}: {done} of {budget.trials} trials finished earlier; running "
            f"{budget.trials - done}")

        def start(trial: Any) -> tuple[list[Cell], TrialLink] | None:
            values = {key: suggest(trial, key, space) for key, space in plan.spaces.items()}
            trial.set_user_attr("shown", ", ".join(
                f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in values.items()))
            try:
                cells = [trial_cell(cell, cls, values) for cell in plan.cells]
            except InputError as error:  # a value the spec rejects: this trial fails
                _end(study, trial, None, f"error ({type(error).__name__}: {error})", log, name)
                return None
            return cells, TrialLink(plan.storage, trial._trial_id, budget, checkpoints)

        def ended(trial: Any, cells: list[Cell], records: list[Record] | None,
                  failure: str | None) -> None:
            _end(study, trial, records, failure, log, name)
            for cell in cells:  # told to the study: nothing of the trial is run again
                trial_checkpoint(checkpoints, cell).unlink(missing_ok=True)

        _run_trials(study, budget.trials - done, start, registry, env, executor, options,
                    plugin_files,
                    lambda trial, cells, records: ended(trial, cells, records, None),
                    lambda trial, cells, why: ended(trial, cells, None, why))
    else:
        log(f"{name}: all {budget.trials} trials finished earlier ({plan.path})")
    _remove_checkpoints(checkpoints)
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not complete:
        raise InputError(f"{plan.path}: no trial finished with a validation result "
                         f"({done} pruned or failed)")
    best = study.best_trial
    total = len(study.get_trials(deepcopy=False, states=finished))
    log(f"{name}: best trial {best.number} of {total}, validation error {best.value:.6g}")
    return Tuned(budget=dataclasses.replace(budget, trials=total), search=plan.spaces,
                 values=trial_values(best.params, plan.spaces), study=str(plan.path),
                 sha256=hashlib.sha256(plan.path.read_bytes()).hexdigest(), trial=best.number,
                 validation_error=best.value)


def _remove_checkpoints(folder: Path) -> None:
    """The trials' checkpoint folder once every trial has been told (the study's lock is held,
    so none runs): what is left is of a trial killed after it was told or of other code."""
    for leftover in [*folder.glob("*.ckpt"), *folder.glob(".*.tmp")]:
        leftover.unlink(missing_ok=True)
    with contextlib.suppress(OSError):  # kept if something else was put there
        folder.rmdir()


def _run_trials(study: Any, count: int, start: Callable[[Any], Any], registry: Registry,
                env: Environment, executor: Executor, options: ExecutorOptions,
                plugin_files: list[str], end: Callable[[Any, list[Cell], list[Record]], None],
                lost: Callable[[Any, list[Cell], str], None]) -> None:
    """Ask ``count`` trials of the study and run them, ``options.jobs`` at a time, through the
    executor's tasks (local: spawned worker processes with one torch thread each, as ``bench
    run -j``), or here with the local executor and one job. A trial whose worker dies is
    ``lost`` (the others go on). Each trial's first seed reports its epochs to the study file,
    so Ray's workers must reach it (this machine, or a shared file system)."""
    asked = 0

    def next_trial() -> tuple[Any, list[Cell], TrialLink] | None:
        nonlocal asked
        while asked < count:
            asked += 1
            trial = study.ask()
            started = start(trial)
            if started is not None:
                return (trial, *started)
        return None

    if executor.name == LOCAL.name and options.jobs == 1:
        while (item := next_trial()) is not None:
            trial, cells, link = item
            end(trial, cells, run_trial(cells, registry, env, link))
        return
    assert executor.tasks is not None  # tune() refuses an executor without
    worker_env = dataclasses.replace(env, registry=None)  # workers load the plugin files
    with executor.tasks(options, plugin_files) as pool:
        running: dict[Hashable, tuple[Any, list[Cell]]] = {}

        def fill() -> None:
            while len(running) < options.jobs and (item := next_trial()) is not None:
                trial, cells, link = item
                running[pool.submit(run_pickled_trial, pickle.dumps(cells), plugin_files,
                                    worker_env, link)] = trial, cells

        fill()
        while running:
            for handle, records, error in pool.wait(list(running)):
                trial, cells = running.pop(handle)
                if error is not None:  # a worker that died (os._exit, a crash)
                    lost(trial, cells, f"error (its worker failed: {type(error).__name__}: "
                                       f"{error})")
                else:
                    end(trial, cells, records)
            fill()


def _end(study: Any, trial: Any, records: list[Record] | None, failure: str | None,
         log: Callable[[str], None], name: str) -> None:
    """Tell the study how a trial ended: the mean validation error of its seeds, or pruned
    (by the pruner, or because a seed did not finish ``ok``: errors and divergence)."""
    from optuna.trial import TrialState

    shown = trial.user_attrs.get("shown", "")
    records = records or []
    values = [r.validation_error() for r in records]
    trial.set_user_attr("config_hashes", [r.config_hash for r in records])
    trial.set_user_attr("validation_errors", values)
    trial.set_user_attr("statuses", [r.status for r in records])
    last = records[-1] if records else None
    if failure is None and last is not None and last.status != "ok":
        failure = last.status + (f" ({last.explanation})" if last.explanation else "")
    elif failure is None and last is not None and last.pruned_at_epoch is not None:
        failure = f"pruned after epoch {last.pruned_at_epoch}"
    if failure is None and not all(v is not None and math.isfinite(v) for v in values):
        failure = "no finite validation error"
    if failure is not None:
        trial.set_user_attr("status", failure)
        study.tell(trial, state=TrialState.PRUNED)
        log(f"{name}: trial {trial.number}: {shown}: {failure}")
        return
    mean = sum(typing.cast(list[float], values)) / len(values)
    trial.set_user_attr("status", "ok")
    study.tell(trial, mean)
    log(f"{name}: trial {trial.number}: {shown}: validation error {mean:.6g}")


# --- the tuned suite ---------------------------------------------------------------------------

def tuned_document(suite: Suite, results: list[StudyResult]) -> dict[str, Any]:
    """The suite's document (with its ``--set`` overrides) named ``<name>-tuned``, each tuned
    entry given its values on each tuned dataset (``datasets.<id>``, which wins over the
    entry's own) and their provenance (``tuned.<id>``)."""
    document = _unshared(read_document(suite.path, list(suite.overrides)))
    document["name"] = f"{suite.name}-tuned"
    for result in results:
        entry = document["algorithms"][result.plan.entry]
        override = entry.setdefault("datasets", {}).setdefault(result.plan.dataset, {})
        _merge_into(override, fragment(result.plan.entry, result.tuned.values)["algorithms"]
                    [result.plan.entry])
        entry.setdefault("tuned", {})[result.plan.dataset] = _without_none(
            dataclasses.asdict(result.tuned))
    return document


def _unshared(value: Any) -> Any:
    """A copy whose mappings and lists are never shared: entries written through one YAML alias
    (``*bp_protocol``) are tuned apart."""
    if isinstance(value, dict):
        return {key: _unshared(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_unshared(item) for item in value]
    return copy.copy(value)


def _merge_into(node: dict[str, Any], values: dict[str, Any]) -> None:
    for key, value in values.items():
        if isinstance(value, dict) and isinstance(node.get(key), dict):
            _merge_into(node[key], value)
        else:
            node[key] = value


def _without_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _without_none(item) for key, item in value.items() if item is not None}
    if isinstance(value, list | tuple):
        return [_without_none(item) for item in value]
    return value
