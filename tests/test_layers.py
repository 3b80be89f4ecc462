"""The architecture seen from the imports: nothing below the YAML layer imports it, the CLI is
imported by no one, and the core imports no plugin by name."""

import ast
import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "bioplaus_bench"
TOP_LAYERS = ("bioplaus_bench.cli", "bioplaus_bench.suite")
# The entry points above every layer: `python -m bioplaus_bench` (the CLI), and the package
# itself, whose run and load are the Python API (imported on first use).
ENTRIES = ("bioplaus_bench.__main__", "bioplaus_bench")


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def for_the_type_checker(tree: ast.Module) -> set[ast.AST]:
    """The statements under ``if TYPE_CHECKING:``, which Python never runs."""
    return {statement for node in ast.walk(tree) if isinstance(node, ast.If)
            and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"
            for statement in node.body}


def imports(path: Path, with_type_only: bool = True) -> set[str]:
    """Every module ``path`` imports, absolute (relative imports resolved); without those
    imported for the type checker alone unless ``with_type_only``."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    tree = ast.parse(path.read_text())
    skipped = set() if with_type_only else for_the_type_checker(tree)
    for node in ast.walk(tree):
        if node in skipped:
            continue
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")
            if node.level:
                base = base[:len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            names = {f"{target}.{alias.name}" for alias in node.names}
            found |= names
            if not names <= MODULES:  # `from . import sibling` needs the sibling, not the package
                found.add(target)
    return found


def test_nothing_below_the_yaml_layer_imports_it():
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        name = module_name(path)
        if name.startswith(TOP_LAYERS) or name in ENTRIES:
            continue
        for target in imports(path):
            if target.startswith(TOP_LAYERS):
                offenders.append(f"{name} imports {target}")
    assert not offenders, offenders


def test_the_suite_layer_does_not_import_the_cli():
    offenders = [f"{module_name(p)} imports {t}" for p in (PACKAGE / "suite").rglob("*.py")
                 for t in imports(p) if t.startswith("bioplaus_bench.cli")]
    assert not offenders, offenders


def test_the_core_imports_no_plugin_by_name():
    offenders = [f"{module_name(p)} imports {t}" for p in PACKAGE.rglob("*.py")
                 for t in imports(p) if t.startswith(("bioplaus_bench_plugins", "plugins"))]
    assert not offenders, offenders


def test_no_module_is_longer_than_about_four_hundred_lines():
    long = {module_name(p): n for p in PACKAGE.rglob("*.py")
            if (n := len(p.read_text().splitlines())) > 420}
    assert not long, long


# The layers below the registry: the registry imports them (the model's algorithm base, the
# built-in datasets, architectures and metrics), so they are handed the objects it holds.
BELOW_THE_REGISTRY = ("model", "data", "spec", "metrics", "tp", "backward")
ABOVE = ("bioplaus_bench.registry", "bioplaus_bench.execution")


def test_nothing_below_the_registry_imports_it_or_the_runner_even_late():
    offenders = [f"{module_name(p)} imports {t}" for layer in BELOW_THE_REGISTRY
                 for p in (PACKAGE / layer).rglob("*.py") for t in imports(p)
                 if t in ABOVE or t.startswith(tuple(f"{name}." for name in ABOVE))]
    assert not offenders, offenders


# The specification of a run is data: the model builds from it, never the other way round.
SPEC_MAY_IMPORT = ("bioplaus_bench.spec", "bioplaus_bench.errors")


def within(target: str, modules: tuple[str, ...]) -> bool:
    return target in modules or target.startswith(tuple(f"{name}." for name in modules))


def test_the_specification_imports_no_other_layer_of_the_package():
    offenders = [f"{module_name(p)} imports {t}" for p in (PACKAGE / "spec").rglob("*.py")
                 for t in imports(p)
                 if within(t, ("bioplaus_bench", "bioplaus_bench_plugins"))
                 and not within(t, SPEC_MAY_IMPORT)]
    assert not offenders, offenders


MODULES = {module_name(p) for p in PACKAGE.rglob("*.py")}


def import_graph() -> dict[str, set[str]]:
    """Module -> the package's modules it imports (at the top or inside a function). Imports for
    the type checker alone are left out: they never run, and the plugin contract (hookspecs)
    names the types of modules that import its marker."""
    paths = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    return {name: {t for t in imports(path, with_type_only=False) if t in paths and t != name}
            for name, path in paths.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle through each strongly connected group of modules (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = stack[stack.index(v):]
            del stack[stack.index(v):]
            if len(group) > 1:
                found.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_cycles_are_found_where_there_are_some():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_the_package_s_imports_have_no_cycles():
    # The registry's own plugins (DEFAULT_PLUGINS) are loaded by name when plugins are loaded,
    # as entry points are: that is a call, not an import of the registry's module.
    assert not cycles(import_graph())


PLUGINS = PACKAGE.parent / "plugins"


def test_every_built_in_algorithm_module_is_listed_in_the_one_place_they_are_found():
    import bioplaus_bench_plugins

    modules = {p.stem for p in PLUGINS.glob("*.py") if p.name != "__init__.py"}
    assert set(bioplaus_bench_plugins.MODULES) == modules
    assert len(bioplaus_bench_plugins.MODULES) == len(modules)  # none listed twice


ROOT = PACKAGE.parent
SECTION_REFERENCE = re.compile(r"§ ?(\d+(?:\.\d+)*)")


def documented_sections() -> set[str]:
    text = (ROOT / "docs" / "algorithms.md").read_text()
    return set(re.findall(r"^#{2,4} (\d+(?:\.\d+)*)\.? ", text, flags=re.MULTILINE))


def test_every_section_reference_names_a_section_of_the_algorithms_page():
    sections = documented_sections()
    assert {"1", "4.10", "9.2", "13.1", "15.10"} <= sections  # the reader sees the headings
    files = [p for pattern in ("*.py", "*.md", "*.yaml", "*.toml")
             for folder in ("bioplaus_bench", "plugins", "tests", "docs", "suites", "benchmarks")
             for p in (ROOT / folder).rglob(pattern)] + [ROOT / "README.md"]
    missing = [f"{p.relative_to(ROOT)}: §{n}" for p in files
               for n in SECTION_REFERENCE.findall(p.read_text()) if n.rstrip(".") not in sections]
    assert not missing, missing


def test_no_reference_points_to_the_specification_outside_the_repository():
    files = [p for folder in ("bioplaus_bench", "plugins", "tests", "docs", "suites")
             for p in (ROOT / folder).rglob("*") if p.suffix in (".py", ".md", ".yaml")]
    stale = [str(p.relative_to(ROOT)) for p in files if re.search(r"\b[Ss]pec §", p.read_text())]
    assert not stale, stale
