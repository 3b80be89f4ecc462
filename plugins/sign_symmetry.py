"""Sign-concordant feedback (sign symmetry), written against ``bioplaus_bench.api`` only.

Q. Liao, J. Z. Leibo and T. Poggio, "How Important Is Weight Symmetry in Backpropagation?",
AAAI 2016 (arXiv:1510.05067); T. H. Moskovitz, A. Litwin-Kumar and L. F. Abbott, "Feedback
alignment in deep convolutional networks", arXiv:1812.06488 (2018).

Backprop in which the backward pass of each layer i = 2..L (dense and conv) uses a matrix with the
sign of the current forward weight ``W_i`` in place of ``W_i``; the weight and bias gradients are
backprop's given the resulting errors. The three variants, as BioTorch defines them
(github.com/jsalbert/biotorch, ``biotorch/layers/{usf,brsf,frsf}``):

| method | backward weight ``B_i``                                        |
|--------|----------------------------------------------------------------|
| uSF    | ``c_i sign(W_i)``, ``c_i = sqrt(2 / (fan_in + fan_out))``       |
| brSF   | ``|M_i| ⊙ sign(W_i)``, ``M_i`` Glorot-uniform, redrawn each step |
| frSF   | ``|M_i| ⊙ sign(W_i)``, ``M_i`` Glorot-uniform, drawn once        |

``c_i`` is the std of the layer's Glorot initialisation (BioTorch's scaling factor, after Xiao et
al. 2018, which keeps the backward pass at the scale of the initial weights); ``M_i`` is drawn as
BioTorch draws it (its default ``xavier`` init, Glorot-uniform with bound
``sqrt(6 / (fan_in + fan_out))``), with 16 random bits a value (``|M_i|`` takes the midpoints of
2¹⁶ equal bins: drawing is then a small part of a step). Fans count a conv kernel's receptive
field. brSF's magnitudes come from the global RNG (seeded by the runner) once per training step;
frSF's are buffers, saved in checkpoints. None of the three has hyper-parameters.
"""

from __future__ import annotations

from bioplaus_bench.api import (
    BackwardRule,
    Capabilities,
    RandomMagnitudeSign,
    SignOfForward,
    hookimpl,
)

CAPABILITIES = Capabilities(mlp=True, cnn=True, vectorize_seeds=True)


class UniformSignFeedback(BackwardRule):
    """uSF (Liao, Leibo & Poggio 2016): ``B_i = c_i sign(W_i)``."""

    name = "usf"
    label = "uSF"
    summary = "Sign symmetry: the backward pass uses the scaled sign of the forward weights."
    capabilities = CAPABILITIES

    def build_feedback(self) -> SignOfForward:
        return SignOfForward(self.network, scaled=True)


class BatchRandomSignFeedback(BackwardRule):
    """brSF (Liao, Leibo & Poggio 2016, as in BioTorch): ``B_i = |M_i| ⊙ sign(W_i)``, ``M_i``
    Glorot-uniform redrawn every minibatch."""

    name = "brsf"
    label = "brSF"
    summary = "Sign symmetry with random magnitudes redrawn every minibatch."
    capabilities = CAPABILITIES

    def build_feedback(self) -> RandomMagnitudeSign:
        return RandomMagnitudeSign(self.network, redraw=True)


class FixedRandomSignFeedback(BackwardRule):
    """frSF (Liao, Leibo & Poggio 2016, as in BioTorch): ``B_i = |M_i| ⊙ sign(W_i)``, ``M_i``
    Glorot-uniform drawn once."""

    name = "frsf"
    label = "frSF"
    summary = "Sign symmetry with fixed random magnitudes."
    capabilities = CAPABILITIES

    def build_feedback(self) -> RandomMagnitudeSign:
        return RandomMagnitudeSign(self.network, redraw=False)


@hookimpl
def bioplaus_bench_algorithms():
    return [UniformSignFeedback, BatchRandomSignFeedback, FixedRandomSignFeedback]
