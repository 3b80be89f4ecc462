"""Reading a suite file: YAML with every key's line, ``--set`` overrides, and validation whose
every error is ``file:line: key.path: message``."""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import InputError, SuiteError, did_you_mean
from ..registry import Registry, Wanted, unknown_algorithm
from ..spec.cell import (
    DatasetConfig,
    MetricsConfig,
    OptimizerConfig,
    Precision,
    Settings,
)
from ..spec.schema import (
    PLAIN_NAME,
    Path_,
    Source,
    coerce_dataclass,
    load_yaml,
)
from .document import AlgorithmEntry, SearchSpace, Suite, SuiteHeader

if TYPE_CHECKING:  # the model imports torch, which validating a suite need not
    from ..model.algorithm import Algorithm

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
    # The value replaces whatever the file had there: errors inside it (a list's items) are
    # the command line's, not the file's old lines.
    path = tuple(parts)
    for recorded in [p for p in source.lines if p[:len(path)] == path]:
        del source.lines[recorded]
    source.lines[path] = "--set"


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


def _read(path: Path, overrides: list[str]) -> tuple[Any, Source]:
    """The suite's YAML document with the --set overrides applied, and its line numbers."""
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
    return document, source


def read_document(path: str | Path, overrides: list[str]) -> Any:
    """The suite file's YAML document as read, with the ``--set`` overrides applied (what
    ``bench tune`` writes its tuned suite from)."""
    return _read(Path(path), overrides)[0]


def wanted_plugins(path: str | Path, overrides: list[str], only: list[str],
                   executor: str | None = None) -> Wanted | None:
    """The plugin names a run of the algorithm entries ``only`` needs: their algorithms and the
    metrics they log, every dataset's source and architecture (all datasets are checked), and
    ``executor``. None when the suite cannot be read so far: ``load_suite`` then says why,
    with every plugin loaded."""
    try:
        document, _ = _read(Path(path), overrides)
    except InputError:
        return None
    datasets, algorithms = (document.get(key) if isinstance(document, dict) else None
                            for key in ("datasets", "algorithms"))
    if not isinstance(datasets, dict) or not isinstance(algorithms, dict):
        return None
    metrics: set[Any]  # unchecked YAML values until the str check below
    names, metrics, sources, types = set(), set(), set(), set()
    for a_id in only:
        entry = algorithms.get(a_id)
        if entry is None:
            continue  # not an entry of the suite: Suite.cells says so
        if not isinstance(entry, dict):
            return None
        names.add(entry.get("algorithm") or a_id)
        overrides_by_dataset = entry.get("datasets") or {}
        if not isinstance(overrides_by_dataset, dict):
            return None
        for settings in (entry, *overrides_by_dataset.values()):
            logged = settings.get("metrics") if isinstance(settings, dict) else None
            extra = logged.get("extra") if isinstance(logged, dict) else None
            metrics.update(extra if isinstance(extra, list) else ())
    for dataset in datasets.values():
        if not isinstance(dataset, dict):
            return None
        sources.add(dataset.get("source"))
        architecture = dataset.get("architecture")
        types.add(architecture.get("type", "mlp") if isinstance(architecture, dict) else "mlp")
    found = (names, sources, types, metrics, {executor} if executor else set())
    if not all(isinstance(name, str) for group in found for name in group):
        return None
    return Wanted(*(frozenset(group) for group in found))


def load_suite(path: str | Path, registry: Registry, overrides: Sequence[str] = (),
               only: list[str] | None = None) -> Suite:
    """Read and validate a suite file. Every problem is a ``SuiteError`` with file and line.
    ``only``: the algorithm entries to be run (``--only``); the others are not checked against
    their plugins, which need not be loaded."""
    path = Path(path)
    document, source = _read(path, list(overrides))
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
        if only is not None and a_id not in only:  # not run: its plugin may not be loaded
            algorithms[a_id], names[a_id], labels[a_id] = entry, name, entry.label or name
            continue
        if name not in registry:  # unknown, or claimed by two installed plugins
            raise source.error((*where, "algorithm") if entry.algorithm else where,
                               registry.ambiguous.get(name)
                               or unknown_algorithm(name, registry.algorithms))
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
        _check_tuned(entry, resolved, a_id, where, source)
        algorithms[a_id] = entry
        names[a_id] = name
        labels[a_id] = entry.label or cls.label or name

    # Two entries must not share a row title: a default one names its entry, unless the entry
    # is named after its algorithm (the 'bp' entry stays "BP").
    shared = {label for label in labels.values() if list(labels.values()).count(label) > 1}
    for a_id, entry in algorithms.items():
        if not entry.label and labels[a_id] in shared and a_id != names[a_id]:
            labels[a_id] = f"{labels[a_id]} ({a_id})"

    return Suite(suite_name, path, header.description, seeds, datasets, algorithms, resolved, names,
                 labels, header.metric, tuple(overrides), baseline, header.vectorize_seeds,
                 header.tuning)


def _check_tuned(entry: AlgorithmEntry, resolved: dict[tuple[str, str], tuple[Settings, Any,
                 Precision]], a_id: str, where: Path_, source: Source) -> None:
    """``tuned:`` names datasets of the suite, and the entry has exactly the tuned values on
    each: a value edited by hand after tuning must not be reported as tuned."""
    for d_id, tuned in entry.tuned.items():
        at = (*where, "tuned", d_id)
        if (a_id, d_id) not in resolved:
            raise source.error(at, f"unknown dataset '{d_id}'"
                               f"{did_you_mean(d_id, {d for _, d in resolved})}")
        settings, params, _ = resolved[(a_id, d_id)]
        for key, value in tuned.values.items():
            parts = str(key).split(".")
            node: Any = params if parts[0] == "params" else settings
            try:
                for part in parts[1:] if parts[0] == "params" else parts:
                    node = node[part] if isinstance(node, dict) else getattr(node, part)
            except (KeyError, AttributeError):
                raise source.error((*at, "values", key), "not a value of this entry") from None
            if _plain(node) != _plain(value):
                raise source.error((*at, "values", key), f"the entry has {_plain(node)!r} on "
                                   f"{d_id}, not the tuned value {value!r}: set it back, or "
                                   f"remove tuned.{d_id} (the value is not tuned)")


def _plain(value: Any) -> Any:
    """A setting as YAML writes it: lists for tuples, mappings for dataclasses."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = dataclasses.asdict(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return [_plain(v) for v in value] if isinstance(value, list | tuple) else value


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
                if not _scalar(choice) and not (isinstance(choice, list) and choice
                                                and all(map(_scalar, choice))):
                    raise source.error((*at, "choices", i), "a choice must be a number, a "
                                       "string, true/false, null or a list of those (Adam's "
                                       "betas)")
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
        if name == "alignment" or name in metrics.extra[:index]:
            raise source.error((*where, "metrics", "extra", index),
                               f"'{name}' is logged already (alignment always is)")
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


def _check_settings(raw: Any, where: Path_, source: Source, cls: type[Algorithm]) -> None:
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


def _scalar(value: Any) -> bool:
    return value is None or isinstance(value, bool | int | float | str)
