"""The target-propagation family of Meulemans et al. 2020 and DFA, each a short declaration of a
feedback path and a feedback loss (algorithms.md §4.2–§4.8). Written against the public API only.

| method            | feedback path                          | feedback loss                      |
|-------------------|----------------------------------------|------------------------------------|
| DTP               | layer-wise tanh                        | reconstruction, 1/max(σ, 0.02)²    |
| DTP (pre-trained) | layer-wise tanh                        | as DTP; 6 + 1 feedback epochs      |
| DTP-DRL           | layer-wise tanh                        | difference reconstruction (DRL)    |
| DDTP-linear       | direct linear                          | DRL                                |
| DDTP-RHL          | direct through a fixed random layer    | DRL                                |
| DDTP-control      | direct linear                          | reconstruction, unscaled           |
| DFA               | direct linear, frozen                  | none                               |
"""

from __future__ import annotations

from dataclasses import dataclass

from bioplaus_bench.api import (
    ArchitectureSpec,
    Capabilities,
    DifferenceReconstructionLoss,
    DirectPath,
    LayerwisePath,
    PositiveFloat,
    PositiveInt,
    RandomHiddenLayerPath,
    ReconstructionLoss,
    TargetPropagation,
    TPParams,
    hookimpl,
)

MLP_ONLY = Capabilities(mlp=True, trainable_feedback=True, vectorize_seeds=True)


def _conv_layers(spec: ArchitectureSpec) -> set[int]:
    return set(range(1, len(spec.conv_channels) + 1))


# The mixin reads the network and params of the TargetPropagation it is mixed into; its ignored
# type errors stand where declarations would change this module's syntax tree, part of DFA's and
# DDTP-linear's code digest (execution/inputs.py).
class _LastHiddenBiasQuirk:
    """The original builds DDTP-linear's and DFA's MLP last hidden layer, and its feedback map,
    without a bias (algorithms.md §4.6, §13.5): reproduced unless ``last_hidden_bias`` is true. Conv
    layers' direct feedback maps have no bias (algorithms.md §4.10)."""

    @classmethod
    def adapt_architecture(cls, spec: ArchitectureSpec, params) -> ArchitectureSpec:
        if spec.type == "mlp" and not params.last_hidden_bias:
            return spec.without_bias(spec.depth - 1)
        return spec

    def build_path(self) -> DirectPath:
        spec = self.network.spec  # type: ignore[attr-defined]
        no_bias = _conv_layers(spec)
        if spec.type == "mlp" and not self.params.last_hidden_bias:  # type: ignore[attr-defined]
            no_bias.add(self.network.depth - 1)  # type: ignore[attr-defined]
        return DirectPath(self.network, "linear", no_bias=no_bias)  # type: ignore[attr-defined]


class DTP(TargetPropagation):
    name = "dtp"
    label = "DTP"
    summary = "Difference target propagation (Lee et al. 2015) with layer-wise tanh feedback."
    capabilities = MLP_ONLY
    default_schedule = {"feedback_pretraining_epochs": 0, "extra_feedback_epochs": 0}
    feedback_loss = ReconstructionLoss(scaled=True, clip=0.02)

    def build_path(self) -> LayerwisePath:
        return LayerwisePath(self.network, "tanh")


class DTPPretrained(DTP):
    name = "dtp-pretrained"
    label = "DTP (pre-trained)"
    summary = "DTP with feedback pre-training and feedback-only epochs between forward epochs."
    default_schedule = {"feedback_pretraining_epochs": 6, "extra_feedback_epochs": 1}


class DTPDRL(TargetPropagation):
    name = "dtp-drl"
    label = "DTP-DRL"
    summary = "Layer-wise tanh feedback trained with the difference reconstruction loss."
    capabilities = MLP_ONLY
    feedback_loss = DifferenceReconstructionLoss()

    def build_path(self) -> LayerwisePath:
        return LayerwisePath(self.network, "tanh")


@dataclass(frozen=True)
class DDTPLinearParams(TPParams):
    last_hidden_bias: bool = False  # False reproduces the original (algorithms.md §4.6)


class DDTPLinear(_LastHiddenBiasQuirk, TargetPropagation):
    name = "ddtp-linear"
    label = "DDTP-linear"
    summary = "Direct linear feedback from the output, difference reconstruction loss."
    Params = DDTPLinearParams
    capabilities = Capabilities(mlp=True, cnn=True, trainable_feedback=True,
                                vectorize_seeds=True)
    feedback_loss = DifferenceReconstructionLoss()


@dataclass(frozen=True)
class DDTPRHLParams(TPParams):
    random_width: PositiveInt = 1024  # width d of the fixed random layer (2048 for CIFAR-10)


class DDTPRHL(TargetPropagation):
    name = "ddtp-rhl"
    label = "DDTP-RHL"
    summary = "Direct tanh feedback through a fixed random hidden layer, DRL."
    Params = DDTPRHLParams
    capabilities = MLP_ONLY
    feedback_loss = DifferenceReconstructionLoss()

    def build_path(self) -> RandomHiddenLayerPath:
        return RandomHiddenLayerPath(self.network, self.params.random_width)


class DDTPControl(TargetPropagation):
    name = "ddtp-control"
    label = "DDTP-control"
    summary = "DDTP-linear's feedback trained to reconstruct without difference correction."
    capabilities = Capabilities(mlp=True, cnn=True, trainable_feedback=True,
                                vectorize_seeds=True)
    feedback_loss = ReconstructionLoss(scaled=False)

    def build_path(self) -> DirectPath:
        return DirectPath(self.network, "linear", no_bias=_conv_layers(self.network.spec))


@dataclass(frozen=True)
class DFAParams:
    target_stepsize: PositiveFloat = 1.0  # η̂; the paper's DFA configs use 1
    last_hidden_bias: bool = False  # False reproduces the original (algorithms.md §4.2)


class DFA(_LastHiddenBiasQuirk, TargetPropagation):
    """Direct feedback alignment, built as the original does: DDTP-linear with frozen feedback,
    so ``ĥ_i = h_i − η̂ B_i e`` (algorithms.md §4.2)."""

    name = "dfa"
    label = "DFA"
    summary = "Direct feedback alignment: fixed random projections of the output error."
    Params = DFAParams  # type: ignore[assignment]  # not a TPParams: DFA trains no feedback
    capabilities = Capabilities(mlp=True, cnn=True, vectorize_seeds=True)
    default_schedule = {}

    def build_path(self) -> DirectPath:
        return super().build_path().freeze()

    def feedback_matrix(self, i: int):
        """``B_i`` of hidden layer ``i``."""
        return self.path.maps[i - 1].linear.weight


@hookimpl
def bioplaus_bench_algorithms():
    return [DTP, DTPPretrained, DTPDRL, DDTPLinear, DDTPRHL, DDTPControl, DFA]
