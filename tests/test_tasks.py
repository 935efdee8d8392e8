"""Task: the one gradient and the Hessian operator every update and measurement goes through."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from samedge_lib.core.hessian import dense_hessian
from samedge_lib.engine.tasks import Batch, Task

F64 = torch.float64


def _task() -> tuple[Task, Batch]:
    g = torch.Generator().manual_seed(0)
    with torch.random.fork_rng():
        torch.manual_seed(1)
        model = nn.Sequential(nn.Linear(4, 7), nn.Tanh(), nn.Linear(7, 3)).to(F64)
    names = [n for n, _ in model.named_parameters()]
    params = [p.detach().clone() for p in model.parameters()]
    batch = Batch(torch.randn(23, 4, generator=g, dtype=F64), torch.randn(23, 3, generator=g, dtype=F64), "x", "full")
    return Task(model, names, params, "mse_mean", lambda step: batch, None, None, False, {}), batch


def test_grad_fn_is_the_gradient_of_the_loss_in_one_pass_or_in_chunks():
    task, batch = _task()
    # independent truth: the loss written out by hand and differentiated by torch.autograd.functional

    def by_hand(*ps):
        out = torch.tanh(batch.x @ ps[0].T + ps[1]) @ ps[2].T + ps[3]
        return ((out - batch.y) ** 2).mean()

    expected = torch.autograd.functional.jacobian(by_hand, tuple(task.params))
    for chunk in (None, 5, 23, 100):  # 5 does not divide 23: the last chunk is smaller and weighted so
        loss, grads = task.grad_fn(batch, chunk)(task.params)
        assert loss.item() == pytest.approx(by_hand(*task.params).item(), rel=1e-12)
        for g, e in zip(grads, expected, strict=True):
            assert torch.allclose(g, e, rtol=1e-10, atol=1e-14)
            assert not g.requires_grad
    assert all(not p.requires_grad for p in task.params)  # the caller's tensors are untouched


def test_operator_is_the_hessian_of_the_batch_loss():
    task, batch = _task()
    op = task.operator(task.params, batch)
    H = dense_hessian(lambda ps: task.loss(ps, batch), task.params)
    v = torch.randn(op.dim, generator=torch.Generator().manual_seed(2), dtype=F64)
    assert torch.allclose(op.matvec(v), H @ v, rtol=1e-10, atol=1e-12)
    assert task.operator(task.params, batch, "finite_difference").method == "finite_difference"
