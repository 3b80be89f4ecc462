"""The demo (`make demo` runs suites/smoke.yaml) and the normalised teacher task it runs on.
The demo itself is not run here; test_cli runs the smoke suite end to end."""

from pathlib import Path

import numpy as np
import pytest
import torch

from bioplaus_bench.data import TEACHER, TEACHER_NORMALIZED, DataSettings, TeacherOptions
from bioplaus_bench.registry import load_registry
from bioplaus_bench.suite import load_suite

ROOT = Path(__file__).resolve().parents[1]
REGISTRY = load_registry()
OPTIONS = TeacherOptions(n_train=300, n_test=150, hidden=(64, 64))


def test_the_smoke_suite_validates_with_every_method_on_the_normalised_teacher():
    suite = load_suite(ROOT / "suites" / "smoke.yaml", REGISTRY)
    assert len(suite.seeds) >= 3  # the statistics table prints intervals from three seeds on
    assert suite.datasets["teacher"].source == "teacher-normalized"
    assert set(suite.algorithms) == {"bp", "ddtp-linear", "ddtp-rhl", "dtp-drl", "ddtp-control",
                                     "dtp", "dtp-pretrained", "dfa", "fa"}
    cells = suite.cells()
    assert len(cells) == 9 * len(suite.seeds)
    assert REGISTRY.dataset("teacher-normalized") is TEACHER_NORMALIZED


@pytest.mark.parametrize("seed", [0, 3])
def test_normalised_targets_are_the_raw_ones_standardised_by_the_training_set(seed):
    raw = TEACHER.load(DataSettings(), OPTIONS, seed=seed, validation=100)
    norm = TEACHER_NORMALIZED.load(DataSettings(), OPTIONS, seed=seed, validation=100)
    # Same inputs; targets computed independently in numpy, in float64 from the raw float32.
    y_train = raw.train.y.numpy().astype(np.float64)
    mean, std = y_train.mean(axis=0), y_train.std(axis=0)
    assert (std > 0).all() and not np.allclose(std, 1.0)  # the raw task is not already standard
    for raw_split, norm_split in ((raw.train, norm.train), (raw.val, norm.val),
                                  (raw.test, norm.test)):
        assert torch.equal(raw_split.x, norm_split.x)
        expected = (raw_split.y.numpy().astype(np.float64) - mean) / std
        np.testing.assert_allclose(norm_split.y.numpy(), expected, rtol=1e-4, atol=1e-5)
        assert norm_split.y.dtype == torch.float32
    y = norm.train.y.double().numpy()
    np.testing.assert_allclose(y.mean(axis=0), 0.0, atol=1e-6)
    np.testing.assert_allclose(y.std(axis=0), 1.0, atol=1e-6)
    # Test MSE of predicting the training mean is the test set's variance fraction, about 1.
    assert 0.5 < float((norm.test.y ** 2).mean()) < 2.0
    assert norm.task.kind == "regression" and norm.task.n_outputs == OPTIONS.output_dim


def test_the_raw_teacher_task_is_unchanged_by_default():
    # Table suites and the hashes of earlier runs read `teacher`: its options gained nothing.
    assert TeacherOptions() == TeacherOptions(n_train=400, n_test=200, input_dim=6, output_dim=2,
                                              hidden=(1000, 1000, 1000, 1000), gain=3.0)
    assert TEACHER.Options is TeacherOptions and TEACHER_NORMALIZED.Options is TeacherOptions
