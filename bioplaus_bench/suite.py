"""YAML suites: the schema, validation with ``file:line: key.path`` errors, and expansion into cells
(dataset × algorithm × seed). The schema is documented in ``docs/suites.md``.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import yaml

from .errors import InputError, SuiteError, did_you_mean
from .metrics.alignment import MetricsConfig
from .registry import Registry
from .spec.cell import (
    Cell,
    DatasetConfig,
    Metric,
    OptimizerConfig,
    Precision,
    Seed,
    Settings,
)
from .spec.schema import (
    PLAIN_NAME,
    Check,
    Name,
    Path_,
    Source,
    coerce_dataclass,
    load_yaml,
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
class AlgorithmEntry:
    """The keys of one entry under ``algorithms:`` (``Settings`` plus these)."""

    algorithm: str | None = None  # the plugin's algorithm name; defaults to the entry's key
    label: str | None = None
    skip: tuple[str, ...] = ()  # dataset ids this entry is not run on
    datasets: dict[str, Any] = field(default_factory=dict)  # per-dataset Settings overrides
    # bench tune: KEY.PATH (relative to the entry, e.g. optimizer.lr) -> SearchSpace
    search: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class SuiteHeader:
    name: Name | None = None
    description: str = ""
    seeds: SeedCount | Seeds = 1
    precision: Precision = "float32"
    metric: Metric = "test_error"
    # The algorithm entry that p-values compare against (default: 'bp' when there is one).
    baseline: Name | None = None
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

    def cells(self, *, seeds: int | None = None, only: list[str] | None = None,
              datasets: list[str] | None = None, epochs: int | None = None,
              subset: int | None = None, registry: Registry | None = None) -> list[Cell]:
        """Expand into cells, with the command line's quick-trial overrides applied."""
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
            if subset is not None and dataset.source == "teacher":
                # The teacher task is generated with options.n_train samples: --subset would be
                # recorded as a deviation that never happened.
                raise InputError(f"{self.path}: --subset does not apply to dataset '{d_id}' "
                                 f"(source teacher); use --set datasets.{d_id}.options.n_train=N"
                                 f" or --datasets to leave it out")
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
                elif registry is not None:
                    caps = registry.get(self.names[a_id]).cls.capabilities
                    kind = dataset.architecture.type
                    if not caps.supports(registry.architecture(kind).layer_kinds):
                        reason = f"{self.names[a_id]} does not support {kind.upper()} networks"
                for seed in seed_list:
                    cells.append(Cell(self.name, d_id, dataset, a_id, self.names[a_id],
                                      self.labels[a_id], settings, params, precision, seed,
                                      (d_index, a_index), reason, subset, self.metric,
                                      tuple(cell_deviations), baseline=self.baseline))
        return cells


# Mappings whose keys are ids chosen by the suite, not names from the schema.
_ID_MAPPINGS = {"datasets": "dataset", "algorithms": "algorithm"}


def _set_path(document: dict, dotted: str, value: Any, source: Source) -> None:
    """Set one --set value. A path through an id that the suite does not have would quietly
    create a new dataset or algorithm entry (a typo would run a default-configured copy);
    other unknown keys are reported by the schema when the suite is validated."""
    parts = dotted.split(".")
    ids = document.get(parts[0])
    if len(parts) > 2 and parts[0] in _ID_MAPPINGS and isinstance(ids, dict) \
            and parts[1] not in ids:
        raise SuiteError(f"no {_ID_MAPPINGS[parts[0]]} '{parts[1]}' in the suite"
                         f"{did_you_mean(parts[1], ids)}", file="--set", key=dotted)
    node = document
    for depth, part in enumerate(parts[:-1]):
        child = node.get(part) if isinstance(node, dict) else None
        if child is None:
            child = node[part] = {}
            source.lines[tuple(parts[:depth + 1])] = "--set"  # errors about it point here
        if not isinstance(child, dict):
            raise SuiteError(f"cannot set a key inside {'.'.join(parts[:depth + 1])}, "
                             "which is not a mapping", file="--set", key=dotted)
        node = child
    node[parts[-1]] = value
    source.lines[tuple(parts)] = "--set"


