"""The reference campaign: the paper's tables, then the three families tuned, at the full protocol
as shipped in suites/, written as ordinary records under results/reference/<suite>/ (committed to
git, with the tuning studies; checkpoints stay out).

    .venv/bin/python benchmarks/reference.py status [--stages a,b]
    .venv/bin/python benchmarks/reference.py run [--stages a] [--jobs 1] [--threads 1]
        [--data-dir DIR] [--skip-checksums] [--device cpu] [--seeds N] [--seed-chunk N]
        [--only SUITE/DATASET/ENTRY,...]
    .venv/bin/python benchmarks/reference.py collect

(`make reference` runs the first list that is not complete.)

The lists, each complete before the next starts (cheaper methods first within a list, so that
an interrupted campaign leaves as many finished cells as possible):
  a. Table 1 MNIST, all eight methods, seeds 0-2;
  b. Table 1 Frozen-MNIST and Fashion-MNIST: every method the paper ran there, seeds 0-2;
  c. Table 1 CIFAR-10 MLP and Table 3 CNN: BP, DFA, DDTP-linear, seeds 0-2;
  d. the rest of Tables 1-3, and every cell of lists a-d at the suites' ten seeds;
  e. the tuning studies of suites/three_families.yaml (MNIST): every entry with a `search:`
     space and no `tuned:` provenance, cheapest first by PRIOR (the FA family, Kolen-Pollack,
     DRTP, then EP, PC, PC with center nudging). The calibration's (BP and DFA tuned) come
     first, and the others wait until the budget passes it: both entries tuned, their cells
     of list f done and within 2 paper-SD of Table 1 (`status` says what it waits for);
  f. the cells of suites/three_families.yaml, seeds 0-2: the entries with `tuned:` provenance
     (an entry still untuned waits for its study); those of the paper's settings are Table 1's
     cells, set beside them with `--reference results/reference/table1`.
`--seeds N` asks for the first N seeds of every list of cells (10 on a GPU, where stacking pays).

Each study of list e is `bioplaus_bench.tune(SUITE, only=[ENTRY])` (`bench tune`) in a process of
its own (`--jobs N`: N
studies at once; `--threads` torch threads each), its study file in place in the reference
folder (results/reference/three_families/tuning/mnist/<entry>.db, committed with the records,
so that the next session resumes it: finished trials are kept, one under way runs again from
its last epoch, whose checkpoints wait beside the study in <entry>.checkpoints/). As
each ends, a tune of every finished study (no trial runs) writes their tuned suite beside them
(tuning/three_families-tuned.yaml); the campaign never edits suites/: a person reviews the
values and copies them, with their provenance, into suites/three_families.yaml, which makes the
entry's cells part of list f. `status` shows each study's finished trials out of the budget's,
the epoch of a trial under way, and its time left (the mean of its finished trials, else the
prior per epoch for a whole trial).

Each group (one suite, dataset and algorithm, the seeds it still misses) is one stack of seeds
of the shipped suite, with nothing changed: no tuning, no shorter schedule, the configs'
precision. The groups of a list are one `bioplaus_bench.run` of each suite (its missing cells,
in the list's order, seeds stacked; `--jobs N`: each group in a worker process of its own, N at
once, one torch thread each by default; `--jobs 1`: one after the other in this process). Its
results folder is the work folder's <suite>/ ($BIOPLAUS_CACHE/reference, outside the
repository), where the checkpoints live: a campaign that is stopped (Ctrl-C, SIGTERM, the end of
a working session) resumes from the last epoch of every running cell, as long as the code and
settings are unchanged (the config hash decides). Finished records are copied into
results/reference/<suite>/ as each group ends (`collect` copies what has finished so far, e.g.
before committing while the campaign goes on). The run's lines (each cell's end, a line every
few minutes) go to the work folder's logs/campaign.log; a line on stdout as each group starts
and ends.

A cell counts as done when results/reference holds its record, finished, at the suite's protocol
and with the settings the suite has now (`ResultStore.state(cell, any_code=True)`); a record of
older code still counts (`bench table` marks it when the algorithm's source has changed since),
while one of other settings is stale and is run again.

`status` reads the work folder's checkpoints too: a running or stopped cell shows the epoch it
has reached and whether it resumes there, that is whether its checkpoint belongs to the cell as
this code and data give it (the config hash, as `bench run` decides). Checkpoints survive
commits that leave the algorithm's code alone, so a campaign spread over several working
sessions keeps running from one checkout; a change to an algorithm's module (or its base
classes) makes its running cells start over, and `status` says so before anything is lost.

The time left of a cell under way is its own pace so far (seconds per epoch of its checkpoint);
of a cell not started, the wall time per seed of its group's records, else a rough prior for
this machine type (2 CPU cores, one thread per process, seeds stacked), scaled by how fast the
groups with records ran against their priors, and printed with a '~'.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from multiprocessing import get_context
from multiprocessing.process import BaseProcess
from pathlib import Path
from statistics import fmean, median
from typing import TextIO

import torch

import bioplaus_bench
from bioplaus_bench.data import check_available
from bioplaus_bench.data.types import (
    CACHE_ENV,
    DataSettings,
    default_cache_dir,
    file_in_the_way,
    make_cache_folder,
)
from bioplaus_bench.errors import InputError
from bioplaus_bench.execution.checkpoint import CHECKPOINT_KEYS
from bioplaus_bench.execution.inputs import with_inputs
from bioplaus_bench.execution.progress import LogReporter
from bioplaus_bench.files import write_atomically
from bioplaus_bench.registry import load_registry
from bioplaus_bench.results.paper import PUBLISHED, WITHIN
from bioplaus_bench.results.record import Record
from bioplaus_bench.results.store import ResultStore
from bioplaus_bench.scripts import one_line_errors, tune_logged
from bioplaus_bench.spec.cell import Cell
from bioplaus_bench.suite.document import AlgorithmEntry, Suite, TuningBudget
from bioplaus_bench.suite.load import load_suite
from bioplaus_bench.suite.running import sigterm_stops

ROOT = Path(__file__).resolve().parents[1]
TABLE1_METHODS = ("bp", "dfa", "ddtp-linear", "dtp", "ddtp-control", "dtp-drl",
                  "dtp-pretrained", "ddtp-rhl")  # cheapest first (benchmarks/epoch_time.py)
# Every entry of suites/three_families.yaml, cheapest first by PRIOR (below).
THREE_FAMILIES = ("bp", "bp-tuned", "dfa", "dfa-tuned", "feedback-alignment", "usf", "brsf",
                  "frsf", "kolen-pollack", "drtp", "ddtp-linear", "ep", "pc", "pc-center")


@dataclass(frozen=True)
class Group:
    suite: str
    dataset: str
    algorithm: str

    @property
    def name(self) -> str:
        return f"{self.suite}/{self.dataset}/{self.algorithm}"


@dataclass(frozen=True)
class Stage:
    name: str
    title: str
    groups: tuple[Group, ...]
    seeds: int  # the first N seeds of the suite


@dataclass(frozen=True)
class Studies:
    """A list of `bench tune` studies: those of the entries (of one suite, on one dataset) that
    have a `search:` space and no `tuned:` provenance there yet, in this order."""

    name: str
    title: str
    suite: str
    dataset: str
    entries: tuple[str, ...]
    # The budget's calibration: entries tuned from spaces that hold the paper's values. The
    # other studies wait until each of these is tuned and its cells (of the list of cells) lie
    # within WITHIN paper-SD of the paper's number: else the budget is too small, and every
    # CPU hour spent tuning under it would be lost.
    calibration: tuple[str, ...] = ()

    @property
    def groups(self) -> tuple[Group, ...]:
        return _groups(self.suite, (self.dataset,), self.entries)


def _groups(suite: str, datasets: tuple[str, ...], algorithms: tuple[str, ...]
            ) -> tuple[Group, ...]:
    return tuple(Group(suite, d, a) for d in datasets for a in algorithms)


STAGES = (
    Stage("a", "Table 1 MNIST, all eight methods",
          _groups("table1", ("mnist",), TABLE1_METHODS), 3),
    Stage("b", "Table 1 Frozen-MNIST and Fashion-MNIST, every method the paper ran there",
          _groups("table1", ("frozen_mnist", "fashion_mnist"), TABLE1_METHODS), 3),
    Stage("c", "Table 1 CIFAR-10 MLP and Table 3 CNN, BP, DFA, DDTP-linear",
          _groups("table1", ("cifar10",), ("bp", "dfa", "ddtp-linear"))
          + _groups("table3", ("cifar10_cnn",), ("bp", "dfa", "ddtp-linear")), 3),
    Stage("d", "the rest of Tables 1-3, ten seeds",
          _groups("table1", ("mnist", "frozen_mnist", "fashion_mnist", "cifar10"), TABLE1_METHODS)
          + _groups("table2", ("mnist", "frozen_mnist", "fashion_mnist", "cifar10"),
                    TABLE1_METHODS)
          + _groups("table3", ("cifar10_cnn",), ("bp", "ddtp-linear", "ddtp-control", "dfa")),
          10),
    Studies("e", "three_families tuning studies", "three_families", "mnist", THREE_FAMILIES,
            calibration=("bp-tuned", "dfa-tuned")),
    # Not the entries with the paper's settings: theirs are Table 1's cells, of this very
    # protocol, which the README's table sets beside (`--reference results/reference/table1`).
    Stage("f", "three_families reference cells, once tuned",
          _groups("three_families", ("mnist",),
                  tuple(e for e in THREE_FAMILIES if e not in TABLE1_METHODS)), 3),
)

# A rough prior, in seconds per seed and epoch (feedback-only epochs included), before a group
# has records of its own: MNIST measured for BP and DFA (2 seeds stacked, one thread, loaded
# machine: 13 and 22 minutes for 100 epochs), the others scaled by their float64 step times and
# feedback epochs in benchmarks/seed_batching.py; CIFAR-10 by its step-time ratio.
# The three families' rules (float64, BP's being 7 there): the FA family, Kolen-Pollack and
# DRTP about BP's (their cost against BP on the 5×256 MLP, docs/plugins.md); EP and PC as their
# first study trials ran (one thread each, side by side: 41-69 and 70-103 s an epoch, evaluation
# included), PC with center nudging twice PC (two relaxations a minibatch).
PRIOR = {"bp": 4, "dfa": 7, "ddtp-linear": 22, "dtp": 23, "ddtp-control": 30, "dtp-drl": 24,
         "dtp-pretrained": 40, "ddtp-rhl": 60, "bp-tuned": 4, "dfa-tuned": 7,
         "feedback-alignment": 8, "usf": 8, "brsf": 8, "frsf": 8, "kolen-pollack": 8, "drtp": 8,
         "ep": 50, "pc": 85, "pc-center": 170}
DATASET_FACTOR = {"cifar10": 5, "cifar10_cnn": 40}
MNIST_TRAINING = 55000  # the training images a prior's epoch goes through (5000 validate)


@dataclass(frozen=True)
class Partial:
    """The last checkpoint of a cell under way."""

    done: int  # epochs finished, feedback pre-training ones included
    total: int
    elapsed: float  # the cell's seconds so far
    resumes: bool | None  # whether `bench run` would resume it (None: unknown, see `why`)
    why: str = ""

    def seconds_left(self) -> float | None:
        """At the cell's own pace so far; None before its first epoch."""
        return self.elapsed * (self.total - self.done) / self.done if self.done else None


