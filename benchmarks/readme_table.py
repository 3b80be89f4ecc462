"""Write the README's reference tables: exactly what `bench table results/reference/table1 --compare
paper` and `bench table results/reference/three_families --reference results/reference/table1`
print from the committed records (the Python API's ``load(...).table(...)``, which that command
prints), each between its markers in the README.

    .venv/bin/python benchmarks/readme_table.py [--check] [--root DIR]

(`make readme-table`.) With no records there yet, the block says so. `--check` changes nothing
and exits 1 when the README's block is not what the command prints now; tests/test_reference_readme.py
checks the same, so the README and the records cannot drift apart.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import bioplaus_bench
from bioplaus_bench.errors import InputError
from bioplaus_bench.files import write_atomically
from bioplaus_bench.scripts import one_line_errors

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Block:
    """One generated block of the README: what `bench table` prints from a reference folder
    (with a reference beside it, or the paper's numbers), between its markers."""

    marker: str  # the markers are <!-- MARKER:start: ... --> and <!-- MARKER:end -->
    results: str  # the records, relative to the checkout
    reference: str | None = None  # a reference folder set beside them (`--reference`)
    compare_paper: bool = False  # `--compare paper`

    @property
    def command(self) -> str:
        return (f"bench table {self.results}"
                + (f" --reference {self.reference}" if self.reference else "")
                + (" --compare paper" if self.compare_paper else ""))

    @property
    def start(self) -> str:
        return (f"<!-- {self.marker}:start: written by `make readme-table` from "
                f"`{self.command}`; do not edit by hand -->")

    @property
    def end(self) -> str:
        return f"<!-- {self.marker}:end -->"

    @property
    def pattern(self) -> re.Pattern[str]:
        return re.compile(rf"(<!-- {self.marker}:start[^\n]*-->)(.*?)(<!-- {self.marker}:end -->)",
                          re.S)

    @property
    def no_records(self) -> str:
        return (f"No reference records yet: `{self.command}` finds none. `make reference` runs "
                "the campaign; `make readme-table` then writes its table here.\n")

    def text(self, root: Path) -> str:
        """What stands between the markers: the command's output, or the sentence saying that
        there are no records, with a blank line on either side."""
        return "\n\n" + (self.output(root) or self.no_records) + "\n"

    def output(self, root: Path) -> str | None:
        """The command's output from the records under ``root``, run there as the marker
        says (the table names the reference folder as given: relative, as in any checkout);
        None when there are none."""
        if not has_records(root / self.results):
            return None
        before = Path.cwd()
        os.chdir(root)
        try:
            return bioplaus_bench.load(self.results, reference=self.reference).table(
                compare="paper" if self.compare_paper else None)
        finally:
            os.chdir(before)


# Table 1 beside the paper's numbers; the three families, each method tuned under one budget,
# beside Table 1's cells of the same protocol (BP, DFA, DDTP-linear with the paper's settings).
TABLE1 = Block("reference-table", "results/reference/table1", compare_paper=True)
THREE_FAMILIES = Block("three-families-table", "results/reference/three_families",
                       reference="results/reference/table1")
BLOCKS = (TABLE1, THREE_FAMILIES)
# Table 1's block by its old names (its tests and the Makefile's comments use them).
RESULTS, START, END, NO_RECORDS = TABLE1.results, TABLE1.start, TABLE1.end, TABLE1.no_records


def has_records(results: Path) -> bool:
    return any(results.glob("*/*/seed-*.json"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only say whether it is current")
    parser.add_argument("--root", type=Path, default=ROOT,
                        help="the checkout whose README.md and results/ to use")
    args = parser.parse_args(argv)
    return one_line_errors(lambda: update(args.root, args.check))


def update(root: Path, check: bool) -> int:
    """Write (or with ``check`` only compare) every block of ``root``'s README."""
    readme_path = root / "README.md"
    readme = _read(readme_path)
    stale = []
    for block in BLOCKS:
        found = block.pattern.search(readme)
        if found is None:
            sys.exit(f"{readme_path}: no {block.marker} block (expected the markers "
                     f"{block.start} ... {block.end})")
        wanted = block.text(root)
        if found.group(2) != wanted:
            stale.append(block.marker)
            readme = readme[:found.start()] + block.start + wanted + block.end \
                + readme[found.end():]
    if check:
        print(f"{readme_path}: " + (f"out of date ({', '.join(stale)}): run `make readme-table`"
                                    if stale else "the reference tables are current"))
        return 1 if stale else 0
    try:  # renamed into place, never written through a link
        write_atomically(readme_path, readme)
    except OSError as error:
        sys.exit(f"cannot write {readme_path}: {error.strerror or error}")
    print(f"wrote the reference tables into {readme_path}")
    return 0


def _read(readme: Path) -> str:
    if not readme.is_file():  # a regular file only: a FIFO would block
        raise InputError(f"--root {readme.parent}: no file {readme.name} there; expected the "
                         "root of a checkout")
    try:
        return readme.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise InputError(f"cannot read {readme}: {error}") from None


if __name__ == "__main__":
    sys.exit(main())
