"""``bench list``, ``bench check-plugin`` and ``bench new-plugin``: for plugin authors."""

from __future__ import annotations

import dataclasses
import enum
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from ..kit.templates import TEMPLATES
from .common import (
    PluginOption,
    app,
    input_errors,
    load_plugins,
    out,
)


@app.command("list")
def list_algorithms(
    params: Annotated[bool, typer.Option("--params", help="Also list hyper-parameters.")] = False,
    plugin: PluginOption = [],  # noqa: B006
) -> None:
    """Every plugin: algorithms with their origin and capabilities (and hyper-parameters), then
    the datasets, architectures, metrics and executors."""
    from ..registry import KINDS
    from ..spec.schema import schema_fields

    with input_errors():
        registry = load_plugins(plugin)
    table = Table(title="algorithms")
    for column in ("name", "label", "origin", "capabilities"):
        table.add_column(column, no_wrap=column != "capabilities")
    for info in registry.algorithms.values():
        table.add_row(info.name, info.label, info.origin, info.cls.capabilities.describe())
    out.print(table)
    for kind in KINDS:
        table = Table(title=kind)
        for column in ("name", "origin", "what"):
            table.add_column(column, no_wrap=column != "what")
        for provided in registry.provided(kind).values():
            what = getattr(provided.value, "summary", "") or getattr(provided.value, "label", "")
            table.add_row(provided.name, provided.origin, what)
        out.print(table)
    for info in registry.algorithms.values():
        if params:
            fields = ", ".join(f"{name}={default!r}" for name, _, default in
                               schema_fields(info.cls.Params)) or "none"
            out.print(f"{info.name} ({info.source}): {fields}", markup=False, highlight=False,
                      soft_wrap=True)


@app.command("check-plugin")
def check_plugin(
    target: Annotated[str, typer.Argument(
        help="An algorithm name, a plugin file (.py), or an installed plugin package.")],
    plugin: PluginOption = [],  # noqa: B006
) -> None:
    """Conformance checks of an algorithm plugin, one PASS/FAIL line each (docs/plugins.md).

    Exit 0 when every check passes, 1 when one fails, 2 when the plugin cannot be loaded."""
    from ..kit.conformance import find_algorithms, run_checks

    started = time.perf_counter()
    files = [*plugin, Path(target)] if target.endswith(".py") else list(plugin)
    with input_errors():
        infos = find_algorithms(target, load_plugins(files))

    def emit(line: str) -> None:
        out.print(line, markup=False, highlight=False, soft_wrap=True)

    summary = run_checks(infos, emit)
    emit(dataclasses.replace(summary, seconds=time.perf_counter() - started).line())
    if not summary.ok:
        raise typer.Exit(1)


# Members from one list, the templates' (so mypy knows them by name only: TemplateChoice["direct"]).
TemplateChoice = enum.Enum("TemplateChoice", {name: name for name in TEMPLATES},  # type: ignore[misc]
                           type=str)


@app.command("new-plugin")
def new_plugin(
    name: Annotated[str, typer.Argument(help="The algorithm's name, e.g. sign-sgd.")],
    directory: Annotated[Path | None, typer.Option(
        "--dir", help="Folder to create (absent or empty) [default: ./NAME].")] = None,
    template: Annotated[TemplateChoice, typer.Option(
        help="direct: an Algorithm computing its updates itself (DFA); target-propagation: a "
        "TargetPropagation subclass, a feedback path and loss (DDTP); backward-rule: a "
        "BackwardRule subclass, backprop with backward_weight(i, weight) in place of each "
        "weight (feedback alignment); inference: an InferenceRule written as its energy, value "
        "nodes relaxed before it learns (predictive coding).")] = TemplateChoice["direct"],
    single_file: Annotated[bool, typer.Option(
        "--single-file", help="One module to use with --plugin FILE, with its tests and suite "
        "beside it, instead of an installable package.")] = False,
) -> None:
    """Write a plugin to start from: a working rule of the chosen template, its tests
    (entry point, conformance checks, example suite; they import only bioplaus_bench.api) and a
    suite on the teacher task; an installable package with its entry point, or one file."""
    from ..kit.scaffold import new_plugin as scaffold
    from ..registry import load_registry

    target = directory or Path(name)
    chosen = TEMPLATES[template.value]
    with input_errors():
        registry = load_registry()
        names, written = scaffold(name, target, taken=registry.algorithms,
                                  template=template.value, single_file=single_file)

    def say(line: str) -> None:
        out.print(line, markup=False, highlight=False, soft_wrap=True)

    if single_file:
        say(f"created {names.entry_point}.py (algorithm '{names.algorithm}', a single-file "
            f"plugin) in {target}:")
    else:
        say(f"created {names.distribution} (algorithm '{names.algorithm}', package "
            f"{names.package}) in {target}:")
    say(f"template {chosen.name}: {chosen.description}")
    for path in written:
        say(f"  {path.relative_to(target)}")
    if single_file:
        module = target / f"{names.entry_point}.py"
        say(f"next: bench check-plugin {module} && (cd {target} && python -m pytest) && "
            f"bench run {target / (names.algorithm + '.yaml')} --plugin {module}")
    else:
        say(f"next: pip install -e {target} && bench check-plugin {names.algorithm} && "
            f"(cd {target} && python -m pytest)")
