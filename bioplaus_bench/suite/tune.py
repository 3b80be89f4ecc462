"""``bench tune``: the tuning protocol of a suite (docs/suites.md, "Tuning").

Every algorithm entry with a ``search:`` space is tuned on each dataset with the suite's one
``tuning:`` budget: Optuna's TPE sampler (seeded), ``trials`` trials, each of which trains the
suite's first ``seeds`` seeds for ``epochs`` epochs on ``subset`` training samples and scores the
mean validation error at the selected epoch (``Record.validation_error``; the test set is never
used to choose). A trial's cells are the suite's cells with the trial's values put in
(``trial_cell``), run by ``execute_cell`` as ``bench run`` runs any cell; each epoch's
validation error of a trial's first seed goes to Optuna's pruner, which stops a poor trial early.

A study is an SQLite file per (dataset, entry), ``<out>/tuning/<dataset>/<entry>.db``, tuned by
one process at a time (a lock file beside it; other studies may be tuned beside): a killed
search continues where it stopped (finished trials are kept, a trial that was running is run
again with its values; the budget's ``trials`` counts the total). A study is tied to its
protocol: the budget, the search space and the settings of the cell, as flat keys in its user
attributes; a study made under other ones is refused, naming the first key that differs, never
mixed. The result is the suite with the tuned values and, for each, where they came from
(``Tuned``: the budget, the space, the study file and its SHA-256, the best trial).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import fcntl
import hashlib
import json
import math
import os
import pickle
import typing
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import InputError
from ..execution.executors import execute_cell, init_worker
from ..execution.inputs import code_identity, describe_code, same_implementation, with_inputs
from ..execution.setup import Environment
from ..execution.training import StopRule
from ..files import LinkRefused
from ..model.algorithm import Algorithm
from ..plugin_files import import_plugin_file
from ..registry import Registry
from ..results.record import Record
from ..results.store import open_lock_file
from ..spec.cell import Cell
from ..spec.schema import Path_, Source, coerce, coerce_dataclass
from .document import SearchSpace, Suite, Tuned, TuningBudget
from .fragments import fragment
from .load import read_document

OPTUNA_MISSING = "bench tune needs optuna: pip install 'bioplaus-bench[tune]'"
STUDY_NAME = "tune"  # one study per file


def _optuna():
    try:
        import optuna
    except ImportError:
        raise InputError(OPTUNA_MISSING) from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


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


def _suggest(trial: Any, key: str, space: SearchSpace) -> Any:
    if space.choices is not None:
        return _choice(space, trial.suggest_categorical(key, _stored_choices(space)))
    assert space.low is not None and space.high is not None  # load_suite requires them
    if all(isinstance(v, int) for v in (space.low, space.high)) \
            and not isinstance(space.step, float):
        return trial.suggest_int(key, space.low, space.high, step=space.step or 1, log=space.log)
    return trial.suggest_float(key, float(space.low), float(space.high), step=space.step,
                               log=space.log)


def _stored_choices(space: SearchSpace) -> list[Any]:
    """The choices as the study stores them: Optuna keeps None, bools, numbers and strings
    only, so a list of structured choices (Adam's betas: ``[[0.9, 0.999], [0.99, 0.999]]``) is
    searched by the index of each choice."""
    assert space.choices is not None
    choices = list(space.choices)
    plain = all(c is None or isinstance(c, bool | int | float | str) for c in choices)
    return choices if plain else list(range(len(choices)))


def _choice(space: SearchSpace, stored: Any) -> Any:
    """The choice a stored value stands for (``_stored_choices``)."""
    assert space.choices is not None
    return stored if _stored_choices(space) == list(space.choices) else space.choices[stored]


def _trial_values(params: dict[str, Any], spaces: dict[str, SearchSpace]) -> dict[str, Any]:
    """A trial's values as the suite writes them, from what the study stored."""
    return {key: _choice(spaces[key], value) if spaces[key].choices is not None else value
            for key, value in params.items()}


def _first_value(space: SearchSpace) -> Any:
    return space.choices[0] if space.choices is not None else space.low


# --- the studies -------------------------------------------------------------------------------

@dataclass(frozen=True)
class StudyPlan:
    """One (dataset, entry) to tune: its study file, the trial's base cells (one per seed, with
    the budget's epochs and subset), the space, and the protocol the study is tied to."""

    dataset: str
    entry: str
    path: Path
    cells: list[Cell]
    spaces: dict[str, SearchSpace]
    protocol: dict[str, str]  # flat key -> JSON value

    @property
    def storage(self) -> str:
        return f"sqlite:///{self.path}"


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
    count). The code is checked apart (``_one_implementation``): an edit of the same
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
    if isinstance(value, dict) and value:
        return {key: text for name, item in value.items()
                for key, text in _flat(item, f"{prefix}.{name}" if prefix else str(name)).items()}
    return {prefix: json.dumps(value, sort_keys=True)}


