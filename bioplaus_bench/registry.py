"""Finding algorithms: built-ins and outside packages through the entry-point group
``bioplaus_bench.plugins``, and single files given with ``--plugin path/to/file.py``.

Built-ins register exactly like outside plugins; they are told apart only by the distribution
that declares the entry point, to show their origin in ``bench list``.
"""

from __future__ import annotations

import dataclasses
import hashlib
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


@dataclass(frozen=True)
class AlgorithmInfo:
    name: str
    cls: type[Algorithm]
    origin: str  # "built-in", "entry point" or "file"
    source: str  # the module or file that provides it

    @property
    def label(self) -> str:
        return self.cls.label or self.name


@dataclass
class Registry:
    algorithms: dict[str, AlgorithmInfo]
    warnings: list[str]

    def get(self, name: str) -> AlgorithmInfo:
        try:
            return self.algorithms[name]
        except KeyError:
            raise PluginError(f"unknown algorithm '{name}'{did_you_mean(name, self.algorithms)}; "
                              f"known: {', '.join(sorted(self.algorithms))}") from None

    def __contains__(self, name: str) -> bool:
        return name in self.algorithms


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
    except Exception as error:
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

    for entry_point in entry_points(group=ENTRY_POINT_GROUP):
        distribution = entry_point.dist.name if entry_point.dist else ""
        origin = "built-in" if distribution == DISTRIBUTION else "entry point"
        source = f"{entry_point.value} ({distribution or 'unknown distribution'})"
        try:
            module = entry_point.load()
        except Exception as error:
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
    for impl in manager.hook.bioplaus_bench_algorithms.get_hookimpls():
        origin, source = origins[impl.plugin_name]
        try:
            provided = impl.function()
        except Exception as error:
            message = (f"plugin {source} [{origin}]: its hook bioplaus_bench_algorithms raised "
                       f"{type(error).__name__}: {error}")
            if origin == "file":
                raise PluginError(message) from None
            warnings.append(message)
            continue
        if not isinstance(provided, Iterable | None):
            raise PluginError(f"{source}: bioplaus_bench_algorithms returned {provided!r}, "
                              "expected a list of Algorithm subclasses")
        for cls in provided or ():
            cls = _check_algorithm(cls, source)
            if cls.name in algorithms and algorithms[cls.name].cls is not cls:
                other = algorithms[cls.name]
                raise PluginError(f"two plugins claim the algorithm name '{cls.name}': "
                                  f"{other.source} [{other.origin}] and {source} [{origin}]")
            algorithms[cls.name] = AlgorithmInfo(cls.name, cls, origin, source)
    return Registry(dict(sorted(algorithms.items())), warnings)
