"""The stability thresholds ("edges") of GD, SAM and unnormalised SAM.

This module is the single home of the SAM-edge formula. Chapter 1 of the book derives it with
sympy and proves that :func:`sam_edge` equals the derived expression; every training run, table
and figure takes its "SAM-edge" numbers from here.

All functions accept Python floats, NumPy arrays or torch tensors (broadcasting as usual) and
return the same kind. A function of several quantities takes them **by keyword**, always named and listed in one
order -- the rule's settings ``eta``, ``rho`` (or ``r``), ``beta``, ``nesterov``, then the iterate's ``grad_norm``,
then a curvature ``lam`` / ``lam1`` -- the order of the README's ``SAM-edge(eta, rho, ||g||)``::

    sam_edge(eta=0.1, rho=0.05, grad_norm=2.0)

Positional arguments are still read, in each function's order of version 0.1 (``sam_edge(grad_norm, eta,
rho)``, ``usam_edge(eta, r)``, ...), with a :class:`PositionalArgumentWarning` that says how they were read
(``warnings.simplefilter("error", PositionalArgumentWarning)`` turns it into an error); a later version will
refuse them. The module imports no torch: a tensor can only exist once torch is imported, so tensors are
recognised through ``sys.modules`` and reading results never pays torch's import. Invalid inputs raise
:class:`ValueError` naming the offending argument.

Notation (Long & Bartlett, 2024): ``eta`` is the step size, ``rho`` the SAM radius and
``grad_norm`` the Euclidean norm ``||g||`` of the loss gradient at the current iterate, on the
batch the next update uses (not at the ascent point, and with no ``+1e-5``).
"""

from __future__ import annotations

import functools
import math
import sys
import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

if TYPE_CHECKING:
    import torch

ArrayLike = TypeVar("ArrayLike", float, np.ndarray, "torch.Tensor")


def _torch() -> Any:
    """The torch module if it has been imported (else ``None``: then no argument can be a tensor)."""
    return sys.modules.get("torch")


def _is_tensor(x: object) -> bool:
    torch = _torch()
    return torch is not None and isinstance(x, torch.Tensor)


class PositionalArgumentWarning(FutureWarning):
    """An edge function was called with positional arguments: they are read in its old order (module docstring)."""


