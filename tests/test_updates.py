"""The update rules of samedge_lib.theory.updates against steps worked out by hand.

The quadratic used throughout: l(x, y) = 1/2 (2 x^2 + 0.5 y^2), i.e. H = diag(2, 0.5), at w = (1.5, 8).
Its gradient there is g = (2 * 1.5, 0.5 * 8) = (3, 4), so ||g|| = 5 exactly.
"""

from __future__ import annotations

from collections.abc import Sequence

import pytest
import torch

from samedge_lib.theory.updates import (
    StepInfo,
    add_scaled,
    gd_step,
    global_norm,
    sam_perturbation,
    sam_step,
    usam_step,
)

F64 = torch.float64


def quad_grad_fn(params: Sequence[torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Hand-written gradient of 1/2 (2 x^2 + 0.5 y^2) for params = [tensor([x, y])]."""
    (w,) = params
    x, y = w[0], w[1]
    loss = 0.5 * (2.0 * x * x + 0.5 * y * y)
    return loss, [torch.stack([2.0 * x, 0.5 * y])]


def w0() -> list[torch.Tensor]:
    return [torch.tensor([1.5, 8.0], dtype=F64)]


def test_sam_step_by_hand_without_eps() -> None:
    # ascent: w + rho g/||g|| = (1.5, 8) + 0.5 * (3, 4) / 5 = (1.8, 8.4)
    # gradient there: (2 * 1.8, 0.5 * 8.4) = (3.6, 4.2)
    # update: w - 0.1 * (3.6, 4.2) = (1.14, 7.58)
    new, info = sam_step(w0(), quad_grad_fn, eta=0.1, rho=0.5, eps=0.0)
    torch.testing.assert_close(new[0], torch.tensor([1.14, 7.58], dtype=F64), rtol=0, atol=1e-14)
    torch.testing.assert_close(info.update_grad[0], torch.tensor([3.6, 4.2], dtype=F64), rtol=0, atol=1e-14)
    # what was measured is at w_t, not at the ascent point, and ||g|| has no eps
    assert info.loss.item() == pytest.approx(0.5 * (2 * 1.5**2 + 0.5 * 8.0**2), abs=1e-14)  # 18.25
    torch.testing.assert_close(info.grad[0], torch.tensor([3.0, 4.0], dtype=F64), rtol=0, atol=0)
    assert info.grad_norm.item() == 5.0


def test_sam_step_by_hand_with_the_official_eps() -> None:
    # default eps = 1e-5: the ascent scale is rho / (||g|| + 1e-5) = 0.5 / 5.00001
    s = 0.5 / 5.00001
    ascent = (1.5 + 3.0 * s, 8.0 + 4.0 * s)
    expected = torch.tensor([1.5 - 0.1 * 2.0 * ascent[0], 8.0 - 0.1 * 0.5 * ascent[1]], dtype=F64)
    new, _ = sam_step(w0(), quad_grad_fn, eta=0.1, rho=0.5)
    torch.testing.assert_close(new[0], expected, rtol=0, atol=1e-14)
    # and the 1e-5 really is there: the step differs from the eps = 0 step (by about 1e-7 here)
    no_eps, _ = sam_step(w0(), quad_grad_fn, eta=0.1, rho=0.5, eps=0.0)
    diff = (new[0] - no_eps[0]).abs().max().item()
    assert 1e-8 < diff < 1e-6
    torch.testing.assert_close(
        sam_perturbation([torch.tensor([3.0, 4.0], dtype=F64)], 0.5)[0],
        torch.tensor([3.0 * s, 4.0 * s], dtype=F64),
        rtol=0,
        atol=1e-15,
    )


def test_rho_zero_is_gd_step() -> None:
    new_sam, info_sam = sam_step(w0(), quad_grad_fn, eta=0.1, rho=0.0)
    new_gd, info_gd = gd_step(w0(), quad_grad_fn, eta=0.1)
    assert torch.equal(new_sam[0], new_gd[0])
    # GD by hand: (1.5, 8) - 0.1 * (3, 4) = (1.2, 7.6)
    torch.testing.assert_close(new_gd[0], torch.tensor([1.2, 7.6], dtype=F64), rtol=0, atol=1e-14)
    assert info_sam.update_grad[0] is info_sam.grad[0] or torch.equal(info_sam.update_grad[0], info_sam.grad[0])
    assert isinstance(info_gd, StepInfo)


def test_both_gradients_use_the_same_grad_fn_at_w_and_at_the_ascent_point() -> None:
    """SAM evaluates the one gradient function it is given (= one batch) exactly twice: at w and at w + e."""
    calls: list[torch.Tensor] = []

    def recording(params: Sequence[torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        calls.append(params[0].clone())
        return quad_grad_fn(params)

    sam_step(w0(), recording, eta=0.1, rho=0.5, eps=0.0)
    assert len(calls) == 2
    torch.testing.assert_close(calls[0], torch.tensor([1.5, 8.0], dtype=F64), rtol=0, atol=0)
    torch.testing.assert_close(calls[1], torch.tensor([1.8, 8.4], dtype=F64), rtol=0, atol=1e-14)


def test_minibatch_sam_takes_both_gradients_on_one_batch() -> None:
    """With a per-example loss, the SAM step on batch B equals the step built by hand from B alone."""
    data = torch.tensor([[1.0, 2.0], [-1.0, 0.5], [3.0, -2.0], [0.5, 0.5]], dtype=F64)
    batch = data[[0, 2]]

    def batch_grad_fn(params: Sequence[torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        # l_B(w) = mean_i 1/2 (<x_i, w>)^2  ->  grad = mean_i <x_i, w> x_i
        (w,) = params
        r = batch @ w
        return 0.5 * (r**2).mean(), [(r[:, None] * batch).mean(0)]

    w = torch.tensor([0.3, -0.7], dtype=F64)
    new, _ = sam_step([w], batch_grad_fn, eta=0.05, rho=0.2, eps=0.0)
    hess_b = batch.T @ batch / 2  # the Hessian of l_B
    g = hess_b @ w
    expected = w - 0.05 * hess_b @ (w + 0.2 * g / torch.linalg.vector_norm(g))
    torch.testing.assert_close(new[0], expected, rtol=0, atol=1e-15)


def test_normalisation_is_the_global_norm_over_all_tensors() -> None:
    """Splitting w into two tensors [x], [y] must give the same step: ||g|| is taken over everything."""

    def split_grad_fn(params: Sequence[torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        x, y = params
        return 0.5 * (2.0 * x * x + 0.5 * y * y).sum(), [2.0 * x, 0.5 * y]

    params = [torch.tensor([1.5], dtype=F64), torch.tensor([8.0], dtype=F64)]
    new, info = sam_step(params, split_grad_fn, eta=0.1, rho=0.5, eps=0.0)
    assert info.grad_norm.item() == 5.0
    torch.testing.assert_close(torch.cat(new), torch.tensor([1.14, 7.58], dtype=F64), rtol=0, atol=1e-14)
    assert global_norm([torch.tensor([3.0]), torch.tensor([[4.0]])]).item() == 5.0


def test_usam_step_by_hand() -> None:
    # ascent: w + r g = (1.5, 8) + 0.1 * (3, 4) = (1.8, 8.4); same as SAM with rho/||g|| = 0.5/5 = 0.1
    new, info = usam_step(w0(), quad_grad_fn, eta=0.1, r=0.1)
    torch.testing.assert_close(new[0], torch.tensor([1.14, 7.58], dtype=F64), rtol=0, atol=1e-14)
    torch.testing.assert_close(info.update_grad[0], torch.tensor([3.6, 4.2], dtype=F64), rtol=0, atol=1e-14)
    # with another r the normalisation is visibly absent: r = 0.2 -> (2.1, 8.8) -> grad (4.2, 4.4)
    new2, _ = usam_step(w0(), quad_grad_fn, eta=0.1, r=0.2)
    torch.testing.assert_close(new2[0], torch.tensor([1.08, 7.56], dtype=F64), rtol=0, atol=1e-14)


def test_add_scaled_makes_new_tensors() -> None:
    xs = [torch.tensor([1.0, 2.0])]
    out = add_scaled(xs, [torch.tensor([1.0, 1.0])], -2.0)
    torch.testing.assert_close(out[0], torch.tensor([-1.0, 0.0]))
    torch.testing.assert_close(xs[0], torch.tensor([1.0, 2.0]))  # input untouched