@dataclass(frozen=True)
class StudyState:
    """A tuning study as its file stands: its finished trials (complete or pruned, as `bench
    tune` counts them), those under way (or that were, when a search was killed: the last
    epoch each reported, where it resumes from its checkpoints), the finished ones' mean wall
    time, the best (trial number, validation error)."""

    finished: int
    running: tuple[int, ...]
    seconds_per_trial: float | None
    best: tuple[int, float] | None
    why: str = ""  # why the file could not be read as a study


class Campaign:
    def __init__(self, out: Path, work: Path, seeds: int | None,
                 data: DataSettings | None = None):
        """``data``: where the datasets are, to tell whether checkpoints resume (their config
        hash names the data); default: ``bench run``'s."""
        self.out, self.work, self.seeds = out, work, seeds
        self.data = data or DataSettings()
        self.registry = load_registry()
        self.suites: dict[str, Suite] = {}

    def suite(self, name: str) -> Suite:
        if name not in self.suites:
            self.suites[name] = load_suite(suite_file(name), self.registry)
        return self.suites[name]

    def cells(self, stage: Stage, group: Group) -> list[Cell]:
        """The group's cells at the suite's protocol, for the stage's seeds."""
        suite = self.suite(group.suite)
        wanted = list(suite.seeds)[: self.seeds or stage.seeds]
        return [cell for cell in suite.cells(only=[group.algorithm], datasets=[group.dataset],
                                             registry=self.registry)
                if cell.seed in wanted and not cell.skip_reason]

    def reference(self, cell: Cell) -> ResultStore:
        """The reference folder of the cell's suite."""
        return ResultStore(self.out / cell.suite)

    def work_store(self, group: Group) -> ResultStore:
        """The results folder of the runs of the group's suite, where its checkpoints live."""
        return ResultStore(self.work / group.suite)

    def reference_record(self, cell: Cell) -> Record | None:
        """The cell's record in the reference folder, read as `bench` reads records."""
        return _load(self.reference(cell), cell)

    def state(self, cell: Cell) -> str:
        """done (a finished record of the suite's settings and protocol, of any code), stale
        (a record of other settings, an unfinished one or a file that is no record) or
        missing."""
        state = self.reference(cell).state(cell, any_code=True)
        return "done" if state == "finished" else state

    def done_record(self, cell: Cell) -> Record | None:
        """The cell's record when it is done (as ``state`` says), read once; only a regular
        file is opened."""
        store = self.reference(cell)
        return store.finished(cell, any_code=True) if store.path(cell).is_file() else None

    def full_protocol(self, record: Record, cell: Cell) -> bool:
        """Whether ``record`` is of the suite's own protocol: no deviation, the suite's epochs."""
        return record.paper_protocol and record.epochs == cell.dataset.protocol.epochs

    def group_cells(self, group: Group) -> list[Cell]:
        """Every seed's cell of the group (not only a stage's seeds)."""
        return [cell for cell in self.suite(group.suite).cells(
                    only=[group.algorithm], datasets=[group.dataset], registry=self.registry)
                if not cell.skip_reason]

    def seconds_per_seed(self, group: Group, pace: float | None = None) -> tuple[float, bool]:
        """(estimate, measured?) of one seed's wall time for the group's full protocol.
        ``pace``: this machine's, if already known (it reads every group's records)."""
        measured = self._measured(group)
        if measured is not None:
            return measured, True
        return self._prior(group) * (self._pace() if pace is None else pace), False

    def _measured(self, group: Group) -> float | None:
        """The mean wall time per seed of the group's finished records."""
        times = [r.wall_time for cell in self.group_cells(group)
                 if (r := self.reference_record(cell)) and r.finished and r.wall_time]
        return sum(times) / len(times) if times else None

    def _prior(self, group: Group) -> float:
        epochs = self.suite(group.suite).datasets[group.dataset].protocol.epochs
        return PRIOR.get(group.algorithm, 40) * DATASET_FACTOR.get(group.dataset, 1) * epochs

    def _pace(self) -> float:
        """How fast this machine ran the groups with records, against their priors (median)."""
        groups = {group for stage in STAGES for group in stage.groups}
        ratios = [measured / self._prior(group) for group in sorted(groups, key=str)
                  if (measured := self._measured(group)) is not None]
        return median(ratios) if ratios else 1.0

    def partial(self, group: Group, cell: Cell) -> Partial | None:
        """The cell's checkpoint in the work folder, if one there can be read."""
        path = self.work_store(group).checkpoint_path(cell)
        if not path.is_file():  # a regular file: a FIFO would block the reading
            path = _legacy(self, group).checkpoint_path(cell)
            if not path.is_file():
                return None
        try:  # plain data only, as `bench run` reads it; anything else is no progress
            state = torch.load(path, map_location="cpu", weights_only=True)
            if not state.keys() >= CHECKPOINT_KEYS:
                return None  # `bench run` would not resume it either
            progress = state["state"]
            done = int(progress["pretrained"]) + int(progress["epoch"])
            elapsed, config_hash = float(progress["elapsed"]), state["config_hash"]
        except Exception:
            return None
        trains_feedback = self.registry.get(cell.algorithm).cls.capabilities.trainable_feedback
        pretraining = cell.settings.schedule.feedback_pretraining_epochs if trains_feedback else 0
        total = pretraining + cell.dataset.protocol.epochs
        try:
            resolved, = with_inputs([cell], self.registry, self.data)
        except InputError as error:
            return Partial(done, total, elapsed, None, str(error))
        return Partial(done, total, elapsed, config_hash == resolved.config_hash())

    def adopt_legacy(self, group: Group) -> None:
        """Move the group's records and checkpoints from the folder of its own that a campaign
        before `bioplaus_bench.run` ran it in (<work>/<suite>/<dataset>/<entry>/) to its
        suite's folder, so that its cells resume."""
        legacy, store = _legacy(self, group), self.work_store(group)
        for cell in self.group_cells(group):
            for old, new in ((legacy.path(cell), store.path(cell)),
                             (legacy.checkpoint_path(cell), store.checkpoint_path(cell))):
                if old.is_file() and not old.is_symlink() and not new.exists():
                    new.parent.mkdir(parents=True, exist_ok=True)
                    old.rename(new)

    def missing(self, stage: Stage, group: Group) -> list[Cell]:
        """The stage's cells of the group not done; none while its entry waits for its study."""
        if self.waiting(group):
            return []
        return [cell for cell in self.cells(stage, group) if self.state(cell) != "done"]

    def incomplete(self, stage: Stage | Studies) -> bool:
        if isinstance(stage, Studies):
            return any(self.study_left(group) for group in stage.groups)
        return any(self.missing(stage, group) for group in stage.groups)

    def entry(self, group: Group) -> AlgorithmEntry:
        return self.suite(group.suite).algorithms[group.algorithm]

    def waiting(self, group: Group) -> bool:
        """Whether the group's entry waits for its study: it has a `search:` space and no
        `tuned:` provenance on the dataset (the paper's settings, or tuned ones, run)."""
        entry = self.entry(group)
        return bool(entry.search) and group.dataset not in entry.tuned

    def budget(self, group: Group) -> TuningBudget:
        suite = self.suite(group.suite)
        if suite.tuning is None:
            raise InputError(f"{suite.path}: no `tuning:` block for the study of {group.name}")
        return suite.tuning

    def study_path(self, group: Group) -> Path:
        """Where `bench tune --out <out>/<suite>` keeps the group's study: in the reference
        folder, committed with the records, so that the next session resumes it."""
        return self.out / group.suite / "tuning" / group.dataset / f"{group.algorithm}.db"

    def tuned_path(self, suite: str) -> Path:
        """The suite that `bench tune` writes with the tuned values of the studies it read."""
        return self.out / suite / "tuning" / f"{suite}-tuned.yaml"

    def study(self, group: Group) -> StudyState | None:
        """The group's study, if its file is there (a regular file: a FIFO would block)."""
        path = self.study_path(group)
        if path.is_symlink():  # `bench tune` never writes a study through a link
            return StudyState(0, (), None, None, "it is a symbolic link")
        return _read_study(path) if path.is_file() else None

    def study_left(self, group: Group) -> bool:
        """Whether the group's study still has trials to run (or a file `bench tune` would
        refuse, which running it says), and may run them: not held back by the calibration."""
        if not self.waiting(group) or self.held_back(group) is not None:
            return False
        state = self.study(group)
        return state is None or bool(state.why) or state.finished < self.budget(group).trials

    def held_back(self, group: Group) -> str | None:
        """Why the group's study waits for its list's calibration (None: it need not wait)."""
        stage = next((s for s in STAGES if isinstance(s, Studies) and group in s.groups), None)
        if stage is None or group.algorithm in stage.calibration:
            return None
        return self.uncalibrated(stage)

    def uncalibrated(self, stage: Studies) -> str | None:
        """Why the list's budget is not calibrated yet (None: it is): an entry of its
        calibration not tuned, its cells not all done, no paper number to hold it against, or
        its mean test error more than WITHIN paper-SD from the paper's."""
        for name in stage.calibration:
            group = Group(stage.suite, stage.dataset, name)
            if self.waiting(group):
                return f"{name} is not tuned yet"
            cells = self.cells(_cell_stage(group), group)
            records = [r for cell in cells if (r := self.done_record(cell)) is not None]
            if len(records) < len(cells):
                return f"{name}'s cells: {len(records)}/{len(cells)} done"
            algorithm = self.entry(group).algorithm or name
            if (paper := PUBLISHED.get((records[0].metric, stage.dataset, algorithm))) is None:
                return f"no published number of {algorithm} on {stage.dataset} to hold {name} to"
            mean = fmean(r.reported_value() for r in records)
            off = (mean - paper[0]) / paper[1]
            if not abs(off) <= WITHIN:  # NaN too: a record with no number calibrates nothing
                return (f"{name} {mean:.2f} is {off:+.1f} paper-SD from {paper[0]:.2f} ± "
                        f"{paper[1]:.2f}: the budget is too small; raise it")
        return None

    def study_line(self, group: Group, pace: float) -> tuple[str, float, bool]:
        """The study's state in words, the seconds it still needs and whether a prior went into
        them: the mean of its finished trials, else the prior per epoch (of a full trial)."""
        budget, state = self.budget(group), self.study(group)
        if state is not None and state.why:
            return (f"{_shown(self.study_path(group))} is no study it can resume ({state.why});"
                    " move it away", 0.0, False)
        done = state.finished if state else 0
        line = f"{done}/{budget.trials} trials"
        if done >= budget.trials:
            if state is None or state.best is None:
                return line + ", none finished with a validation result", 0.0, False
            trial, error = state.best
            return (line + f"; done: best trial {trial}, validation error {error:.4g}; copy its "
                    f"values from {_shown(self.tuned_path(group.suite))} into "
                    f"{_shown(self.suite(group.suite).path)}", 0.0, False)
        measured = state.seconds_per_trial if state else None
        per_trial = measured if measured is not None else self._prior_trial(group, budget) * pace
        left = (budget.trials - done) * per_trial
        if state and state.running:
            at = ", ".join(f"{epoch} of {self._trial_epochs(group, budget)}"
                           for epoch in state.running)
            count = "one" if len(state.running) == 1 else str(len(state.running))
            line += f" ({count} under way or interrupted, at epoch {at})"
        return (line + f", {'' if measured else '~'}{_hours(left)} left", left,
                measured is None)

    def _trial_epochs(self, group: Group, budget: TuningBudget) -> int:
        """The epochs a trial of the budget runs in full (the protocol's, where it says none)."""
        return budget.epochs or self.suite(group.suite).datasets[group.dataset].protocol.epochs

    def _prior_trial(self, group: Group, budget: TuningBudget) -> float:
        """A trial run in full: the group's prior per epoch, for the budget's epochs on its
        share of MNIST's training images, for each of its seeds."""
        protocol = self.suite(group.suite).datasets[group.dataset].protocol
        share = min(1.0, budget.subset / MNIST_TRAINING) if budget.subset else 1.0
        return (self._prior(group) / protocol.epochs * self._trial_epochs(group, budget)
                * share * budget.seeds)

    def status(self, stages: Sequence[Stage | Studies]) -> None:
        total_left, any_prior, pace = 0.0, False, self._pace()
        for stage in stages:
            if isinstance(stage, Studies):
                studies_left, guessed = self._studies_status(stage, pace)
                total_left, any_prior = total_left + studies_left, any_prior or guessed
                continue
            print(f"list {stage.name}: {stage.title} (seeds: first {self.seeds or stage.seeds})")
            for group in stage.groups:
                cells = self.cells(stage, group)
                if not cells:
                    continue
                if self.waiting(group):
                    print(f"  {group.name:40} waiting for its study (list of tuning studies)")
                    continue
                states = [self.state(cell) for cell in cells]
                left = [c for c, s in zip(cells, states, strict=True) if s != "done"]
                line = f"  {group.name:40} {states.count('done')}/{len(cells)} done"
                if left:
                    estimate, guessed, under_way = self._left(group, left, pace)
                    total_left += estimate
                    any_prior |= guessed
                    line += (f"; missing seeds {','.join(str(c.seed) for c in left)}"
                             + (f" ({states.count('stale')} stale)" if "stale" in states else "")
                             + f", {'~' if guessed else ''}{_hours(estimate)} left"
                             + (f"; {under_way}" if under_way else ""))
                print(line)
        print(f"time left: {'~' if any_prior else ''}{_hours(total_left)} of one process "
              "(one thread, seeds stacked); --jobs N divides it, roughly, up to the cores")

    def _studies_status(self, stage: Studies, pace: float) -> tuple[float, bool]:
        """Print each study's line; the seconds they still need, whether a prior went in."""
        budget = self.budget(stage.groups[0])
        epochs = budget.epochs or self.suite(stage.suite).datasets[stage.dataset].protocol.epochs
        print(f"list {stage.name}: {stage.title} ({budget.trials} trials of {epochs} epochs "
              f"each, in {_shown(self.out / stage.suite / 'tuning')})")
        total_left, any_prior = 0.0, False
        for group in stage.groups:
            entry = self.entry(group)
            if not entry.search:
                continue
            if not self.waiting(group):
                tuned = entry.tuned[group.dataset]
                print(f"  {group.name:40} tuned in the suite (best trial {tuned.trial}, "
                      f"validation error {tuned.validation_error:.4g})")
                continue
            if (why := self.held_back(group)) is not None:
                print(f"  {group.name:40} waits for the budget's calibration ({why})")
                continue
            line, left, guessed = self.study_line(group, pace)
            total_left, any_prior = total_left + left, any_prior or guessed
            print(f"  {group.name:40} {line}")
        return total_left, any_prior

    def _left(self, group: Group, cells: list[Cell], pace: float | None = None
              ) -> tuple[float, bool, str]:
        """The time the missing cells still need, whether a prior went into it, and where
        those under way stand."""
        seconds, measured = self.seconds_per_seed(group, pace)
        total, guessed, partials = 0.0, False, []
        for cell in cells:
            partial = self.partial(group, cell)
            left = partial.seconds_left() if partial and partial.resumes is not False else None
            total += seconds if left is None else left
            guessed |= left is None and not measured
            if partial is not None:
                partials.append(partial)
        return total, guessed, _under_way(partials)

    def collect(self) -> int:
        """Copy the finished records of the work folder into the reference folder."""
        copied = 0
        for path, target in self.to_collect():
            if not target.is_file() or target.read_bytes() != path.read_bytes():
                try:  # never through a link in the reference folder
                    self.out.mkdir(parents=True, exist_ok=True)
                    write_atomically(target, path.read_bytes(), inside=self.out)
                except OSError as error:
                    raise InputError(f"cannot write {target}: {error.strerror or error}"
                                     ) from None
                copied += 1
        return copied

    def to_collect(self) -> list[tuple[Path, Path]]:
        """(record, its place in the reference folder) of every finished record of the work
        folder, cell by cell of the campaign's groups, read as `bench` reads records. A record
        of the suite's full protocol is never replaced by one of another protocol (a quick
        trial run into the work folder): that one is refused, in one line."""
        found = []
        for group in sorted({group for stage in STAGES for group in stage.groups}, key=str):
            work = self.work_store(group)
            for cell in self.group_cells(group):
                record = _load(work, cell)
                if record is None or not record.finished:
                    continue
                path, target = work.path(cell), self.reference(cell).path(cell)
                committed = self.reference_record(cell)
                if committed is not None and self.full_protocol(committed, cell) \
                        and not self.full_protocol(record, cell):
                    print(f"refused: {path} ({_protocol(record)}) would replace {target}, a "
                          f"record of the suite's full protocol ({_protocol(committed)}); kept "
                          "the reference's", file=sys.stderr)
                    continue
                found.append((path, target))
        return found

    def check_data(self, groups: Sequence[Group]) -> None:
        """Raise the data layer's one line (the folder and the files expected) for the first
        dataset of ``groups`` that is not there, before any group starts."""
        sources = {self.suite(group.suite).datasets[group.dataset].source for group in groups}
        for source in sorted(sources):
            check_available(self.registry.dataset(source), self.data)


