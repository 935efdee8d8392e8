"""Every allowed value of a run configuration works in the module that defines it (each list has one home)."""

from __future__ import annotations

import inspect

import pytest
import torch

from samedge_lib.core.hessian import HessianOperator, dense_hessian
from samedge_lib.engine import losses
from samedge_lib.engine.losses import get_loss
from samedge_lib.engine.models import MODEL_FOR_TASK, make_model
from samedge_lib.record import config

F64 = torch.float64


@pytest.mark.parametrize("task", config.TASKS)
def test_every_task_builds_its_model_with_every_size_key(task):
    accepted = set(inspect.signature(MODEL_FOR_TASK[task].__init__).parameters)
    assert set(config.MODEL_KEYS[task]) <= accepted, task
    sizes = {"mnist": 2, "cifar10": 1, "shakespeare": 2}[task]
    model = make_model(task, seed=0, **dict.fromkeys(config.MODEL_KEYS[task], sizes))
    assert sum(p.numel() for p in model.parameters()) > 0
    assert set(config.MODEL_KEYS) == set(config.TASKS)


@pytest.mark.parametrize("name", config.LOSSES)
def test_every_loss_evaluates(name):
    loss = get_loss(name)
    if name == "cross_entropy":  # uniform logits: the loss is log(vocabulary)
        assert loss(torch.zeros(2, 3, 5), torch.ones(2, 3, dtype=torch.long)).item() == pytest.approx(
            torch.log(torch.tensor(5.0)).item()
        )
    else:  # zero logits against one-hot targets: mean of (0 - y)^2 over N x C is 1/C, half-sum is 1/2
        value = loss(torch.zeros(4, 10), torch.arange(4)).item()
        assert value == pytest.approx({"mse_mean": 0.1, "mse_half_sum": 0.5}[name])


@pytest.mark.parametrize("method", config.HVP_METHODS)
def test_every_hvp_method_gives_the_hessian_product(method):
    g = torch.Generator().manual_seed(0)
    A = torch.randn(5, 5, generator=g, dtype=F64)
    A = A @ A.T

    def loss_fn(ps):
        return 0.5 * ps[0] @ A @ ps[0] + (ps[0] ** 4).sum() / 12  # Hessian A + diag(w^2)

    w = torch.randn(5, generator=g, dtype=F64)
    v = torch.randn(5, generator=g, dtype=F64)
    op = HessianOperator(loss_fn, [w], method=method, fd_denominator_eps=0.0)
    rtol = 1e-5 if method == "finite_difference" else 1e-10
    assert torch.allclose(op.matvec(v), dense_hessian(loss_fn, [w]) @ v, rtol=rtol, atol=1e-8)


@pytest.mark.parametrize(
    ("field", "allowed"),
    [("task", config.TASKS), ("loss", config.LOSSES), ("hvp", config.HVP_METHODS), ("optimizer", config.OPTIMIZERS)],
)
def test_the_configuration_accepts_exactly_the_library_values(field, allowed):
    base = config.preset_config("mnist", "smoke", rho=0.1)
    for value in allowed:
        changes = {field: value}
        if field == "task":
            changes |= {"model": {}, "loss": "cross_entropy" if value == "shakespeare" else "mse_mean"}
            changes |= {"batch_size": 8} if value == "shakespeare" else {}
        if field == "loss" and value == "cross_entropy":
            changes |= {"task": "shakespeare", "model": {}, "batch_size": 8}
        if field == "optimizer" and value == "gd":
            changes |= {"rho": 0.0}
        assert getattr(base.replace(**changes), field) == value
    with pytest.raises(config.ConfigError) as err:
        base.replace(**{field: "no-such-value"})
    assert all(repr(v) in str(err.value) for v in allowed)


def test_the_record_names_exactly_what_the_engine_implements():
    """The run record's vocabulary (torch-free) and the engine's registries name the same things, in one order."""
    from samedge_lib.theory.rules import ASCENTS

    assert tuple(MODEL_FOR_TASK) == config.TASKS
    assert tuple(losses.LOSSES) == config.LOSSES
    assert tuple(ASCENTS) == config.OPTIMIZERS
