"""suites/table1.yaml holds every Table-1 method with the shipped hyper-parameters (algorithms.md §11).

The expected numbers are typed from the spec's tables, not read from the suite file.
"""

from __future__ import annotations

import pytest

import bioplaus_bench.registry
from bioplaus_bench.suite import load_suite

from .paper_suites import DATASETS, ROWS, SUITES, tp_blocks, value

SUITE = SUITES / "table1.yaml"


@pytest.fixture(scope="module")
def suite():
    return load_suite(SUITE, bioplaus_bench.registry.load_registry())


def test_rows_labels_and_datasets(suite):
    assert list(suite.algorithms) == ROWS
    assert [suite.labels[a] for a in ROWS] == [
        "BP", "DDTP-linear", "DDTP-RHL", "DTP-DRL", "DDTP-control", "DTP", "DTP (pre-trained)", "DFA"]
    assert list(suite.datasets) == DATASETS
    assert list(suite.algorithms["dfa"].skip) == ["frozen_mnist"]
    for a in ROWS:
        for d in DATASETS:
            settings, _, _ = suite.resolved[(a, d)]
            assert settings.optimizer.normalize_lr is True  # lr in the file is the raw config value


# (algorithm, dataset, where, attribute, expected); where: "opt", "schedule", "params" or "precision".
CASES = [
    # MNIST
    ("ddtp-linear", "mnist", "opt", "lr", 2.0354415171962153e-05),
    ("ddtp-linear", "mnist", "params", "target_stepsize", 0.06096940412767466),
    ("ddtp-linear", "mnist", "params", "feedback_betas", (0.999, 0.999)),
    ("ddtp-rhl", "mnist", "params", "random_width", 1024),
    ("ddtp-rhl", "mnist", "params", "feedback_weight_decay", 0.001621280241954684),
    ("dtp-drl", "mnist", "params", "feedback_eps", 5.0844503288987736e-08),
    ("dtp-drl", "mnist", "schedule", "feedback_pretraining_epochs", 6),
    ("ddtp-control", "mnist", "params", "sigma", 0.008719996683197298),
    ("dtp", "mnist", "opt", "eps", 1.0170111936290766e-08),
    ("dtp", "mnist", "schedule", "feedback_pretraining_epochs", 0),
    ("dtp", "mnist", "schedule", "extra_feedback_epochs", 0),
    ("dtp-pretrained", "mnist", "opt", "lr", 8.755114977760993e-05),
    ("dtp-pretrained", "mnist", "params", "feedback_betas", (0.9, 0.9)),
    ("dtp-pretrained", "mnist", "schedule", "extra_feedback_epochs", 1),
    ("bp", "mnist", "precision", None, "float32"),
    ("dfa", "mnist", "opt", "lr", 0.0003808175281098754),
    ("dfa", "mnist", "precision", None, "float64"),
    # Frozen-MNIST
    ("ddtp-linear", "frozen_mnist", "schedule", "feedback_pretraining_epochs", 10),
    ("ddtp-linear", "frozen_mnist", "schedule", "extra_feedback_epochs", 0),
    ("ddtp-rhl", "frozen_mnist", "precision", None, "float32"),
    ("ddtp-rhl", "frozen_mnist", "opt", "eps", 5.716850868633521e-05),
    ("dtp-drl", "frozen_mnist", "params", "target_stepsize", 0.019893250463807396),
    ("ddtp-control", "frozen_mnist", "params", "feedback_betas", (0.9, 0.99)),
    ("dtp", "frozen_mnist", "opt", "betas", (0.99, 0.9)),
    ("dtp", "frozen_mnist", "params", "feedback_weight_decay", 0.0010337317140745048),
    ("dtp", "frozen_mnist", "schedule", "feedback_pretraining_epochs", 0),
    ("dtp-pretrained", "frozen_mnist", "schedule", "feedback_pretraining_epochs", 10),
    ("dtp-pretrained", "frozen_mnist", "schedule", "extra_feedback_epochs", 0),
    ("dtp-pretrained", "frozen_mnist", "opt", "lr", 5.800132985181198e-05),
    ("bp", "frozen_mnist", "opt", "lr", 0.001637828769799821),
    # Fashion-MNIST
    ("ddtp-linear", "fashion_mnist", "opt", "betas", (0.99, 0.99)),
    ("ddtp-rhl", "fashion_mnist", "params", "feedback_eps", 0.00020811926328088761),
    ("ddtp-rhl", "fashion_mnist", "params", "random_width", 1024),
    ("dtp-drl", "fashion_mnist", "opt", "lr", 7.101735983180753e-05),
    ("ddtp-control", "fashion_mnist", "params", "feedback_lr", 3.12062953559089e-05),
    ("dtp", "fashion_mnist", "params", "sigma", 0.26748740970595125),
    ("dtp-pretrained", "fashion_mnist", "opt", "eps", 5.0647473988637e-08),
    ("dtp-pretrained", "fashion_mnist", "schedule", "feedback_pretraining_epochs", 6),
    ("dfa", "fashion_mnist", "opt", "lr", 0.0009403014926576205),
    # CIFAR-10
    ("ddtp-linear", "cifar10", "params", "sigma", 0.006339078037135994),
    ("ddtp-linear", "cifar10", "schedule", "extra_feedback_epochs", 2),
    ("ddtp-rhl", "cifar10", "params", "random_width", 2048),
    ("ddtp-rhl", "cifar10", "opt", "lr", 2.2591298843888373e-06),
    ("dtp-drl", "cifar10", "params", "feedback_weight_decay", 1.255944396346018e-05),
    ("dtp", "cifar10", "opt", "betas", (0.999, 0.99)),
    ("dtp", "cifar10", "schedule", "feedback_pretraining_epochs", 0),
    ("dtp-pretrained", "cifar10", "schedule", "feedback_pretraining_epochs", 10),
    ("dtp-pretrained", "cifar10", "schedule", "extra_feedback_epochs", 2),
    ("dtp-pretrained", "cifar10", "params", "target_stepsize", 0.15943272147463028),
    ("bp", "cifar10", "opt", "eps", 0.0006565611200656028),
    ("dfa", "cifar10", "opt", "eps", 2.5157431832952267e-05),
]

