"""A suite as read: its header, its algorithm entries and the expansion into cells (dataset ×
algorithm × seed), with the command line's quick-trial overrides."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from ..errors import InputError, did_you_mean
from ..registry import Registry, default_registry
from ..spec.cell import (
    Cell,
    DatasetConfig,
    Metric,
    Precision,
    Seed,
    Settings,
)
from ..spec.schema import (
    Check,
    Name,
    NonNegativeInt,
    PositiveInt,
)

Seeds = Annotated[tuple[Seed, ...], Check(lambda s: len(s) == len(set(s)) > 0,
                                          "a non-empty list of distinct seeds")]
# N means seeds 0..N-1, each a cell per dataset and algorithm: a typo like 1000000 should not
# allocate millions of cells.
SeedCount = Annotated[int, Check(lambda n: 1 <= n <= 10_000, "a number of seeds from 1 to 10000")]


@dataclass(frozen=True)
class SearchSpace:
    """One hyper-parameter's range for ``bench tune``: ``low``..``high`` (integers when both
    are integers; ``log`` for a log scale; optional ``step``) or a list of ``choices``."""

    low: int | float | None = None
    high: int | float | None = None
    log: bool = False
    step: int | float | None = None
    choices: tuple[Any, ...] | None = None


@dataclass(frozen=True)
class TrialPruning:
    """How ``bench tune`` stops poor trials early, from each epoch's validation error of a
    trial's first seed: ``median`` (Optuna's MedianPruner: worse than the median of earlier
    trials at the same epoch), ``successive-halving`` (Optuna's SuccessiveHalvingPruner, rungs
    from the epoch after the warm-up up by ``reduction_factor``) or ``none``."""

    rule: Literal["median", "successive-halving", "none"] = "median"
    warmup_epochs: NonNegativeInt = 1  # epochs a trial always runs: never pruned during them
    startup_trials: NonNegativeInt = 2  # median: trials that run in full before any is pruned
    reduction_factor: Annotated[int, Check(lambda n: n >= 2, "an integer ≥ 2")] = 3


@dataclass(frozen=True)
class TuningBudget:
    """A suite's ``tuning:`` block: the budget every searched entry gets alike (``bench tune``).
    ``epochs`` and ``subset`` replace each dataset's (None: the dataset's epochs, all training
    samples); a trial trains the suite's first ``seeds`` seeds and scores their mean validation
    error."""

    trials: PositiveInt
    epochs: PositiveInt | None = None
    subset: PositiveInt | None = None
    seeds: PositiveInt = 1
    sampler_seed: NonNegativeInt = 0  # the TPE sampler's seed
    pruning: TrialPruning = TrialPruning()


@dataclass(frozen=True)
class Tuned:
    """How an entry's values on one dataset were found (``tuned:`` in a suite that ``bench
    tune`` wrote): the budget and search space, the study file with its SHA-256 digest, and the
    best trial with its mean validation error (``budget.trials``: the trials the study had
    finished). ``values`` are the tuned values (KEY.PATH of the entry -> value); the suite must
    give the entry exactly these on that dataset."""

    budget: TuningBudget
    search: dict[str, SearchSpace]
    values: dict[str, Any]
    study: str
    sha256: Annotated[str, Check(lambda s: len(s) == 64, "a SHA-256 digest (64 hex digits)")]
    trial: NonNegativeInt
    validation_error: float


@dataclass(frozen=True)
class AlgorithmEntry:
    """The keys of one entry under ``algorithms:`` (``Settings`` plus these)."""

    algorithm: str | None = None  # the plugin's algorithm name; defaults to the entry's key
    label: str | None = None
    skip: tuple[str, ...] = ()  # dataset ids this entry is not run on
    datasets: dict[str, Any] = field(default_factory=dict)  # per-dataset Settings overrides
    # bench tune: KEY.PATH (relative to the entry, e.g. optimizer.lr) -> SearchSpace
    search: dict[str, Any] = field(default_factory=dict)
    # How the settings were obtained, for tables: "paper", or any short text (none: "not tuned").
    origin: str | None = None
    tuned: dict[Name, Tuned] = field(default_factory=dict)  # dataset id -> provenance

    def settings_origin(self, dataset: str) -> dict[str, Any]:
        """How the entry's settings on ``dataset`` were obtained, as the cells carry it into
        their records: tuned (with the provenance), the entry's ``origin``, or {} (not stated)."""
        if dataset in self.tuned:
            return {"origin": "tuned", **dataclasses.asdict(self.tuned[dataset])}
        return {"origin": self.origin} if self.origin else {}