def _cell_stage(group: Group) -> Stage:
    """The list of cells that runs the group's cells."""
    return next(s for s in STAGES if isinstance(s, Stage) and group in s.groups)


def suite_file(name: str) -> Path:
    return ROOT / "suites" / f"{name}.yaml"


class CampaignLog(LogReporter):
    """A run's lines (each cell's end, a line every few minutes while one trains) in the
    campaign's log file; on stdout, a line as each group ends, once its finished records are
    copied into the reference folder."""

    def __init__(self, campaign: Campaign, log: TextIO, groups: dict[Group, int]) -> None:
        super().__init__()
        self.campaign, self.file = campaign, log
        self.left = dict(groups)  # cells still to end, per group
        self.statuses: dict[Group, list[str]] = {group: [] for group in groups}

    def log(self, message: str) -> None:
        with self._lock:
            print(f"{_now()} {message}", file=self.file, flush=True)
            self._said = self.clock()

    def cell_finished(self, cell: Cell, index: int, status: str, detail: str = "") -> None:
        super().cell_finished(cell, index, status, detail)
        group = next(g for g in self.left if (g.dataset, g.algorithm) == (cell.dataset_id,
                                                                          cell.algorithm_id))
        self.left[group] -= 1
        self.statuses[group].append(status)
        if not self.left[group]:
            copied = self.campaign.collect()
            ended = ", ".join(f"{self.statuses[group].count(s)} {s}"
                              for s in sorted(set(self.statuses[group])))
            print(f"{_now()} end {group.name}: {ended}, {copied} new records in the reference "
                  "folder", flush=True)