def apply_overrides(document: Any, source: Source, overrides: list[str]) -> None:
    """``--set KEY=VALUE``: KEY is a dotted path into the suite, VALUE is read as YAML."""
    if not isinstance(document, dict):
        return
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise InputError(f"--set expects KEY=VALUE, got '{item}'")
        value, _ = load_yaml(text, f"--set {key}")
        _set_path(document, key.strip(), value, source)


def _merge(base: dict, override: dict) -> dict:
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


_SETTINGS_KEYS = {f.name for f in dataclasses.fields(Settings)}
# Every key an entry under `algorithms:` may have.
_ENTRY_KEYS = sorted({f.name for f in dataclasses.fields(AlgorithmEntry)} | _SETTINGS_KEYS)


def load_suite(path: str | Path, registry: Registry, overrides: list[str] = ()) -> Suite:
    """Read and validate a suite file. Every problem is a ``SuiteError`` with file and line."""
    path = Path(path)
    file = str(path)
    try:
        raw = path.read_bytes()
    except OSError as error:
        raise InputError(f"cannot read suite {file}: {error.strerror}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise SuiteError(f"not UTF-8 text: byte 0x{raw[error.start]:02x} at offset {error.start} "
                         "cannot be decoded; save the file as UTF-8", file=file,
                         line=raw.count(b"\n", 0, error.start) + 1) from None
    document, source = load_yaml(text, file)
    if document is None:
        raise SuiteError("the suite is empty", file=file, line=1)
    apply_overrides(document, source, list(overrides))
    header = coerce_dataclass(document, SuiteHeader, (), source)
    for key in ("datasets", "algorithms"):
        if not header.__dict__[key]:
            raise source.error((), f"missing required key '{key}' (a non-empty mapping)")

    suite_name = header.name or path.stem
    if not PLAIN_NAME.test(suite_name):
        raise source.error((), f"the suite is named '{suite_name}' after its file, which is not "
                           f"{PLAIN_NAME.expected}; set `name:`")
    if header.baseline is not None and header.baseline not in header.algorithms:
        raise source.error(("baseline",), f"no algorithm entry '{header.baseline}' in the suite"
                           f"{did_you_mean(header.baseline, header.algorithms)}; entries: "
                           f"{', '.join(header.algorithms)}")
    baseline = header.baseline or ("bp" if "bp" in header.algorithms else None)
    seeds = tuple(range(header.seeds)) if isinstance(header.seeds, int) else header.seeds

    datasets = {d_id: _dataset(raw, ("datasets", d_id), source, registry)
                for d_id, raw in header.datasets.items()}

    algorithms: dict[str, AlgorithmEntry] = {}
    resolved: dict[tuple[str, str], tuple[Settings, Any, Precision]] = {}
    names, labels = {}, {}
    for a_id, raw in header.algorithms.items():
        where: Path_ = ("algorithms", a_id)
        if not isinstance(raw, dict):
            raise source.error(where, f"expected a mapping, got {raw!r}")
        for key in raw:
            if key not in _ENTRY_KEYS:
                raise source.error((*where, key), f"unknown key{did_you_mean(str(key), _ENTRY_KEYS)}"
                                                  f"; expected one of: {', '.join(_ENTRY_KEYS)}")
        meta = {k: v for k, v in raw.items() if k not in _SETTINGS_KEYS}
        entry = coerce_dataclass(meta, AlgorithmEntry, where, source)
        name = entry.algorithm or a_id
        if name not in registry:
            raise source.error((*where, "algorithm") if entry.algorithm else where,
                               f"unknown algorithm '{name}'{did_you_mean(name, registry.algorithms)}"
                               f"; known: {', '.join(registry.algorithms)}")
        cls = registry.get(name).cls
        base = {k: v for k, v in raw.items() if k in _SETTINGS_KEYS}
        _check_settings(base, where, source, cls)
        entry = dataclasses.replace(entry, search=_search(entry.search, base, where, source, cls))
        for d_id in (*entry.skip, *entry.datasets):
            if d_id not in datasets:
                key = "datasets" if d_id in entry.datasets else "skip"
                raise source.error((*where, key, d_id) if key == "datasets" else (*where, key),
                                   f"unknown dataset '{d_id}'{did_you_mean(d_id, datasets)}")
        for d_id in datasets:
            override = entry.datasets.get(d_id) or {}
            o_where = (*where, "datasets", d_id)
            _check_settings(override, o_where, source, cls)
            merged = _merge({"schedule": dict(cls.default_schedule)}, _merge(base, override))
            settings = coerce_dataclass(merged, Settings, where, source)
            params = coerce_dataclass(settings.params, cls.Params, (*where, "params"), source)
            depth = datasets[d_id].architecture.depth
            _check_per_layer(settings.optimizer, depth,
                             o_where if "optimizer" in override else where, source)
            _check_metrics(settings.metrics, depth, o_where if "metrics" in override else where,
                           source, registry)
            precision = settings.precision or header.precision
            resolved[(a_id, d_id)] = (settings, params, precision)
        algorithms[a_id] = entry
        names[a_id] = name
        labels[a_id] = entry.label or cls.label or name

    return Suite(suite_name, path, header.description, seeds, datasets, algorithms, resolved, names,
                 labels, header.metric, tuple(overrides), baseline)