# CIFAR-10 DDTP-control: the figure-script DDTPControl config (algorithms.md §11, §13.1), not
# final_configs/cifar10_DDTPControl.py, which selects DDTP-linear's network.
CIFAR_CONTROL = [
    ("opt", "lr", 0.00013475123387594138),
    ("opt", "betas", (0.9, 0.99)),
    ("opt", "eps", 6.191933031074126e-05),
    ("params", "target_stepsize", 0.045681100472527846),
    ("params", "feedback_lr", 1.0158470346120714e-05),
    ("params", "feedback_betas", (0.9, 0.99)),
    ("params", "feedback_eps", 0.0006748941295379405),
    ("params", "sigma", 0.07834918793355783),
    ("params", "feedback_weight_decay", 3.5764612382343916e-05),
    ("schedule", "feedback_pretraining_epochs", 10),
    ("schedule", "extra_feedback_epochs", 2),
    ("precision", None, "float64"),
]


@pytest.mark.parametrize(("algorithm", "dataset", "where", "attribute", "expected"), CASES)
def test_shipped_value(suite, algorithm, dataset, where, attribute, expected):
    found = value(suite, algorithm, dataset, where, attribute)
    assert found == expected
    assert type(found) is type(expected)


@pytest.mark.parametrize(("where", "attribute", "expected"), CIFAR_CONTROL)
def test_cifar10_ddtp_control_uses_figure_script_config(suite, where, attribute, expected):
    assert value(suite, "ddtp-control", "cifar10", where, attribute) == expected
    # and not the mislabelled final_configs values
    assert value(suite, "ddtp-control", "cifar10", "opt", "lr") != 2.8323219675905193e-06


def test_every_tp_entry_writes_schedule_and_precision_for_every_dataset():
    """Schedules differ per dataset, so no TP cell may fall back on an algorithm's default."""
    for block in tp_blocks(SUITE):
        assert set(block["schedule"]) == {"feedback_pretraining_epochs", "extra_feedback_epochs"}
        assert block["precision"] in ("float32", "float64")


def test_tp_lr_is_raw_not_lr_eff(suite):
    """The file holds the config's raw lr; the runner divides by η̂ (e.g. MNIST DDTP-linear's
    lr_eff 0.0003338 must not appear)."""
    settings, params, _ = suite.resolved[("ddtp-linear", "mnist")]
    assert settings.optimizer.lr / params.target_stepsize == pytest.approx(0.0003338, rel=1e-3)


def test_table3_cnn_suite_matches_spec_11():
    suite = load_suite(SUITES / "table3.yaml",
                       bioplaus_bench.registry.load_registry())
    assert list(suite.algorithms) == ["bp", "ddtp-linear", "ddtp-control", "dfa"]
    arch = suite.datasets["cifar10_cnn"].architecture
    assert (arch.type, arch.conv_channels, arch.hidden, arch.pool) == ("cnn", (32, 64), (512,), (3, 2, 1))
    settings, params, precision = suite.resolved[("ddtp-linear", "cifar10_cnn")]
    assert settings.optimizer.lr == (0.00025935571806476586, 0.000885500279951265,
                                     0.0001423047695105589, 3.3871035558126015e-06)
    assert settings.optimizer.eps[3] == 4.046144976139705e-05
    assert params.target_stepsize == 0.015962099947441903 and params.sigma == 0.00921040366516759
    assert (settings.schedule.feedback_pretraining_epochs, settings.schedule.extra_feedback_epochs) \
        == (10, 1)
    assert precision == "float64"
    settings, params, _ = suite.resolved[("ddtp-control", "cifar10_cnn")]
    assert params.feedback_eps == 0.00020685070303063725
    assert settings.optimizer.lr[0] == 0.0007058630744815441
    settings, _, _ = suite.resolved[("dfa", "cifar10_cnn")]
    assert settings.optimizer.eps[1] == 1.3370147141514222e-08
