"""A tiny float64 MLP problem shared by the Hessian and eigensolver tests."""

from __future__ import annotations

import torch
from torch.func import functional_call

F64 = torch.float64


def make_mlp_loss(activation: str, seed: int = 0, n: int = 24, widths: tuple[int, ...] = (5, 8, 3)):
    """A tiny float64 MLP with squared-error loss (mean over N x classes); returns (loss_fn, params)."""
    g = torch.Generator().manual_seed(seed)
    act = {"tanh": torch.nn.Tanh(), "gelu": torch.nn.GELU(), "relu": torch.nn.ReLU()}[activation]
    layers: list[torch.nn.Module] = []
    for a, b in zip(widths[:-1], widths[1:], strict=True):
        lin = torch.nn.Linear(a, b).to(F64)
        with torch.no_grad():
            lin.weight.copy_(torch.randn(b, a, generator=g, dtype=F64) / a**0.5)
            lin.bias.copy_(0.1 * torch.randn(b, generator=g, dtype=F64))
        layers += [lin, act]
    model = torch.nn.Sequential(*layers[:-1])
    x = torch.randn(n, widths[0], generator=g, dtype=F64)
    y = torch.randn(n, widths[-1], generator=g, dtype=F64)
    names = [name for name, _ in model.named_parameters()]

    def loss_fn(ps):
        out = functional_call(model, dict(zip(names, ps, strict=True)), (x,))
        return ((out - y) ** 2).mean()

    return loss_fn, [p.detach().clone() for p in model.parameters()]
