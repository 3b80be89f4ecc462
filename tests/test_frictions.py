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
