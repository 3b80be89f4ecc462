"""Torch threads of `bench run`: one per process unless OMP_NUM_THREADS or --threads say otherwise
(execution/threads.py says why; benchmarks/threads.py measures it)."""

import pytest
import torch

from bioplaus_bench.errors import InputError
from bioplaus_bench.execution.threads import torch_threads

from .helpers import TINY_SUITE, invoke, records, write

ONE_CELL = TINY_SUITE.replace("seeds: [0, 1]", "seeds: [0]").split("  dfa:\n")[0]


@pytest.fixture()
def restored_threads():
    """`bench run` in this process sets its threads: put back what the tests run with."""
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_the_rule_is_threads_option_then_environment_then_one(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert torch_threads() == 1
    assert torch_threads(3) == 3
    monkeypatch.setenv("OMP_NUM_THREADS", "4")
    assert torch_threads() == 4
    assert torch_threads(2) == 2  # the command line is the more explicit
    for bad in ("0", "two", "-1"):
        monkeypatch.setenv("OMP_NUM_THREADS", bad)
        with pytest.raises(InputError, match=f"OMP_NUM_THREADS='{bad}': expected a positive"):
            torch_threads()


@pytest.mark.parametrize("option, environment, expected", [
    ((), None, 1),  # torch's own default (every core) is not used
    ((), "2", 2),
    (("--threads", "3"), "2", 3),
])
def test_a_run_computes_with_the_chosen_threads_and_records_them(
        tmp_path, monkeypatch, restored_threads, option, environment, expected):
    if environment is None:
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    else:
        monkeypatch.setenv("OMP_NUM_THREADS", environment)
    torch.set_num_threads(5 if expected == 2 else 2)  # as torch starts on a many-core machine
    out = tmp_path / "out"
    result = invoke("run", write(tmp_path / "one.yaml", ONE_CELL), "--out", out, "--quiet",
                    *option)
    assert result.exit_code == 0, result.output
    assert records(out)["teacher/bp/seed-0.json"]["provenance"]["torch_threads"] == expected


def test_a_bad_thread_count_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "many")
    result = invoke("run", write(tmp_path / "one.yaml", ONE_CELL), "--out", tmp_path / "out")
    assert result.exit_code == 2
    assert result.stderr.strip() == ("error: OMP_NUM_THREADS='many': expected a positive whole "
                                     "number of threads")
    assert invoke("run", tmp_path / "one.yaml", "--threads", "0").exit_code == 2