def _short(value: object) -> str:
    """A value as a warning shows it: a number's repr, an array's or tensor's kind and shape."""
    shape = getattr(value, "shape", None)
    if shape is not None and len(shape) > 0:
        return f"<{type(value).__name__} of shape {tuple(shape)}>"
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _keywords(*old_order: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Make a function's arguments keyword-only, reading positional ones in ``old_order`` with a warning.

    The warning names the values as they were read, so a call in another order (the README's, say) is seen at once.
    """

    def wrap(fn: Callable[..., Any]) -> Callable[..., Any]:
        names = fn.__code__.co_varnames[: fn.__code__.co_kwonlyargcount]
        spelled = ", ".join(f"{n}=..." for n in names)

        @functools.wraps(fn)
        def call(*args: Any, **kwargs: Any) -> Any:
            if args:
                if len(args) > len(old_order):
                    raise TypeError(
                        f"{fn.__name__} takes keyword arguments: {fn.__name__}({spelled}); got {len(args)} positional"
                    )
                read = dict(zip(old_order, args, strict=False))
                twice = sorted(set(read) & set(kwargs))
                if twice:
                    raise TypeError(f"{fn.__name__} got {', '.join(twice)} both by position and by keyword")
                shown = ", ".join(f"{n}={_short(v)}" for n, v in read.items())
                warnings.warn(
                    f"{fn.__name__} called with positional arguments, read in its old order as {shown}; write "
                    f"{fn.__name__}({spelled}) (positional arguments will be refused in a later version)",
                    PositionalArgumentWarning,
                    stacklevel=2,
                )
                kwargs.update(read)
            return fn(**kwargs)

        return call

    return wrap


#: The constant the official code adds to ``||g||`` in the SAM ascent step (not in the edge).
SAM_NORM_EPS = 1e-5


def _as_checkable(x: object) -> np.ndarray:
    if _is_tensor(x):
        return x.detach().cpu().double().numpy()
    return np.asarray(x, dtype=float)


def _check_positive(name: str, value: object) -> None:
    a = _as_checkable(value)
    if np.isnan(a).any():
        raise ValueError(f"{name} must be a positive number, got NaN")
    if (a <= 0).any():
        raise ValueError(f"{name} must be > 0, got {value!r}")


def _check_nonnegative(name: str, value: object, what: str = "number") -> None:
    a = _as_checkable(value)
    if np.isnan(a).any():
        raise ValueError(f"{name} must be a non-negative {what}, got NaN")
    if (a < 0).any():
        raise ValueError(f"{name} must be >= 0, got {value!r}")


def _sqrt(x: ArrayLike) -> ArrayLike:
    if _is_tensor(x):
        return x.sqrt()
    if isinstance(x, np.ndarray):
        return np.sqrt(x)
    return math.sqrt(x)


def _safe_ratio(num: ArrayLike, den: ArrayLike) -> ArrayLike:
    """``num / den`` with ``0/0 -> 0`` and ``x/0 -> inf`` (x > 0), silently, for all three kinds."""
    if _is_tensor(num) or _is_tensor(den):
        torch = _torch()
        num_t = torch.as_tensor(num, dtype=torch.float64) if not isinstance(num, torch.Tensor) else num
        den_t = torch.as_tensor(den, dtype=num_t.dtype) if not isinstance(den, torch.Tensor) else den
        out = num_t / den_t
        return torch.where(num_t == 0, torch.zeros_like(out), out)
    if isinstance(num, np.ndarray) or isinstance(den, np.ndarray):
        with np.errstate(divide="ignore", invalid="ignore"):
            out = np.asarray(num, dtype=float) / np.asarray(den, dtype=float)
        return np.where(np.asarray(num) == 0, 0.0, out)
    if num == 0:
        return 0.0
    if den == 0:
        return math.inf
    return num / den


def gd_edge(eta: ArrayLike) -> ArrayLike:
    """GD's edge of stability ``2/eta``: the largest curvature GD can sustain on a quadratic."""
    _check_positive("eta", eta)
    return 2.0 / eta


@_keywords("grad_norm", "eta", "rho")
def sam_edge(*, eta: ArrayLike, rho: ArrayLike, grad_norm: ArrayLike) -> ArrayLike:
    """The SAM-edge: the largest Hessian eigenvalue normalised SAM can sustain.

    It is the positive root of ``(eta*rho/||g||) lam^2 + eta*lam - 2 = 0``,

    ``||g||/(2 rho) * (sqrt(1 + 8 rho/(eta ||g||)) - 1) = 4 / (eta * (1 + sqrt(1 + 8 rho/(eta ||g||))))``,

    evaluated in the second form, which has no cancellation for small ``rho`` or large ``||g||``.
    ``rho = 0`` gives ``2/eta`` (GD); ``||g|| = 0`` with ``rho > 0`` gives 0; ``||g|| = inf`` gives ``2/eta``.
    """
    _check_nonnegative("grad_norm", grad_norm, "gradient norm")
    _check_positive("eta", eta)
    _check_nonnegative("rho", rho, "radius")
    x = _safe_ratio(8.0 * rho, eta * grad_norm)  # 8 rho / (eta ||g||), 0 when rho == 0
    return 4.0 / (eta * (1.0 + _sqrt(1.0 + x)))


@_keywords("eta", "r")
def usam_edge(*, eta: ArrayLike, r: ArrayLike) -> ArrayLike:
    """The edge of unnormalised SAM ``w - eta grad(w + r grad(w))``: positive root of ``eta lam (1 + r lam) = 2``.

    ``(sqrt(1 + 8 r/eta) - 1)/(2 r) = 4/(eta (1 + sqrt(1 + 8 r/eta)))``; it does not depend on ``||g||``.
    Normalised SAM is unnormalised SAM with ``r = rho/||g||``, so
    ``usam_edge(eta=eta, r=rho/g) == sam_edge(eta=eta, rho=rho, grad_norm=g)``.
    """
    _check_positive("eta", eta)
    _check_nonnegative("r", r, "radius")
    return 4.0 / (eta * (1.0 + _sqrt(1.0 + 8.0 * r / eta)))


@_keywords("grad_norm", "eta", "rho")
def alpha(*, eta: ArrayLike, rho: ArrayLike, grad_norm: ArrayLike) -> ArrayLike:
    """The dimensionless number ``alpha = eta ||g|| / (2 rho)`` that alone sets ``SAM-edge / (2/eta)``."""
    _check_nonnegative("grad_norm", grad_norm, "gradient norm")
    _check_positive("eta", eta)
    _check_positive("rho", rho)
    return eta * grad_norm / (2.0 * rho)


def edge_ratio(alpha_value: ArrayLike) -> ArrayLike:
    """``R(alpha) = SAM-edge / (2/eta) = 2 / (1 + sqrt(1 + 4/alpha))``, the edge as a fraction of GD's (chapter 1).

    Rises strictly from ``R(0) = 0`` to ``R(inf) = 1``; ``R(1) = (sqrt 5 - 1)/2``.
    """
    _check_nonnegative("alpha", alpha_value)
    x = _safe_ratio(4.0, alpha_value)
    return 2.0 / (1.0 + _sqrt(1.0 + x))


@_keywords("lam", "grad_norm", "eta", "rho")
def sam_multiplier(*, eta: ArrayLike, rho: ArrayLike, grad_norm: ArrayLike, lam: ArrayLike) -> ArrayLike:
    """Per-eigendirection factor of one SAM step on a quadratic: ``1 - eta lam - eta rho lam^2 / ||g||``.

    The error component along an eigenvector with eigenvalue ``lam`` is multiplied by this number;
    it has magnitude above 1 exactly when ``lam > sam_edge(eta=eta, rho=rho, grad_norm=grad_norm)`` (for ``lam > 0``).
    """
    _check_positive("grad_norm", grad_norm)
    _check_positive("eta", eta)
    _check_nonnegative("rho", rho, "radius")
    return 1.0 - eta * lam - eta * rho * lam * lam / grad_norm


@_keywords("lam1", "eta", "rho")
def two_cycle_amplitude(*, eta: ArrayLike, rho: ArrayLike, lam1: ArrayLike) -> ArrayLike:
    """Amplitude ``|c| = eta rho lam1 / (2 - eta lam1)`` of SAM's period-2 orbit along the top eigenvector.

    On that orbit ``||g|| = lam1 |c|`` and ``lam1 == sam_edge(eta=eta, rho=rho, grad_norm=lam1 |c|)`` exactly
    (Proposition C).
    Requires ``0 < eta * lam1 < 2``.
    """
    _check_positive("lam1", lam1)
    _check_positive("eta", eta)
    _check_nonnegative("rho", rho, "radius")
    prod = _as_checkable(eta * lam1)
    if (prod >= 2).any():
        raise ValueError(f"two_cycle_amplitude needs eta*lam1 < 2, got eta*lam1 = {prod}")
    return eta * rho * lam1 / (2.0 - eta * lam1)


# ------------------------------------------------------------------------------------------------
# Beyond the paper: momentum, the collapse variable and the edge's elasticity. The derivations are in the
# book's chapter on SAM's variants, which proves each function equal to its sympy expression.
# ------------------------------------------------------------------------------------------------
def _check_beta(beta: ArrayLike, nesterov: bool) -> None:
    b = _as_checkable(beta)
    if np.isnan(b).any() or (b < 0).any() or (b >= 1).any():
        raise ValueError(f"beta must lie in [0, 1), got {beta!r}")
    if nesterov and (b == 0).any():
        raise ValueError("nesterov=True needs beta > 0 (with beta = 0 there is no momentum to look ahead with)")


@_keywords("eta", "beta", "nesterov")
def effective_eta(*, eta: ArrayLike, beta: ArrayLike, nesterov: bool = False) -> ArrayLike:
    """The step size at which momentum-free SAM has the same edge as SAM with momentum ``beta``.

    In PyTorch's conventions (``torch.optim.SGD``: ``v <- beta v + s``; heavy ball ``w <- w - eta v``;
    Nesterov ``w <- w - eta (s + beta v)``, with ``s`` the SAM gradient), one eigen-component of a quadratic
    with SAM curvature ``h = lam + rho lam^2/||g||`` evolves with characteristic polynomial
    ``z^2 - (1 + beta - eta h) z + beta`` (heavy ball) or ``z^2 - (1 + beta)(1 - eta h) z + beta (1 - eta h)``
    (Nesterov). Both roots stay in the unit disk iff ``eta h < 2(1 + beta)`` (heavy ball) or
    ``eta h < 2(1 + beta)/(1 + 2 beta)`` (Nesterov), i.e. iff ``eta_eff h < 2`` with
    ``eta_eff = eta/(1 + beta)`` or ``eta (1 + 2 beta)/(1 + beta)``. ``beta = 0`` gives ``eta``.
    """
    _check_positive("eta", eta)
    _check_beta(beta, nesterov)
    if nesterov:
        return eta * (1.0 + 2.0 * beta) / (1.0 + beta)
    return eta / (1.0 + beta)


@_keywords("grad_norm", "eta", "rho", "beta", "nesterov")
def momentum_sam_edge(
    *, eta: ArrayLike, rho: ArrayLike, beta: ArrayLike, nesterov: bool = False, grad_norm: ArrayLike
) -> ArrayLike:
    """The SAM-edge of SAM with heavy-ball or Nesterov momentum: ``sam_edge(eta=effective_eta, rho=rho, grad_norm=g)``.

    ``rho = 0`` gives GD with momentum: ``2 (1 + beta)/eta`` (heavy ball), ``2 (1 + beta)/(eta (1 + 2 beta))``
    (Nesterov). It assumes ``||g||`` varies slowly over the momentum's memory, ``~1/(1 - beta)`` steps.
    """
    return sam_edge(eta=effective_eta(eta=eta, beta=beta, nesterov=nesterov), rho=rho, grad_norm=grad_norm)


@_keywords("eta", "r", "beta", "nesterov")
def momentum_usam_edge(*, eta: ArrayLike, r: ArrayLike, beta: ArrayLike, nesterov: bool = False) -> ArrayLike:
    """The edge of unnormalised SAM with momentum: ``usam_edge(eta=effective_eta, r=r)`` (independent of ``||g||``)."""
    return usam_edge(eta=effective_eta(eta=eta, beta=beta, nesterov=nesterov), r=r)


def adaptive_edge(eta: ArrayLike, beta1: ArrayLike) -> ArrayLike:
    """Adam's stability threshold ``(2 + 2 beta1)/((1 - beta1) eta)`` for the preconditioned sharpness.

    Cohen et al. (2022), "Adaptive gradient methods at the edge of stability" (https://arxiv.org/abs/2207.14484):
    Adam with a frozen preconditioner ``P`` is EMA-style heavy-ball momentum on the quadratic preconditioned by
    ``P``, stable while ``lambda_max(P^-1 H) < (2 + 2 beta1)/((1 - beta1) eta)``, and full-batch Adam trains at that
    threshold ("adaptive edge of stability"). It is a threshold for ``lambda_max(P^-1 H)``, not for ``lambda_1(H)``:
    no closed-form edge of ``lambda_1`` applies to Adam (nor to SAM stepped through Adam).
    """
    _check_positive("eta", eta)
    _check_beta(beta1, nesterov=False)
    return (2.0 + 2.0 * beta1) / ((1.0 - beta1) * eta)


@_keywords("lam1", "eta", "rho", "beta", "nesterov")
def momentum_two_cycle_amplitude(
    *, eta: ArrayLike, rho: ArrayLike, beta: ArrayLike, nesterov: bool = False, lam1: ArrayLike
) -> ArrayLike:
    """Amplitude of the period-2 orbit of SAM with momentum along the top eigenvector.

    ``two_cycle_amplitude(eta=effective_eta, rho=rho, lam1=lam1)``; on that orbit ``||g|| = lam1 |c|`` and
    ``lam1 == momentum_sam_edge(eta=eta, rho=rho, beta=beta, nesterov=nesterov, grad_norm=lam1 |c|)`` exactly, as
    Proposition C for ``beta = 0``.
    """
    return two_cycle_amplitude(eta=effective_eta(eta=eta, beta=beta, nesterov=nesterov), rho=rho, lam1=lam1)


@_keywords("lam1", "grad_norm", "eta", "rho")
def collapse_variable(*, eta: ArrayLike, rho: ArrayLike, grad_norm: ArrayLike, lam1: ArrayLike) -> ArrayLike:
    """``Lambda = (eta/2) lam1 (1 + rho lam1/||g||)``: 1 exactly when ``lam1`` is on the SAM-edge.

    Below the edge it is < 1, above it > 1 (it is the SAM multiplier's distance from -1, rescaled), so runs
    at any ``eta``, ``rho`` and ``||g||`` collapse onto the single line ``Lambda = 1``.
    """
    _check_nonnegative("lam1", lam1, "eigenvalue")
    _check_positive("grad_norm", grad_norm)
    _check_positive("eta", eta)
    _check_nonnegative("rho", rho, "radius")
    return 0.5 * eta * lam1 * (1.0 + rho * lam1 / grad_norm)


def edge_elasticity(alpha_value: ArrayLike) -> ArrayLike:
    """``d ln SAM-edge / d ln ||g|| = 2/(alpha + 4 + sqrt(alpha (alpha + 4)))``, in ``(0, 1/2]``.

    How steeply the SAM-edge follows the gradient norm at ``alpha = eta ||g||/(2 rho)``: 1/2 as ``alpha -> 0``
    (the square-root regime), ``~1/alpha`` as ``alpha -> inf`` (GD-like, nearly flat). Unnormalised SAM's
    edge does not depend on ``||g||`` at all (elasticity 0).
    """
    _check_nonnegative("alpha", alpha_value)
    return 2.0 / (alpha_value + 4.0 + _sqrt(alpha_value * (alpha_value + 4.0)))


# ------------------------------------------------------------------------------------------------
# Unnormalised SAM on a quadratic, the switch from GD to SAM, and the regimes of R(alpha). Derived and
# proved equal to their sympy expressions in the book's chapters "SAM's variants" and "The phase diagram".
# ------------------------------------------------------------------------------------------------
@_keywords("lam", "eta", "r")
def usam_multiplier(*, eta: ArrayLike, r: ArrayLike, lam: ArrayLike) -> ArrayLike:
    """Per-eigendirection factor of one unnormalised-SAM step on a quadratic: ``1 - eta lam - eta r lam^2``.

    USAM is exactly linear on a quadratic (``w+ - w* = (I - eta H - eta r H^2)(w - w*)``), so unlike SAM's
    :func:`sam_multiplier` this does not depend on ``||g||``; any real ``lam`` (negative curvature too) is allowed.
    """
    _check_positive("eta", eta)
    _check_nonnegative("r", r, "radius")
    return 1.0 - eta * lam - eta * r * lam * lam


@_keywords("eta", "r")
def usam_negative_window(*, eta: ArrayLike, r: ArrayLike) -> tuple[ArrayLike, ArrayLike]:
    """The negative curvatures USAM is *attracted* along: ``(-(1 + sqrt(1 + 8 r/eta))/(2 r), -1/r)``.

    Inside this interval ``|usam_multiplier| < 1`` although ``lam < 0``: the ascent step ``r g`` overshoots the
    concave direction and the descent step then pulls back towards the saddle. Together with ``(0, usam_edge)``
    it is the whole set where one USAM step shrinks a component. Needs ``r > 0``.
    """
    _check_positive("eta", eta)
    _check_positive("r", r)
    return -(1.0 + _sqrt(1.0 + 8.0 * r / eta)) / (2.0 * r), -1.0 / r


def switch_growth(alpha_value: ArrayLike) -> ArrayLike:
    """``1 + 2/alpha``: how fast SAM switched on at GD's edge (``lam1 = 2/eta``) grows the top component per step.

    With ``lam1 = 2/eta`` the SAM multiplier is ``1 - 2 - eta rho (2/eta)^2/||g|| = -(1 + 2/alpha)`` at
    ``alpha = eta ||g||/(2 rho)``: GD's period-2 orbit there (multiplier -1) turns into an exponential escape,
    fastest when ``||g||`` is small (cf. Zhou et al. 2024, https://arxiv.org/abs/2410.10373).
    """
    _check_positive("alpha", alpha_value)
    return 1.0 + 2.0 / alpha_value


def alpha_of_ratio(ratio: ArrayLike) -> ArrayLike:
    """The inverse of :func:`edge_ratio`: ``alpha = R^2/(1 - R)`` for ``0 <= R < 1``, from ``R^2 + alpha R = alpha``."""
    r = _as_checkable(ratio)
    if np.isnan(r).any() or (r < 0).any() or (r >= 1).any():
        raise ValueError(f"ratio must lie in [0, 1), got {ratio!r}")
    return ratio * ratio / (1.0 - ratio)


def regime_bounds(tol: float = 0.1) -> tuple[float, float]:
    """The ``alpha`` below which the SAM-edge is square-root-like and above which it is GD-like, within ``tol``.

    Square-root regime: ``R >= (1 - tol) sqrt(alpha)``, i.e. ``alpha <= (1/(1 - tol) - (1 - tol))^2``
    (0.0446 at 10 %); GD-like: ``R >= 1 - tol``, i.e. ``alpha >= (1 - tol)^2/tol`` (8.1 at 10 %). The
    crossover in between has ``R(1/2) = 1/2``: the SAM-edge is ``1/eta``, half of GD's ``2/eta``.
    """
    if not 0 < tol < 1:
        raise ValueError(f"tol must lie in (0, 1), got {tol!r}")
    keep = 1.0 - tol
    return (1.0 / keep - keep) ** 2, keep * keep / tol


def edge_regime(alpha_value: float, tol: float = 0.1) -> str:
    """``"square-root"``, ``"crossover"`` or ``"GD-like"``: where ``alpha`` lies relative to :func:`regime_bounds`."""
    _check_nonnegative("alpha", alpha_value)
    low, high = regime_bounds(tol)
    if alpha_value <= low:
        return "square-root"
    return "GD-like" if alpha_value >= high else "crossover"


# Beyond the paper: the minibatch SAM-edge when gradient noise dominates (book chapter on stochastic SAM).
# ------------------------------------------------------------------------------------------------
@_keywords("eta", "rho", "noise_sq")
def noise_dominated_sam_edge(*, eta: ArrayLike, rho: ArrayLike, noise_sq: ArrayLike) -> ArrayLike:
    """The minibatch SAM-edge where noise sets ``||g_B||`` and ``alpha_B << 1``: ``sqrt(2/(eta rho)) noise_sq^(1/4)``.

    ``noise_sq`` is ``E ||g_B||^2`` when the full-batch gradient is negligible against the noise, i.e.
    ``(N - B)/(B (N - 1)) tr Sigma`` (:func:`samedge_lib.core.stochastic.expected_sq_grad_norm`). For ``alpha -> 0`` the
    SAM-edge tends to ``sqrt(2 ||g||/(eta rho))`` (the quadratic term of ``(eta rho/||g||) lam^2 + eta lam = 2``
    dominates), and ``||g_B|| ~ noise_sq^(1/2)``: so the edge grows like ``B^(-1/4)`` as the batch shrinks.
    """
    _check_positive("eta", eta)
    _check_positive("rho", rho)
    _check_nonnegative("noise_sq", noise_sq, "mean squared gradient norm")
    return _sqrt(2.0 / (eta * rho)) * _sqrt(_sqrt(noise_sq))
