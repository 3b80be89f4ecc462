"""The README's reference table is exactly what `bench table results/reference/table1 --compare
paper` prints from the committed records (or, while there are none, says so): the two cannot
drift apart. `make readme-table` rewrites the block."""

import importlib.util
import re
import shutil
import sys
from pathlib import Path

from .helpers import TINY_SUITE, invoke, write

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "results" / "reference" / "table1"
START = re.compile(r"<!-- reference-table:start[^\n]*-->")
END = "<!-- reference-table:end -->"


def readme_block() -> str:
    text = (ROOT / "README.md").read_text()
    starts = START.findall(text)
    assert len(starts) == 1 and text.count(END) == 1, "one reference-table block in the README"
    return text.split(starts[0], 1)[1].split(END, 1)[0]


def test_the_readme_table_is_what_the_command_prints_from_the_committed_records():
    result = invoke("table", RESULTS, "--compare", "paper")
    block = readme_block()
    if not any(RESULTS.glob("*/*/seed-*.json")):
        assert result.exit_code == 2
        assert re.fullmatch(r"error: (results folder not found: |no records in ).*\n",
                            result.stderr), result.stderr
        assert block == ("\n\nNo reference records yet: `bench table results/reference/table1 "
                         "--compare paper` finds none. `make reference` runs the campaign; "
                         "`make readme-table` then writes its table here.\n\n")
        return
    assert result.exit_code == 0, result.output
    assert block == "\n\n" + result.stdout + "\n", "the README's table is out of date: run " \
        "`make readme-table` and commit README.md"
    assert "Comparison with the paper" in block and "within 2 SD" in block


def test_the_three_family_table_is_what_the_command_prints_from_the_committed_records(
        monkeypatch):
    """Its own block: `bench table` of the three-family records beside Table 1's (or, while
    there are none, the sentence saying so)."""
    script = load_script()
    families = script.THREE_FAMILIES
    text = (ROOT / "README.md").read_text()
    found = families.pattern.search(text)
    assert found is not None and text.count(families.end) == 1, "one three-families block"
    assert found.group(1) == families.start
    records = any((ROOT / families.results).glob("*/*/seed-*.json"))
    if not records:
        assert found.group(2) == "\n\n" + families.no_records + "\n"
        return
    monkeypatch.chdir(ROOT)  # as the marker says: run from the checkout, folders relative
    result = invoke("table", families.results, "--reference", families.reference)
    assert result.exit_code == 0, result.output
    assert found.group(2) == "\n\n" + result.stdout + "\n", "the README's three-family " \
        "table is out of date: run `make readme-table` and commit README.md"
    assert "Settings:" in found.group(2)  # how each method's settings were obtained


def load_script():
    spec = importlib.util.spec_from_file_location("readme_table",
                                                  ROOT / "benchmarks" / "readme_table.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclass looks its module up there
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules[spec.name]
    return module


def test_make_readme_table_writes_the_commands_output_and_checks_it(tmp_path):
    """The rewriting script, on a checkout of its own: a README with the block and a tiny
    results/reference/table1 written by `bench run`."""
    script = load_script()
    families = script.THREE_FAMILIES
    second = f"{families.start}\n\n{families.no_records}\n{families.end}\n"
    (tmp_path / "README.md").write_text(f"# Title\n\nbefore\n\n{script.START}\n\n"
                                        f"{script.NO_RECORDS}\n{script.END}\n\nafter\n\n"
                                        + second)
    assert script.main(["--root", str(tmp_path), "--check"]) == 0  # no records: says so
    results = tmp_path / "results" / "reference" / "table1"
    run = invoke("run", write(tmp_path / "s.yaml", TINY_SUITE), "--out", results, "--quiet")
    assert run.exit_code == 0, run.output
    assert script.main(["--root", str(tmp_path), "--check"]) == 1  # now out of date
    assert script.main(["--root", str(tmp_path)]) == 0
    text = (tmp_path / "README.md").read_text()
    printed = invoke("table", results, "--compare", "paper").stdout
    assert text == (f"# Title\n\nbefore\n\n{script.START}\n\n{printed}\n{script.END}\n\n"
                    "after\n\n" + second)  # no three-family records there: it says so
    assert script.main(["--root", str(tmp_path), "--check"]) == 0
    shutil.rmtree(results / "teacher" / "dfa")
    assert script.main(["--root", str(tmp_path), "--check"]) == 1
