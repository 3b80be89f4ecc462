"""The registry of plugins of five kinds (algorithms, datasets, architectures, metrics, executors):
built-ins and outside packages through the entry-point group ``bioplaus_bench.plugins``, and
single files given with ``--plugin path/to/file.py``.

Built-ins register exactly like outside plugins: the built-in algorithms through the entry point
of this distribution, the core's datasets, architectures, metrics and executors as the modules of
``DEFAULT_PLUGINS`` (as datasette does); they are told apart only by their origin, shown in
``bench list``.

A command that knows which names it needs (``bench run --only``) passes them as ``Wanted``: the
built-ins and every ``--plugin`` file load, then the installed plugins one by one until every
wanted name is found, so a broken or slow installed plugin that provides none of them is never
imported. A ``--plugin`` file always loads: the user named it, and it wins over a built-in or
installed plugin of the same name, whatever the command chooses to run.

A ``--plugin`` file is imported by ``plugin_files.import_plugin_file``, which lets it import the
modules next to it.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import re
from collections.abc import Iterable
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path
from types import ModuleType

import pluggy

from . import hookspecs
from .errors import PluginError, did_you_mean
from .model.algorithm import Algorithm
from .plugin_files import import_plugin_file

ENTRY_POINT_GROUP = "bioplaus_bench.plugins"
DISTRIBUTION = "bioplaus-bench"
# The core's own plugins, registered through the same hooks as everyone else's.
DEFAULT_PLUGINS = ("bioplaus_bench.data", "bioplaus_bench.model.architectures",
                   "bioplaus_bench.metrics", "bioplaus_bench.execution.executors.builtin")
# kind -> (hook, singular noun); the registry keeps one dict per kind.
KINDS = {"datasets": ("bioplaus_bench_datasets", "dataset"),
         "architectures": ("bioplaus_bench_architectures", "architecture"),
         "metrics": ("bioplaus_bench_metrics", "metric"),
         "executors": ("bioplaus_bench_executors", "executor")}


# Where to look for an algorithm a command does not know (appended to "unknown algorithm" errors).
NOT_FOUND_HINT = ("an algorithm in a plugin file is loaded with --plugin FILE; an installed package "
                  f"provides its algorithms through the entry-point group '{ENTRY_POINT_GROUP}' "
                  "(`pip install` it; `bench list` shows every algorithm found)")


def unknown_algorithm(name: str, known: Iterable[str]) -> str:
    """The message for an algorithm name no loaded plugin provides."""
    known = sorted(known)
    return (f"unknown algorithm '{name}'{did_you_mean(name, known)}; known: {', '.join(known)}; "
            f"{NOT_FOUND_HINT}")


@dataclass(frozen=True)
class Wanted:
    """The names a command needs, by kind: ``load_registry`` stops loading plugins once the
    built-ins and the plugins loaded so far provide them all."""

    algorithms: frozenset[str] = frozenset()
    datasets: frozenset[str] = frozenset()
    architectures: frozenset[str] = frozenset()
    metrics: frozenset[str] = frozenset()
    executors: frozenset[str] = frozenset()

    def names(self) -> set[str]:
        return {name for kind in dataclasses.fields(self) for name in getattr(self, kind.name)}


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
    # The --plugin files (resolved paths): always all of them.
    files: tuple[str, ...] = ()
    # False when loading stopped early because every wanted name was found: installed plugins
    # that were not needed were not imported.
    complete: bool = True
    # Algorithm names that two installed plugins claim (name -> the error if one is used).
    ambiguous: dict[str, str] = dataclasses.field(default_factory=dict)

    def get(self, name: str) -> AlgorithmInfo:
        try:
            return self.algorithms[name]
        except KeyError:
            if name in self.ambiguous:
                raise PluginError(self.ambiguous[name]) from None
            raise PluginError(unknown_algorithm(name, self.algorithms)) from None

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


def load_registry(plugin_files: Iterable[Path | str] = (), wanted: Wanted | None = None
                  ) -> Registry:
    """Load every plugin and collect its algorithms. A broken entry point is reported as a
    warning (other plugins still load); a broken ``--plugin`` file, or two of them claiming one
    algorithm name, is an error; so is a hook that raises (for an entry point: a warning). An
    algorithm name claimed by a ``--plugin`` file and an installed plugin (a built-in one too)
    is the file's, with a warning; one claimed by two installed plugins (a plugin named like a
    built-in added later) is an error only where it is used, with a warning (``_Loading.claim``).

    With ``wanted``, the built-ins and the ``--plugin`` files load (always: the user named
    them, and a file's algorithm wins over a built-in of its name, which alone would already
    provide the wanted name), then the installed plugins (entry points whose name or module
    mentions a wanted name first) until every wanted name is provided: the others are not
    imported (``Registry.complete`` is then False). A name no plugin provides makes them all
    load, so errors list everything."""
    loading = _Loading()
    for module_name in DEFAULT_PLUGINS:
        loading.add(importlib.import_module(module_name), f"core:{module_name}", "built-in",
                    module_name)
    others = []
    for entry_point in entry_points(group=ENTRY_POINT_GROUP):
        if entry_point.dist is not None and entry_point.dist.name == DISTRIBUTION:
            loading.add_entry_point(entry_point)  # the built-in algorithms: always
        else:
            others.append(entry_point)
    if wanted is not None:
        names = {_plain(name) for name in wanted.names()}
        others.sort(key=lambda entry_point: not _mentions(entry_point, names))
    for path in plugin_files:
        loading.add_file(Path(path))
    for entry_point in others:
        if wanted is not None and loading.provides(wanted):
            return loading.registry(complete=False)  # the rest is not imported
        loading.add_entry_point(entry_point)
    return loading.registry(complete=True)


def _plain(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


def _mentions(entry_point, names: set[str]) -> bool:
    """Whether an entry point's name or module mentions one of ``names`` (only the order of
    loading depends on it: any plugin may provide any name)."""
    words = {_plain(entry_point.name),
             *(_plain(part) for part in re.split(r"[.:]", entry_point.value))}
    return any(word == name or word.endswith(f"_{name}") or word.startswith(f"{name}_")
               for word in words for name in names if name)


def _defined_in(cls: type, module: ModuleType, source: str) -> str:
    """``source``, naming the submodule that defines ``cls`` when the plugin is a package that
    gathers its modules' algorithms (as the built-ins' one entry point does)."""
    inner = cls.__module__
    if inner.startswith(f"{module.__name__}.") and source.startswith(module.__name__):
        return inner + source[len(module.__name__):]
    return source


class _Loading:
    """The plugins loaded so far and what they provide; each plugin's hooks are called as soon
    as it is registered, so that loading can stop once the wanted names are found."""

    def __init__(self) -> None:
        self.manager = pluggy.PluginManager("bioplaus_bench")
        self.manager.add_hookspecs(hookspecs)
        self.warnings: list[str] = []
        self.files: list[str] = []
        self.algorithms: dict[str, AlgorithmInfo] = {}
        self.clashes: dict[str, list[AlgorithmInfo]] = {}  # installed plugins only
        self.ambiguous: dict[str, str] = {}
        self.kinds: dict[str, dict[str, Provided]] = {kind: {} for kind in KINDS}

    def add(self, module: ModuleType, name: str, origin: str, source: str,
            file: str | None = None) -> None:
        if self.manager.is_registered(module):
            return  # the same module declared twice (e.g. two installs of one package)
        self.manager.register(module, name=name)
        if file is not None:
            _check_hooks(self.manager, module, file)
        for provided, where in self._called("bioplaus_bench_algorithms", name, origin, source):
            cls = _check_algorithm(provided, where)
            self.claim(AlgorithmInfo(cls.name, cls, origin, _defined_in(cls, module, source)))
        for kind, (hook, noun) in KINDS.items():
            found = self.kinds[kind]
            for item, where in self._called(hook, name, origin, source):
                item_name = getattr(item, "name", None)
                if not isinstance(item_name, str) or not item_name:
                    raise PluginError(f"{where}: {hook} returned {item!r}, which has no name")
                claimed = found.get(item_name)
                if claimed is not None and claimed.value is not item:
                    raise PluginError(f"two plugins claim the {noun} name '{item_name}': "
                                      f"{claimed.source} [{claimed.origin}] and {source} "
                                      f"[{origin}]")
                found[item_name] = Provided(item_name, item, origin, source)

    def claim(self, info: AlgorithmInfo) -> None:
        """Add an algorithm. A name that two plugins claim: a ``--plugin`` file's own clash is
        an error at once (both were named on this command line); a file wins over an installed
        plugin (it was named, and would otherwise stop every run after an upgrade that adds a
        built-in of that name); two installed plugins make the name unusable, not the run."""
        name, held = info.name, self.algorithms.get(info.name)
        if held is not None and held.cls is info.cls:
            return
        claims = [*self.clashes.get(name, ()), *([held] if held else []), info]
        if len(claims) == 1:
            self.algorithms[name] = info
            return
        both = " and ".join(f"{c.source} [{c.origin}]" for c in claims)
        files = [c for c in claims if c.origin == "file"]
        if len(files) > 1:
            raise PluginError(f"two plugins claim the algorithm name '{name}': {both}")
        rename = "rename one (the `name` of its algorithm class)"
        if files:
            self.algorithms[name] = files[0]
            self.clashes.pop(name, None)
            self.ambiguous.pop(name, None)
            self.warnings.append(f"two plugins claim the algorithm name '{name}': {both}; the "
                                 f"--plugin file's is used; to run both, {rename}")
            return
        self.algorithms.pop(name, None)
        self.clashes[name] = claims
        self.ambiguous[name] = (f"two plugins claim the algorithm name '{name}': {both}; {rename}, "
                                "uninstall one, or load the one to use from a file with --plugin "
                                "FILE (a --plugin file is used over installed plugins)")
        self.warnings[:] = [w for w in self.warnings if not w.startswith(
            f"two plugins claim the algorithm name '{name}':")]
        self.warnings.append(f"{self.ambiguous[name]}; '{name}' cannot run until then (other "
                             "algorithms can)")

    def add_entry_point(self, entry_point) -> None:
        distribution = entry_point.dist.name if entry_point.dist else ""
        origin = "built-in" if distribution == DISTRIBUTION else "entry point"
        source = f"{entry_point.value} ({distribution or 'unknown distribution'})"
        try:
            module = entry_point.load()
        except KeyboardInterrupt:
            raise
        except BaseException as error:  # SystemExit too: a plugin never ends bench silently
            self.warnings.append(f"plugin {entry_point.name} [{origin}] from {source} failed to "
                                 f"load: {type(error).__name__}: {error}")
            return
        self.add(module, f"entry:{entry_point.name}:{entry_point.value}", origin, source)

    def add_file(self, path: Path) -> None:
        resolved = str(Path(path).resolve())
        module = import_plugin_file(path)
        if resolved not in self.files:
            self.files.append(resolved)
        self.add(module, f"file:{resolved}", "file", resolved, file=resolved)

    def _called(self, hook: str, plugin_name: str, origin: str, source: str
                ) -> Iterable[tuple[object, str]]:
        """(item, source) for every item the plugin's implementation of ``hook`` returns. A hook
        that raises is an error for a ``--plugin`` file and a warning otherwise."""
        for impl in getattr(self.manager.hook, hook).get_hookimpls():
            if impl.plugin_name != plugin_name:
                continue
            try:
                provided = impl.function()
            except KeyboardInterrupt:
                raise
            except BaseException as error:  # SystemExit too: a plugin never ends bench silently
                message = (f"plugin {source} [{origin}]: its hook {hook} raised "
                           f"{type(error).__name__}: {error}")
                if origin == "file":
                    raise PluginError(message) from None
                self.warnings.append(message)
                continue
            if not isinstance(provided, Iterable | None) or isinstance(provided, str):
                raise PluginError(f"{source}: {hook} returned {provided!r}, expected a list")
            for item in provided or ():
                yield item, source

    def provides(self, wanted: Wanted) -> bool:
        return wanted.algorithms <= self.algorithms.keys() and all(
            getattr(wanted, kind) <= self.kinds[kind].keys() for kind in KINDS)

    def registry(self, complete: bool) -> Registry:
        return Registry(dict(sorted(self.algorithms.items())), self.warnings,
                        **{kind: dict(sorted(found.items())) for kind, found in self.kinds.items()},
                        files=tuple(self.files), complete=complete, ambiguous=dict(self.ambiguous))
