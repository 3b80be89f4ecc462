"""suites/energy.yaml: the shared baselines keep the settings of the suites they come from (BP,
DFA and DDTP-linear table1.yaml's on MNIST and Fashion-MNIST and table3.yaml's on the CNN; FA
fa_family.yaml's), the datasets are those suites' own, PC and EP are untuned (BP's MNIST Adam,
their default params; center nudging the one stated change) and skip the CNN with the reason;
every cell runs on generated data."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

import bioplaus_bench.registry
from bioplaus_bench.cli import app
from bioplaus_bench.suite import load_suite

from .helpers import write_cifar, write_idx_dataset
from .paper_suites import SUITES

SUITE = SUITES / "energy.yaml"
ROWS = ["bp", "dfa", "feedback-alignment", "ddtp-linear", "pc", "pc-center", "ep"]
ENERGY = ["pc", "pc-center", "ep"]
DATASETS = ["mnist", "fashion_mnist", "cifar10_cnn"]


@pytest.fixture(scope="module")
def registry():
    return bioplaus_bench.registry.load_registry()


@pytest.fixture(scope="module")
def suites(registry):
    return {name: load_suite(SUITES / f"{name}.yaml", registry)
            for name in ("energy", "table1", "table3", "fa_family")}


def test_rows_datasets_and_skipped_cells(suites, registry):
    suite = suites["energy"]
    assert list(suite.algorithms) == ROWS and list(suite.datasets) == DATASETS
    assert all(suite.names[a] in registry for a in ROWS)
    assert suite.datasets["mnist"] == suites["table1"].datasets["mnist"]
    assert suite.datasets["fashion_mnist"] == suites["table1"].datasets["fashion_mnist"]
    assert suite.datasets["cifar10_cnn"] == suites["table3"].datasets["cifar10_cnn"]
    cells = suite.cells(registry=registry)
    skipped = {(c.dataset_id, c.algorithm_id) for c in cells if c.skip_reason}
    assert skipped == {("cifar10_cnn", a) for a in ENERGY}
    assert all("does not support CNN" in c.skip_reason for c in cells if c.skip_reason)


@pytest.mark.parametrize("algorithm", ["bp", "dfa", "ddtp-linear"])
def test_the_paper_baselines_keep_the_shipped_settings(suites, algorithm):
    ours = suites["energy"]
    for paper, dataset in (("table1", "mnist"), ("table1", "fashion_mnist"),
                           ("table3", "cifar10_cnn")):
        mine, theirs = ours.resolved[(algorithm, dataset)], suites[paper].resolved[(algorithm, dataset)]
        assert mine[0].optimizer == theirs[0].optimizer, (algorithm, dataset)
        assert mine[0].schedule == theirs[0].schedule, (algorithm, dataset)
        assert mine[1:] == theirs[1:], (algorithm, dataset)  # params, precision


def test_fa_keeps_the_fa_family_setting(suites):
    ours, family = suites["energy"], suites["fa_family"]
    for dataset in DATASETS:
        theirs = family.resolved[("feedback-alignment",
                                  "mnist" if dataset == "fashion_mnist" else dataset)]
        mine = ours.resolved[("feedback-alignment", dataset)]
        assert (mine[0].optimizer, mine[0].schedule, *mine[1:]) == \
            (theirs[0].optimizer, theirs[0].schedule, *theirs[1:]), dataset


def test_the_energy_rules_are_untuned(suites, registry):
    suite = suites["energy"]
    bp_adam = suites["table1"].resolved[("bp", "mnist")][0].optimizer
    for algorithm in ENERGY:
        cls = registry.get(suite.names[algorithm]).cls
        for dataset in ("mnist", "fashion_mnist"):
            settings, params, precision = suite.resolved[(algorithm, dataset)]
            assert settings.optimizer == bp_adam and precision == "float64"
            expected = cls.Params(nudge="center", output_weight=0.1) \
                if algorithm == "pc-center" else cls.Params()
            assert params == expected


def test_every_cell_runs_on_generated_data(tmp_path):
    write_idx_dataset(tmp_path / "data", "MNIST", n_train=40, n_test=10)
    write_idx_dataset(tmp_path / "data", "FashionMNIST", n_train=40, n_test=10)
    write_cifar(tmp_path / "data", n_per_batch=6, n_test=8)
    out = tmp_path / "r"
    args = ["run", str(SUITE), "--data-dir", str(tmp_path / "data"), "--skip-checksums",
            "--seeds", "1", "--epochs", "1", "--out", str(out), "--quiet"]
    for dataset in DATASETS:
        args += ["--set", f"datasets.{dataset}.protocol.validation=10",
                 "--set", f"datasets.{dataset}.protocol.batch_size=10"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    records = {p.parent.relative_to(out).as_posix(): json.loads(p.read_text())
               for p in out.glob("*/*/seed-0.json")}
    assert sorted(records) == sorted(f"{d}/{a}" for d in DATASETS for a in ROWS)
    statuses = {key: r["status"] for key, r in records.items()}
    assert {k: s for k, s in statuses.items() if s != "ok"} == \
        {f"cifar10_cnn/{a}": "skipped" for a in ENERGY}
    for dataset in ("mnist", "fashion_mnist"):
        for algorithm in ENERGY:
            row = records[f"{dataset}/{algorithm}"]["history"][0]
            assert 0.0 <= row["test_accuracy"] <= 1.0
