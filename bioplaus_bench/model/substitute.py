"""Dense and conv layers whose backward pass uses a substitute for the weight.

Both compute the layer's usual forward pass; in the backward pass the gradient w.r.t. the layer's
*input* uses ``backward_weight`` in place of ``weight`` while the gradients w.r.t. the weight and
the bias are the usual ones (``δ h_prevᵀ``, ``Σ δ``; for a convolution its usual weight and bias
gradients). Each costs what the ordinary layer costs: one matmul per gradient for a dense layer,
one ``convolution_backward`` call (all three gradients at once) for a convolution, as autograd
does for ``nn.Linear`` and ``nn.Conv2d``. ``backward_weight`` is never differentiated.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .seeds import linear


class _SubstituteLinear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor | None, backward_weight: Tensor
                ) -> Tensor:
        ctx.save_for_backward(x, backward_weight)
        ctx.has_bias = bias is not None
        return linear(x, weight, bias)

    @staticmethod
    def backward(ctx, grad: Tensor):
        x, backward_weight = ctx.saved_tensors
        grad_x = grad @ backward_weight if ctx.needs_input_grad[0] else None
        grad_weight = grad.mT @ x if ctx.needs_input_grad[1] else None
        grad_bias = grad.sum(-2) if ctx.has_bias and ctx.needs_input_grad[2] else None
        return grad_x, grad_weight, grad_bias, None


class _SubstituteConv2d(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor | None, backward_weight: Tensor,
                stride: tuple[int, ...], padding: tuple[int, ...], dilation: tuple[int, ...],
                groups: int) -> Tensor:
        ctx.save_for_backward(x, backward_weight)
        ctx.conv = (stride, padding, dilation, groups)
        ctx.bias_sizes = None if bias is None else list(bias.shape)
        return F.conv2d(x, weight, bias, stride, padding, dilation, groups)

    @staticmethod
    def backward(ctx, grad: Tensor):
        x, backward_weight = ctx.saved_tensors
        stride, padding, dilation, groups = ctx.conv
        needs = ctx.needs_input_grad
        mask = [needs[0], needs[1], ctx.bias_sizes is not None and needs[2]]
        # The weight argument only enters the input's gradient (the weight's gradient needs
        # nothing but its shape): all three gradients in one call, as for an ordinary conv.
        grad_x, grad_weight, grad_bias = torch.ops.aten.convolution_backward(
            grad, x, backward_weight, ctx.bias_sizes, list(stride), list(padding),
            list(dilation), False, [0] * len(stride), groups, mask)
        return grad_x, grad_weight, grad_bias, None, None, None, None, None


def substitute_linear(x: Tensor, weight: Tensor, bias: Tensor | None,
                      backward_weight: Tensor) -> Tensor:
    """``F.linear(x, weight, bias)`` whose backward pass uses ``backward_weight`` (the shape of
    ``weight``) for the input's gradient: ``∂/∂x = δ backward_weight``, ``∂/∂W = δᵀ x``. Seeds
    stacked (``model.seeds``): ``x`` is ``[S, B, in]``, the weights ``[S, out, in]``."""
    return _SubstituteLinear.apply(x, weight, bias, backward_weight.detach())


def substitute_conv2d(x: Tensor, conv: torch.nn.Conv2d, backward_weight: Tensor, *,
                      weight: Tensor | None = None, bias: Tensor | None = None,
                      groups: int | None = None) -> Tensor:
    """``conv(x)`` whose backward pass uses ``backward_weight`` (the shape of ``conv.weight``)
    for the input's gradient; the weight's and bias's gradients are the usual ones. ``weight``,
    ``bias`` and ``groups`` stand in for the conv's own (stacked seeds' grouped convolution)."""
    if conv.padding_mode != "zeros" or isinstance(conv.padding, str):
        raise ValueError("substitute_conv2d supports numeric zero padding only")
    return _SubstituteConv2d.apply(x, conv.weight if weight is None else weight,
                                   conv.bias if weight is None else bias,
                                   backward_weight.detach(), conv.stride, conv.padding,
                                   conv.dilation, conv.groups if groups is None else groups)
