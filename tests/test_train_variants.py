"""SAM's variants in the run loop: momentum, Nesterov, unnormalised SAM and a late switch from GD to SAM.

Truths used: ``torch.optim.SGD`` with momentum stepping on a SAM gradient computed here with autograd, the
closed-form momentum edges of GD (``2 (1 + beta)/eta`` and ``2 (1 + beta)/(eta (1 + 2 beta))``), a plain GD run
of the same configuration, and the run folders stored in ``results/paper`` (whose names must not change).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from samedge_lib.engine.tasks import build_task
from samedge_lib.engine.train import run
from samedge_lib.record.config import ConfigError, RunConfig, preset_config
from samedge_lib.theory.edges import sam_edge

REPO = Path(__file__).resolve().parent.parent


def _small(rho: float = 0.1, **kw) -> RunConfig:
    base = dict(steps=8, measure_every=4, k=1, n_train=64, n_test=32, dtype="float64")
    base.update(kw)
    return preset_config("mnist", "smoke", rho=rho, **base)


def _sgd_reference(cfg: RunConfig) -> list[torch.Tensor]:
    """The run's final parameters from torch.optim.SGD stepping on the SAM gradient (autograd, official eps)."""
    task = build_task(cfg, torch.device("cpu"), torch.float64)
    params = [p.clone().requires_grad_(True) for p in task.params]
    opt = torch.optim.SGD(params, lr=cfg.eta, momentum=cfg.momentum, nesterov=cfg.nesterov)
    for step in range(cfg.steps):
        batch = task.batch_at(step)
        grads = torch.autograd.grad(task.loss(params, batch), params)
        rho = cfg.rho if step >= cfg.sam_start else 0.0
        if rho > 0:
            norm = torch.sqrt(sum((g**2).sum() for g in grads))
            scale = rho / (norm + 1e-5) if cfg.optimizer == "sam" else rho
            shifted = [(p + scale * g).detach().requires_grad_(True) for p, g in zip(params, grads, strict=True)]
            grads = torch.autograd.grad(task.loss(shifted, batch), shifted)
        for p, g in zip(params, grads, strict=True):
            p.grad = g.detach().clone()
        opt.step()
    return [p.detach() for p in params]