@dataclass(frozen=True)
class SuiteHeader:
    name: Name | None = None
    description: str = ""
    seeds: SeedCount | Seeds = 1
    precision: Precision = "float32"
    metric: Metric = "test_error"
    # The algorithm entry that p-values compare against (default: 'bp' when there is one).
    baseline: Name | None = None
    # Run the seeds of each cell as one computation (bench run --vectorize-seeds).
    vectorize_seeds: bool = False
    tuning: TuningBudget | None = None  # bench tune's budget
    datasets: dict[Name, Any] = field(default_factory=dict)
    algorithms: dict[Name, Any] = field(default_factory=dict)


@dataclass
class Suite:
    name: str
    path: Path
    description: str
    seeds: tuple[int, ...]
    datasets: dict[str, DatasetConfig]
    algorithms: dict[str, AlgorithmEntry]
    resolved: dict[tuple[str, str], tuple[Settings, Any, Precision]]  # (alg, ds) -> settings
    names: dict[str, str]  # algorithm entry id -> plugin algorithm name
    labels: dict[str, str]  # algorithm entry id -> display label
    metric: Metric = "test_error"
    overrides: tuple[str, ...] = ()  # --set items applied when loading
    baseline: str | None = None  # algorithm entry id
    vectorize_seeds: bool = False
    tuning: TuningBudget | None = None

    def cells(self, *, seeds: int | None = None, only: list[str] | None = None,
              datasets: list[str] | None = None, epochs: int | None = None,
              subset: int | None = None, registry: Registry | None = None) -> list[Cell]:
        """Expand into cells, with the command line's quick-trial overrides applied. A cell of
        an algorithm that does not support the dataset's network is skipped, with the reason;
        ``registry`` is the run's (default: the built-in and installed plugins)."""
        registry = registry or default_registry()
        for kind, chosen, known in (("algorithm", only, self.algorithms),
                                    ("dataset", datasets, self.datasets)):
            for name in chosen or ():
                if name not in known:
                    raise InputError(f"{self.path}: no {kind} '{name}' in this suite"
                                     f"{did_you_mean(name, known)}; it has: {', '.join(known)}")
        seed_list = list(self.seeds)
        deviations = [f"--set {item}" for item in self.overrides]
        if seeds is not None and seeds != len(seed_list):
            deviations.append(f"{seeds} of the suite's {len(seed_list)} seeds")
        if subset is not None:
            deviations.append(f"trained on {subset} samples")
        if seeds is not None:
            seed_list = (seed_list + list(range(max(seed_list, default=-1) + 1,
                                                max(seed_list, default=-1) + 1 + seeds)))[:seeds]
        cells = []
        for d_index, (d_id, dataset) in enumerate(self.datasets.items()):
            if datasets and d_id not in datasets:
                continue
            cell_deviations = list(deviations)
            if epochs is not None and epochs != dataset.protocol.epochs:
                cell_deviations.append(f"{epochs} instead of {dataset.protocol.epochs} epochs")
                dataset = dataclasses.replace(
                    dataset, protocol=dataclasses.replace(dataset.protocol, epochs=epochs))
            for a_index, (a_id, entry) in enumerate(self.algorithms.items()):
                if only and a_id not in only:
                    continue
                settings, params, precision = self.resolved[(a_id, d_id)]
                reason = None
                if d_id in entry.skip:
                    reason = "not run on this dataset (suite's skip list)"
                else:
                    caps = registry.get(self.names[a_id]).cls.capabilities
                    kind = dataset.architecture.type
                    task = registry.dataset(dataset.source).kind
                    if not caps.supports(registry.architecture(kind).layer_kinds):
                        reason = f"{self.names[a_id]} does not support {kind.upper()} networks"
                    elif not caps.supports_task(task):
                        reason = (f"{self.names[a_id]} does not support {task} tasks (it "
                                  f"supports {' and '.join(caps.tasks) or 'none'})")
                for seed in seed_list:
                    cells.append(Cell(self.name, d_id, dataset, a_id, self.names[a_id],
                                      self.labels[a_id], settings, params, precision, seed,
                                      (d_index, a_index), reason, subset, self.metric,
                                      tuple(cell_deviations), baseline=self.baseline,
                                      settings_origin=entry.settings_origin(d_id)))
        return cells

    def cell(self, algorithm: str, dataset: str, *, seed: int | None = None,
             epochs: int | None = None, registry: Registry | None = None) -> Cell:
        """The one cell a search works on (``bench tune``, ``bench damping``): the entry's on
        the dataset, with ``seed`` (default: the suite's first); an InputError when the seed is
        not the suite's or the algorithm does not run on that dataset."""
        cells = [c for c in self.cells(only=[algorithm], datasets=[dataset], epochs=epochs,
                                       registry=registry) if seed is None or c.seed == seed]
        if not cells:
            raise InputError(f"seed {seed} is not in {self.path}")
        if cells[0].skip_reason:
            raise InputError(f"{cells[0].key} is skipped: {cells[0].skip_reason}")
        return cells[0]
