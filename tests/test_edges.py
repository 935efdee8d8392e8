"""samedge_lib.theory.edges against closed forms typed here: the SAM-edge's two forms and its defining equation (A1),
its bounds and limits (A2), and the ratio R(alpha) to 2/eta (A3). The SAM-edge is defined in Long & Bartlett,
"Sharpness-Aware Minimization and the Edge of Stability" (https://arxiv.org/abs/2309.12488)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from samedge_lib.theory.edges import (
    alpha,
    edge_ratio,
    gd_edge,
    sam_edge,
    sam_multiplier,
    two_cycle_amplitude,
    usam_edge,
)


@pytest.fixture
def draws() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Random (||g||, eta, rho) over many orders of magnitude."""
    rng = np.random.default_rng(12345)
    n = 20_000
    g = 10.0 ** rng.uniform(-6, 4, n)
    eta = 10.0 ** rng.uniform(-4, 0, n)
    rho = 10.0 ** rng.uniform(-4, 0, n)
    return g, eta, rho


# ----------------------------------------------------------------------------------------------- A1


def test_a1_equals_both_closed_forms(draws: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
    g, eta, rho = draws
    s = sam_edge(g, eta, rho)
    form1 = g / (2 * rho) * (np.sqrt(1 + 8 * rho / (eta * g)) - 1)
    form2 = 4 / (eta * (1 + np.sqrt(1 + 8 * rho / (eta * g))))
    # form1 suffers cancellation when 8 rho/(eta g) is tiny: compare where it is well conditioned.
    ok = 8 * rho / (eta * g) > 1e-3
    assert ok.sum() > 5000
    assert np.max(np.abs(s[ok] - form1[ok]) / s[ok]) < 1e-10
    assert np.max(np.abs(s - form2) / s) < 1e-14


def test_a1_is_root_of_the_edge_equation(draws: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
    g, eta, rho = draws
    s = sam_edge(g, eta, rho)
    residual = eta * s + eta * rho * s**2 / g - 2.0
    assert np.max(np.abs(residual)) < 1e-12


def test_a1_scalar_matches_array() -> None:
    assert sam_edge(0.3, 0.05, 0.2) == pytest.approx(float(sam_edge(np.array([0.3]), 0.05, 0.2)[0]), rel=1e-15)


# ----------------------------------------------------------------------------------------------- A2


def test_a2_below_both_bounds(draws: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
    g, eta, rho = draws
    s = sam_edge(g, eta, rho)
    assert np.all(s < 2 / eta)
    assert np.all(s < np.sqrt(2 * g / (eta * rho)))


def test_a2_limits_rho_to_zero_and_g_to_infinity() -> None:
    eta = 0.01
    for rho in (1e-6, 1e-9, 1e-12, 1e-15):
        gap = 1 - sam_edge(1.0, eta, rho) / (2 / eta)
        assert 0 <= gap <= 2.01 * rho / eta  # S -> 2/eta at the rate 2 rho/(eta ||g||)
    # series: S = (2/eta)(1 - 2 rho/(eta g) + ...)
    rho, g = 1e-6, 1.0
    assert (2 / eta - sam_edge(g, eta, rho)) / (2 / eta) == pytest.approx(2 * rho / (eta * g), rel=1e-3)
    for g in (1e6, 1e9, 1e12, 1e15):
        gap = 1 - sam_edge(g, eta, 0.1) / (2 / eta)
        assert 0 <= gap <= 2.01 * 0.1 / (eta * g)
    assert sam_edge(math.inf, eta, 0.1) == 2 / eta
    assert sam_edge(1.0, eta, 0.0) == 2 / eta


def test_a2_small_gradient_limit() -> None:
    eta, rho = 0.01, 0.1
    ratios = [sam_edge(g, eta, rho) / math.sqrt(2 * g / (eta * rho)) for g in (1e-4, 1e-7, 1e-10, 1e-13)]
    assert all(r < 1 for r in ratios)
    assert all(b > a for a, b in zip(ratios, ratios[1:], strict=False))  # increasing towards 1
    assert ratios[-1] == pytest.approx(1.0, abs=1e-5)
    assert sam_edge(0.0, eta, rho) == 0.0


def test_a2_monotone() -> None:
    g = np.logspace(-5, 5, 200)
    assert np.all(np.diff(sam_edge(g, 0.1, 0.05)) > 0)  # increasing in ||g||
    rho = np.logspace(-5, 1, 200)
    assert np.all(np.diff(sam_edge(1.0, 0.1, rho)) < 0)  # decreasing in rho
    eta = np.logspace(-4, 0, 200)
    assert np.all(np.diff(sam_edge(1.0, eta, 0.05)) < 0)  # decreasing in eta


# ----------------------------------------------------------------------------------------------- A3


@pytest.mark.parametrize(
    ("a", "expected"),
    [(1e-4, 0.00995), (1e-3, 0.0311), (1e-2, 0.0951), (0.1, 0.2702), (0.25, 0.3904), (1.0, 0.6180),
     (4.0, 0.8284), (10.0, 0.9161), (100.0, 0.9902), (1e4, 0.9999)],
)  # fmt: skip
def test_a3_ratio_table(a: float, expected: float) -> None:
    digits = 4 if expected >= 0.01 else 5
    assert round(edge_ratio(a), digits) == pytest.approx(expected, abs=1e-12)


def test_a3_golden_ratio_and_bounds() -> None:
    assert edge_ratio(1.0) == pytest.approx((math.sqrt(5) - 1) / 2, rel=1e-15)
    a = np.logspace(-8, 8, 5000)
    r = edge_ratio(a)
    upper = np.minimum(1.0, np.sqrt(a))
    assert np.all(r <= upper)
    assert np.all(r >= 0.5 * upper)
    assert np.all(r >= np.sqrt(a) / (1 + np.sqrt(a)))
    assert np.all(np.diff(r) > 0)


def test_a3_ratio_is_edge_over_gd_edge(draws: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
    g, eta, rho = draws
    r = edge_ratio(alpha(g, eta, rho))
    np.testing.assert_allclose(r, sam_edge(g, eta, rho) / gd_edge(eta), rtol=1e-13)
    np.testing.assert_allclose(alpha(g, eta, rho), eta * g / (2 * rho), rtol=1e-15)


# ------------------------------------------------------------------------------ relatives and inputs


def test_usam_edge_with_effective_radius(draws: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
    g, eta, rho = draws
    np.testing.assert_allclose(usam_edge(eta, rho / g), sam_edge(g, eta, rho), rtol=1e-14)
    r = 0.3
    u = usam_edge(0.1, r)
    assert 0.1 * u * (1 + r * u) == pytest.approx(2.0, rel=1e-14)  # eta lam (1 + r lam) = 2
    assert usam_edge(0.1, 0.0) == pytest.approx(20.0, rel=1e-15)


def test_rho_zero_is_gd_edge() -> None:
    for eta in (1e-3, 0.01, 0.5, 3.0):
        assert sam_edge(0.7, eta, 0.0) == pytest.approx(gd_edge(eta), rel=1e-15)
        assert gd_edge(eta) == pytest.approx(2 / eta, rel=1e-15)


def test_multiplier_and_two_cycle() -> None:
    lam, g, eta, rho = 7.0, 0.4, 0.1, 0.05
    assert sam_multiplier(lam, g, eta, rho) == pytest.approx(1 - eta * lam - eta * rho * lam**2 / g, rel=1e-15)
    s = sam_edge(g, eta, rho)
    assert sam_multiplier(s, g, eta, rho) == pytest.approx(-1.0, abs=1e-13)
    c = two_cycle_amplitude(lam, eta, rho)
    assert c == pytest.approx(eta * rho * lam / (2 - eta * lam), rel=1e-15)
    assert sam_edge(lam * c, eta, rho) == pytest.approx(lam, rel=1e-13)


@pytest.mark.parametrize(
    ("call", "name"),
    [
        (lambda: sam_edge(1.0, 0.0, 0.1), "eta"),
        (lambda: sam_edge(1.0, -0.1, 0.1), "eta"),
        (lambda: sam_edge(1.0, 0.1, -0.1), "rho"),
        (lambda: sam_edge(-1.0, 0.1, 0.1), "grad_norm"),
        (lambda: sam_edge(float("nan"), 0.1, 0.1), "grad_norm"),
        (lambda: sam_edge(np.array([1.0, np.nan]), 0.1, 0.1), "grad_norm"),
        (lambda: sam_edge(torch.tensor([-1.0]), 0.1, 0.1), "grad_norm"),
        (lambda: gd_edge(0.0), "eta"),
        (lambda: usam_edge(0.1, -1.0), "r"),
        (lambda: edge_ratio(-0.5), "alpha"),
        (lambda: two_cycle_amplitude(30.0, 0.1, 0.1), r"eta\*lam1"),
    ],
)
def test_invalid_inputs_raise_naming_the_argument(call, name: str) -> None:
    with pytest.raises(ValueError, match=name):
        call()


def test_types_are_preserved() -> None:
    assert isinstance(sam_edge(1.0, 0.1, 0.1), float)
    out_np = sam_edge(np.array([0.5, 1.0]), 0.1, 0.1)
    assert isinstance(out_np, np.ndarray) and out_np.shape == (2,)
    out_t = sam_edge(torch.tensor([0.5, 1.0], dtype=torch.float64), 0.1, 0.1)
    assert isinstance(out_t, torch.Tensor) and out_t.dtype == torch.float64
    np.testing.assert_allclose(out_t.numpy(), out_np, rtol=1e-15)
    assert isinstance(edge_ratio(np.array([1.0])), np.ndarray)
    assert isinstance(edge_ratio(torch.tensor([1.0])), torch.Tensor)
    assert isinstance(usam_edge(0.1, torch.tensor(0.2)), torch.Tensor)
    # zero gradient with torch input: edge is 0 (no NaN from 0/0 handling)
    assert sam_edge(torch.tensor([0.0], dtype=torch.float64), 0.1, 0.1).item() == 0.0