def run(campaign: Campaign, stages: Sequence[Stage | Studies], args: argparse.Namespace) -> int:
    """Run the missing cells of ``stages``, list by list, one `bioplaus_bench.run` of each
    suite of a list, and the unfinished studies of a list of studies; an ``InputError`` before
    any group starts when the data of one is not there or the work folder cannot be made."""
    pending = [(stage, group) for stage in stages if isinstance(stage, Stage)
               for group in stage.groups if campaign.missing(stage, group)]
    studies = [group for stage in stages if isinstance(stage, Studies)
               for group in stage.groups if campaign.study_left(group)]
    campaign.check_data([group for _, group in pending] + studies)
    logs = make_cache_folder(campaign.work / "logs", campaign.work)
    failed = False
    with sigterm_stops() as sigterm, open(logs / "campaign.log", "a") as log:
        try:
            for stage in stages:
                if isinstance(stage, Studies):
                    failed |= _run_studies(campaign, stage, args, log)
                    continue
                for suite in dict.fromkeys(g.suite for s, g in pending if s is stage):
                    groups = [g for s, g in pending if s is stage and g.suite == suite]
                    failed |= _run_groups(campaign, stage, groups, args, log)
        except KeyboardInterrupt:  # Ctrl-C, or SIGTERM (``RunInterrupted`` within a run)
            campaign.collect()
            print(f"stopped: finished records are in {campaign.out}; checkpoints in "
                  f"{campaign.work}; run the same command to resume", flush=True)
            return 143 if sigterm.is_set() else 130
    campaign.collect()
    return 1 if failed else 0