def open_study(plan: StudyPlan, budget: TuningBudget, cls: type[Algorithm]) -> Any:
    """The plan's study, created or resumed; an InputError naming the file and the first key
    of the protocol that differs when it was made under another one. The sampler is seeded by
    the budget, differently on each resumption (a resumed search must not repeat its values)."""
    optuna = _optuna()
    if plan.path.is_symlink():  # SQLite writes the study in place: never through a link
        raise InputError(f"cannot write the study {plan.path}: {LinkRefused(plan.path).strerror}")
    plan.path.parent.mkdir(parents=True, exist_ok=True)
    try:
        study = optuna.create_study(study_name=STUDY_NAME, storage=plan.storage,
                                    load_if_exists=True, direction="minimize")
    except Exception as error:  # not SQLite, or not a study: the file is anyone's
        first_line = " ".join(str(error).split("\n", 1)[0].split())
        raise InputError(f"{plan.path}: not a study of bench tune ({type(error).__name__}: "
                         f"{first_line}); move the file away to start afresh") from None
    _one_implementation(study, cls, plan.path)  # first: another rule has other params too
    made = study.user_attrs.get("protocol")
    if made is None:
        study.set_user_attr("protocol", plan.protocol)
    elif made != plan.protocol:
        made = made if isinstance(made, dict) else {}
        key = next(k for k in [*plan.protocol, *made] if made.get(k) != plan.protocol.get(k))
        raise InputError(f"{plan.path}: this study was made under {key}={made.get(key, 'none')}, "
                         f"not {key}={plan.protocol.get(key, 'none')}: its trials are not mixed "
                         "with another protocol's; move the file away to start afresh")
    resumed = len(study.get_trials(deepcopy=False))
    return optuna.load_study(study_name=STUDY_NAME, storage=plan.storage,
                             # constant_liar: trials asked while others run (-j) are
                             # drawn away from those, not next to them; alone, no change.
                             sampler=optuna.samplers.TPESampler(
                                 seed=budget.sampler_seed + 7919 * resumed, constant_liar=True),
                             pruner=_pruner(budget))


def _pruner(budget: TuningBudget) -> Any:
    """The budget's pruner. Steps are epochs, from 1: the first that may be pruned is the one
    after the warm-up (Optuna's warm-up and first rung are the first step that may be)."""
    optuna = _optuna()
    rule = budget.pruning
    first = rule.warmup_epochs + 1
    if rule.rule == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=rule.startup_trials,
                                           n_warmup_steps=first)
    if rule.rule == "successive-halving":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=first,
                                                      reduction_factor=rule.reduction_factor)
    return optuna.pruners.NopPruner()


def _one_implementation(study: Any, cls: type[Algorithm], study_path: Path) -> None:
    """A study's trials are of one implementation of the algorithm: a search resumed with
    another one of the same name (a ``--plugin`` file's and a built-in, another file) would
    mix their trials. The study keeps the code identity of its first search."""
    now = code_identity(cls)
    made = study.user_attrs.get("code")
    if isinstance(made, dict) and same_implementation(made, now) is False:
        raise InputError(f"{study_path}: the trials of this study were run by "
                         f"{describe_code(made)}; this search's '{cls.name}' is "
                         f"{describe_code(now)}: move the study away to start another")
    if made is None:
        study.set_user_attr("code", now)


