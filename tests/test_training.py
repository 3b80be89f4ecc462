"""The training loop (algorithms.md §5, §6, §7): schedules, frozen layers, optimisers, selection, pruning."""

from dataclasses import dataclass

import pytest
import torch

from bioplaus_bench.api import (
    Algorithm,
    Capabilities,
    Classification,
    forward_pass,
    local_updates,
    output_target,
)
from bioplaus_bench.data import DataSettings
from bioplaus_bench.errors import SuiteError
from bioplaus_bench.execution.runner import ForwardOptimisers
from bioplaus_bench.execution.setup import Environment, prepare
from bioplaus_bench.execution.training import summarise, train_cell
from bioplaus_bench.registry import AlgorithmInfo, Registry, load_registry
from bioplaus_bench.suite import load_suite

from .helpers import write_idx_dataset

SUITE = """\
name: loop
seeds: [0]
precision: float64
datasets:
  digits:
    source: mnist
    architecture: {type: mlp, hidden: [12, 10, 8]}
    protocol: {epochs: 2, batch_size: 16, validation: 20}
algorithms:
  bp:
    optimizer: {lr: 1.0e-2, betas: [0.9, 0.999], eps: 1.0e-8}
  dfa:
    optimizer: {lr: 1.0e-2, betas: [0.9, 0.999], eps: 1.0e-8}
  recorder:
    optimizer: {lr: 1.0e-2, betas: [0.9, 0.999], eps: 1.0e-8}
    schedule: {feedback_pretraining_epochs: 2, extra_feedback_epochs: 3}
    params: {stepsize: 0.5}
  dtp: {optimizer: {lr: 1.0e-3}}
  dtp-pretrained: {optimizer: {lr: 1.0e-3}}
  dtp-drl: {optimizer: {lr: 1.0e-3}}
  ddtp-linear: {optimizer: {lr: 1.0e-3}}
  ddtp-rhl: {optimizer: {lr: 1.0e-3}, params: {random_width: 32}}
  ddtp-control: {optimizer: {lr: 1.0e-3}}
"""


@dataclass(frozen=True)
class RecorderParams:
    stepsize: float = 1.0


class Recorder(Algorithm):
    """A trainable-feedback rule that logs what the runner calls, and when."""

    name = "recorder"
    Params = RecorderParams
    capabilities = Capabilities(mlp=True, trainable_feedback=True)

    def __init__(self, network, task, params):
        super().__init__(network, task, params)
        self.q = torch.nn.Parameter(torch.ones(3, dtype=network.dtype))
        self.optimizer = torch.optim.SGD([self.q], lr=0.1)
        self.events = []

    def lr_normalizer(self):
        return self.params.stepsize

    def forward_updates(self, fwd):
        self.events.append(("forward", self.q.detach().clone()))
        hidden = [h - 0.01 for h in fwd.h[1:-1]]
        targets = [None, *hidden, output_target(fwd, self.task, 1.0)]
        return local_updates(self.network, fwd, targets)

    def feedback_step(self, fwd):
        weights = torch.cat([p.detach().flatten() for p in self.network.parameters()])
        self.events.append(("feedback", weights))
        self.optimizer.zero_grad()
        loss = (self.q ** 2).sum()
        loss.backward()
        self.optimizer.step()
        return loss.item()


@pytest.fixture()
def setup(tmp_path):
    write_idx_dataset(tmp_path / "data", "MNIST", n_train=100, n_test=30)
    registry = load_registry()
    registry = Registry({**registry.algorithms,
                         "recorder": AlgorithmInfo("recorder", Recorder, "file", "test")}, [])
    path = tmp_path / "suite.yaml"
    path.write_text(SUITE)
    # Tiny files are never the originals: their checksums cannot match.
    env = Environment(DataSettings(root=tmp_path / "data", cache_dir=tmp_path / "cache",
                                   verify_checksums=False))

    def cell(algorithm, text=None, **overrides):
        if text is not None:
            path.write_text(text)
        suite = load_suite(path, registry, [f"{k}={v}" for k, v in overrides.items()])
        return next(c for c in suite.cells(registry=registry) if c.algorithm_id == algorithm)
    return registry, env, cell


