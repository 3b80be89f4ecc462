"""What the conformance checks drive: a tiny network with its algorithm and the suite's own
``Runner``, fed by a fixed random data stream. Every training step goes through ``Runner.step``
and every feedback-only step through ``Runner.feedback_step``, so the checks check the step that
trains, not a copy of it. What only a check needs to know (finite, non-zero updates; a float
feedback loss; forward weights the algorithm left alone) is looked at in the step's ``inspect``
callback, before anything is applied, and reported as a ``Failure``.
"""

from __future__ import annotations

import math
import traceback
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import torch
from torch import Tensor

from ..data import TeacherOptions
from ..execution.build import build_network
from ..execution.runner import ForwardOptimisers, Proposal, Runner, StepResult, UpdateError
from ..execution.setup import seed_everything
from ..model.algorithm import Algorithm
from ..model.networks import Network
from ..model.tasks import Classification
from ..spec.architecture import ArchitectureSpec
from ..spec.cell import Cell, DatasetConfig, OptimizerConfig, Protocol, ScheduleConfig, Settings

ARCHITECTURES: dict[str, tuple[ArchitectureSpec, tuple[int, ...]]] = {
    "mlp": (ArchitectureSpec(type="mlp", hidden=(7, 5)), (6,)),
    "cnn": (ArchitectureSpec(type="cnn", conv_channels=(3,), hidden=(5,), kernel_size=3),
            (2, 6, 6)),
}
N_OUTPUTS = 3
BATCH = 8
# The forward Adam of every check; betas and eps are torch's defaults, which the checks used
# before they stepped through the runner.
OPTIMIZER = OptimizerConfig(lr=1e-3, betas=(0.9, 0.999), eps=1e-8)


class Failure(Exception):
    """A conformance failure with the reason to show."""


def describe(error: BaseException) -> str:
    """An exception the plugin raised, with where it raised it and, for the commonest mistake
    (autograd without a recorded graph), the fix."""
    text = f"{type(error).__name__}: {error}{_where(error)}"
    if "does not require grad" in str(error):
        text += "; set `record_graph = True` if forward_updates needs the autograd graph"
    return text


def _where(error: BaseException) -> str:
    frames = traceback.extract_tb(error.__traceback__)
    if not frames:
        return ""
    frame = frames[-1]
    return f" (at {Path(frame.filename).name}:{frame.lineno} in {frame.name})"


def snapshot(tensors: Sequence[Tensor]) -> list[Tensor]:
    return [t.detach().clone() for t in tensors]


def _first_moved(before: Sequence[Tensor], after: Sequence[Tensor],
                names: Sequence[str]) -> str | None:
    for b, a, name in zip(before, after, names, strict=True):
        if not torch.equal(b, a):
            return name
    return None


def above_layer_1(kind: str) -> tuple[int, ...]:
    """Layers 2..L of the tiny network of ``kind``: frozen by the frozen-layer checks."""
    return tuple(range(2, ARCHITECTURES[kind][0].depth + 1))


@contextmanager
def _updates_checked() -> Iterator[None]:
    """The runner's complaint about the shape of ``forward_updates``'s answer, as a Failure."""
    try:
        yield
    except UpdateError as error:
        raise Failure(str(error)) from None


@dataclass
class Setting:
    """A tiny network, its algorithm and the runner stepping them, with a fixed data stream."""

    runner: Runner
    generator: torch.Generator
    input_shape: tuple[int, ...]

    @property
    def network(self) -> Network:
        return self.runner.network

    @property
    def algorithm(self) -> Algorithm:
        return self.runner.algorithm

    @property
    def parameters(self) -> list[torch.nn.Parameter]:
        return self.runner.parameters

    @property
    def names(self) -> list[str]:
        return self.runner.names

    def batch(self) -> tuple[Tensor, Tensor]:
        x = torch.randn(BATCH, *self.input_shape, generator=self.generator, dtype=torch.float64)
        y = torch.randint(0, N_OUTPUTS, (BATCH,), generator=self.generator)
        return x.to(self.network.dtype), y

    def step(self, x: Tensor | None = None, y: Tensor | None = None) -> StepResult:
        """One training minibatch through ``Runner.step`` (the next batch of the stream unless
        one is given), inspected before it is applied."""
        if x is None or y is None:
            x, y = self.batch()
        before = snapshot(self.parameters)

        def inspect(proposal: Proposal) -> None:
            _check_updates(proposal.updates, self.names)
            _check_feedback_loss(proposal.feedback_loss)
            self._check_unmoved(before, "forward_updates/feedback_step",
                                ": return the update instead")

        with _updates_checked():
            result = self.runner.step(x, y, inspect=inspect)
        if result.fault is not None:  # the updates were checked: only the loss is left
            raise Failure(f"the {result.fault} is NaN or infinite")
        return result

    def feedback_step(self, x: Tensor | None = None, y: Tensor | None = None) -> float | None:
        """One minibatch of a feedback-only epoch through ``Runner.feedback_step`` (the next
        batch of the stream unless one is given); the loss it returned, checked finite."""
        if x is None or y is None:
            x, y = self.batch()
        before = snapshot(self.parameters)
        loss = self.runner.feedback_step(x, y)
        if loss is not None and not math.isfinite(loss):
            raise Failure(f"feedback_step returned a non-finite loss ({loss})")
        self._check_unmoved(before, "feedback_step", "; feedback-only epochs must leave them alone")
        return loss

    def propose(self, x: Tensor, y: Tensor) -> Proposal:
        """The runner's proposal for one minibatch, applied to nothing."""
        with _updates_checked():
            return self.runner.propose(x, y)

    def _check_unmoved(self, before: Sequence[Tensor], who: str, advice: str) -> None:
        moved = _first_moved(before, self.parameters, self.names)
        if moved is not None:
            raise Failure(f"{who} changed the forward weights themselves ({moved}); only the "
                          f"runner's optimiser may move them{advice}")


