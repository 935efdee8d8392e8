"""The toy model of chapter 2 (d): exact derivatives, determinism, and the phenomenon itself."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from samedge_lib.core.toy import DEFAULT_ETA, ToyModel, ToyProblem, edge_tracking, train_toy

F64 = torch.float64


@pytest.mark.parametrize(
    "problem", [ToyProblem(n=20, dim=3, width=5, init_scale=1.0), ToyProblem(n=7, dim=2, width=9, seed=4)]
)
def test_closed_form_gradient_and_hessian_against_autograd(problem: ToyProblem) -> None:
    model = ToyModel(problem)
    gen = torch.Generator().manual_seed(0)
    w = model.w0 + 0.3 * torch.randn(problem.num_params, generator=gen, dtype=F64)
    loss, (g,) = model.grad_fn([w])
    assert loss.item() == pytest.approx(model.loss(w).item(), rel=1e-14)
    wr = w.clone().requires_grad_(True)
    (g_auto,) = torch.autograd.grad(model.loss(wr), wr)
    torch.testing.assert_close(g, g_auto, rtol=1e-12, atol=1e-14)
    hess = model.hessian(w)
    hess_auto = torch.autograd.functional.hessian(model.loss, w)
    assert hess.shape == (problem.num_params,) * 2
    torch.testing.assert_close(hess, hess_auto, rtol=1e-12, atol=1e-14)
    assert model.sharpness(w) == pytest.approx(torch.linalg.eigvalsh(hess_auto)[-1].item(), rel=1e-12)


def test_gradient_and_hessian_against_finite_differences() -> None:
    model = ToyModel(ToyProblem())
    gen = torch.Generator().manual_seed(1)
    w = model.w0 + 0.2 * torch.randn(model.problem.num_params, generator=gen, dtype=F64)
    v = torch.randn(w.shape, generator=gen, dtype=F64)
    h = 1e-5
    fd_dir = (model.loss(w + h * v) - model.loss(w - h * v)) / (2 * h)
    assert (model.grad_fn([w])[1][0] @ v).item() == pytest.approx(fd_dir.item(), rel=1e-7)
    fd_hv = (model.grad_fn([w + h * v])[1][0] - model.grad_fn([w - h * v])[1][0]) / (2 * h)
    torch.testing.assert_close(model.hessian(w) @ v, fd_hv, rtol=1e-6, atol=1e-8)


def test_problem_shapes_and_validation() -> None:
    p = ToyProblem()
    assert p.num_params == 72
    model = ToyModel(p)
    assert model.w0.shape == (72,) and model.w0.dtype == F64
    assert model.y.mean().abs().item() < 1e-12 and model.y.std().item() == pytest.approx(1.0)
    with pytest.raises(ValueError, match="width"):
        ToyProblem(width=0)
    with pytest.raises(ValueError, match="init_scale"):
        ToyProblem(init_scale=-1.0)
    with pytest.raises(ValueError, match="optimizer"):
        train_toy("adam", steps=2)
    with pytest.raises(ValueError, match="rho"):
        train_toy("sam", rho=0.0, steps=2)
    with pytest.raises(ValueError, match="hessian_every"):
        train_toy("gd", steps=2, hessian_every=0)


def test_deterministic_given_the_seed_and_tidy() -> None:
    a = train_toy("sam", steps=30, hessian_every=7)
    b = train_toy("sam", steps=30, hessian_every=7)
    pd.testing.assert_frame_equal(a, b)
    c = train_toy("sam", steps=30, hessian_every=7, problem=ToyProblem(seed=1))
    assert not np.allclose(a["loss"].to_numpy(), c["loss"].to_numpy())
    assert list(a.columns) == ["step", "loss", "grad_norm", "lambda1", "sam_edge", "gd_edge", "optimizer"]
    assert a["lambda1"].notna().to_numpy().nonzero()[0].tolist() == [0, 7, 14, 21, 28, 29]
    g = train_toy("gd", steps=5)
    assert (g["sam_edge"] == 2 / DEFAULT_ETA).all() and (g["gd_edge"] == 2 / DEFAULT_ETA).all()


def test_edge_tracking_statistic() -> None:
    frame = pd.DataFrame(
        {"step": np.arange(10), "lambda1": [1, np.nan, 1, 2, np.nan, 2, 4, np.nan, 4, 4], "sam_edge": 2.0}
    )
    assert edge_tracking(frame, 0.5) == pytest.approx(2.0)  # steps >= 4.5: 2, 4, 4, 4 -> ratios 1, 2, 2, 2
    assert edge_tracking(frame, 1.0) == pytest.approx(1.0)


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 3])
def test_sam_sharpens_to_the_sam_edge_and_gd_to_two_over_eta(seed: int) -> None:
    problem = ToyProblem(seed=seed)
    sam = train_toy("sam", problem=problem)
    gd = train_toy("gd", problem=problem)
    eta = DEFAULT_ETA
    sam_m, gd_m = sam.dropna(), gd.dropna()
    # both start flat, well below their edges, and sharpen
    assert sam_m["lambda1"].iloc[0] < 0.75 * sam["sam_edge"].iloc[-500:].median()
    assert gd_m["lambda1"].iloc[0] < 0.5 * 2 / eta
    # SAM ends on the SAM-edge, which is far below 2/eta; GD ends on 2/eta
    assert abs(edge_tracking(sam, 0.5) - 1) < 0.03
    assert sam["sam_edge"].iloc[len(sam) // 2 :].max() < 0.8 * 2 / eta
    assert abs(edge_tracking(gd, 0.5) - 1) < 0.05
    # while SAM sits on the edge, the gradient norm (and with it the edge) keeps shrinking
    assert sam["grad_norm"].iloc[-100:].median() < sam["grad_norm"].iloc[100:200].median()
    assert sam["loss"].iloc[-1] < 0.01 * sam["loss"].iloc[0]