@pytest.mark.parametrize(
    "kw",
    [
        dict(momentum=0.8),
        dict(momentum=0.8, nesterov=True),
        dict(momentum=0.5, optimizer="usam"),
        dict(momentum=0.5, sam_start=3),
    ],
    ids=["sam-heavy-ball", "sam-nesterov", "usam-heavy-ball", "switch-heavy-ball"],
)
def test_momentum_runs_step_as_torch_sgd_on_the_sam_gradient(tmp_path, data_dir, kw):
    cfg = _small(**kw)
    res = run(cfg, root=tmp_path, progress=False)
    final = torch.load(res.path / "checkpoint.pt", weights_only=True)["params"]
    for a, b in zip(final, _sgd_reference(cfg), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_edges_and_collapse_columns_follow_the_momentum(tmp_path, data_dir):
    eta, rho, beta = 0.05, 0.1, 0.8
    for nesterov, eta_eff in ((False, eta / (1 + beta)), (True, eta * (1 + 2 * beta) / (1 + beta))):
        m = run(_small(rho, eta=eta, momentum=beta, nesterov=nesterov), root=tmp_path, progress=False).measurements
        g, lam = m["grad_norm"].to_numpy(), m["lambda_1"].to_numpy()
        np.testing.assert_allclose(m["edge"], sam_edge(eta=eta_eff, rho=rho, grad_norm=g), rtol=1e-12)
        np.testing.assert_allclose(
            m["sam_edge"], sam_edge(eta=eta, rho=rho, grad_norm=g), rtol=1e-12
        )  # the paper's, momentum ignored
        np.testing.assert_allclose(m["collapse"], eta_eff / 2 * lam * (1 + rho * lam / g), rtol=1e-12)
        gd = run(_small(0.0, eta=eta, momentum=beta, nesterov=nesterov), root=tmp_path, progress=False).measurements
        assert np.allclose(gd["edge"], 2 * (1 + beta) / (eta * ((1 + 2 * beta) if nesterov else 1)), rtol=1e-14)
        np.testing.assert_allclose(gd["collapse"], eta_eff / 2 * gd["lambda_1"], rtol=1e-12)
    usam = run(_small(0.2, eta=eta, momentum=0.5, optimizer="usam"), root=tmp_path, progress=False).measurements
    eta_u = eta / 1.5
    e_u = (math.sqrt(1 + 8 * 0.2 / eta_u) - 1) / (2 * 0.2)  # positive root of eta_u lam (1 + r lam) = 2
    np.testing.assert_allclose(usam["edge"], e_u, rtol=1e-12)
    np.testing.assert_allclose(
        usam["collapse"], eta_u / 2 * usam["lambda_1"] * (1 + 0.2 * usam["lambda_1"]), rtol=1e-12
    )


def test_switch_run_is_gd_until_sam_starts_and_is_measured_right_after(tmp_path, data_dir):
    cfg = _small(0.1, steps=10, measure_every=5, sam_start=4, measure_after_switch=3)
    res = run(cfg, root=tmp_path, progress=False)
    gd = run(cfg.replace(optimizer="gd", rho=0.0, sam_start=0, measure_after_switch=0), root=tmp_path, progress=False)
    assert list(res.measurements["step"]) == [0, 4, 5, 6, 10]
    s, t = res.steps.set_index("step"), gd.steps.set_index("step")
    assert (s.loc[:4, "loss"] == t.loc[:4, "loss"]).all()  # identical GD steps up to the switch
    assert not np.allclose(s.loc[6:, "loss"], t.loc[6:, "loss"])  # SAM from step 4 on
    assert (s.loc[:3, "edge"] == 2 / cfg.eta).all()
    np.testing.assert_allclose(
        s.loc[4:, "edge"], sam_edge(eta=cfg.eta, rho=0.1, grad_norm=s.loc[4:, "grad_norm"].to_numpy()), rtol=1e-12
    )


def test_unused_variant_fields_keep_every_stored_run_name():
    stored = sorted(p.parent for p in (REPO / "results" / "paper").glob("*/config.json"))
    assert stored
    for folder in stored:
        cfg = RunConfig.from_dict(json.loads((folder / "config.json").read_text()))
        assert cfg.run_name() == folder.name
    cfg = preset_config("mnist", "cpu", rho=0.1)
    assert cfg.replace(momentum=0.5).identity() != cfg.identity()
    assert cfg.replace(momentum=0.5, nesterov=True).identity() != cfg.replace(momentum=0.5).identity()
    assert cfg.replace(sam_start=10).identity() != cfg.identity()
    names = [cfg.replace(momentum=0.8, nesterov=True).run_name(), cfg.replace(sam_start=300).run_name()]
    assert "nesterov0.8" in names[0] and "from300" in names[1]


@pytest.mark.parametrize(
    ("changes", "words"),
    [
        ({"momentum": 1.0}, ["momentum", "[0, 1)"]),
        ({"momentum": -0.1}, ["momentum", ">= 0"]),
        ({"momentum": math.nan}, ["momentum", "finite"]),
        ({"nesterov": True}, ["nesterov", "momentum > 0"]),
        ({"nesterov": "yes", "momentum": 0.5}, ["nesterov", "true or false"]),
        ({"sam_start": 5, "optimizer": "gd", "rho": 0.0}, ["sam_start", "'sam' or 'usam'"]),
        ({"sam_start": 1000}, ["sam_start", "below steps"]),
        ({"sam_start": 2.5}, ["sam_start", "integer"]),
        ({"measure_after_switch": 3}, ["measure_after_switch", "sam_start > 0"]),
    ],
)
def test_invalid_variants_name_the_field_and_the_fix(changes, words):
    base = dict(task="mnist", eta=0.1, rho=0.1, optimizer="sam", steps=100)
    base.update(changes)
    with pytest.raises(ConfigError) as err:
        RunConfig(**base).validate()
    for w in words:
        assert w in str(err.value)
