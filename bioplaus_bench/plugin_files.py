"""``--plugin`` files: each is imported once per process under a name of its own, with its folder
at the front of ``sys.path`` while it is imported (and only then), so that it can import the
modules next to it, as ``python file.py`` would. Such a helper must have a name that no other
module has (the standard library's, an installed one's, another plugin folder's helper already
imported): else the plugin would silently get the other module, or the helper would stand in for
it for everything imported later, so loading stops with both places named. The helpers a file
imported are part of its algorithms' code identity (``plugin_file_sources``)."""

from __future__ import annotations

import ast
import contextlib
import hashlib
import importlib
import importlib.machinery
import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

from .errors import PluginError, did_you_mean

# A --plugin file's module name -> the files its code came from: the file and the modules next
# to it that it imported (part of its algorithms' code identity: editing a helper re-runs cells).
_FILE_SOURCES: dict[str, frozenset[Path]] = {}


def plugin_file_sources(module: str) -> frozenset[Path]:
    """The files of the ``--plugin`` file that is (or imported) module ``module``: the file and
    the modules next to it that it imported; empty for any other module."""
    return _FILE_SOURCES.get(module, frozenset())


def import_plugin_file(path: Path | str) -> ModuleType:
    """Import a ``--plugin`` file (once per process) under a name of its own, with its folder on
    ``sys.path`` while it is imported. Raises ``PluginError``."""
    path = Path(path).resolve()
    if not path.is_file():
        raise PluginError(f"plugin file not found: {path}")
    digest = hashlib.sha1(str(path).encode()).hexdigest()[:10]
    module_name = f"bioplaus_bench_file_plugin_{path.stem}_{digest}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    folder = path.parent
    _check_helper_names(path, folder)
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:  # a suffix Python does not import, such as .txt
        raise PluginError(f"plugin file {path} cannot be imported: expected a Python (.py) file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    before = set(sys.modules)
    try:
        with _on_import_path(folder):
            spec.loader.exec_module(module)
    except KeyboardInterrupt:
        raise
    except BaseException as error:  # SystemExit too: a plugin never ends bench silently
        del sys.modules[module_name]
        raise PluginError(f"plugin file {path} failed to import: {type(error).__name__}: "
                          f"{error}{_import_hint(error, folder)}") from error
    # The helpers: modules next to the file (not, say, a venv below its folder) that the plugin
    # imported first (not a checkout of a package that sits beside it and was imported before).
    helpers = {module_name: path}
    siblings = _siblings(folder)
    for name in set(sys.modules) - before:
        top = name.partition(".")[0]
        found = _module_file(sys.modules.get(name))
        if top in siblings and top not in before and found is not None \
                and found.is_relative_to(folder):
            helpers[name] = found
    sources = frozenset(helpers.values())
    for name in helpers:
        _FILE_SOURCES[name] = sources
    return module


@contextlib.contextmanager
def _on_import_path(folder: Path) -> Iterator[None]:
    """``folder`` first on ``sys.path`` for the duration (as for ``python file.py``); the entry
    is taken out again afterwards, so nothing else imported later can find the plugin's
    neighbours by accident."""
    entry = str(folder)
    sys.path.insert(0, entry)
    importlib.invalidate_caches()  # files written since the folder was last looked at
    try:
        yield
    finally:
        with contextlib.suppress(ValueError):
            sys.path.remove(entry)


def _module_file(module: object) -> Path | None:
    file = getattr(module, "__file__", None)
    return Path(file).resolve() if isinstance(file, str) else None


def _siblings(folder: Path) -> dict[str, Path]:
    """The modules next to a plugin file: ``name.py`` and packages ``name/__init__.py``."""
    found = {}
    with contextlib.suppress(OSError):
        for entry in folder.iterdir():
            if entry.suffix == ".py" and entry.stem.isidentifier():
                found[entry.stem] = entry
            elif entry.is_dir() and (entry / "__init__.py").is_file() and entry.name.isidentifier():
                found.setdefault(entry.name, entry / "__init__.py")
    return found


def _imported_names(path: Path) -> set[str]:
    """The top-level names of the absolute imports in a file (empty if it does not parse: the
    import itself reports the syntax error)."""
    try:
        tree = ast.parse(path.read_bytes(), str(path))
    except (SyntaxError, ValueError, OSError):
        return set()
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.partition(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.partition(".")[0])
    return names


def _check_helper_names(path: Path, folder: Path) -> None:
    """A module next to the plugin that the plugin imports must not share its name with a module
    found elsewhere: the plugin would silently get the other one (already imported, or first on
    the path), or the helper would stand in for it for every later import in this process."""
    siblings = _siblings(folder)
    for name in sorted(_imported_names(path) & set(siblings) - {path.stem}):
        helper = siblings[name]
        other = None
        if name in sys.builtin_module_names or name in getattr(sys, "stdlib_module_names", ()):
            other = "the standard library's module of that name"
        elif name in sys.modules:
            loaded = _module_file(sys.modules[name])
            if loaded is None or not loaded.is_relative_to(folder):
                other = f"the module already imported from {loaded or 'a built-in'}"
        else:
            elsewhere = [p for p in sys.path if Path(p or ".").resolve() != folder]
            with contextlib.suppress(ImportError, ValueError):
                spec = importlib.machinery.PathFinder.find_spec(name, elsewhere)
                if spec is not None and spec.origin not in (None, "namespace"):
                    other = f"the installed module {spec.origin}"
        if other:
            raise PluginError(f"plugin file {path} imports '{name}', which is both {helper} next "
                              f"to it and {other}; give the helper a name of its own (e.g. "
                              f"{path.stem}_{name}.py)")


def _import_hint(error: BaseException, folder: Path) -> str:
    """Where a module the plugin imports was looked for, when it was not found."""
    if isinstance(error, ImportError) and "relative import" in str(error):
        return (f"; a plugin file is imported as a top-level module: import a module next to it "
                f"by its plain name (import helpers), as {folder} is on the import path while "
                "the plugin is imported")
    if not isinstance(error, ModuleNotFoundError) or not error.name:
        return ""
    top = error.name.partition(".")[0]
    siblings = _siblings(folder)
    if top in siblings:
        return ""  # found next to the plugin: something inside it is missing
    return (f" (looked for a module '{top}' next to the plugin file, in {folder}, which is on the "
            "import path while the plugin is imported, and among the installed packages)"
            f"{did_you_mean(top, siblings)}")
