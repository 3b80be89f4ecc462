"""What a cell's result depends on beyond its suite configuration: the code of its algorithm and
the identity of its data. Both go into the cell's config hash (``Cell.inputs``) and so into its
record's provenance: editing a plugin, or reading other data files, re-runs the cell instead of
reusing a record computed by other code or on other data."""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import sys
from functools import cache
from importlib.metadata import packages_distributions, version
from pathlib import Path
from typing import Any

from ..data import DataSettings, data_fingerprint
from ..model.algorithm import Algorithm
from ..registry import Registry
from ..spec.cell import Cell


def code_identity(cls: type[Algorithm]) -> dict[str, Any]:
    """A digest of the source of the algorithm: the modules that define the class and its
    base classes up to ``Algorithm`` (so a plugin, and a core base such as the target-propagation
    one, are both covered), and, for a plugin package, every module of that package. A class
    with no source on disk is identified by its distribution's name and version."""
    # In the order of their names, so that the digest does not depend on where the code lies.
    files = sorted({path for path in map(_source_file, _classes(cls)) if path is not None}
                   | _package_files(cls), key=lambda path: (path.name, str(path)))
    identity: dict[str, Any] = {}
    if files:  # names, not paths: the same code in another folder is the same code
        identity["files"] = sorted({path.name for path in files})
        identity["source_sha256"] = _digest(tuple(files))
    distribution = _distribution(cls.__module__)
    if distribution:
        identity["distribution"] = distribution
    return identity


def with_inputs(cell: Cell, registry: Registry, settings: DataSettings) -> Cell:
    """The cell with its code and data identities resolved (skipped cells need none)."""
    if cell.skip_reason:
        return cell
    return dataclasses.replace(cell, inputs={
        "code": code_identity(registry.get(cell.algorithm).cls),
        "data": data_fingerprint(registry.dataset(cell.dataset.source), settings)})


def _classes(cls: type) -> list[type]:
    return [c for c in cls.__mro__ if issubclass(c, Algorithm)]


def _source_file(cls: type) -> Path | None:
    try:
        return Path(inspect.getfile(cls)).resolve()
    except (TypeError, OSError):
        return None


def _package_files(cls: type) -> set[Path]:
    """Every module of the top-level package the class comes from, when that is a plugin
    package (the core's own modules are covered through the class hierarchy)."""
    top = cls.__module__.partition(".")[0]
    package = sys.modules.get(top)
    if top == __package__ or package is None or not hasattr(package, "__path__"):
        return set()
    return {path.resolve() for folder in package.__path__ for path in Path(folder).rglob("*.py")}


def _digest(files: tuple[Path, ...]) -> str:
    sha = hashlib.sha256()
    for path in files:
        sha.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return sha.hexdigest()[:16]


@cache
def _distributions() -> dict[str, list[str]]:
    return packages_distributions()


def _distribution(module: str) -> str | None:
    names = _distributions().get(module.partition(".")[0], [])
    for name in names:
        try:
            return f"{name} {version(name)}"
        except Exception:  # metadata of a broken install: identify by source alone
            continue
    return None