def describe_settings(cls: type[Algorithm], kinds: Sequence[str]) -> str:
    """What the checks run ``cls`` on, for the header line of ``bench check-plugin``."""
    shapes = []
    for kind in kinds:
        spec, input_shape = ARCHITECTURES[kind]
        parts = ["×".join(map(str, input_shape))]
        parts += [f"conv ({c} channels, {spec.kernel_size}×{spec.kernel_size}) + max-pool"
                  for c in spec.conv_channels]
        parts += [str(width) for width in (*spec.hidden, N_OUTPUTS)]
        shapes.append(f"{kind} = {spec.activation} {kind.upper()} {' → '.join(parts)}")
    text = (f"{'; '.join(shapes)}; task: {N_OUTPUTS}-class classification of random inputs, "
            f"batches of {BATCH}, float32 and float64")
    if "mlp" in kinds and cls.capabilities.supports_task("regression"):
        # A DatasetConfig's options are its dataset's Options once built (declared: the YAML).
        options = cast(TeacherOptions, teacher_cell(cls).dataset.options)
        text += (f"; frozen layers [mlp] also: one epoch of train_cell on the teacher "
                 f"regression task ({options.n_train} training samples, float64)")
    return text


def setting(cls: type[Algorithm], kind: str, dtype: torch.dtype, seed: int = 0,
            frozen_layers: Sequence[int] = ()) -> Setting:
    """Seed, build the network (after ``adapt_architecture``) and the algorithm in the runner's
    order, and the runner with its forward Adam over the layers not in ``frozen_layers``."""
    spec, input_shape = ARCHITECTURES[kind]
    params = cls.Params()
    seed_everything(seed)
    network = build_network(cls.adapt_architecture(spec, params), input_shape, N_OUTPUTS,
                            dtype=dtype)
    algorithm = cls(network, Classification(N_OUTPUTS), params)
    _check_normalizer(algorithm.lr_normalizer())
    runner = Runner(network, algorithm, ForwardOptimisers(network, algorithm, OPTIMIZER,
                                                          frozen_layers))
    return Setting(runner, torch.Generator().manual_seed(1000 + seed), input_shape)


def teacher_cell(cls: type[Algorithm], frozen_layers: Sequence[int] = ()) -> Cell:
    """One epoch of the teacher task on the tiny MLP in float64, seed 0: a cell as a suite would
    give it, built from the spec directly. Trainable feedback gets a pre-training and an extra
    feedback epoch, so that ``train_cell`` runs every phase."""
    spec, _ = ARCHITECTURES["mlp"]
    schedule = ScheduleConfig(feedback_pretraining_epochs=1, extra_feedback_epochs=1) \
        if cls.capabilities.trainable_feedback else ScheduleConfig()
    dataset = DatasetConfig(
        source="teacher", architecture=spec, label="teacher",
        protocol=Protocol(epochs=1, batch_size=16, validation=16,
                          frozen_layers=tuple(frozen_layers)),
        # The dataset's Options, as suite/load.py puts there (declared: the YAML mapping).
        options=TeacherOptions(n_train=48, n_test=16, hidden=(16,)))  # type: ignore[arg-type]
    return Cell(suite="conformance", dataset_id="teacher", dataset=dataset,
                algorithm_id="candidate", algorithm=cls.name, label=cls.label,
                settings=Settings(optimizer=OPTIMIZER, schedule=schedule), params=cls.Params(),
                precision="float64", seed=0, order=(0, 0))


def _check_normalizer(normalizer: object) -> None:
    if isinstance(normalizer, bool) or not isinstance(normalizer, int | float) \
            or not math.isfinite(normalizer) or normalizer <= 0:
        raise Failure(f"lr_normalizer() must return a positive finite number, got {normalizer!r}")


def _check_updates(updates: Sequence[Tensor], names: Sequence[str]) -> None:
    """What the runner does not ask of an update but a rule must give: finite values (the
    runner would record a fault) and not all zeros (that parameter would never learn)."""
    for index, (update, name) in enumerate(zip(updates, names, strict=True)):
        if not torch.isfinite(update).all():
            raise Failure(f"update {index} ({name}) has non-finite values")
        if not update.detach().abs().sum() > 0:
            raise Failure(f"update {index} ({name}) is all zeros: that parameter would never learn")


def _check_feedback_loss(loss: object) -> None:
    """``feedback_step`` returns the feedback loss as a number, or None: the runner logs it."""
    if loss is None:
        return
    if isinstance(loss, Tensor):
        loss = loss.item()
    if isinstance(loss, bool) or not isinstance(loss, int | float):
        raise Failure(f"feedback_step returned {type(loss).__name__}; it must return a float "
                      "(the feedback loss) or None")
    if not math.isfinite(loss):
        raise Failure(f"feedback_step returned a non-finite loss ({loss})")
