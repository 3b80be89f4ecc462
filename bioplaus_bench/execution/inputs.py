"""What a cell's result depends on beyond its suite configuration: the code of its algorithm (and
of any outside dataset, architecture or metric plugin it uses) and the identity of its data. All
go into the cell's config hash (``Cell.inputs``) and so into its record's provenance: editing a
plugin, or reading other data files, re-runs the cell instead of reusing a record computed by
other code or on other data.

The digest is of the code, not of its comments, docstrings or layout: each file is hashed as its
syntax tree without docstrings, so fixing a comment keeps the records and checkpoints of long
runs valid."""

from __future__ import annotations

import ast
import dataclasses
import hashlib
import inspect
import sys
from collections.abc import Callable, Collection, Mapping
from functools import cache
from importlib.metadata import packages_distributions, version
from pathlib import Path
from typing import Any

from ..data import DataSettings, data_fingerprint
from ..model.algorithm import Algorithm
from ..plugin_files import plugin_file_sources
from ..registry import Registry
from ..spec.cell import Cell

CORE = __name__.partition(".")[0]  # bioplaus_bench
# The built-in algorithms' package: each of its modules imports only the api (tested), so a
# built-in algorithm is identified by its own module, and adding a built-in leaves the others'
# records valid.
BUILT_IN_PLUGINS = "bioplaus_bench_plugins"


def code_identity(cls: type[Algorithm]) -> dict[str, Any]:
    """A digest of the source of the algorithm: the modules that define the class and its
    base classes up to ``Algorithm`` (so a plugin, and a core base such as the target-propagation
    one, are both covered), and, for a plugin package, every module of that package; for a
    ``--plugin`` file, the modules next to it that it imported. A class with no source on disk
    is identified by its distribution's name and version."""
    sources = {path for path in map(_source_file, _classes(cls)) if path is not None}
    return _identity(sources | _package_files(cls.__module__)
                     | plugin_file_sources(cls.__module__), cls.__module__)


def same_implementation(made: Mapping[str, Any], now: Mapping[str, Any]) -> bool | None:
    """Whether two code identities (``code_identity``) are of one implementation, edited or
    upgraded, rather than two that share a name (a ``--plugin`` file and a built-in, two files):
    an installed one is its distribution, whatever its version; code outside a distribution (a
    ``--plugin`` file) is its files, one implementation while one's files include the other's
    (a helper added or dropped). None when either says nothing of its code."""
    if not made.get("files") and not made.get("distribution") \
            or not now.get("files") and not now.get("distribution"):
        return None
    if made.get("distribution") or now.get("distribution"):
        return _package(made) == _package(now)
    ours, theirs = set(made["files"]), set(now["files"])
    return ours <= theirs or theirs <= ours


def describe_code(identity: Mapping[str, Any]) -> str:
    """An implementation as a user tells it apart: its package, or its files."""
    files = ", ".join(identity.get("files") or ()) or "no source files"
    if identity.get("distribution"):
        return f"the installed package {identity['distribution']} ({files})"
    return f"the code in {files} (no installed package: a --plugin file)"


def _package(identity: Mapping[str, Any]) -> str | None:
    distribution = identity.get("distribution")
    return distribution.rpartition(" ")[0] or distribution if distribution else None


def plugin_identity(function: Any) -> dict[str, Any] | None:
    """The same for a dataset, architecture or metric plugin, from the function it runs
    (``load``, ``build``, ``compute``); None for the core's own (the version covers those)."""
    module = getattr(function, "__module__", "") or ""
    if module.partition(".")[0] == CORE:
        return None
    source = _source_file(function)
    return _identity(({source} if source else set()) | _package_files(module)
                     | plugin_file_sources(module), module)


def _identity(files: Collection[Path], module: str) -> dict[str, Any]:
    # In the order of their names, so that the digest does not depend on where the code lies.
    files = sorted(files, key=lambda path: (path.name, str(path)))
    identity: dict[str, Any] = {}
    if files:  # names, not paths: the same code in another folder is the same code
        identity["files"] = sorted({path.name for path in files})
        identity["source_sha256"] = _digest(tuple(files))
    distribution = _distribution(module)
    if distribution:
        identity["distribution"] = distribution
    return identity


def with_inputs(cells: list[Cell], registry: Registry, settings: DataSettings) -> list[Cell]:
    """The cells with their code and data identities resolved (skipped cells need none). Each
    plugin's source is read and hashed once for all the cells that use it."""
    identities: dict[object, dict[str, Any] | None] = {}

    def identity(of: object, find: Callable[[Any], dict[str, Any] | None]) -> Any:
        if of not in identities:
            identities[of] = find(of)
        return identities[of]

    resolved = []
    for cell in cells:
        if cell.skip_reason:
            resolved.append(cell)
            continue
        dataset = registry.dataset(cell.dataset.source)
        inputs = {"code": identity(registry.get(cell.algorithm).cls, code_identity),
                  "data": data_fingerprint(dataset, settings)}
        used = {"dataset": dataset.load,
                "architecture": registry.architecture(cell.dataset.architecture.type).build,
                **{f"metric {name}": registry.metric(name).compute
                   for name in cell.settings.metrics.extra}}
        plugins = {kind: found for kind, function in used.items()
                   if (found := identity(function, plugin_identity)) is not None}
        if plugins:  # only when outside plugins are used: the core's own leave old hashes alone
            inputs["plugins"] = plugins
        resolved.append(dataclasses.replace(cell, inputs=inputs))
    return resolved


def _classes(cls: type) -> list[type]:
    return [c for c in cls.__mro__ if issubclass(c, Algorithm)]


def _source_file(obj: Any) -> Path | None:
    try:
        return Path(inspect.getfile(obj)).resolve()
    except (TypeError, OSError):
        return None


def _package_files(module: str) -> set[Path]:
    """Every module of the top-level package ``module`` belongs to, when that is a plugin
    package (the core's own modules are covered through the class hierarchy)."""
    top = module.partition(".")[0]
    package = sys.modules.get(top)
    if top in (CORE, BUILT_IN_PLUGINS) or package is None or not hasattr(package, "__path__"):
        return set()
    return {path.resolve() for folder in package.__path__ for path in Path(folder).rglob("*.py")}


def _digest(files: tuple[Path, ...]) -> str:
    sha = hashlib.sha256()
    for path in files:
        sha.update(path.name.encode() + b"\0" + code_text(path.read_bytes()) + b"\0")
    return sha.hexdigest()[:16]


def code_text(source: bytes) -> bytes:
    """The source as its syntax tree, printed without comments, docstrings or the author's
    layout; a file that does not parse is taken byte for byte."""
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return source
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
                and body and isinstance(body[0], ast.Expr)
                and isinstance(body[0].value, ast.Constant) and isinstance(body[0].value.value, str)):
            node.body = body[1:] or [ast.Pass()]
    return ast.unparse(tree).encode()


@cache
def _distributions() -> Mapping[str, list[str]]:
    return packages_distributions()


def _distribution(module: str) -> str | None:
    names = _distributions().get(module.partition(".")[0], [])
    for name in names:
        try:
            return f"{name} {version(name)}"
        except Exception:  # metadata of a broken install: identify by source alone
            continue
    return None