# --- running trials ----------------------------------------------------------------------------

@dataclass(frozen=True)
class TrialLink:
    """Where a trial reports its epochs: its study's storage and id, and the budget's pruner."""

    storage: str
    trial_id: int
    budget: TuningBudget


def validation_so_far(rows: list[dict[str, Any]]) -> float:
    """The validation error a run stopped after ``rows`` would be scored by: the lowest so far
    (1 − accuracy for classification, the loss for regression), NaN when none is finite."""
    values = [1.0 - row["val_accuracy"] if row.get("val_accuracy") is not None
              else row.get("val_loss") for row in rows]
    finite = [v for v in values if v is not None and math.isfinite(v)]
    return min(finite) if finite else math.nan


def pruning_rule(link: TrialLink) -> StopRule:
    """``train_cell``'s stop rule for a trial's first seed: each epoch's validation error so far
    is reported to the study at step = epoch, and the pruner decides."""
    optuna = _optuna()
    study = optuna.load_study(study_name=STUDY_NAME, storage=link.storage,
                              pruner=_pruner(link.budget))
    trial = optuna.trial.Trial(study, link.trial_id)
    rows: list[dict[str, Any]] = []

    def stop(row: dict[str, Any]) -> bool:
        rows.append(row)
        value = validation_so_far(rows)
        if not math.isfinite(value):
            return False  # a diverged epoch ends the cell anyway
        trial.report(value, row["epoch"])
        return bool(trial.should_prune())

    return stop


def run_trial(cells: list[Cell], plugins: Registry | list[str], env: Environment,
              link: TrialLink) -> list[Record]:
    """A trial's cells, one seed after the other, the first reporting to the pruner; a seed
    pruned or not ``ok`` ends the trial (its records so far are returned)."""
    records = []
    for index, cell in enumerate(cells):
        record = execute_cell(cell, plugins, env, None, False,
                              stop=pruning_rule(link) if index == 0 else None)
        records.append(record)
        if record.status != "ok" or record.pruned_at_epoch is not None:
            break
    return records


def run_pickled_trial(payload: bytes, plugin_files: list[str], env: Environment,
                      link: TrialLink) -> list[Record]:
    """A worker's entry point (``-j N``): the cells travel pickled, to be unpickled after the
    plugin files are imported, as ``execute_pickled`` does; made by the parent process."""
    for file in plugin_files:
        import_plugin_file(file)
    return run_trial(pickle.loads(payload), plugin_files, env, link)


@dataclass(frozen=True)
class StudyResult:
    plan: StudyPlan
    tuned: Tuned


def tune(suite: Suite, registry: Registry, out: Path, *, only: list[str] | None = None,
         datasets: list[str] | None = None, trials: int | None = None, jobs: int = 1,
         env: Environment | None = None, plugin_files: Sequence[str] = (),
         log: Callable[[str], None] = print) -> list[StudyResult]:
    """Tune every searched entry of the suite on each dataset under its ``tuning:`` budget
    (``trials`` overrides the budget's count, which only says when to stop); return each
    study's best trial as the provenance of its values."""
    env = env or Environment()
    plans = plan(suite, registry, out, env, only=only, datasets=datasets)
    assert suite.tuning is not None  # plan() requires it
    budget = suite.tuning if trials is None else dataclasses.replace(suite.tuning, trials=trials)
    with contextlib.ExitStack() as held:
        for p in plans:
            held.enter_context(_held(p.path))
        studies = [(p, open_study(p, budget, registry.get(p.cells[0].algorithm).cls))
                   for p in plans]
        return [StudyResult(p, _search(p, study, budget, registry, env, jobs,
                                       list(plugin_files), log)) for p, study in studies]


@contextlib.contextmanager
def _held(study: Path) -> Iterator[None]:
    """One tune per study file at a time (tunes of other entries may run beside it): a second
    stops here. The operating system drops the lock when its holder dies, even by SIGKILL."""
    study.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = open_lock_file(study.with_name(f"{study.name}.lock"))
    except OSError as error:
        raise InputError(f"cannot lock the study {study}: {error.strerror or error}") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise InputError(f"{study} is being tuned by another bench tune; wait for it to "
                             "finish") from None
        yield
    finally:
        os.close(fd)


