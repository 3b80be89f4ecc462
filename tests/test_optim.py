"""The suite's Adam: fused, and still exact whatever the memory layout of a gradient."""

import pytest
import torch

from bioplaus_bench.model.optim import adam


def reference_adam(p: torch.Tensor, grads: list[torch.Tensor], lr=0.1, betas=(0.9, 0.999),
                   eps=1e-8) -> torch.Tensor:
    """Adam written out (Kingma & Ba, with bias correction), element by element."""
    m, v, p = torch.zeros_like(p), torch.zeros_like(p), p.clone()
    for t, g in enumerate(grads, start=1):
        m = betas[0] * m + (1 - betas[0]) * g
        v = betas[1] * v + (1 - betas[1]) * g * g
        m_hat, v_hat = m / (1 - betas[0] ** t), v / (1 - betas[1] ** t)
        p = p - lr * m_hat / (v_hat.sqrt() + eps)
    return p


LAYOUTS = {
    "standard": lambda g: g,
    "channels-last": lambda g: g.contiguous(memory_format=torch.channels_last),
    "transposed view": lambda g: g.transpose(0, 1).contiguous().transpose(0, 1),
}


@pytest.mark.parametrize("layout", LAYOUTS)
def test_a_gradient_in_another_memory_layout_updates_the_right_elements(layout):
    torch.manual_seed(0)
    start = torch.randn(4, 3, 5, 5, dtype=torch.float64)
    grads = [torch.randn_like(start) for _ in range(3)]
    parameter = torch.nn.Parameter(start.clone())
    optimiser = adam([parameter], lr=0.1, betas=(0.9, 0.999), eps=1e-8)
    assert optimiser.defaults["fused"]
    for g in grads:
        parameter.grad = LAYOUTS[layout](g.clone())
        assert torch.equal(parameter.grad, g)
        optimiser.step()
    torch.testing.assert_close(parameter.detach(), reference_adam(start, grads), rtol=1e-12,
                               atol=1e-12)
