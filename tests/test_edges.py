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
    s = sam_edge(eta=eta, rho=rho, grad_norm=g)
    form1 = g / (2 * rho) * (np.sqrt(1 + 8 * rho / (eta * g)) - 1)
    form2 = 4 / (eta * (1 + np.sqrt(1 + 8 * rho / (eta * g))))
    # form1 suffers cancellation when 8 rho/(eta g) is tiny: compare where it is well conditioned.
    ok = 8 * rho / (eta * g) > 1e-3
    assert ok.sum() > 5000
    assert np.max(np.abs(s[ok] - form1[ok]) / s[ok]) < 1e-10
    assert np.max(np.abs(s - form2) / s) < 1e-14


def test_a1_is_root_of_the_edge_equation(draws: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
    g, eta, rho = draws
    s = sam_edge(eta=eta, rho=rho, grad_norm=g)
    residual = eta * s + eta * rho * s**2 / g - 2.0
    assert np.max(np.abs(residual)) < 1e-12


def test_a1_scalar_matches_array() -> None:
    assert sam_edge(eta=0.05, rho=0.2, grad_norm=0.3) == pytest.approx(
        float(sam_edge(eta=0.05, rho=0.2, grad_norm=np.array([0.3]))[0]), rel=1e-15
    )


# ----------------------------------------------------------------------------------------------- A2


def test_a2_below_both_bounds(draws: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
    g, eta, rho = draws
    s = sam_edge(eta=eta, rho=rho, grad_norm=g)
    assert np.all(s < 2 / eta)
    assert np.all(s < np.sqrt(2 * g / (eta * rho)))


def test_a2_limits_rho_to_zero_and_g_to_infinity() -> None:
    eta = 0.01
    for rho in (1e-6, 1e-9, 1e-12, 1e-15):
        gap = 1 - sam_edge(eta=eta, rho=rho, grad_norm=1.0) / (2 / eta)
        assert 0 <= gap <= 2.01 * rho / eta  # S -> 2/eta at the rate 2 rho/(eta ||g||)
    # series: S = (2/eta)(1 - 2 rho/(eta g) + ...)
    rho, g = 1e-6, 1.0
    assert (2 / eta - sam_edge(eta=eta, rho=rho, grad_norm=g)) / (2 / eta) == pytest.approx(
        2 * rho / (eta * g), rel=1e-3
    )
    for g in (1e6, 1e9, 1e12, 1e15):
        gap = 1 - sam_edge(eta=eta, rho=0.1, grad_norm=g) / (2 / eta)
        assert 0 <= gap <= 2.01 * 0.1 / (eta * g)
    assert sam_edge(eta=eta, rho=0.1, grad_norm=math.inf) == 2 / eta
    assert sam_edge(eta=eta, rho=0.0, grad_norm=1.0) == 2 / eta


def test_a2_small_gradient_limit() -> None:
    eta, rho = 0.01, 0.1
    ratios = [
        sam_edge(eta=eta, rho=rho, grad_norm=g) / math.sqrt(2 * g / (eta * rho)) for g in (1e-4, 1e-7, 1e-10, 1e-13)
    ]
    assert all(r < 1 for r in ratios)
    assert all(b > a for a, b in zip(ratios, ratios[1:], strict=False))  # increasing towards 1
    assert ratios[-1] == pytest.approx(1.0, abs=1e-5)
    assert sam_edge(eta=eta, rho=rho, grad_norm=0.0) == 0.0


def test_a2_monotone() -> None:
    g = np.logspace(-5, 5, 200)
    assert np.all(np.diff(sam_edge(eta=0.1, rho=0.05, grad_norm=g)) > 0)  # increasing in ||g||
    rho = np.logspace(-5, 1, 200)
    assert np.all(np.diff(sam_edge(eta=0.1, rho=rho, grad_norm=1.0)) < 0)  # decreasing in rho
    eta = np.logspace(-4, 0, 200)
    assert np.all(np.diff(sam_edge(eta=eta, rho=0.05, grad_norm=1.0)) < 0)  # decreasing in eta


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
    r = edge_ratio(alpha(eta=eta, rho=rho, grad_norm=g))
    np.testing.assert_allclose(r, sam_edge(eta=eta, rho=rho, grad_norm=g) / gd_edge(eta), rtol=1e-13)
    np.testing.assert_allclose(alpha(eta=eta, rho=rho, grad_norm=g), eta * g / (2 * rho), rtol=1e-15)


# ------------------------------------------------------------------------------ relatives and inputs


def test_usam_edge_with_effective_radius(draws: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
    g, eta, rho = draws
    np.testing.assert_allclose(usam_edge(eta=eta, r=rho / g), sam_edge(eta=eta, rho=rho, grad_norm=g), rtol=1e-14)
    r = 0.3
    u = usam_edge(eta=0.1, r=r)
    assert 0.1 * u * (1 + r * u) == pytest.approx(2.0, rel=1e-14)  # eta lam (1 + r lam) = 2
    assert usam_edge(eta=0.1, r=0.0) == pytest.approx(20.0, rel=1e-15)


def test_rho_zero_is_gd_edge() -> None:
    for eta in (1e-3, 0.01, 0.5, 3.0):
        assert sam_edge(eta=eta, rho=0.0, grad_norm=0.7) == pytest.approx(gd_edge(eta), rel=1e-15)
        assert gd_edge(eta) == pytest.approx(2 / eta, rel=1e-15)


def test_multiplier_and_two_cycle() -> None:
    lam, g, eta, rho = 7.0, 0.4, 0.1, 0.05
    assert sam_multiplier(eta=eta, rho=rho, grad_norm=g, lam=lam) == pytest.approx(
        1 - eta * lam - eta * rho * lam**2 / g, rel=1e-15
    )
    s = sam_edge(eta=eta, rho=rho, grad_norm=g)
    assert sam_multiplier(eta=eta, rho=rho, grad_norm=g, lam=s) == pytest.approx(-1.0, abs=1e-13)
    c = two_cycle_amplitude(eta=eta, rho=rho, lam1=lam)
    assert c == pytest.approx(eta * rho * lam / (2 - eta * lam), rel=1e-15)
    assert sam_edge(eta=eta, rho=rho, grad_norm=lam * c) == pytest.approx(lam, rel=1e-13)


@pytest.mark.parametrize(
    ("call", "name"),
    [
        (lambda: sam_edge(eta=0.0, rho=0.1, grad_norm=1.0), "eta"),
        (lambda: sam_edge(eta=-0.1, rho=0.1, grad_norm=1.0), "eta"),
        (lambda: sam_edge(eta=0.1, rho=-0.1, grad_norm=1.0), "rho"),
        (lambda: sam_edge(eta=0.1, rho=0.1, grad_norm=-1.0), "grad_norm"),
        (lambda: sam_edge(eta=0.1, rho=0.1, grad_norm=float("nan")), "grad_norm"),
        (lambda: sam_edge(eta=0.1, rho=0.1, grad_norm=np.array([1.0, np.nan])), "grad_norm"),
        (lambda: sam_edge(eta=0.1, rho=0.1, grad_norm=torch.tensor([-1.0])), "grad_norm"),
        (lambda: gd_edge(0.0), "eta"),
        (lambda: usam_edge(eta=0.1, r=-1.0), "r"),
        (lambda: edge_ratio(-0.5), "alpha"),
        (lambda: two_cycle_amplitude(eta=0.1, rho=0.1, lam1=30.0), r"eta\*lam1"),
    ],
)
def test_invalid_inputs_raise_naming_the_argument(call, name: str) -> None:
    with pytest.raises(ValueError, match=name):
        call()


def test_types_are_preserved() -> None:
    assert isinstance(sam_edge(eta=0.1, rho=0.1, grad_norm=1.0), float)
    out_np = sam_edge(eta=0.1, rho=0.1, grad_norm=np.array([0.5, 1.0]))
    assert isinstance(out_np, np.ndarray) and out_np.shape == (2,)
    out_t = sam_edge(eta=0.1, rho=0.1, grad_norm=torch.tensor([0.5, 1.0], dtype=torch.float64))
    assert isinstance(out_t, torch.Tensor) and out_t.dtype == torch.float64
    np.testing.assert_allclose(out_t.numpy(), out_np, rtol=1e-15)
    assert isinstance(edge_ratio(np.array([1.0])), np.ndarray)
    assert isinstance(edge_ratio(torch.tensor([1.0])), torch.Tensor)
    assert isinstance(usam_edge(eta=0.1, r=torch.tensor(0.2)), torch.Tensor)
    # zero gradient with torch input: edge is 0 (no NaN from 0/0 handling)
    assert sam_edge(eta=0.1, rho=0.1, grad_norm=torch.tensor([0.0], dtype=torch.float64)).item() == 0.0


# ------------------------------------------------------------------------------ the argument convention (issue 19)

#: The one order every edge function of several quantities lists its keywords in: settings, then state, then curvature.
CANONICAL_ORDER = ("eta", "rho", "r", "beta", "nesterov", "grad_norm", "noise_sq", "lam", "lam1")


def _several_quantity_functions():
    from samedge_lib.theory import edges

    for name in sorted(dir(edges)):
        fn = getattr(edges, name)
        if callable(fn) and getattr(fn, "__module__", "") == edges.__name__ and hasattr(fn, "__wrapped__"):
            yield name, fn


def test_every_edge_function_of_several_quantities_takes_keywords_in_one_order() -> None:
    import inspect

    from samedge_lib.theory import edges

    found = dict(_several_quantity_functions())
    assert {"sam_edge", "usam_edge", "alpha", "collapse_variable", "momentum_sam_edge", "sam_multiplier"} <= set(found)
    for name, fn in found.items():
        params = inspect.signature(fn).parameters
        assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in params.values()), name
        assert list(params) == sorted(params, key=CANONICAL_ORDER.index), name
    # and a function of one quantity keeps its one positional argument
    for name in ("gd_edge", "edge_ratio", "edge_elasticity", "switch_growth", "alpha_of_ratio"):
        first = next(iter(inspect.signature(getattr(edges, name)).parameters.values()))
        assert first.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD, name


def test_positional_calls_read_the_old_order_and_say_how_they_were_read() -> None:
    from samedge_lib.theory.edges import PositionalArgumentWarning

    right = sam_edge(eta=0.1, rho=0.05, grad_norm=2.0)
    with pytest.warns(PositionalArgumentWarning) as seen:
        old = sam_edge(2.0, 0.1, 0.05)  # the order of version 0.1: (grad_norm, eta, rho)
    assert old == right
    with pytest.warns(PositionalArgumentWarning) as seen:
        readme = sam_edge(0.1, 0.05, 2.0)  # the README's order, positionally: a different number, and a warning
    message = str(seen[0].message)
    assert readme != right and "\n" not in message
    assert "read in its old order as grad_norm=0.1, eta=0.05, rho=2.0" in message
    assert "sam_edge(eta=..., rho=..., grad_norm=...)" in message
    with pytest.warns(PositionalArgumentWarning, match=r"collapse_variable\(eta=\.\.\., rho=\.\.\., grad_norm"):
        assert collapse_old() == pytest.approx(1.0)
    with pytest.warns(PositionalArgumentWarning, match=r"<ndarray of shape \(2,\)>"):
        sam_edge(np.array([1.0, 2.0]), 0.1, 0.05)


def collapse_old() -> float:
    from samedge_lib.theory.edges import collapse_variable

    s = sam_edge(eta=0.1, rho=0.05, grad_norm=2.0)
    return collapse_variable(s, 2.0, 0.1, 0.05)  # old order (lam1, grad_norm, eta, rho)


def test_positional_calls_can_be_made_errors_and_mixed_calls_are_refused() -> None:
    import warnings

    from samedge_lib.theory.edges import PositionalArgumentWarning

    with warnings.catch_warnings():
        warnings.simplefilter("error", PositionalArgumentWarning)
        with pytest.raises(PositionalArgumentWarning, match="grad_norm=0.1"):
            sam_edge(0.1, 0.05, 2.0)
        assert sam_edge(eta=0.1, rho=0.05, grad_norm=2.0) > 0  # keywords never warn
    with pytest.raises(TypeError, match="both by position and by keyword"):
        sam_edge(2.0, eta=0.1, grad_norm=1.0)
    with pytest.raises(TypeError, match=r"takes keyword arguments: usam_edge\(eta=\.\.\., r=\.\.\.\)"):
        usam_edge(0.1, 0.2, 0.3)
    with pytest.raises(TypeError, match="missing"):
        sam_edge(eta=0.1, rho=0.05)


def test_no_positional_edge_call_is_left_in_the_library_tests_or_notebooks() -> None:
    """Every call site of the library, the tests and the chapters uses keywords (a warning would break the book)."""
    import ast
    import json
    from pathlib import Path

    repo = Path(__file__).resolve().parent.parent
    several = dict(_several_quantity_functions())
    sources: list[tuple[str, str]] = []
    for folder in ("samedge_lib", "tests", "tools", "benchmarks"):
        sources += [(str(p), p.read_text()) for p in (repo / folder).rglob("*.py")]
    for nb in sorted((repo / "notebooks").glob("*.ipynb")):
        cells = json.loads(nb.read_text())["cells"]
        sources += [(f"{nb.name}[{i}]", "".join(c["source"])) for i, c in enumerate(cells) if c["cell_type"] == "code"]
    bad = []
    for where, text in sources:
        for node in ast.walk(ast.parse(text)):
            if not isinstance(node, ast.Call) or not node.args:
                continue
            f = node.func
            name = f.attr if isinstance(f, ast.Attribute) and getattr(f.value, "id", "") == "edges" else None
            name = f.id if isinstance(f, ast.Name) else name
            if name in several and not where.endswith("test_edges.py"):  # this file calls them so on purpose
                bad.append(f"{where}:{node.lineno}: {ast.get_source_segment(text, node)}")
    assert not bad, "\n".join(bad)
