"""suites/table2.yaml holds every Table-2 method with the shipped `*_train` hyper-parameters
(algorithms.md §11).

The expected numbers are typed from the spec's "training-loss (Table 2)" tables, not read from the suite file.
"""

from __future__ import annotations

import pytest

import bioplaus_bench.registry
from bioplaus_bench.suite import load_suite

from .paper_suites import DATASETS, ROWS, SUITES, tp_blocks, value

SUITE = SUITES / "table2.yaml"


@pytest.fixture(scope="module")
def suite():
    return load_suite(SUITE, bioplaus_bench.registry.load_registry())


def test_rows_labels_and_datasets(suite):
    assert suite.name == "table2"
    assert list(suite.algorithms) == ROWS
    assert [suite.labels[a] for a in ROWS] == [
        "BP", "DDTP-linear", "DDTP-RHL", "DTP-DRL", "DDTP-control", "DTP", "DTP (pre-trained)", "DFA"]
    assert list(suite.datasets) == DATASETS
    assert list(suite.algorithms["dfa"].skip) == ["frozen_mnist"]
    assert list(suite.seeds) == list(range(10))
    for a in ROWS:
        for d in DATASETS:
            settings, _, _ = suite.resolved[(a, d)]
            assert settings.optimizer.normalize_lr is True  # lr in the file is the raw config value


def test_no_validation_split_full_training_set(suite):
    """Table-2 configs set no_val_set=True: train on all 60 000 / 50 000 images (algorithms.md §7)."""
    for d in DATASETS:
        protocol = suite.datasets[d].protocol
        assert protocol.validation is None
        assert protocol.epochs == 100
        assert protocol.batch_size == 128
    assert list(suite.datasets["frozen_mnist"].protocol.frozen_layers) == [2, 3, 4, 5, 6]


def test_metric_is_training_loss(suite):
    assert suite.metric == "train_loss"


