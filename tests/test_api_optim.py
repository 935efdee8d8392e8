"""The public SAM optimizer against the library's update rules (to round-off, float64, on the book's MLP)."""

from __future__ import annotations

import math

import pytest
import torch
from torch.func import functional_call

from samedge_lib.api import SAM
from samedge_lib.engine.losses import squared_error_mean
from samedge_lib.engine.models import MLP
from samedge_lib.theory.rules import SAM as SAM_ASCENT
from samedge_lib.theory.rules import USAM as USAM_ASCENT
from samedge_lib.theory.rules import UpdateRule, ascent_of
from samedge_lib.theory.updates import sam_gradient, sam_step

F64 = torch.float64
STEPS = 20
ETA, RHO = 0.2, 0.1


def _problem(seed: int = 0):
    """The book's MLP (small), float64, on a fixed batch: model, data, and the functional ``grad_fn`` of the rules."""
    gen = torch.Generator().manual_seed(seed)
    model = MLP(in_dim=12, depth=3, width=16, n_out=4, generator=gen).to(F64)
    x = torch.randn(32, 12, generator=gen, dtype=F64)
    y = torch.nn.functional.one_hot(torch.randint(0, 4, (32,), generator=gen), 4).to(F64)
    names = [n for n, _ in model.named_parameters()]

    def grad_fn(params):
        ps = [p.detach().requires_grad_(True) for p in params]
        loss = squared_error_mean(functional_call(model, dict(zip(names, ps, strict=True)), (x,)), y)
        return loss.detach(), [g.detach() for g in torch.autograd.grad(loss, ps)]

    return model, x, y, grad_fn


def _closure(opt, model, x, y):
    def closure():
        opt.zero_grad()
        loss = squared_error_mean(model(x), y)
        loss.backward()
        return loss

    return closure


def _max_rel(a, b) -> float:
    return max(float((p.detach() - q.detach()).norm() / q.detach().norm()) for p, q in zip(a, b, strict=True))


def test_one_step_equals_sam_step_on_the_mlp():
    model, x, y, grad_fn = _problem()
    w0 = [p.detach().clone() for p in model.parameters()]
    opt = SAM(model.parameters(), torch.optim.SGD, rho=RHO, lr=ETA)
    loss = opt.step(_closure(opt, model, x, y))
    want, info = sam_step(w0, grad_fn, ETA, RHO)
    assert _max_rel(list(model.parameters()), want) < 1e-14
    assert float(loss.detach()) == pytest.approx(float(info.loss), rel=1e-15)
    assert opt.grad_norm == pytest.approx(float(info.grad_norm), rel=1e-15)


# base optimizer -> the library's rule it must equal
RULES = {
    "sgd": (dict(), UpdateRule(SAM_ASCENT, eta=ETA, rho=RHO)),
    "sgd-usam": (dict(normalized=False), UpdateRule(USAM_ASCENT, eta=ETA, rho=RHO)),
    "sgd-heavy-ball": (dict(momentum=0.9), UpdateRule(SAM_ASCENT, eta=ETA, rho=RHO, momentum=0.9)),
    "sgd-nesterov": (
        dict(momentum=0.8, nesterov=True),
        UpdateRule(SAM_ASCENT, eta=ETA, rho=RHO, momentum=0.8, nesterov=True),
    ),  # fmt: skip
    "sgd-usam-heavy-ball": (
        dict(momentum=0.5, normalized=False),
        UpdateRule(USAM_ASCENT, eta=ETA, rho=RHO, momentum=0.5),
    ),  # fmt: skip
    "gd-rho0": (dict(), UpdateRule(ascent_of("gd"), eta=ETA)),
}


@pytest.mark.parametrize("name", list(RULES))
def test_twenty_sgd_steps_equal_the_library_rule(name):
    kwargs, rule = RULES[name]
    model, x, y, grad_fn = _problem(seed=1)
    w = [p.detach().clone() for p in model.parameters()]
    opt = SAM(model.parameters(), torch.optim.SGD, rho=rule.rho, lr=ETA, **kwargs)
    velocity = None
    for _ in range(STEPS):
        opt.step(_closure(opt, model, x, y))
        w, velocity, _ = rule.step(w, velocity, grad_fn)
    err = _max_rel(list(model.parameters()), w)
    assert err < 1e-12, err


@pytest.mark.parametrize("base", [torch.optim.Adam, torch.optim.AdamW])
def test_twenty_adam_steps_equal_adam_on_the_sam_gradient(base):
    model, x, y, grad_fn = _problem(seed=2)
    ref = [p.detach().clone().requires_grad_(True) for p in model.parameters()]
    ref_opt = base(ref, lr=1e-2, betas=(0.9, 0.99))
    opt = SAM(model.parameters(), base, rho=RHO, lr=1e-2, betas=(0.9, 0.99))
    for _ in range(STEPS):
        opt.step(_closure(opt, model, x, y))
        cur = [p.detach() for p in ref]
        _, g = grad_fn(cur)
        for p, s in zip(ref, sam_gradient(cur, g, grad_fn, RHO), strict=True):
            p.grad = s
        ref_opt.step()
    assert _max_rel(list(model.parameters()), ref) < 1e-12


def test_two_pass_form_equals_the_closure():
    model, x, y, _ = _problem(seed=3)
    twin, *_ = _problem(seed=3)
    a = SAM(model.parameters(), torch.optim.SGD, rho=RHO, lr=ETA, momentum=0.9)
    b = SAM(twin.parameters(), torch.optim.SGD, rho=RHO, lr=ETA, momentum=0.9)
    for _ in range(3):
        a.step(_closure(a, model, x, y))
        squared_error_mean(twin(x), y).backward()
        b.first_step(zero_grad=True)
        squared_error_mean(twin(x), y).backward()
        b.second_step(zero_grad=True)
    assert _max_rel(list(model.parameters()), list(twin.parameters())) == 0.0


@pytest.mark.parametrize(
    ("kwargs", "error", "words"),
    [
        (dict(rho=math.nan), ValueError, "rho must be a finite number"),
        (dict(rho=math.inf), ValueError, "rho must be a finite number"),
        (dict(rho=-0.1), ValueError, "rho must be >= 0"),
        (dict(lr=math.nan), ValueError, "lr must be a finite number"),
        (dict(lr=0.0), ValueError, "lr must be > 0"),
        (dict(rho="big"), TypeError, "rho must be a real number"),
    ],
)
def test_bad_settings_get_one_line(kwargs, error, words):
    model, *_ = _problem()
    kwargs = {"rho": RHO, "lr": ETA, **kwargs}
    with pytest.raises(error, match=words) as info:
        SAM(model.parameters(), torch.optim.SGD, **kwargs)
    assert "\n" not in str(info.value)


def test_no_parameters_and_an_optimizer_instance_are_refused():
    with pytest.raises(ValueError, match="no parameters"):
        SAM(torch.nn.ReLU().parameters(), torch.optim.SGD, lr=0.1)
    model, *_ = _problem()
    with pytest.raises(TypeError, match="optimizer class"):
        SAM(model.parameters(), torch.optim.SGD(model.parameters(), lr=0.1), lr=0.1)
