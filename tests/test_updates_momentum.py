"""SAM with momentum against torch.optim.SGD stepping on the same SAM gradient."""

from __future__ import annotations

import pytest
import torch

from samedge_lib.theory.updates import add_scaled, global_norm, momentum_step, sam_gradient


def _problem(seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    a = torch.randn(20, 5, generator=gen, dtype=torch.float64)
    y = torch.randn(20, generator=gen, dtype=torch.float64)

    def grad_fn(params):
        ps = [p.detach().requires_grad_(True) for p in params]
        w, b = ps
        loss = (torch.tanh(a @ w + b) - y).pow(2).mean()
        return loss.detach(), [t.detach() for t in torch.autograd.grad(loss, ps)]

    params = [torch.randn(5, generator=gen, dtype=torch.float64), torch.zeros((), dtype=torch.float64)]
    return params, grad_fn


@pytest.mark.parametrize("nesterov", [False, True])
@pytest.mark.parametrize("normalized", [True, False])
def test_matches_torch_sgd_on_the_sam_gradient(nesterov: bool, normalized: bool):
    params, grad_fn = _problem()
    eta, rho, beta = 0.3, 0.05, 0.8
    ref = [p.clone().requires_grad_(True) for p in params]
    opt = torch.optim.SGD(ref, lr=eta, momentum=beta, nesterov=nesterov)
    ours, vel = [p.clone() for p in params], None
    for _ in range(15):
        ours, vel, info = momentum_step(ours, vel, grad_fn, eta, rho, beta, nesterov=nesterov, normalized=normalized)
        cur = [p.detach() for p in ref]
        _, g = grad_fn(cur)
        if normalized:
            s = sam_gradient(cur, g, grad_fn, rho)
        else:
            _, s = grad_fn(add_scaled(cur, g, rho))
        for p, si in zip(ref, s, strict=True):
            p.grad = si.clone()
        opt.step()
        assert info.grad_norm == pytest.approx(float(global_norm(g)), rel=1e-12)
    for a, b in zip(ours, ref, strict=True):
        torch.testing.assert_close(a, b.detach(), rtol=1e-12, atol=1e-14)


def test_rho_zero_is_sgd_with_momentum():
    params, grad_fn = _problem(1)
    ref = [p.clone().requires_grad_(True) for p in params]
    opt = torch.optim.SGD(ref, lr=0.1, momentum=0.5)
    ours, vel = [p.clone() for p in params], None
    for _ in range(10):
        ours, vel, _ = momentum_step(ours, vel, grad_fn, 0.1, 0.0, 0.5)
        _, g = grad_fn([p.detach() for p in ref])
        for p, gi in zip(ref, g, strict=True):
            p.grad = gi
        opt.step()
    for a, b in zip(ours, ref, strict=True):
        torch.testing.assert_close(a, b.detach(), rtol=1e-12, atol=1e-14)