def _run_groups(campaign: Campaign, stage: Stage, groups: list[Group], args: argparse.Namespace,
                log: TextIO) -> bool:
    """One `bioplaus_bench.run` of the missing cells of ``groups`` (of one suite), in their
    order; whether a cell failed."""
    missing: dict[Group, list[Cell]] = {}
    for group in groups:
        campaign.adopt_legacy(group)
        if cells := campaign.missing(stage, group):
            missing[group] = cells
    if not missing:
        return False
    for group, cells in missing.items():
        under_way = _under_way([p for cell in cells
                                if (p := campaign.partial(group, cell)) is not None])
        print(f"{_now()} start {group.name} seeds {','.join(str(c.seed) for c in cells)} (list "
              f"{stage.name}; log {log.name})" + (f"; {under_way}" if under_way else ""),
              flush=True)
    first = next(iter(missing))
    results = bioplaus_bench.run(
        suite_file(first.suite), datasets=list(dict.fromkeys(g.dataset for g in missing)),
        only=list(dict.fromkeys(g.algorithm for g in missing)),
        only_cells=[(c.dataset_id, c.algorithm_id, c.seed) for cells in missing.values()
                    for c in cells],
        out=campaign.work_store(first).root, data_dir=args.data_dir,
        verify_checksums=not args.skip_checksums, device=args.device, jobs=args.jobs,
        threads=args.threads, vectorize_seeds=True, seed_chunk=args.seed_chunk,
        progress=CampaignLog(campaign, log, {g: len(c) for g, c in missing.items()}))
    assert results.outcome is not None  # a run's results say how it went
    return results.outcome.failed


