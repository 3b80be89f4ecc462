"""``bench tune``: hyper-parameter search for one (algorithm, dataset) with Optuna's TPE sampler.

The objective is the validation error of the selected epoch (1 − validation accuracy; the
validation loss for regression); the test set is never used to choose. The search space is the
algorithm entry's ``search:`` mapping. The study lives in SQLite, so a search that is stopped
(or killed) continues when the same command is started again: finished trials are kept, a trial
that was running when the process died is run again with the same values, and ``--trials``
counts the total. One process per study file.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from ..errors import InputError
from ..registry import Registry
from ..suite import Cell, SearchSpace, load_suite
from .setup import Environment
from .training import train_cell

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
    if all(isinstance(v, int) for v in (space.low, space.high)) \
            and not isinstance(space.step, float):
        return trial.suggest_int(key, space.low, space.high, step=space.step or 1, log=space.log)
    return trial.suggest_float(key, float(space.low), float(space.high), step=space.step,
                               log=space.log)


def set_items(algorithm: str, values: dict[str, Any]) -> list[str]:
    """``--set`` overrides that give the algorithm entry these values."""
    return [f"algorithms.{algorithm}.{key}={json.dumps(value)}" for key, value in values.items()]


def fragment(algorithm: str, values: dict[str, Any]) -> dict[str, Any]:
    """The best values as a suite fragment: ``algorithms: {<id>: {optimizer: {lr: …}, …}}``."""
    entry: dict[str, Any] = {}
    for key, value in values.items():
        node = entry
        *parents, last = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    return {"algorithms": {algorithm: entry}}


def default_study(suite_name: str, algorithm: str, dataset: str) -> Path:
    return Path("results") / suite_name / f"tune-{algorithm}-{dataset}.db"


def objective_value(cell: Cell, result: dict[str, Any]) -> float:
    final = result.get("final") or {}
    if "val_accuracy" in final:
        return 1.0 - final["val_accuracy"]
    if "val_loss" in final:
        return final["val_loss"]
    raise InputError(f"{cell.key}: no validation result (the dataset needs protocol.validation)")


def tune(suite: Path, registry: Registry, algorithm: str, dataset: str, trials: int,
         study_path: Path | None = None, *, seed: int | None = None, epochs: int | None = None,
         overrides: list[str] = (), env: Environment | None = None,
         log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run the search until the study holds ``trials`` finished (complete or pruned) trials;
    return the best trial's values, objective and the study's location."""
    optuna = _optuna()
    from optuna.trial import TrialState

    loaded = load_suite(suite, registry, list(overrides))
    cells = [c for c in loaded.cells(only=[algorithm], datasets=[dataset], epochs=epochs)
             if seed is None or c.seed == seed]
    if not cells:
        raise InputError(f"seed {seed} is not in {suite}")
    cell = cells[0]
    if cell.skip_reason:
        raise InputError(f"{cell.key} is skipped: {cell.skip_reason}")
    if cell.dataset.protocol.validation is None:
        raise InputError(f"{suite}: datasets.{dataset}.protocol.validation is null; tuning "
                         "selects on a validation split, never on the test set")
    spaces: dict[str, SearchSpace] = loaded.algorithms[algorithm].search
    if not spaces:
        raise InputError(f"{suite}: algorithms.{algorithm} has no `search:` mapping "
                         "(see docs/suites.md)")
    if trials < 1:
        raise InputError(f"--trials must be a positive integer, got {trials}")
    study_path = study_path or default_study(loaded.name, algorithm, dataset)
    study_path.parent.mkdir(parents=True, exist_ok=True)
    name = f"{loaded.name}-{algorithm}-{dataset}-seed{cell.seed}"
    storage = f"sqlite:///{study_path}"
    study = optuna.create_study(study_name=name, storage=storage, load_if_exists=True,
                                direction="minimize")
    # Seeded, but differently on each resumption: a resumed search must not repeat its values.
    resumed = len(study.get_trials(deepcopy=False))
    study = optuna.load_study(study_name=name, storage=storage,
                              sampler=optuna.samplers.TPESampler(seed=cell.seed + 7919 * resumed))

    # A trial left running by a killed search is failed and its values are tried again.
    for stale in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        study._storage.set_trial_state_values(stale._trial_id, TrialState.FAIL)
        study.enqueue_trial(stale.params)
        log(f"trial {stale.number} was interrupted; its values are tried again")
    finished = (TrialState.COMPLETE, TrialState.PRUNED)
    done = len(study.get_trials(deepcopy=False, states=finished))
    cls = registry.get(cell.algorithm).cls

    def objective(trial: Any) -> float:
        values = {key: _suggest(trial, key, space) for key, space in spaces.items()}
        shown = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                          for k, v in values.items())
        try:
            trial_cell = next(c for c in load_suite(
                suite, registry, [*overrides, *set_items(algorithm, values)]).cells(
                only=[algorithm], datasets=[dataset], epochs=epochs) if c.seed == cell.seed)
            result = train_cell(trial_cell, cls, env)
        except Exception as error:  # an invalid combination or a failing cell: prune, go on
            trial.set_user_attr("status", "error")
            trial.set_user_attr("error", f"{type(error).__name__}: {error}")
            log(f"trial {trial.number}: {shown}: error ({type(error).__name__}: {error})")
            raise optuna.TrialPruned() from None
        trial.set_user_attr("status", result["status"])
        if result["status"] != "ok":
            log(f"trial {trial.number}: {shown}: {result['status']}")
            raise optuna.TrialPruned()
        value = objective_value(trial_cell, result)
        if not math.isfinite(value):
            log(f"trial {trial.number}: {shown}: non-finite validation error")
            raise optuna.TrialPruned()
        trial.set_user_attr("config_hash", trial_cell.config_hash())
        trial.set_user_attr("selected_epoch", result["selected_epoch"])
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


def fragment_yaml(best: dict[str, Any]) -> str:
    return yaml.safe_dump(best["fragment"], sort_keys=False, default_flow_style=False)
