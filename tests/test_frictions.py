"""The frictions a first plugin author met (issue 36, item 5): a quiet run that says it is
alive, stacked seeds' wall time labelled as the stack's, no wrapping of output that is not a
terminal, a strictly positive β for nudging rules, and the paper's numbers and the caption only
where they describe the cells beside them."""

import typing

import pytest
from bioplaus_bench_plugins.equilibrium_propagation import EPParams
from bioplaus_bench_plugins.predictive_coding import PCParams

from bioplaus_bench.errors import SuiteError
from bioplaus_bench.spec.schema import Source, coerce_dataclass

from .conftest import TINY_SUITE, invoke, write

# --- a strictly positive β for nudging rules -------------------------------------------------


@pytest.mark.parametrize("params, field", [(EPParams, "beta"), (PCParams, "output_weight")])
def test_a_nudging_beta_is_strictly_positive_and_says_why(params, field):
    from bioplaus_bench.api import Beta, NudgingBeta

    assert typing.get_type_hints(params, include_extras=True)[field] == NudgingBeta
    for value in (0, 0.0, -0.5, float("inf")):
        with pytest.raises(SuiteError, match=f"params.{field}: expected a positive finite "
                           r"nudging strength \(the rule divides by it\)"):
            coerce_dataclass({field: value}, params, ("params",), Source("s.yaml"))
    assert getattr(coerce_dataclass({field: 1e-3}, params, ("params",), Source("s.yaml")),
                   field) == 1e-3
    # Adam's betas keep [0, 1): 0 is a valid decay there.
    assert typing.get_args(Beta)[1].test(0.0)
    assert not typing.get_args(NudgingBeta)[1].test(0.0)


# --- no wrapping when the output is not a terminal ---------------------------------------------


def unbroken(text: str, output: str) -> bool:
    """Whether ``text`` (longer than 80 columns) stands whole on one line of ``output``."""
    assert len(text) > 80
    return any(text in line for line in output.splitlines())


def test_output_to_a_file_or_pipe_is_not_wrapped(tmp_path):
    deep = tmp_path / ("a-folder-with-a-long-name-" * 3) / "and-another-one-below-it"
    deep.mkdir(parents=True)
    suite = write(deep / "tiny.yaml", TINY_SUITE)
    validated = invoke("validate", suite)
    assert validated.exit_code == 0, validated.output
    assert unbroken(f"{suite}: ok: 1 datasets, 2 algorithms, 2 seeds, 4 cells (0 skipped)",
                    validated.stdout)

    out = deep / "results"
    run = invoke("run", suite, "--out", out, "--quiet")
    assert run.exit_code == 0, run.output
    assert unbroken(f"4 cells (4 ok; 0 from earlier runs); records in {out}", run.stderr)
    table = invoke("table", out)
    assert unbroken("Test loss (MSE) at the epoch of lowest validation loss. Mean ± SD over 2 "
                    "seeds (n: seeds that finished); best non-BP method in bold.", table.stdout)
    page = deep / "report-with-a-long-name-too.html"
    reported = invoke("report", out, "--out", page)
    assert reported.exit_code == 0, reported.output
    assert unbroken(f"wrote {page}", reported.stderr)
    missing = invoke("table", deep / "no-such-results-folder")
    assert missing.exit_code != 0 and str(deep / "no-such-results-folder") in missing.stderr


def test_the_plugin_list_keeps_each_row_on_one_line():
    from bioplaus_bench.registry import load_registry

    listed = invoke("list")
    assert listed.exit_code == 0, listed.output
    lines = listed.stdout.splitlines()
    for info in load_registry().algorithms.values():
        row = next((line for line in lines if f" {info.name} " in line), None)
        assert row is not None and info.cls.capabilities.describe() in row, info.name