def _run_studies(campaign: Campaign, stage: Studies, args: argparse.Namespace, log: TextIO
                 ) -> bool:
    """Each unfinished study of the list in a tuning process of its own (``--threads``
    torch threads), ``--jobs`` at once, in the list's order; as each ends, the tuned suite of
    every finished study is written beside them. Whether one failed. Stopped (Ctrl-C, SIGTERM),
    the processes are ended: their finished trials are kept, a trial under way runs again."""
    waiting = [group for group in stage.groups if campaign.study_left(group)]
    running: dict[BaseProcess, Group] = {}
    failed = False
    try:
        while waiting or running:
            while waiting and len(running) < args.jobs:
                group = waiting.pop(0)
                state = campaign.study(group)
                print(f"{_now()} start study {group.name} ({state.finished if state else 0} "
                      f"trials finished earlier; list {stage.name}; log {log.name})", flush=True)
                running[_tune(campaign, [group.algorithm], stage, args, log)] = group
            time.sleep(STUDY_POLL)
            for process in [p for p in running if p.exitcode is not None]:
                group = running.pop(process)
                failed |= process.exitcode != 0
                if finished := _finished_studies(campaign, stage):
                    writer = _tune(campaign, finished, stage, args, log)
                    try:
                        writer.join()
                    finally:  # stopped while it writes: it ends too (no-op once it has)
                        writer.terminate()
                line = campaign.study_line(group, campaign._pace())[0]
                exit = f"exit {process.exitcode}" + (f" (see {log.name})" if process.exitcode
                                                       else "")
                print(f"{_now()} end study {group.name}: {exit}; {line}", flush=True)
    finally:
        for process in running:
            process.terminate()
        for process in running:
            process.join()
    return failed