# (algorithm, dataset, where, attribute, expected); where: "opt", "schedule", "params" or "precision".
CASES = [
    # MNIST (mnist_*_train)
    ("bp", "mnist", "opt", "lr", 0.000401193255435432),
    ("bp", "mnist", "precision", None, "float32"),
    ("ddtp-linear", "mnist", "opt", "betas", (0.99, 0.9)),
    ("ddtp-linear", "mnist", "params", "feedback_betas", (0.999, 0.9)),
    ("ddtp-rhl", "mnist", "params", "sigma", 0.003896077388858419),
    ("ddtp-rhl", "mnist", "params", "random_width", 1024),
    ("dtp-drl", "mnist", "params", "feedback_weight_decay", 1.8823398552430864e-07),
    ("ddtp-control", "mnist", "opt", "eps", 5.460350916380454e-08),
    ("dtp", "mnist", "params", "target_stepsize", 0.2220880682462359),
    ("dtp", "mnist", "params", "feedback_weight_decay", 0.0),
    ("dtp", "mnist", "schedule", "feedback_pretraining_epochs", 0),
    ("dtp-pretrained", "mnist", "params", "feedback_eps", 1.2435425546063357e-08),
    ("dtp-pretrained", "mnist", "schedule", "extra_feedback_epochs", 1),
    ("dfa", "mnist", "opt", "lr", 0.00038484282691424794),
    ("dfa", "mnist", "params", "target_stepsize", 1.0),
    ("dfa", "mnist", "precision", None, "float64"),
    # Frozen-MNIST (frozen_mnist_*_train)
    ("bp", "frozen_mnist", "opt", "eps", 7.842694644968446e-06),
    ("ddtp-linear", "frozen_mnist", "schedule", "feedback_pretraining_epochs", 6),
    ("ddtp-linear", "frozen_mnist", "schedule", "extra_feedback_epochs", 1),
    ("ddtp-rhl", "frozen_mnist", "precision", None, "float64"),
    ("ddtp-rhl", "frozen_mnist", "opt", "lr", 3.63751609496963e-05),
    ("dtp-drl", "frozen_mnist", "params", "feedback_lr", 0.0009259703434043203),
    ("ddtp-control", "frozen_mnist", "opt", "betas", (0.999, 0.999)),
    ("dtp", "frozen_mnist", "params", "feedback_weight_decay", 0.0),
    ("dtp", "frozen_mnist", "params", "sigma", 0.2102614353035358),
    # frozen_mnist_DTP_improved_train
    ("dtp-pretrained", "frozen_mnist", "opt", "lr", 6.457944425680342e-05),
    ("dtp-pretrained", "frozen_mnist", "opt", "eps", 1.3476511937778762e-05),
    ("dtp-pretrained", "frozen_mnist", "schedule", "feedback_pretraining_epochs", 6),
    ("dtp-pretrained", "frozen_mnist", "schedule", "extra_feedback_epochs", 1),
    # Fashion-MNIST (fashion_mnist_train_*)
    ("bp", "fashion_mnist", "opt", "eps", 0.0001291342102717149),
    ("ddtp-linear", "fashion_mnist", "params", "target_stepsize", 0.06121412698985014),
    ("ddtp-rhl", "fashion_mnist", "params", "feedback_weight_decay", 0.00262404487038389),
    ("ddtp-rhl", "fashion_mnist", "params", "random_width", 1024),
    ("dtp-drl", "fashion_mnist", "params", "sigma", 0.06003463411981926),
    ("ddtp-control", "fashion_mnist", "params", "feedback_betas", (0.9, 0.9)),
    ("dtp", "fashion_mnist", "opt", "lr", 6.54260313478272e-05),
    ("dtp-pretrained", "fashion_mnist", "opt", "lr", 5.854740019006692e-06),
    ("dtp-pretrained", "fashion_mnist", "schedule", "feedback_pretraining_epochs", 6),
    ("dfa", "fashion_mnist", "opt", "lr", 0.003226161804181597),
    ("dfa", "fashion_mnist", "opt", "eps", 3.634259282023514e-05),
    # CIFAR-10 (cifar10_*_train)
    ("bp", "cifar10", "opt", "betas", (0.99, 0.999)),
    ("bp", "cifar10", "precision", None, "float32"),
    ("ddtp-linear", "cifar10", "opt", "lr", 3.5281433603406804e-05),
    ("ddtp-linear", "cifar10", "schedule", "feedback_pretraining_epochs", 10),
    ("ddtp-linear", "cifar10", "schedule", "extra_feedback_epochs", 2),
    ("ddtp-rhl", "cifar10", "params", "random_width", 2048),
    ("ddtp-rhl", "cifar10", "params", "sigma", 0.08806207525364698),
    ("dtp-drl", "cifar10", "opt", "betas", (0.999, 0.99)),
    ("ddtp-control", "cifar10", "opt", "lr", 7.451027319970142e-05),
    ("ddtp-control", "cifar10", "params", "feedback_eps", 9.232258905602834e-06),
    ("dtp", "cifar10", "params", "target_stepsize", 0.016255934250580594),
    ("dtp", "cifar10", "schedule", "extra_feedback_epochs", 0),
    ("dtp-pretrained", "cifar10", "params", "feedback_weight_decay", 2.461969739133049e-07),
    ("dtp-pretrained", "cifar10", "schedule", "feedback_pretraining_epochs", 10),
    ("dfa", "cifar10", "opt", "eps", 3.09767392921623e-07),
    ("dfa", "cifar10", "precision", None, "float64"),
]


@pytest.mark.parametrize(("algorithm", "dataset", "where", "attribute", "expected"), CASES)
def test_shipped_value(suite, algorithm, dataset, where, attribute, expected):
    found = value(suite, algorithm, dataset, where, attribute)
    assert found == expected
    assert type(found) is type(expected)


def test_table2_values_are_not_table1_values(suite):
    """A copy of the Table-1 numbers would pass most structural checks; catch it."""
    assert value(suite, "bp", "mnist", "opt", "lr") != 0.0002970474733093798
    assert value(suite, "ddtp-control", "cifar10", "opt", "lr") != 0.00013475123387594138
    assert value(suite, "dtp-pretrained", "frozen_mnist", "opt", "lr") != 5.800132985181198e-05


def test_every_tp_entry_writes_schedule_and_precision_for_every_dataset():
    """Schedules differ per dataset, so no TP cell may fall back on an algorithm's default."""
    for block in tp_blocks(SUITE):
        assert set(block["schedule"]) == {"feedback_pretraining_epochs", "extra_feedback_epochs"}
        assert block["precision"] in ("float32", "float64")


def test_tp_lr_is_raw_not_lr_eff(suite):
    """The file holds the config's raw lr; the runner divides by η̂ (e.g. MNIST DDTP-linear's
    lr_eff 0.002737 must not appear)."""
    settings, params, _ = suite.resolved[("ddtp-linear", "mnist")]
    assert settings.optimizer.lr / params.target_stepsize == pytest.approx(0.002737, rel=1e-3)
    settings, params, _ = suite.resolved[("dtp-pretrained", "cifar10")]
    assert settings.optimizer.lr / params.target_stepsize == pytest.approx(0.0003516, rel=1e-3)
