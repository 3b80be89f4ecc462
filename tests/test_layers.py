"""The architecture seen from the imports: nothing below the YAML layer imports it, the CLI is
imported by no one, and the core imports no plugin by name."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "bioplaus_bench"
TOP_LAYERS = ("bioplaus_bench.cli", "bioplaus_bench.suite")
ENTRY = "bioplaus_bench.__main__"  # `python -m bioplaus_bench` is the CLI


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> set[str]:
    """Every module ``path`` imports, absolute (relative imports resolved)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")
            if node.level:
                base = base[:len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.add(target)
            found |= {f"{target}.{alias.name}" for alias in node.names}
    return found


def test_nothing_below_the_yaml_layer_imports_it():
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        name = module_name(path)
        if name.startswith(TOP_LAYERS) or name == ENTRY:
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