def parameters_of(network):
    return [p.detach().clone() for p in network.parameters()]


def test_schedule_counts_and_forward_weights_still_in_feedback_only_epochs(setup, monkeypatch):
    registry, env, cell = setup
    c = cell("recorder")
    created = []
    original_init = Recorder.__init__

    def spy(self, *args):
        original_init(self, *args)
        created.append(self)
    monkeypatch.setattr(Recorder, "__init__", spy)
    result = train_cell(c, Recorder, env)
    events = created[0].events
    batches = 5  # 80 training samples (100 − 20 validation) in batches of 16
    kinds = [kind for kind, _ in events]
    pretraining = 2 * batches
    per_epoch = 2 * batches + 3 * batches  # (forward + feedback) per batch, then 3 feedback epochs
    assert len(kinds) == pretraining + 2 * per_epoch
    assert kinds[:pretraining] == ["feedback"] * pretraining
    epoch = kinds[pretraining:pretraining + per_epoch]
    assert epoch[:2 * batches] == ["forward", "feedback"] * batches
    assert epoch[2 * batches:] == ["feedback"] * (3 * batches)
    # Forward weights do not move during feedback-only epochs (pre-training and extra epochs).
    pre = [w for kind, w in events[:pretraining]]
    assert all(torch.equal(pre[0], w) for w in pre)
    extra = [w for _, w in events[pretraining + 2 * batches:pretraining + per_epoch]]
    assert all(torch.equal(extra[0], w) for w in extra)
    assert not torch.equal(pre[0], extra[0])
    assert len(result["pretraining_feedback_loss"]) == 2
    assert len(result["history"][0]["extra_feedback_loss"]) == 3


def test_targets_use_feedback_weights_from_before_the_feedback_step(setup):
    registry, env, cell = setup
    _, network, algorithm = prepare(cell("recorder"), Recorder, env)
    x = torch.randn(4, 1, 28, 28, dtype=torch.float64)
    fwd = forward_pass(network, Classification(10), x, torch.tensor([1, 2, 3, 4]))
    algorithm.forward_updates(fwd)
    q_seen = algorithm.events[-1][1]
    algorithm.feedback_step(fwd)
    assert torch.equal(q_seen, torch.ones(3, dtype=torch.float64))
    assert not torch.equal(algorithm.q.detach(), q_seen)


ALL = ["bp", "dfa", "dtp", "dtp-pretrained", "dtp-drl", "ddtp-linear", "ddtp-rhl", "ddtp-control",
       "recorder"]


@pytest.mark.parametrize("algorithm", ALL)
def test_frozen_layers_keep_their_weights_and_feedback_still_trains(setup, algorithm, tmp_path):
    registry, env, cell = setup
    c = cell(algorithm, **{"datasets.digits.protocol.frozen_layers": "[2, 3, 4]",
                           "datasets.digits.protocol.epochs": "1",
                           f"algorithms.{algorithm}.optimizer.lr": "0.01"})
    cls = registry.get(algorithm).cls
    _, network, algo = prepare(c, cls, env)
    before = [parameters_of(network.layer(i)) for i in range(1, 5)]
    feedback_before = {k: v.clone() for k, v in algo.state_dict().items() if k != "_extra_state"}
    # The checkpoint holds the network and the algorithm as training left them.
    train_cell(c, cls, env, checkpoint=tmp_path / "c.ckpt")
    saved = torch.load(tmp_path / "c.ckpt", weights_only=True)
    network.load_state_dict(saved["network"])
    after = [parameters_of(network.layer(i)) for i in range(1, 5)]
    assert any(not torch.equal(a, b) for a, b in zip(before[0], after[0], strict=True))
    for i in (1, 2, 3):
        assert all(torch.equal(a, b) for a, b in zip(before[i], after[i], strict=True))
    if cls.capabilities.trainable_feedback:  # every feedback matrix was trained
        trained = [name for name, p in algo.named_parameters() if p.requires_grad]
        moved = [k for k in trained if not torch.equal(saved["algorithm"][k], feedback_before[k])]
        assert moved and all(k in moved for k in trained if k.endswith("weight")), moved


