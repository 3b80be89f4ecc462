"""The code identity in a cell's config hash: it follows the code, not its comments or layout,
and a built-in algorithm is identified by its own module."""

from __future__ import annotations

from pathlib import Path

from bioplaus_bench.execution.inputs import code_identity, code_text
from bioplaus_bench.registry import load_registry

SOURCE = b'''"""A module docstring."""
import math


class Rule:
    """A class docstring."""

    def scale(self, x):
        """A method docstring."""
        return math.sqrt(x) * 2  # a comment
'''


def test_comments_docstrings_and_layout_do_not_change_the_code_text():
    edited = (SOURCE.replace(b"A method docstring.", b"Another docstring,\n    on two lines.")
              .replace(b"# a comment", b"# another comment")
              .replace(b"math.sqrt(x) * 2", b"math.sqrt( x )*2")
              .replace(b'"""A module docstring."""\n', b"# a header comment\n"))
    assert edited != SOURCE
    assert code_text(edited) == code_text(SOURCE)


def test_a_change_of_code_changes_the_code_text():
    for edit in (b"* 3", b"+ 2"):
        assert code_text(SOURCE.replace(b"* 2", edit)) != code_text(SOURCE)
    # A string that is not a docstring is code.
    assert code_text(SOURCE + b'NAME = "a"\n') != code_text(SOURCE + b'NAME = "b"\n')


def test_a_file_that_does_not_parse_is_taken_byte_for_byte():
    assert code_text(b"def (:\n") == b"def (:\n"


def test_a_built_in_algorithm_is_identified_by_its_own_module_and_its_base_classes():
    registry = load_registry()
    plugins = {path.name for path in (Path(__file__).parents[1] / "plugins").glob("*.py")}
    for name in ("bp", "ddtp-linear", "drtp", "usf"):
        info = registry.get(name)
        own = Path(info.cls.__module__.replace(".", "/")).name + ".py"
        files = set(code_identity(info.cls)["files"])
        assert own in files
        assert files & plugins == {own}, (name, files)
