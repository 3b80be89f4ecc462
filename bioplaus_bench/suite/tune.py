"""``bench tune``: hyper-parameter search for one (algorithm, dataset) with Optuna's TPE sampler.

The objective is the validation error of the selected epoch (``Record.validation_error``); the
test set is never used to choose. The search space is the algorithm entry's ``search:`` mapping
(which is why this module belongs to the suite layer); each trial's cell is the suite's cell with
the trial's values put in by ``dataclasses.replace``, checked against the spec's types, and runs
through the runner's ``execute_cell`` as any cell does. The study lives in SQLite, so a search
that is stopped (or killed) continues when the same command is started again: finished trials
are kept, a trial that was running when the process died is run again with the same values, and
``--trials`` counts the total. One process per study file.
"""

from __future__ import annotations

import dataclasses
import json
import math
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import InputError
from ..execution.executors import execute_cell
from ..execution.inputs import code_identity, describe_code, same_implementation, with_inputs
from ..execution.setup import Environment
from ..files import LinkRefused
from ..model.algorithm import Algorithm
from ..registry import Registry
from ..spec.cell import Cell
from ..spec.schema import Path_, Source, coerce, coerce_dataclass
from .document import SearchSpace, Suite
from .fragments import fragment

OPTUNA_MISSING = "bench tune needs optuna: pip install 'bioplaus-bench[tune]'"


def _optuna():
    try:
        import optuna
    except ImportError:
        raise InputError(OPTUNA_MISSING) from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


def _suggest(trial: Any, key: str, space: SearchSpace) -> Any:
    if space.choices is not None:
        return trial.suggest_categorical(key, list(space.choices))
    assert space.low is not None and space.high is not None  # load_suite requires them
    if all(isinstance(v, int) for v in (space.low, space.high)) \
            and not isinstance(space.step, float):
        return trial.suggest_int(key, space.low, space.high, step=space.step or 1, log=space.log)
    return trial.suggest_float(key, float(space.low), float(space.high), step=space.step,
                               log=space.log)


def set_items(algorithm: str, values: dict[str, Any]) -> list[str]:
    """``--set`` overrides that give the algorithm entry these values."""
    return [f"algorithms.{algorithm}.{key}={json.dumps(value)}" for key, value in values.items()]


def default_study(suite_name: str, algorithm: str, dataset: str) -> Path:
    return Path("results") / suite_name / f"tune-{algorithm}-{dataset}.db"


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


def _one_implementation(study: Any, cls: type[Algorithm], study_path: Path) -> None:
    """A study's trials are of one implementation of the algorithm: a search resumed with
    another one of the same name (a ``--plugin`` file's and a built-in, another file) would
    mix their trials. The study keeps the code identity of its first search."""
    now = code_identity(cls)
    made = study.user_attrs.get("code")
    if isinstance(made, dict) and same_implementation(made, now) is False:
        raise InputError(f"{study_path}: the trials of this study were run by "
                         f"{describe_code(made)}; this search's '{cls.name}' is "
                         f"{describe_code(now)}: start another study with --study FILE")
    if made is None:
        study.set_user_attr("code", now)


def tune(suite: Suite, registry: Registry, algorithm: str, dataset: str, trials: int,
         study_path: Path | None = None, *, seed: int | None = None, epochs: int | None = None,
         env: Environment | None = None, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run the search until the study holds ``trials`` finished (complete or pruned) trials;
    return the best trial's values, objective and the study's location."""
    optuna = _optuna()
    from optuna.trial import TrialState

    env = env or Environment()
    cell = suite.cell(algorithm, dataset, seed=seed, epochs=epochs, registry=registry)
    if cell.dataset.protocol.validation is None:
        raise InputError(f"{suite.path}: datasets.{dataset}.protocol.validation is null; tuning "
                         "selects on a validation split, never on the test set")
    spaces: dict[str, SearchSpace] = suite.algorithms[algorithm].search
    if not spaces:
        raise InputError(f"{suite.path}: algorithms.{algorithm} has no `search:` mapping "
                         "(see docs/suites.md)")
    if trials < 1:
        raise InputError(f"--trials must be a positive integer, got {trials}")
    study_path = study_path or default_study(suite.name, algorithm, dataset)
    if study_path.is_symlink():  # SQLite writes the study in place: never through a link
        raise InputError(f"cannot write the study {study_path}: "
                         f"{LinkRefused(study_path).strerror}")
    study_path.parent.mkdir(parents=True, exist_ok=True)
    name = f"{suite.name}-{algorithm}-{dataset}-seed{cell.seed}"
    storage = f"sqlite:///{study_path}"
    study = optuna.create_study(study_name=name, storage=storage, load_if_exists=True,
                                direction="minimize")
    # Seeded, but differently on each resumption: a resumed search must not repeat its values.
    resumed = len(study.get_trials(deepcopy=False))
    study = optuna.load_study(study_name=name, storage=storage,
                              sampler=optuna.samplers.TPESampler(seed=cell.seed + 7919 * resumed))

    cls = registry.get(cell.algorithm).cls
    _one_implementation(study, cls, study_path)

    # A trial left running by a killed search is failed and its values are tried again.
    for stale in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        study._storage.set_trial_state_values(stale._trial_id, TrialState.FAIL)
        study.enqueue_trial(stale.params)
        log(f"trial {stale.number} was interrupted; its values are tried again")
    finished = (TrialState.COMPLETE, TrialState.PRUNED)
    done = len(study.get_trials(deepcopy=False, states=finished))

    def objective(trial: Any) -> float:
        values = {key: _suggest(trial, key, space) for key, space in spaces.items()}
        shown = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                          for k, v in values.items())

        def pruned(status: str, why: str | None = None) -> Exception:  # optuna.TrialPruned
            trial.set_user_attr("status", status)
            if why is not None:
                trial.set_user_attr("error", why)
            log(f"trial {trial.number}: {shown}: {status}" + (f" ({why})" if why else ""))
            return optuna.TrialPruned()

        try:
            candidate = trial_cell(cell, cls, values)
        except InputError as error:  # a value the spec rejects: this trial fails, the rest go on
            raise pruned("error", f"{type(error).__name__}: {error}") from None
        # With its code and data identity, as a `bench run` cell has: equal hashes, equal runs.
        candidate, = with_inputs([candidate], registry, env.data)
        record = execute_cell(candidate, registry, env, None, False)
        if record.status == "error":
            raise pruned("error", record.reason)
        if record.status != "ok":
            raise pruned(record.status)
        trial.set_user_attr("status", record.status)
        value = record.validation_error()
        if value is None:
            raise InputError(f"{candidate.key}: no validation result (the dataset needs "
                             "protocol.validation)")
        if not math.isfinite(value):
            log(f"trial {trial.number}: {shown}: non-finite validation error")
            raise optuna.TrialPruned()
        trial.set_user_attr("config_hash", record.config_hash)
        trial.set_user_attr("selected_epoch", record.selected_epoch)
        log(f"trial {trial.number}: {shown}: validation {value:.6g}")
        return value

    if done < trials:
        log(f"{done} of {trials} trials finished earlier; running {trials - done}")
        study.optimize(objective, n_trials=trials - done)
    else:
        log(f"all {trials} trials finished earlier ({done} in {study_path})")
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not complete:
        raise InputError(f"no trial finished with a validation result ({done} pruned or failed)")
    best = study.best_trial
    return {"values": dict(best.params), "objective": best.value, "trial": best.number,
            "study": study_path, "trials": len(study.get_trials(deepcopy=False, states=finished)),
            "fragment": fragment(algorithm, dict(best.params)),
            "set": set_items(algorithm, dict(best.params))}