def forward_optimisers(cell, network, algorithm):
    return ForwardOptimisers(network, algorithm, cell.settings.optimizer,
                             cell.dataset.protocol.frozen_layers)


def test_lr_is_normalised_by_the_target_stepsize_and_lists_give_one_adam_per_layer(setup):
    registry, env, cell = setup
    c = cell("recorder")
    _, network, algorithm = prepare(c, Recorder, env)
    optimisers = forward_optimisers(c, network, algorithm).optimisers
    assert len(optimisers) == 1
    assert optimisers[0].param_groups[0]["lr"] == pytest.approx(1e-2 / 0.5)
    assert optimisers[0].param_groups[0]["betas"] == (0.9, 0.999)

    c = cell("recorder", **{"algorithms.recorder.optimizer.normalize_lr": "false"})
    assert forward_optimisers(c, network, algorithm).optimisers[0].param_groups[0]["lr"] == 1e-2

    c = cell("recorder", **{"algorithms.recorder.optimizer.lr": "[0.1, 0.2, 0.3, 0.4]",
                            "algorithms.recorder.optimizer.eps": "[1e-1, 1e-2, 1e-3, 1e-4]",
                            "datasets.digits.protocol.frozen_layers": "[3]"})
    optimisers = forward_optimisers(c, network, algorithm).optimisers
    groups = [o.param_groups[0] for o in optimisers]
    assert [g["lr"] for g in groups] == pytest.approx([0.2, 0.4, 0.8])
    assert [g["eps"] for g in groups] == [1e-1, 1e-2, 1e-4]
    assert [len(g["params"]) for g in groups] == [2, 2, 2]


def test_per_layer_lists_must_match_the_depth(setup):
    registry, env, cell = setup
    with pytest.raises(SuiteError, match="optimizer.lr: expected 4 values"):
        cell("recorder", **{"algorithms.recorder.optimizer.lr": "[0.1, 0.2]"})


def test_selection_takes_the_first_epoch_of_best_validation_accuracy():
    rows = [{"epoch": e, "train_loss": 1.0, "val_accuracy": v, "val_loss": 0.0,
             "test_accuracy": t, "test_loss": 0.1 * e}
            for e, v, t in [(1, 0.5, 0.4), (2, 0.9, 0.8), (3, 0.9, 0.95), (4, 0.7, 0.99)]]
    state = {"status": "ok", "history": rows, "pretraining": [], "pruned_at": None}
    summary = summarise(state, "classification", has_val=True)
    assert summary["selected_epoch"] == 2
    assert summary["final"]["test_error"] == pytest.approx(0.2)
    assert summary["final"]["train_loss_last"] == 1.0
    summary = summarise(state, "classification", has_val=False)
    assert summary["selected_epoch"] == 4  # no validation split: the last epoch


def test_pruning_stops_a_run_below_the_training_accuracy_threshold(setup):
    registry, env, cell = setup
    c = cell("bp", **{"datasets.digits.protocol.pruning": "{min_train_accuracy: 1.0, from_epoch: 2}",
                      "datasets.digits.protocol.epochs": "5"})
    result = train_cell(c, registry.get("bp").cls, env)
    assert result["pruned_at_epoch"] == 2
    assert len(result["history"]) == 2
    assert result["status"] == "ok"
    unpruned = train_cell(cell("bp", **{"datasets.digits.protocol.epochs": "3"}),
                          registry.get("bp").cls, env)
    assert unpruned["pruned_at_epoch"] is None and len(unpruned["history"]) == 3


def test_accuracies_are_exact_per_sample_means(setup):
    registry, env, cell = setup
    result = train_cell(cell("bp"), registry.get("bp").cls, env)
    row = result["history"][-1]
    assert row["test_accuracy"] * 30 == pytest.approx(round(row["test_accuracy"] * 30))
    assert row["val_accuracy"] * 20 == pytest.approx(round(row["val_accuracy"] * 20))
    assert row["train_accuracy"] * 80 == pytest.approx(round(row["train_accuracy"] * 80))