def _search(raw: dict[str, Any], base: dict, where: Path_, source: Source, cls: type
            ) -> dict[str, SearchSpace]:
    """Validate ``search:``: each KEY.PATH must name a value of the entry's settings, and each
    range must be usable (checked by setting its low value, or each choice, into the entry)."""
    spaces = {}
    for key, spec in raw.items():
        at = (*where, "search", key)
        space = coerce_dataclass(spec, SearchSpace, at, source)
        parts = str(key).split(".")
        if parts[0] not in _SETTINGS_KEYS or len(parts) < 2 and parts[0] != "precision":
            raise source.error(at, f"expected KEY.PATH of a value of this entry, starting with one "
                               f"of: {', '.join(sorted(_SETTINGS_KEYS))}")
        if space.choices is not None:
            if space.low is not None or space.high is not None or space.log or space.step:
                raise source.error(at, "give either choices or low/high (with log, step)")
            if not space.choices:
                raise source.error((*at, "choices"), "expected at least one choice")
            for i, choice in enumerate(space.choices):
                if not isinstance(choice, bool | int | float | str) and choice is not None:
                    raise source.error((*at, "choices", i), "a choice must be a number, a "
                                       "string, true/false or null")
            samples = list(space.choices)
        else:
            if space.low is None or space.high is None:
                raise source.error(at, "expected low and high, or choices")
            if not space.low < space.high:
                raise source.error(at, f"low ({space.low}) must be below high ({space.high})")
            if space.log and space.low <= 0:
                raise source.error((*at, "low"), "a log-scale range needs low > 0")
            if space.log and space.step is not None:
                raise source.error((*at, "step"), "step cannot be combined with log")
            samples = [space.low]
        for sample in samples:
            trial = copy.deepcopy(base)
            node = trial
            for part in parts[:-1]:
                child = node.setdefault(part, {})
                if not isinstance(child, dict):
                    raise source.error(at, f"cannot set a key inside {part}, which is not a mapping")
                node = child
            node[parts[-1]] = sample
            try:
                _check_settings(trial, where, source, cls)
            except SuiteError as error:
                raise source.error(at, f"{key}={sample!r} is not valid: {error.message}") from None
        spaces[key] = space
    return spaces


def _check_per_layer(optimizer: OptimizerConfig, depth: int, where: Path_, source: Source) -> None:
    """Lists of learning rates or epsilons need one entry per layer (one Adam per layer)."""
    for key in ("lr", "eps"):
        value = getattr(optimizer, key)
        if isinstance(value, tuple) and len(value) != depth:
            raise source.error((*where, "optimizer", key), f"expected {depth} values, one per "
                               f"layer of the network, got {len(value)}")
    if isinstance(optimizer.eps, tuple) and not isinstance(optimizer.lr, tuple):
        raise source.error((*where, "optimizer", "eps"), "a list of epsilons needs a list of "
                           "learning rates (one Adam per layer)")


