"""suites/fa_family.yaml: BP and DFA with the paper's shipped hyper-parameters (the values of
table1.yaml's MNIST and table3.yaml's CNN, algorithms.md §11), the feedback-alignment family with BP's
MNIST forward optimiser on both datasets and its own default parameters; every algorithm is
registered and runs on both architectures."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

import bioplaus_bench.registry
from bioplaus_bench.cli import app
from bioplaus_bench.suite import load_suite

from .helpers import write_cifar, write_idx_dataset
from .paper_suites import SUITES

SUITE = SUITES / "fa_family.yaml"
ROWS = ["bp", "dfa", "feedback-alignment", "usf", "brsf", "frsf", "kolen-pollack", "drtp"]
FAMILY = ROWS[2:]
# BP's shipped configs (algorithms.md §11): mnist_BP (the family's on both datasets) and cifar10_BPConv.
BP_MNIST_LR = 0.0002970474733093798
BP_CNN_LR = (0.000592992422167547, 0.00038001447767611315, 7.373656030831236e-06,
             1.0011818742335523e-06)


@pytest.fixture(scope="module")
def registry():
    return bioplaus_bench.registry.load_registry()


@pytest.fixture(scope="module")
def suite(registry):
    return load_suite(SUITE, registry)  # an unregistered algorithm would be an error here


def test_rows_are_registered_and_run_on_both_datasets(suite, registry):
    assert list(suite.algorithms) == ROWS
    assert all(suite.names[a] in registry for a in ROWS)
    assert [suite.labels[a] for a in ROWS] == [registry.get(a).label for a in ROWS]
    assert list(suite.datasets) == ["mnist", "cifar10_cnn"]
    cells = suite.cells(registry=registry)
    assert len(cells) == len(ROWS) * 2 * 10
    assert not [c.key for c in cells if c.skip_reason]  # every method has an MLP and a CNN rule


def test_datasets_are_table1_mnist_and_table3_cnn(suite, registry):
    table1 = load_suite(SUITES / "table1.yaml", registry)
    table3 = load_suite(SUITES / "table3.yaml", registry)
    assert suite.datasets["mnist"] == table1.datasets["mnist"]
    assert suite.datasets["cifar10_cnn"] == table3.datasets["cifar10_cnn"]
    assert suite.datasets["mnist"].protocol.epochs == 100 and list(suite.seeds) == list(range(10))


def test_bp_and_dfa_keep_the_paper_settings(suite, registry):
    table1 = load_suite(SUITES / "table1.yaml", registry)
    table3 = load_suite(SUITES / "table3.yaml", registry)
    for algorithm in ("bp", "dfa"):
        for paper, dataset in ((table1, "mnist"), (table3, "cifar10_cnn")):
            ours, theirs = suite.resolved[(algorithm, dataset)], paper.resolved[(algorithm, dataset)]
            assert ours[0].optimizer == theirs[0].optimizer
            assert ours[0].schedule == theirs[0].schedule
            assert ours[1:] == theirs[1:]  # params, precision
    assert suite.resolved[("bp", "mnist")][0].optimizer.lr == BP_MNIST_LR
    assert suite.resolved[("bp", "mnist")][2] == "float32"
    assert suite.resolved[("bp", "cifar10_cnn")][0].optimizer.lr == BP_CNN_LR


@pytest.mark.parametrize("algorithm", FAMILY)
def test_the_family_shares_bps_mnist_optimiser_and_its_own_defaults(suite, registry, algorithm):
    for dataset in ("mnist", "cifar10_cnn"):
        settings, params, precision = suite.resolved[(algorithm, dataset)]
        assert settings.optimizer == suite.resolved[("bp", "mnist")][0].optimizer
        assert settings.optimizer.lr == BP_MNIST_LR
        assert params == registry.get(algorithm).cls.Params()  # not tuned
        assert precision == "float64"


def test_the_suite_runs_every_cell_on_generated_data(tmp_path):
    write_idx_dataset(tmp_path / "data", "MNIST", n_train=40, n_test=10)
    write_cifar(tmp_path / "data", n_per_batch=6, n_test=8)
    out = tmp_path / "r"
    args = ["run", str(SUITE), "--data-dir", str(tmp_path / "data"), "--skip-checksums",
            "--seeds", "1", "--epochs", "1", "--out", str(out), "--quiet"]
    for item in ("datasets.mnist.protocol.validation=10", "datasets.mnist.protocol.batch_size=16",
                 "datasets.cifar10_cnn.protocol.validation=10",
                 "datasets.cifar10_cnn.protocol.batch_size=10"):
        args += ["--set", item]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    records = {p.parent.relative_to(out).as_posix(): json.loads(p.read_text())
               for p in out.glob("*/*/seed-0.json")}
    assert sorted(records) == sorted(f"{d}/{a}" for d in ("mnist", "cifar10_cnn") for a in ROWS)
    assert {key: r["status"] for key, r in records.items() if r["status"] != "ok"} == {}
