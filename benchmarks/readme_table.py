"""Write the README's reference table: exactly what `bench table results/reference/table1 --compare
paper` prints from the committed records (the Python API's ``load(...).table(compare="paper")``,
which that command prints), between the README's reference-table markers.

    .venv/bin/python benchmarks/readme_table.py [--check] [--root DIR]

(`make readme-table`.) With no records there yet, the block says so. `--check` changes nothing
and exits 1 when the README's block is not what the command prints now; tests/test_reference_readme.py
checks the same, so the README and the records cannot drift apart.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import bioplaus_bench
from bioplaus_bench.errors import InputError
from bioplaus_bench.files import write_atomically
from bioplaus_bench.scripts import one_line_errors

ROOT = Path(__file__).resolve().parents[1]

RESULTS = "results/reference/table1"
START = ("<!-- reference-table:start: written by `make readme-table` from `bench table "
         f"{RESULTS} --compare paper`; do not edit by hand -->")
END = "<!-- reference-table:end -->"
BLOCK = re.compile(r"(<!-- reference-table:start[^\n]*-->)(.*?)(<!-- reference-table:end -->)",
                   re.S)
NO_RECORDS = (f"No reference records yet: `bench table {RESULTS} --compare paper` finds none. "
              "`make reference` runs the campaign; `make readme-table` then writes its table "
              "here.\n")


def has_records(results: Path) -> bool:
    return any(results.glob("*/*/seed-*.json"))


def block_text(table: str | None) -> str:
    """What stands between the markers: the command's output, or the sentence saying that there
    are no records (``table`` None), with a blank line on either side."""
    return "\n\n" + (NO_RECORDS if table is None else table) + "\n"


def table_output(root: Path) -> str | None:
    """The command's output from the records under ``root``; None when there are none."""
    if not has_records(root / RESULTS):
        return None
    return bioplaus_bench.load(root / RESULTS).table(compare="paper")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only say whether it is current")
    parser.add_argument("--root", type=Path, default=ROOT,
                        help="the checkout whose README.md and results/ to use")
    args = parser.parse_args(argv)
    return one_line_errors(lambda: update(args.root, args.check))


def update(root: Path, check: bool) -> int:
    """Write (or with ``check`` only compare) the block of ``root``'s README."""
    readme_path = root / "README.md"
    readme = _read(readme_path)
    found = BLOCK.search(readme)
    if found is None:
        sys.exit(f"{readme_path}: no reference-table block (expected the markers {START} ... "
                 f"{END})")
    wanted = block_text(table_output(root))
    if check:
        current = found.group(2) == wanted
        print(f"{readme_path}: the reference table is " + ("current" if current else
              "out of date: run `make readme-table`"))
        return 0 if current else 1
    try:  # renamed into place, never written through a link
        write_atomically(readme_path, readme[:found.start()] + START + wanted + END
                         + readme[found.end():])
    except OSError as error:
        sys.exit(f"cannot write {readme_path}: {error.strerror or error}")
    print(f"wrote the reference table into {readme_path}")
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