def _check_metrics(metrics: MetricsConfig, depth: int, where: Path_, source: Source,
                   registry: Registry) -> None:
    known = registry.provided("metrics")
    for index, name in enumerate(metrics.extra):
        if name not in known:
            raise source.error((*where, "metrics", "extra", index),
                               f"unknown metric '{name}'{did_you_mean(name, known)}; known: "
                               f"{', '.join(known)}")
    damping = metrics.gnt_damping
    if isinstance(damping, tuple) and len(damping) != depth - 1:
        raise source.error((*where, "metrics", "gnt_damping"), f"expected {depth - 1} values, one "
                           f"per hidden layer, got {len(damping)}")
    for layer in metrics.nullspace_layers:
        if not 1 <= layer <= depth:
            raise source.error((*where, "metrics", "nullspace_layers"),
                               f"layer {layer} does not exist: the network has layers 1..{depth}")


def _check_settings(raw: Any, where: Path_, source: Source, cls: type) -> None:
    """Type-check (part of) a Settings mapping where it stands in the file, so that errors
    point at the line that holds the bad value."""
    if not isinstance(raw, dict):
        raise source.error(where, f"expected a mapping, got {raw!r}")
    coerce_dataclass(raw, Settings, where, source, partial=True)
    coerce_dataclass(raw.get("params") or {}, cls.Params, (*where, "params"), source, partial=True)


def _dataset(raw: Any, where: Path_, source: Source, registry: Registry) -> DatasetConfig:
    """A dataset entry, its source and architecture checked against their plugins."""
    config = coerce_dataclass(raw, DatasetConfig, where, source)
    known = registry.provided("datasets")
    if config.source not in known:
        raise source.error((*where, "source"), f"unknown dataset source '{config.source}'"
                           f"{did_you_mean(config.source, known)}; known: {', '.join(known)}")
    dataset = registry.dataset(config.source)
    options = coerce_dataclass(config.options, dataset.Options, (*where, "options"), source)
    config = dataclasses.replace(config, options=options, label=config.label or dataset.label)
    arch, at = config.architecture, (*where, "architecture")
    architectures = registry.provided("architectures")
    if arch.type not in architectures:
        raise source.error((*at, "type"), f"unknown architecture '{arch.type}'"
                           f"{did_you_mean(arch.type, architectures)}; known: "
                           f"{', '.join(architectures)}")
    architecture = registry.architecture(arch.type)
    if architecture.Options is not None:
        arch = dataclasses.replace(arch, options=coerce_dataclass(
            arch.options, architecture.Options, (*at, "options"), source))
        config = dataclasses.replace(config, architecture=arch)
    elif arch.options:
        raise source.error((*at, "options"), f"architecture '{arch.type}' takes no options")
    problem = architecture.check(arch)
    if problem:
        raise source.error(at, problem)
    protocol = config.protocol
    for layer in protocol.frozen_layers:
        if not 1 <= layer <= arch.depth:
            raise source.error((*where, "protocol", "frozen_layers"),
                               f"layer {layer} does not exist: the network has layers "
                               f"1..{arch.depth}")
    return config


# --- writing suite fragments (bench tune, bench damping) ---------------------------------------

def fragment(algorithm: str, values: dict[str, Any]) -> dict[str, Any]:
    """``values`` (dotted paths relative to an algorithm entry, e.g. ``optimizer.lr`` or
    ``datasets.mnist.metrics.gnt_damping``) as a suite fragment that merges into a suite:
    ``algorithms: {<id>: {optimizer: {lr: …}, …}}``."""
    entry: dict[str, Any] = {}
    for key, value in values.items():
        node = entry
        *parents, last = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    return {"algorithms": {algorithm: entry}}


class _FragmentDumper(yaml.SafeDumper):
    """Block style for the nesting, flow style for the innermost mappings and lists, as the
    shipped suites are written: ``metrics: {gnt_damping: [1.0e-3, 0.1]}``."""

    def represent_mapping(self, tag, mapping, flow_style=None):
        leaf = all(not isinstance(v, dict) for v in dict(mapping).values())
        return super().represent_mapping(tag, mapping, flow_style=leaf)


def fragment_yaml(document: dict[str, Any]) -> str:
    return yaml.dump(document, Dumper=_FragmentDumper, sort_keys=False)
