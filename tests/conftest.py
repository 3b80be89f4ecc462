"""Fixtures and process-wide settings of the test run. The shared helpers (tiny datasets in
torchvision's on-disk formats, the ``bench`` command, a tiny suite) are in ``helpers``."""

from __future__ import annotations

import signal

import pytest
import torch

from .helpers import TINY_SUITE, write, write_cifar, write_idx_dataset

# The tests use tiny networks, for which thread start-up costs more than it saves; with other
# processes on the machine, two spinning OpenMP threads can make a step 50× slower.
torch.set_num_threads(1)

# A test run started from a background job of a non-interactive shell (`make test > log &`)
# inherits SIGINT as ignored, and so would every process it starts: Python then installs no
# KeyboardInterrupt handler and a child `bench` ignores Ctrl-C. With a Python handler here, the
# children start with the default dispositions (exec resets handlers, not an ignored signal).
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)
if signal.getsignal(signal.SIGTERM) == signal.SIG_IGN:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


@pytest.fixture
def make_idx_dataset():
    """``write_idx_dataset`` (root, cls_name="MNIST", n_train=60, n_test=12, seed=0, gz=False)."""
    return write_idx_dataset


@pytest.fixture
def make_cifar():
    """``write_cifar`` (root, n_per_batch=4, n_test=6, seed=0)."""
    return write_cifar


@pytest.fixture()
def tiny(tmp_path):
    """The tiny suite as a file."""
    return write(tmp_path / "tiny.yaml", TINY_SUITE)