STUDY_POLL = 1.0  # seconds between looks at the study processes


def _finished_studies(campaign: Campaign, stage: Studies) -> list[str]:
    """The list's entries whose studies are finished with a best trial, not yet in the suite."""
    return [group.algorithm for group in stage.groups
            if campaign.waiting(group) and not campaign.study_left(group)
            and (state := campaign.study(group)) is not None and state.best is not None]


def _tune(campaign: Campaign, entries: list[str], stage: Studies, args: argparse.Namespace,
          log: TextIO) -> BaseProcess:
    """`bioplaus_bench.tune` of the entries on the list's dataset, in a process of its own
    (``scripts.tune_logged``), the studies in place in the reference folder (from the
    repository's root, so that the provenance names them as bp-tuned's does); it writes the
    tuned suite of the entries it read (of finished studies: no trial runs), its lines to the
    campaign's log."""
    process = get_context("spawn").Process(target=tune_logged, args=(log.name, ROOT), kwargs=dict(
        suite=_shown(campaign.suite(stage.suite).path), only=entries, datasets=[stage.dataset],
        out=_shown(campaign.out / stage.suite), threads=args.threads, device=args.device,
        data_dir=Path(args.data_dir).resolve() if args.data_dir is not None else None,
        verify_checksums=not args.skip_checksums))
    process.start()
    return process


def _read_study(path: Path) -> StudyState:
    """Read a study file without writing to it (no table made, no schema upgraded)."""
    try:
        import optuna
        from optuna.trial import TrialState
    except ImportError:
        return StudyState(0, (), None, None, "reading it needs optuna: pip install "
                          "'bioplaus-bench[tune]'")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = None
    try:
        storage = optuna.storages.RDBStorage(f"sqlite:///{path}", skip_table_creation=True,
                                             skip_compatibility_check=True)
        trials = optuna.load_study(study_name=None, storage=storage).get_trials(deepcopy=False)
    except Exception as error:  # not SQLite, or not a study: the file is anyone's
        first_line = " ".join(str(error).split("\n", 1)[0].split())
        return StudyState(0, (), None, None, f"{type(error).__name__}: {first_line}")
    finally:
        if storage is not None:
            storage.engine.dispose()
    finished = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    seconds = [(t.datetime_complete - t.datetime_start).total_seconds() for t in finished
               if t.datetime_start and t.datetime_complete]
    complete = [(t.value, t.number) for t in finished
                if t.state == TrialState.COMPLETE and t.value is not None]
    best = min(complete) if complete else None  # the first of equals, as Optuna's best_trial
    running = tuple(max(t.intermediate_values, default=0) for t in trials
                    if t.state == TrialState.RUNNING)
    return StudyState(len(finished), running,
                      sum(seconds) / len(seconds) if seconds else None,
                      (best[1], best[0]) if best else None)


def _shown(path: Path) -> Path:
    """``path`` relative to the repository's root when inside it, else absolute."""
    path = path.absolute()
    return path.relative_to(ROOT) if path.is_relative_to(ROOT) else path


