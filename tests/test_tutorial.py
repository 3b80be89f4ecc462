"""docs/tutorial.md runs: every Python cell of it, in order, in one namespace, in a fresh folder
that has the checkout's results/ and suites/ (as the tutorial's "root of a checkout"); its
`bench` lines (the shell cells) run as `bench` commands in this process. So the page cannot rot."""

import re
import shlex
from pathlib import Path

import pandas as pd

from .helpers import invoke

ROOT = Path(__file__).resolve().parents[1]
TUTORIAL = ROOT / "docs" / "tutorial.md"
CELL = re.compile(r"^```(python|bash)\n(.*?)^```$", re.S | re.M)


def cells() -> list[tuple[str, str]]:
    return CELL.findall(TUTORIAL.read_text())


def test_the_tutorial_has_cells_of_each_kind():
    kinds = [kind for kind, _ in cells()]
    assert kinds.count("python") >= 6 and "bash" in kinds


def test_every_cell_of_the_tutorial_runs_in_order(tmp_path, monkeypatch):
    for name in ("results", "suites"):
        (tmp_path / name).symlink_to(ROOT / name)
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "tutorial"}
    for number, (kind, code) in enumerate(cells(), 1):
        if kind == "bash":
            for line in code.splitlines():
                command = shlex.split(line, comments=True)
                assert command[:1] == ["bench"], f"cell {number}: only `bench` lines run: {line}"
                result = invoke(*command[1:])
                assert result.exit_code == 0, f"cell {number}: {line}\n{result.output}"
            continue
        try:
            exec(compile(code, f"{TUTORIAL}, cell {number}", "exec"), namespace)
        except Exception as error:
            raise AssertionError(f"cell {number} of {TUTORIAL} failed: {error!r}") from error
    # What the cells made is what they say they made.
    assert (tmp_path / "mnist-test-error.png").stat().st_size > 10_000
    assert (tmp_path / "my-results" / "report.html").read_text().startswith("<!DOCTYPE html>")
    trial = namespace["trial"]
    assert isinstance(trial.records, pd.DataFrame)
    assert set(trial.records.epochs) == {2}  # the reference cut to the trial's 2 epochs
    assert set(trial.records.entry) == {"dfa", "ref:bp", "ref:dfa", "ref:dtp", "ref:ddtp-linear",
                                        "ref:ddtp-rhl", "ref:ddtp-control", "ref:dtp-drl",
                                        "ref:dtp-pretrained"}
