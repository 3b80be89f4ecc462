"""The specification of one run (a *cell*): dataset, architecture, protocol, algorithm settings,
seed and precision, as frozen dataclasses. Everything below the YAML layer (the runner, the store,
the tuner, the conformance checks) works with these; ``suite`` builds them from YAML, and others
build them directly (``dataclasses.replace``). The ranges declared with the types are checked
where values are read (``schema.coerce``)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from .architecture import ArchitectureSpec
from .schema import Beta, Check, Name, NonNegativeInt, PositiveFloat, PositiveInt

Precision = Literal["float32", "float64"]
# What a table reports: the test error (test loss for regression) at the selected epoch, or the
# training loss of the last epoch (the paper's Table 2).
Metric = Literal["test_error", "train_loss"]

Fraction = Annotated[float, Check(lambda x: 0 <= x <= 1, "a number from 0 to 1")]
# Seeds go to numpy's and torch's generators, which take 32-bit seeds.
Seed = Annotated[int, Check(lambda n: 0 <= n < 2**32, "a seed in [0, 2^32)")]

@dataclass(frozen=True)
class MetricsConfig:
    """What to log, every ``log_interval`` minibatches (None: nothing)."""

    log_interval: PositiveInt | None = None
    bp_angles: bool = True
    gnt_angles: bool = True
    # λ per hidden layer (one value: every layer); 0 means the pseudo-inverse.
    gnt_damping: float | tuple[float, ...] = 0.0
    # Damping search: GNT angles for every λ of this grid (algorithms.md §9.2).
    damping_grid: tuple[float, ...] = ()
    nullspace_layers: tuple[int, ...] = ()  # layers whose update's nullspace ratio is logged
    # Metric plugins also logged, by name; each one's result is stored under its name.
    extra: tuple[Name, ...] = ()


@dataclass(frozen=True)
class Pruning:
    """Stop a run whose training accuracy is below ``min_train_accuracy`` after epoch
    ``from_epoch`` or later (algorithms.md §7: 0.40 for MNIST / Fashion-MNIST, 0.25 for CIFAR-10, from 6)."""

    min_train_accuracy: Fraction
    from_epoch: int = 6


@dataclass(frozen=True)
class Protocol:
    epochs: PositiveInt
    batch_size: PositiveInt = 128
    validation: PositiveInt | None = 5000  # samples held out of the training set; null: none
    frozen_layers: tuple[int, ...] = ()  # 1-based layers whose forward weights never move
    pruning: Pruning | None = None
    eval_batch_size: PositiveInt = 1000
    # Seconds a cell may run in one invocation before it ends as "timeout" (null: no limit).
    # Not part of the config hash: it never changes the result of a cell that finishes.
    cell_timeout: PositiveFloat | None = None


@dataclass(frozen=True)
class DatasetConfig:
    source: str
    architecture: ArchitectureSpec
    protocol: Protocol
    label: str = ""
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class OptimizerConfig:
    """The forward Adam. A list of learning rates (and epsilons) means one Adam per layer."""

    lr: PositiveFloat | tuple[PositiveFloat, ...]
    betas: tuple[Beta, Beta] = (0.99, 0.99)
    eps: PositiveFloat | tuple[PositiveFloat, ...] = 1e-4
    normalize_lr: bool = True  # divide lr by the algorithm's target step size (algorithms.md §3)


@dataclass(frozen=True)
class ScheduleConfig:
    feedback_pretraining_epochs: NonNegativeInt = 0
    extra_feedback_epochs: NonNegativeInt = 0


@dataclass(frozen=True)
class Settings:
    """What an algorithm entry sets, and what a per-dataset override may change."""

    optimizer: OptimizerConfig
    schedule: ScheduleConfig = ScheduleConfig()
    params: dict[str, Any] = field(default_factory=dict)
    precision: Precision | None = None
    metrics: MetricsConfig = MetricsConfig()


@dataclass(frozen=True)
class Cell:
    """One (dataset, algorithm, seed) run with everything resolved."""

    suite: str
    dataset_id: str
    dataset: DatasetConfig
    algorithm_id: str
    algorithm: str
    label: str
    settings: Settings
    params: Any  # the algorithm's Params dataclass instance
    precision: Precision
    seed: int
    order: tuple[int, int]  # (dataset index, algorithm index) in the suite, for table layout
    skip_reason: str | None = None
    subset: int | None = None
    metric: Metric = "test_error"  # reporting only: not part of the config hash
    deviations: tuple[str, ...] = ()  # quick-trial overrides that depart from the suite
    # What else the result depends on, resolved where the cell runs (the algorithm's code
    # digest, the data's identity): hashed with the config, so a change re-runs the cell.
    inputs: dict[str, Any] = field(default_factory=dict)
    baseline: str | None = None  # the entry p-values compare against; reporting only, like metric
    # How the settings were obtained ({"origin": "paper"}, {"origin": "tuned", ...its budget
    # and study}; empty: not stated, so not tuned), for tables; reporting only, like metric.
    settings_origin: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return f"{self.dataset_id}/{self.algorithm_id}/seed-{self.seed}"

    def config(self) -> dict[str, Any]:
        """Everything that determines the result (and nothing else): hashed for caching.
        Metrics appear only when some are logged, so records without any stay valid."""
        config = {
            "dataset": self.dataset, "algorithm": self.algorithm,
            "optimizer": self.settings.optimizer, "schedule": self.settings.schedule,
            "params": self.params, "precision": self.precision, "seed": self.seed,
            "subset": self.subset,
        }
        if self.settings.metrics != MetricsConfig():
            config["metrics"] = self.settings.metrics
        if self.inputs:
            config["inputs"] = self.inputs
        config = _jsonable(config)
        del config["dataset"]["protocol"]["cell_timeout"]  # a limit, not a setting
        return config

    def config_hash(self) -> str:
        text = json.dumps(self.config(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def _jsonable(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