def _under_way(partials: list[Partial]) -> str:
    """Where a group's checkpoints stand: their epoch, and whether they resume there."""
    if not partials:
        return ""
    at = ", ".join(sorted({f"{p.done}/{p.total}" for p in partials}))
    resumes = {p.resumes for p in partials}
    unknown = next((p.why for p in partials if p.resumes is None), None)
    if unknown is not None:
        verdict = f"cannot tell whether it resumes ({unknown})"
    elif resumes == {True}:
        verdict = "resumes there"
    elif resumes == {False}:
        verdict = "checkpoints of other code or settings: starts over"
    else:
        verdict = "some checkpoints of other code or settings: those start over"
    return f"checkpoint at epoch {at} (pre-training included), {verdict}"


def _load(store: ResultStore, cell: Cell) -> Record | None:
    """The cell's record in ``store``, read and checked as `bench` reads it (a file that is no
    record: None, with the store's warning); only a regular file is opened."""
    return store.load(cell) if store.path(cell).is_file() else None


def _legacy(campaign: Campaign, group: Group) -> ResultStore:
    """The folder of its own that a campaign before `bioplaus_bench.run` ran a group in."""
    return ResultStore(campaign.work / group.name)


def _protocol(record: Record) -> str:
    """A record's protocol in a few words: its epochs, and how it deviates from the suite's."""
    deviations = "" if record.paper_protocol else f", {'; '.join(record.deviations)}"
    return f"{record.epochs} epochs{deviations}"


def _hours(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h" if seconds >= 3600 else f"{seconds / 60:.0f} min"


def _now() -> str:
    return time.strftime("%H:%M:%S")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("action", choices=("status", "run", "collect"))
    parser.add_argument("--stages", default=None,
                        help="lists to consider, e.g. a,b [default: every list]; run: the first "
                        "list not complete")
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "reference")
    parser.add_argument("--work", type=Path, default=default_cache_dir() / "reference")
    parser.add_argument("--seeds", type=int, default=None, help="first N seeds in every list")
    parser.add_argument("--jobs", type=int, default=1, help="groups (or studies) run at once")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads per group (or study)")
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--skip-checksums", action="store_true",
                        help="accept data whose checksums differ (the rebuilt CIFAR-10 copy)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed-chunk", type=int, default=None,
                        help="at most N seeds in one computation, each chunk in a worker of its "
                        "own with --jobs, its records kept as it ends: 1 fits a cell into a "
                        "working session where its stacked seeds would not")
    parser.add_argument("--only", default=None,
                        help="only these groups (SUITE/DATASET/ENTRY[,...], as status names "
                        "them)")
    args = parser.parse_args(argv)
    names = [stage.name for stage in STAGES]
    if args.stages is not None and not set(args.stages.split(",")) <= set(names):
        parser.error(f"--stages: expected some of {','.join(names)}, got '{args.stages}'")
    chosen = [s for s in STAGES if args.stages is None or s.name in args.stages.split(",")]
    if args.only is not None:
        chosen = _only(chosen, args.only.split(","), parser)
    for option in ("seeds", "jobs", "threads", "seed_chunk"):
        if getattr(args, option) is not None and getattr(args, option) < 1:
            parser.error(f"--{option.replace('_', '-')}: expected a positive number, got "
                         f"{getattr(args, option)}")
    return one_line_errors(lambda: campaign_action(args, chosen))


def _only(stages: list[Stage | Studies], names: list[str], parser: argparse.ArgumentParser
          ) -> list[Stage | Studies]:
    """The lists cut to the groups named (those left without any dropped)."""
    known = {group.name for stage in stages for group in stage.groups}
    if unknown := [name for name in names if name not in known]:
        parser.error(f"--only: no group {', '.join(unknown)} in these lists; expected "
                     "SUITE/DATASET/ENTRY as `status` names them, e.g. table1/mnist/dfa")
    cut: list[Stage | Studies] = []
    for stage in stages:
        if isinstance(stage, Studies):
            entries = tuple(e for e in stage.entries
                            if Group(stage.suite, stage.dataset, e).name in names)
            cut += [replace(stage, entries=entries)] if entries else []
        elif groups := tuple(g for g in stage.groups if g.name in names):
            cut.append(replace(stage, groups=groups))
    return cut


def campaign_action(args: argparse.Namespace, chosen: list[Stage | Studies]) -> int:
    for option, folder in (("--out", args.out), ("--work", args.work)):
        if (in_the_way := file_in_the_way(folder)) is not None:
            from_cache = folder == default_cache_dir() / "reference" and CACHE_ENV in os.environ
            raise InputError(f"{option} {folder}: {in_the_way} is a file; expected a folder"
                             + (f" (${CACHE_ENV}/reference by default)" if from_cache else ""))
    data = DataSettings(verify_checksums=not args.skip_checksums,
                        **({"root": args.data_dir} if args.data_dir else {}))
    campaign = Campaign(args.out, args.work, args.seeds, data)
    if args.action == "status":
        campaign.status(chosen)
        return 0
    if args.action == "collect":
        for group in {group for stage in STAGES for group in stage.groups}:
            campaign.adopt_legacy(group)
        print(f"{campaign.collect()} new records in {campaign.out}")
        return 0
    if args.stages is None:  # the first list not complete, and what follows it
        while len(chosen) > 1 and not campaign.incomplete(chosen[0]):
            chosen.pop(0)
    return run(campaign, chosen, args)


if __name__ == "__main__":
    sys.exit(main())