def _search(plan: StudyPlan, study: Any, budget: TuningBudget, registry: Registry,
            env: Environment, jobs: int, plugin_files: list[str],
            log: Callable[[str], None]) -> Tuned:
    from optuna.trial import TrialState

    name = f"{plan.dataset}/{plan.entry}"
    # A trial left running by a killed search is failed and its values are tried again.
    for stale in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        study._storage.set_trial_state_values(stale._trial_id, TrialState.FAIL)
        study.enqueue_trial(stale.params)
        log(f"{name}: trial {stale.number} was interrupted; its values are tried again")
    finished = (TrialState.COMPLETE, TrialState.PRUNED)
    done = len(study.get_trials(deepcopy=False, states=finished))
    cls = registry.get(plan.cells[0].algorithm).cls
    if done < budget.trials:
        log(f"{name}: {done} of {budget.trials} trials finished earlier; running "
            f"{budget.trials - done}")

        def start(trial: Any) -> tuple[list[Cell], TrialLink] | None:
            values = {key: _suggest(trial, key, space) for key, space in plan.spaces.items()}
            trial.set_user_attr("shown", ", ".join(
                f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in values.items()))
            try:
                cells = [trial_cell(cell, cls, values) for cell in plan.cells]
            except InputError as error:  # a value the spec rejects: this trial fails
                _end(study, trial, None, f"error ({type(error).__name__}: {error})", log, name)
                return None
            return cells, TrialLink(plan.storage, trial._trial_id, budget)

        _run_trials(study, budget.trials - done, start, registry, env, jobs, plugin_files,
                    lambda trial, records: _end(study, trial, records, None, log, name),
                    lambda trial, why: _end(study, trial, None, why, log, name))
    else:
        log(f"{name}: all {budget.trials} trials finished earlier ({plan.path})")
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not complete:
        raise InputError(f"{plan.path}: no trial finished with a validation result "
                         f"({done} pruned or failed)")
    best = study.best_trial
    total = len(study.get_trials(deepcopy=False, states=finished))
    log(f"{name}: best trial {best.number} of {total}, validation error {best.value:.6g}")
    return Tuned(budget=dataclasses.replace(budget, trials=total), search=plan.spaces,
                 values=_trial_values(best.params, plan.spaces), study=str(plan.path),
                 sha256=hashlib.sha256(plan.path.read_bytes()).hexdigest(), trial=best.number,
                 validation_error=best.value)


def _run_trials(study: Any, count: int, start: Callable[[Any], Any], registry: Registry,
                env: Environment, jobs: int, plugin_files: list[str],
                end: Callable[[Any, list[Record]], None], lost: Callable[[Any, str], None]
                ) -> None:
    """Ask ``count`` trials of the study and run them, ``jobs`` at a time in spawned worker
    processes (one torch thread each, as ``bench run -j``), or here with ``jobs`` 1. A trial
    whose worker dies is ``lost`` (the others go on)."""
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

    if jobs == 1:
        while (item := next_trial()) is not None:
            trial, cells, link = item
            end(trial, run_trial(cells, registry, env, link))
        return
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
    from multiprocessing import get_context

    import torch

    worker_env = dataclasses.replace(env, registry=None)  # workers load the plugin files
    with ProcessPoolExecutor(max_workers=jobs, mp_context=get_context("spawn"),
                             initializer=init_worker,
                             initargs=(plugin_files, torch.get_num_threads())) as pool:
        running: dict[Any, Any] = {}

        def fill() -> None:
            while len(running) < jobs and (item := next_trial()) is not None:
                trial, cells, link = item
                running[pool.submit(run_pickled_trial, pickle.dumps(cells), plugin_files,
                                    worker_env, link)] = trial

        fill()
        while running:
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in done:
                trial = running.pop(future)
                try:
                    records = future.result()
                except Exception as error:  # a worker that died (os._exit, a crash)
                    lost(trial, f"error (its worker failed: {type(error).__name__}: {error})")
                else:
                    end(trial, records)
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
