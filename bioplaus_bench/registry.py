"""The registry of plugins of five kinds (algorithms, datasets, architectures, metrics, executors):
built-ins and outside packages through the entry-point group ``bioplaus_bench.plugins``, and
single files given with ``--plugin path/to/file.py``.

Built-ins register exactly like outside plugins: the built-in algorithms through the entry point
of this distribution, the core's datasets, architectures, metrics and executors as the modules of
``DEFAULT_PLUGINS`` (as datasette does); they are told apart only by their origin, shown in
``bench list``.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import importlib
import importlib.util
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path
from types import ModuleType

import pluggy

from . import hookspecs
from .errors import PluginError, did_you_mean
from .model.algorithm import Algorithm

ENTRY_POINT_GROUP = "bioplaus_bench.plugins"
DISTRIBUTION = "bioplaus-bench"
# The core's own plugins, registered through the same hooks as everyone else's.
DEFAULT_PLUGINS = ("bioplaus_bench.data", "bioplaus_bench.model.architectures",
                   "bioplaus_bench.metrics", "bioplaus_bench.run.executors")
# kind -> (hook, singular noun); the registry keeps one dict per kind.
KINDS = {"datasets": ("bioplaus_bench_datasets", "dataset"),
         "architectures": ("bioplaus_bench_architectures", "architecture"),
         "metrics": ("bioplaus_bench_metrics", "metric"),
         "executors": ("bioplaus_bench_executors", "executor")}


@dataclass(frozen=True)
class AlgorithmInfo:
    name: str
    cls: type[Algorithm]
    origin: str  # "built-in", "entry point" or "file"
    source: str  # the module or file that provides it

    @property
    def label(self) -> str:
        return self.cls.label or self.name


@dataclass(frozen=True)
class Provided:
    """A dataset, architecture, metric or executor, with the plugin it came from."""

    name: str
    value: object
    origin: str  # "built-in", "entry point" or "file"
    source: str


@dataclass
class Registry:
    algorithms: dict[str, AlgorithmInfo]
    warnings: list[str]
    # The other kinds; None: the built-in ones (a registry made by hand, e.g. in a test).
    datasets: dict[str, Provided] | None = None
    architectures: dict[str, Provided] | None = None
    metrics: dict[str, Provided] | None = None
    executors: dict[str, Provided] | None = None

    def get(self, name: str) -> AlgorithmInfo:
        try:
            return self.algorithms[name]
        except KeyError:
            raise PluginError(f"unknown algorithm '{name}'{did_you_mean(name, self.algorithms)}; "
                              f"known: {', '.join(sorted(self.algorithms))}") from None

    def __contains__(self, name: str) -> bool:
        return name in self.algorithms

    def provided(self, kind: str) -> dict[str, Provided]:
        """Every plugin of ``kind`` ("datasets", "architectures", "metrics", "executors")."""
        found = getattr(self, kind)
        return default_registry().provided(kind) if found is None else found

    def _lookup(self, kind: str, name: str) -> object:
        known = self.provided(kind)
        if name not in known:
            raise PluginError(f"unknown {KINDS[kind][1]} '{name}'{did_you_mean(name, known)}; "
                              f"known: {', '.join(sorted(known))}")
        return known[name].value

    def dataset(self, name: str):
        return self._lookup("datasets", name)

    def architecture(self, name: str):
        return self._lookup("architectures", name)

    def metric(self, name: str):
        return self._lookup("metrics", name)

    def executor(self, name: str):
        return self._lookup("executors", name)


@functools.cache
def default_registry() -> Registry:
    """The registry without ``--plugin`` files: built-ins and installed packages."""
    return load_registry()


def _import_file(path: Path) -> ModuleType:
    path = path.resolve()
    if not path.is_file():
        raise PluginError(f"plugin file not found: {path}")
    digest = hashlib.sha1(str(path).encode()).hexdigest()[:10]
    module_name = f"bioplaus_bench_file_plugin_{path.stem}_{digest}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except KeyboardInterrupt:
        raise
    except BaseException as error:  # SystemExit too: a plugin never ends bench silently
        del sys.modules[module_name]
        raise PluginError(f"plugin file {path} failed to import: "
                          f"{type(error).__name__}: {error}") from error
    return module


def _check_algorithm(cls: object, source: str) -> type[Algorithm]:
    if not (isinstance(cls, type) and issubclass(cls, Algorithm)):
        raise PluginError(f"{source}: bioplaus_bench_algorithms returned {cls!r}, "
                          "which is not a subclass of bioplaus_bench.api.Algorithm")
    if not isinstance(getattr(cls, "name", None), str) or not cls.name:
        raise PluginError(f"{source}: algorithm class {cls.__name__} has no `name`")
    if not dataclasses.is_dataclass(cls.Params):
        raise PluginError(f"{source}: {cls.__name__}.Params must be a dataclass")
    return cls


def _check_hooks(manager: pluggy.PluginManager, module: ModuleType, file: str) -> None:
    """A file given with --plugin that implements no known hook would add nothing, silently
    (typically a forgotten @hookimpl or a misspelt hook name)."""
    callers = manager.get_hookcallers(module) or []
    if not callers:
        raise PluginError(f"plugin file {file} defines no bioplaus_bench hook, so it provides no "
                          "algorithm (expected a function decorated with @hookimpl, e.g. "
                          "bioplaus_bench_algorithms)")
    hooks = [name for name in dir(hookspecs) if name.startswith("bioplaus_bench_")]
    for caller in callers:
        if not caller.has_spec():
            raise PluginError(f"plugin file {file}: unknown hook '{caller.name}'"
                              f"{did_you_mean(caller.name, hooks)}; known: {', '.join(hooks)}")


def load_registry(plugin_files: Iterable[Path | str] = ()) -> Registry:
    """Load every plugin and collect its algorithms. A broken entry point is reported as a
    warning (other plugins still load); a broken ``--plugin`` file, or two plugins claiming one
    algorithm name, is an error; so is a hook that raises (for an entry point: a warning)."""
    manager = pluggy.PluginManager("bioplaus_bench")
    manager.add_hookspecs(hookspecs)
    origins: dict[str, tuple[str, str]] = {}  # plugin name -> (origin, source)
    warnings: list[str] = []

    for module_name in DEFAULT_PLUGINS:
        module = importlib.import_module(module_name)
        manager.register(module, name=f"core:{module_name}")
        origins[manager.get_name(module)] = ("built-in", module_name)

    for entry_point in entry_points(group=ENTRY_POINT_GROUP):
        distribution = entry_point.dist.name if entry_point.dist else ""
        origin = "built-in" if distribution == DISTRIBUTION else "entry point"
        source = f"{entry_point.value} ({distribution or 'unknown distribution'})"
        try:
            module = entry_point.load()
        except KeyboardInterrupt:
            raise
        except BaseException as error:  # SystemExit too: a plugin never ends bench silently
            warnings.append(f"plugin {entry_point.name} [{origin}] from {source} failed to load: "
                            f"{type(error).__name__}: {error}")
            continue
        if manager.is_registered(module):
            continue  # the same module declared twice (e.g. two installs of one package)
        manager.register(module, name=f"entry:{entry_point.name}:{entry_point.value}")
        origins[manager.get_name(module)] = (origin, source)

    for path in plugin_files:
        module = _import_file(Path(path))
        if not manager.is_registered(module):
            manager.register(module, name=f"file:{Path(path).resolve()}")
            origins[manager.get_name(module)] = ("file", str(Path(path).resolve()))
            _check_hooks(manager, module, str(Path(path).resolve()))

    algorithms: dict[str, AlgorithmInfo] = {}
    for provided, origin, source in _called(manager, "bioplaus_bench_algorithms", origins,
                                            warnings):
        cls = _check_algorithm(provided, source)
        if cls.name in algorithms and algorithms[cls.name].cls is not cls:
            other = algorithms[cls.name]
            raise PluginError(f"two plugins claim the algorithm name '{cls.name}': "
                              f"{other.source} [{other.origin}] and {source} [{origin}]")
        algorithms[cls.name] = AlgorithmInfo(cls.name, cls, origin, source)
    kinds = {kind: _collect(manager, kind, origins, warnings) for kind in KINDS}
    return Registry(dict(sorted(algorithms.items())), warnings, **kinds)


def _called(manager: pluggy.PluginManager, hook: str, origins: dict[str, tuple[str, str]],
            warnings: list[str]) -> Iterable[tuple[object, str, str]]:
    """(item, origin, source) for every item that every implementation of ``hook`` returns. A
    hook that raises is an error for a ``--plugin`` file and a warning otherwise."""
    for impl in getattr(manager.hook, hook).get_hookimpls():
        origin, source = origins[impl.plugin_name]
        try:
            provided = impl.function()
        except KeyboardInterrupt:
            raise
        except BaseException as error:  # SystemExit too: a plugin never ends bench silently
            message = (f"plugin {source} [{origin}]: its hook {hook} raised "
                       f"{type(error).__name__}: {error}")
            if origin == "file":
                raise PluginError(message) from None
            warnings.append(message)
            continue
        if not isinstance(provided, Iterable | None) or isinstance(provided, str):
            raise PluginError(f"{source}: {hook} returned {provided!r}, expected a list")
        for item in provided or ():
            yield item, origin, source


def _collect(manager: pluggy.PluginManager, kind: str, origins: dict[str, tuple[str, str]],
             warnings: list[str]) -> dict[str, Provided]:
    hook, noun = KINDS[kind]
    found: dict[str, Provided] = {}
    for item, origin, source in _called(manager, hook, origins, warnings):
        name = getattr(item, "name", None)
        if not isinstance(name, str) or not name:
            raise PluginError(f"{source}: {hook} returned {item!r}, which has no name")
        if name in found and found[name].value is not item:
            other = found[name]
            raise PluginError(f"two plugins claim the {noun} name '{name}': "
                              f"{other.source} [{other.origin}] and {source} [{origin}]")
        found[name] = Provided(name, item, origin, source)
    return dict(sorted(found.items()))
