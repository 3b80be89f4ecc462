"""The studies of ``bench tune`` (``tune`` drives them): an SQLite file per (dataset, entry),
``<out>/tuning/<dataset>/<entry>.db``, tuned by one process at a time (a lock file beside it;
other studies may be tuned beside). A study is tied to its protocol: the budget, the search
space and the settings of the cell, as flat keys in its user attributes; a study made under
other ones is refused, naming the first key that differs, never mixed. Here too: a trial's
values as the study stores them, and the link through which a trial's first seed reports each
epoch to the study's pruner.
"""

from __future__ import annotations

import contextlib
import fcntl
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import InputError
from ..execution.inputs import code_identity, describe_code, same_implementation
from ..files import LinkRefused
from ..model.algorithm import Algorithm
from ..results.store import open_lock_file
from ..spec.cell import Cell
from .document import SearchSpace, TuningBudget

OPTUNA_MISSING = "bench tune needs optuna: pip install 'bioplaus-bench[tune]'"
STUDY_NAME = "tune"  # one study per file


def _optuna():
    try:
        import optuna
    except ImportError:
        raise InputError(OPTUNA_MISSING) from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


# --- a study's file ----------------------------------------------------------------------------

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


@contextlib.contextmanager
def study_lock(study: Path) -> Iterator[None]:
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


# --- a trial's values, as the study stores them ------------------------------------------------

def suggest(trial: Any, key: str, space: SearchSpace) -> Any:
    """The trial's value of ``key``, drawn from ``space`` by the study's sampler."""
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


def trial_values(params: dict[str, Any], spaces: dict[str, SearchSpace]) -> dict[str, Any]:
    """A trial's values as the suite writes them, from what the study stored."""
    return {key: _choice(spaces[key], value) if spaces[key].choices is not None else value
            for key, value in params.items()}


# --- a trial's link to its study ---------------------------------------------------------------

@dataclass(frozen=True)
class TrialLink:
    """Where a trial reports its epochs (its study's storage and id, and the budget's pruner)
    and where its seeds keep their per-epoch checkpoints while it runs (``checkpoints``)."""

    storage: str
    trial_id: int
    budget: TuningBudget
    checkpoints: Path

    def checkpoint(self, cell: Cell) -> Path:
        return trial_checkpoint(self.checkpoints, cell)


def checkpoint_folder(plan: StudyPlan) -> Path:
    """Where the study's running trials keep their seeds' checkpoints (``<entry>.checkpoints``
    beside its file), so that a killed search resumes a trial at its last epoch: the trial run
    again with the same values is the same cell, whose checkpoint it finds."""
    return plan.path.with_suffix(".checkpoints")


def trial_checkpoint(folder: Path, cell: Cell) -> Path:
    # The cell's hash covers the trial's values, the seed, the code and the data: a checkpoint
    # of anything else is never picked up (and Checkpoint checks the hash it holds).
    return folder / f"{cell.config_hash()}.ckpt"


def validation_so_far(rows: list[dict[str, Any]]) -> float:
    """The validation error a run stopped after ``rows`` would be scored by: the lowest so far
    (1 − accuracy for classification, the loss for regression), NaN when none is finite."""
    values = [1.0 - row["val_accuracy"] if row.get("val_accuracy") is not None
              else row.get("val_loss") for row in rows]
    finite = [v for v in values if v is not None and math.isfinite(v)]
    return min(finite) if finite else math.nan


class PruningRule:
    """``train_cell``'s stop rule for a trial's first seed (a ``StopRule``): each epoch's
    validation error so far is reported to the study at step = epoch, and the pruner decides.
    Epochs restored from a checkpoint are reported with the first new one, or by ``report``
    for a seed restored finished, so that the trial's curve is whole for the pruner's medians."""

    def __init__(self, link: TrialLink):
        optuna = _optuna()
        study = optuna.load_study(study_name=STUDY_NAME, storage=link.storage,
                                  pruner=_pruner(link.budget))
        self.trial = optuna.trial.Trial(study, link.trial_id)
        self.reported = 0  # the history's rows told to the trial

    def report(self, history: list[dict[str, Any]]) -> None:
        for end in range(self.reported + 1, len(history) + 1):
            value = validation_so_far(history[:end])
            if math.isfinite(value):  # a diverged epoch ends the cell anyway
                self.trial.report(value, history[end - 1]["epoch"])
        self.reported = max(self.reported, len(history))

    def __call__(self, history: list[dict[str, Any]]) -> bool:
        self.report(history)
        return math.isfinite(validation_so_far(history)) and bool(self.trial.should_prune())
