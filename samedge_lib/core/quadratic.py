"""Quadratic losses with a known spectrum: the ground truth for the SAM-edge (book chapter 2).

On ``l(w) = 1/2 (w - w*)^T H (w - w*)`` one SAM step multiplies the error component along each
eigenvector of ``H`` by ``1 - eta lam - eta rho lam^2 / ||g||`` (Proposition A), and a long run
settles on a period-2 orbit along the top eigenvector with ``lam1 == SAM-edge(||g||)`` exactly
(Proposition C). This module provides the pieces to *observe* those facts rather than assume them:

* :class:`Quadratic`: the loss, its gradient and Hessian, and a ``grad_fn`` for :mod:`samedge_lib.theory.updates`;
* :func:`sam_run`: many SAM (or GD) steps in float64, recording loss, ``||g||``, the SAM-edge and the
  eigen-components at every step;
* :func:`stability_map`: grow/shrink of one eigen-component after one actual SAM step, over a grid of
  ``alpha = eta ||g|| / (2 rho)`` and ``eta lam / 2``; :func:`stability_boundary` and
  :func:`boundary_distance` compare the observed boundary with the SAM-edge curve;
* :func:`variant_run`: the same for SAM's variants -- unnormalised SAM, heavy-ball or Nesterov momentum, and
  GD that switches to SAM at a given step (the book's chapter on SAM's variants);
* :func:`linear_thresholds`: where unnormalised SAM (or GD) with momentum stops converging, observed on long
  runs over a grid of curvatures. On a quadratic these rules are linear, so the observed threshold is the
  exact stability boundary of the rule, with no formula involved.

The steps are always those of :mod:`samedge_lib.theory.updates` and every edge value comes from
:mod:`samedge_lib.theory.edges`; nothing here re-implements either.

By default the runs use the *analysed* SAM rule, ``rho g / ||g||`` (``eps = 0``). The official code adds
``1e-5`` to ``||g||`` (``eps = SAM_NORM_EPS``); that shifts the 2-cycle by a relative amount of order
``1e-5 / ||g||``, which is why the exact checks of chapter 2 use ``eps = 0``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch.func import vmap

from samedge_lib.theory.edges import edge_ratio, momentum_sam_edge, momentum_usam_edge
from samedge_lib.theory.updates import Params, gd_step, momentum_step, sam_step, usam_step

DTYPE = torch.float64


def _as_vector(name: str, value: object, dim: int | None = None) -> torch.Tensor:
    """``value`` as a 1-D float64 tensor (of length ``dim`` if given), or a ValueError naming ``name``."""
    if isinstance(value, np.ndarray):
        value = np.ascontiguousarray(value)  # torch rejects negative strides (e.g. a reversed array)
    t = torch.as_tensor(value, dtype=DTYPE).detach().clone()
    if t.ndim != 1:
        raise ValueError(f"{name} must be a 1-D vector, got shape {tuple(t.shape)}")
    if dim is not None and t.shape[0] != dim:
        raise ValueError(f"{name} must have length {dim} (the number of eigenvalues), got {t.shape[0]}")
    if not torch.isfinite(t).all():
        raise ValueError(f"{name} must be finite, got {value!r}")
    return t


def random_orthogonal(dim: int, seed: int) -> torch.Tensor:
    """A Haar-random ``dim x dim`` orthogonal matrix in float64, reproducible from ``seed``.

    QR of a standard Gaussian matrix, with the signs of ``R``'s diagonal moved into ``Q`` (without that
    fix the distribution is not uniform).
    """
    if dim < 1:
        raise ValueError(f"dim must be >= 1, got {dim}")
    gen = torch.Generator().manual_seed(int(seed))
    a = torch.randn(dim, dim, generator=gen, dtype=DTYPE)
    q, r = torch.linalg.qr(a)
    return q * torch.sign(torch.diagonal(r)).unsqueeze(0)


class Quadratic:
    """The quadratic loss ``l(w) = 1/2 (w - w*)^T H (w - w*)`` with ``H = V diag(eigenvalues) V^T``.

    Args:
        eigenvalues: the spectrum of ``H`` (any real values; SAM's theory needs the relevant ones > 0).
        eigenvectors: the columns of ``V``. ``None`` gives the identity (a diagonal quadratic) unless
            ``seed`` is set, in which case ``V`` is :func:`random_orthogonal` from that seed.
            An explicit matrix must be orthogonal to 1e-10.
        w_star: the minimiser ``w*``; ``None`` means the origin.
        seed: see ``eigenvectors``.

    All tensors are float64: the checks of chapter 2 are at the 1e-10 level.

    """

    def __init__(
        self,
        eigenvalues: Sequence[float] | np.ndarray | torch.Tensor,
        eigenvectors: np.ndarray | torch.Tensor | None = None,
        w_star: Sequence[float] | np.ndarray | torch.Tensor | None = None,
        *,
        seed: int | None = None,
    ) -> None:
        self.eigenvalues = _as_vector("eigenvalues", eigenvalues)
        d = self.eigenvalues.shape[0]
        if d == 0:
            raise ValueError("eigenvalues must not be empty")
        if eigenvectors is None:
            self.eigenvectors = torch.eye(d, dtype=DTYPE) if seed is None else random_orthogonal(d, seed)
        else:
            if seed is not None:
                raise ValueError("give either eigenvectors or seed, not both")
            if isinstance(eigenvectors, np.ndarray):
                eigenvectors = np.ascontiguousarray(eigenvectors)
            v = torch.as_tensor(eigenvectors, dtype=DTYPE).detach().clone()
            if v.shape != (d, d):
                raise ValueError(f"eigenvectors must have shape ({d}, {d}), got {tuple(v.shape)}")
            err = (v.T @ v - torch.eye(d, dtype=DTYPE)).abs().max().item()
            if not err < 1e-10:
                raise ValueError(f"eigenvectors must be orthogonal (V^T V = I); max deviation is {err:.3g}")
            self.eigenvectors = v
        self.w_star = torch.zeros(d, dtype=DTYPE) if w_star is None else _as_vector("w_star", w_star, d)
        self._hessian = (self.eigenvectors * self.eigenvalues) @ self.eigenvectors.T

    @property
    def dim(self) -> int:
        """The number of parameters."""
        return self.eigenvalues.shape[0]

    def hessian(self) -> torch.Tensor:
        """The (constant) Hessian ``H`` as a dense ``dim x dim`` float64 matrix."""
        return self._hessian.clone()

    def _check_w(self, w: torch.Tensor) -> torch.Tensor:
        if w.shape != (self.dim,):
            raise ValueError(f"w must have shape ({self.dim},), got {tuple(w.shape)}")
        return w

    def loss(self, w: torch.Tensor) -> torch.Tensor:
        """``1/2 (w - w*)^T H (w - w*)``."""
        e = self._check_w(w) - self.w_star
        return 0.5 * e @ (self._hessian @ e)

    def grad(self, w: torch.Tensor) -> torch.Tensor:
        """``H (w - w*)``."""
        return self._hessian @ (self._check_w(w) - self.w_star)

    def components(self, w: torch.Tensor) -> torch.Tensor:
        """The error components ``c_i = <v_i, w - w*>`` along the eigenvectors (eigenvalue order)."""
        return self.eigenvectors.T @ (self._check_w(w) - self.w_star)

    def grad_fn(self, params: Sequence[torch.Tensor]) -> tuple[torch.Tensor, Params]:
        """The gradient function for :mod:`samedge_lib.theory.updates`: ``[w] -> (loss(w), [grad(w)])``."""
        if len(params) != 1:
            raise ValueError(f"a Quadratic takes one parameter tensor (the vector w), got {len(params)}")
        w = params[0]
        return self.loss(w), [self.grad(w)]


@dataclass
class QuadraticRun:
    """What :func:`sam_run` recorded; row ``t`` is measured at ``w_t``, before step ``t``.

    Attributes:
        eta, rho, eps: the hyperparameters of the run.
        eigenvalues: the spectrum of the quadratic (numpy, float64).
        loss, grad_norm, sam_edge: per step, shape ``(steps,)``; ``sam_edge`` is the edge of the rule that took
            the step: the SAM-edge (``2/eta`` when ``rho = 0``), the USAM edge for unnormalised SAM, each at the
            effective step size of the momentum (:func:`samedge_lib.theory.edges.effective_eta`).
        components: ``c_{i,t}``, shape ``(steps + 1, dim)`` (the last row is the final iterate).
        w_final: the final iterate.
        beta, nesterov, normalized, sam_start: the variant (:func:`variant_run`); the defaults are plain SAM.

    """

    eta: float
    rho: float
    eps: float
    eigenvalues: np.ndarray
    loss: np.ndarray
    grad_norm: np.ndarray
    sam_edge: np.ndarray
    components: np.ndarray
    w_final: torch.Tensor
    beta: float = 0.0
    nesterov: bool = False
    normalized: bool = True
    sam_start: int = 0

    def multipliers(self) -> np.ndarray:
        """Observed per-step multipliers ``c_{i,t+1} / c_{i,t}``, shape ``(steps, dim)``."""
        with np.errstate(divide="ignore", invalid="ignore"):
            return self.components[1:] / self.components[:-1]

    def frame(self) -> pd.DataFrame:
        """A tidy table, one row per step: step, loss, grad_norm, sam_edge, lambda1_over_edge, c1 (top)."""
        top = int(np.argmax(self.eigenvalues))
        lam1 = float(self.eigenvalues[top])
        return pd.DataFrame(
            {
                "step": np.arange(len(self.loss)),
                "loss": self.loss,
                "grad_norm": self.grad_norm,
                "sam_edge": self.sam_edge,
                "lambda1_over_edge": lam1 / self.sam_edge,
                "c1": self.components[:-1, top],
            }
        )


def sam_run(
    quad: Quadratic,
    w0: Sequence[float] | np.ndarray | torch.Tensor,
    eta: float,
    rho: float,
    steps: int,
    eps: float = 0.0,
) -> QuadraticRun:
    """Run ``steps`` SAM steps (:func:`samedge_lib.theory.updates.sam_step`) on ``quad`` from ``w0``, in float64.

    ``rho = 0`` gives GD. ``eps`` is the constant added to ``||g||`` in the ascent step: 0 is the rule the
    theory analyses (the default here), ``1e-5`` the official code's. The SAM-edge is taken at the current
    iterate with :func:`samedge_lib.theory.edges.sam_edge` (no ``eps``), as the official code does.
    """
    return variant_run(quad, w0, eta, rho, steps, eps=eps)


def variant_run(
    quad: Quadratic,
    w0: Sequence[float] | np.ndarray | torch.Tensor,
    eta: float,
    rho: float,
    steps: int,
    *,
    beta: float = 0.0,
    nesterov: bool = False,
    normalized: bool = True,
    sam_start: int = 0,
    eps: float = 0.0,
) -> QuadraticRun:
    """Run ``steps`` steps of a SAM variant on ``quad`` from ``w0``, in float64.

    ``normalized=False`` is unnormalised SAM (``rho`` is then its ``r``); ``beta > 0`` adds heavy-ball momentum
    (Nesterov's with ``nesterov=True``) in ``torch.optim.SGD``'s convention, the velocity starting at zero;
    the steps before ``sam_start`` are GD's (with the same momentum). Without momentum the steps are
    :func:`~samedge_lib.theory.updates.sam_step`, :func:`~samedge_lib.theory.updates.usam_step` or
    :func:`~samedge_lib.theory.updates.gd_step`, with momentum
    :func:`~samedge_lib.theory.updates.momentum_step`. The recorded
    edge is the one of the rule that took each step (see :class:`QuadraticRun`).
    """
    if not (isinstance(steps, int) and steps >= 1):
        raise ValueError(f"steps must be a positive integer, got {steps!r}")
    if not eta > 0:
        raise ValueError(f"eta must be > 0, got {eta!r}")
    if not rho >= 0:
        raise ValueError(f"rho must be >= 0, got {rho!r}")
    if not eps >= 0:
        raise ValueError(f"eps must be >= 0, got {eps!r}")
    if not 0 <= beta < 1:
        raise ValueError(f"beta must lie in [0, 1), got {beta!r}")
    if nesterov and beta == 0:
        raise ValueError("nesterov=True needs beta > 0")
    if not (isinstance(sam_start, int) and 0 <= sam_start < steps):
        raise ValueError(f"sam_start must be an integer in [0, steps), got {sam_start!r}")
    w = _as_vector("w0", w0, quad.dim)
    loss = np.empty(steps)
    gnorm = np.empty(steps)
    edge = np.empty(steps)
    comps = np.empty((steps + 1, quad.dim))
    comps[0] = quad.components(w).numpy()
    params, velocity = [w], None
    for t in range(steps):
        rho_t = rho if t >= sam_start else 0.0
        if beta > 0:
            params, velocity, info = momentum_step(
                params, velocity, quad.grad_fn, eta, rho_t, beta, nesterov=nesterov, normalized=normalized, eps=eps
            )
        elif rho_t == 0:
            params, info = gd_step(params, quad.grad_fn, eta)
        elif normalized:
            params, info = sam_step(params, quad.grad_fn, eta, rho_t, eps=eps)
        else:
            params, info = usam_step(params, quad.grad_fn, eta, rho_t)
        loss[t] = info.loss.item()
        gnorm[t] = info.grad_norm.item()
        if normalized or rho_t == 0:
            edge[t] = momentum_sam_edge(eta=eta, rho=rho_t, beta=beta, nesterov=nesterov, grad_norm=gnorm[t])
        else:
            edge[t] = momentum_usam_edge(eta=eta, r=rho_t, beta=beta, nesterov=nesterov)
        comps[t + 1] = quad.components(params[0]).numpy()
        if not np.isfinite(comps[t + 1]).all():
            raise FloatingPointError(f"the SAM run diverged at step {t} (eta={eta}, rho={rho}); lower eta or rho")
    return QuadraticRun(
        eta=float(eta),
        rho=float(rho),
        eps=float(eps),
        eigenvalues=quad.eigenvalues.numpy().copy(),
        loss=loss,
        grad_norm=gnorm,
        sam_edge=edge,
        components=comps,
        w_final=params[0],
        beta=float(beta),
        nesterov=bool(nesterov),
        normalized=bool(normalized),
        sam_start=int(sam_start),
    )


def linear_thresholds(
    curvatures: Sequence[float] | np.ndarray,
    eta: float,
    r: float,
    betas: Sequence[float] | np.ndarray,
    nesterov: bool = False,
    steps: int = 4000,
) -> pd.DataFrame:
    """Where unnormalised SAM (``r > 0``) or GD (``r = 0``) with momentum ``beta`` stops converging, for each beta.

    For every ``beta`` a diagonal quadratic whose eigenvalues are ``curvatures`` (positive, increasing) is run
    from ``c_i = 1``, ``v = 0`` for ``steps`` steps of :func:`~samedge_lib.theory.updates.momentum_step` (all betas at
    once: one row of the parameter tensor per beta). Both rules are linear on a quadratic and act on each
    eigen-component separately, so every (beta, curvature) cell is its own experiment, and no edge formula is
    used. A component *grew* when its envelope (the largest ``|c_t|``) over the last quarter of the steps exceeds
    that over the second quarter: comparing two late windows, not the start, keeps the transient of the
    two-dimensional ``(c, v)`` recursion (which can amplify before it decays) out of the verdict. A component
    within a relative ``d`` of the threshold changes between the windows by about ``exp(+-steps d / 2)``, so
    ``steps`` must be large against the inverse of the grid's relative spacing.

    Returns one row per beta: ``beta``, ``lower`` (the largest curvature whose component shrank) and ``upper``
    (the smallest that grew); the threshold lies between them. Raises ValueError unless each row holds exactly
    one switch from shrinking to growing.
    """
    lam = _as_vector("curvatures", curvatures)
    if lam.numel() < 2 or not bool((lam > 0).all()) or not bool((lam.diff() > 0).all()):
        raise ValueError("curvatures must be at least 2 positive, strictly increasing values")
    b = _as_vector("betas", betas)
    if not bool(((b >= 0) & (b < 1)).all()) or (nesterov and not bool((b > 0).all())):
        raise ValueError(f"betas must lie in [0, 1) ((0, 1) with nesterov), got {betas!r}")
    if not (eta > 0 and r >= 0 and isinstance(steps, int) and steps >= 1):
        raise ValueError(f"need eta > 0, r >= 0 and an integer steps >= 1; got eta={eta}, r={r}, steps={steps}")
    h = lam.unsqueeze(0)  # the diagonal Hessian, shared by every row

    def grad_fn(params: Sequence[torch.Tensor]) -> tuple[torch.Tensor, Params]:
        (w,) = params  # elementwise: an overflowing cell becomes inf/nan without touching the others
        return 0.5 * (h * w * w).sum(), [h * w]

    params = [torch.ones(b.numel(), lam.numel(), dtype=DTYPE)]
    velocity = None
    beta_col = b.unsqueeze(1)
    early = torch.zeros_like(params[0])  # the envelope max |c_t| over the second quarter of the steps
    late = torch.zeros_like(params[0])  # ... and over the last quarter
    for t in range(steps):
        params, velocity, _ = momentum_step(
            params, velocity, grad_fn, eta, r, beta_col, nesterov=nesterov, normalized=False
        )
        if steps // 4 <= t < steps // 2:
            early = torch.maximum(early, params[0].abs())
        elif t >= steps - steps // 4:
            late = torch.maximum(late, params[0].abs())
    grew = (late > early) | ~torch.isfinite(late)
    rows = []
    for i, beta in enumerate(b.tolist()):
        idx = torch.nonzero(grew[i]).flatten()
        if idx.numel() == 0 or idx[0] == 0 or not bool(grew[i, int(idx[0]) :].all()):
            raise ValueError(
                f"beta={beta:g}: the curvature grid must straddle exactly one shrink/grow switch; widen or refine it"
            )
        k = int(idx[0])
        rows.append({"beta": beta, "lower": float(lam[k - 1]), "upper": float(lam[k])})
    return pd.DataFrame(rows)


@dataclass
class StabilityMap:
    """One-step growth factors of an eigen-component under SAM, over a grid.

    Attributes:
        alphas: the grid of ``alpha = eta ||g|| / (2 rho)``, shape ``(A,)``, increasing.
        ratios: the grid of ``eta lam / 2`` (curvature in units of GD's edge ``2/eta``), shape ``(Y,)``,
            increasing.
        growth: ``|c_{t+1}| / |c_t|`` observed after one SAM step, shape ``(Y, A)``.
        eta, rho: the step size and radius used (the map depends on them only through the two axes).

    """

    alphas: np.ndarray
    ratios: np.ndarray
    growth: np.ndarray
    eta: float
    rho: float

    @property
    def grows(self) -> np.ndarray:
        """Boolean ``(Y, A)``: the component grew in magnitude (``|c_{t+1}| > |c_t|``)."""
        return self.growth > 1.0


def stability_map(
    alphas: Sequence[float] | np.ndarray,
    ratios: Sequence[float] | np.ndarray,
    eta: float = 0.1,
    rho: float = 0.05,
    split: float = 0.6,
) -> StabilityMap:
    """Observe, for each ``(alpha, eta lam / 2)``, whether one SAM step grows or shrinks that component.

    For every grid cell a 2-D diagonal quadratic with eigenvalues ``(lam, lam/2)`` is built, with
    ``lam = 2 ratio / eta``, and a point whose gradient has norm ``||g|| = 2 rho alpha / eta`` exactly: a
    fraction ``split`` of the gradient lies along the probed direction, the rest along the second one (which
    is there only so that ``||g||`` can be set independently of the probed component). One actual SAM step
    (:func:`samedge_lib.theory.updates.sam_step`, ``eps = 0``, all cells at once through ``torch.func.vmap``) is
    taken and ``|c_1'| / |c_1|`` recorded. Nothing here uses the SAM-edge formula: the map is the ground
    truth the formula is checked against.
    """
    a = np.asarray(alphas, dtype=float)
    y = np.asarray(ratios, dtype=float)
    for name, arr in (("alphas", a), ("ratios", y)):
        if arr.ndim != 1 or arr.size < 2:
            raise ValueError(f"{name} must be a 1-D grid with at least 2 values")
        if not (np.isfinite(arr).all() and (arr > 0).all() and (np.diff(arr) > 0).all()):
            raise ValueError(f"{name} must be positive, finite and strictly increasing")
    if not eta > 0:
        raise ValueError(f"eta must be > 0, got {eta!r}")
    if not rho > 0:
        raise ValueError(f"rho must be > 0 (rho = 0 is GD, whose edge is simply 2/eta), got {rho!r}")
    if not 0 < split < 1:
        raise ValueError(f"split must lie in (0, 1), got {split!r}")

    yy, aa = np.meshgrid(y, a, indexing="ij")
    lam = torch.as_tensor(2.0 * yy / eta, dtype=DTYPE).reshape(-1)
    g = torch.as_tensor(2.0 * rho * aa / eta, dtype=DTYPE).reshape(-1)
    eig = torch.stack([lam, 0.5 * lam], dim=1)  # (cells, 2)
    g_parts = torch.stack([split * g, np.sqrt(1.0 - split**2) * g], dim=1)
    w0 = g_parts / eig  # c_i = g_i / lam_i, so ||H w0|| = ||g||

    def one_step(w: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        def grad_fn(params: Sequence[torch.Tensor]) -> tuple[torch.Tensor, Params]:
            (p,) = params
            return 0.5 * (h * p * p).sum(), [h * p]

        new, _ = sam_step([w], grad_fn, eta, rho, eps=0.0)
        return new[0]

    w1 = vmap(one_step)(w0, eig)
    growth = (w1[:, 0].abs() / w0[:, 0].abs()).reshape(yy.shape).numpy()
    return StabilityMap(alphas=a, ratios=y, growth=growth, eta=float(eta), rho=float(rho))


def stability_boundary(smap: StabilityMap) -> pd.DataFrame:
    """The observed grow/shrink boundary of a :class:`StabilityMap`, one row per ``alpha``.

    Columns: ``alpha``; ``lower`` (largest grid ratio that shrank), ``upper`` (smallest that grew),
    ``boundary`` (their midpoint, the estimate), ``theory`` (``R(alpha) = SAM-edge / (2/eta)`` from
    :func:`samedge_lib.theory.edges.edge_ratio`), ``distance`` (``|boundary - theory|``), ``half_spacing`` (the
    resolution of the estimate) and ``single_crossing`` (True when every cell below ``lower`` shrinks and
    every cell from ``upper`` up grows, i.e. the boundary is one clean threshold). Columns whose grid does
    not straddle the boundary get NaN for lower/upper/boundary.
    """
    grows = smap.grows
    rows = []
    for j, a in enumerate(smap.alphas):
        col = grows[:, j]
        idx = np.flatnonzero(col)
        theory = float(edge_ratio(float(a)))
        if idx.size == 0 or idx[0] == 0:
            lower = upper = boundary = np.nan
            single = bool(col.all()) or not col.any()
        else:
            k = int(idx[0])
            lower, upper = float(smap.ratios[k - 1]), float(smap.ratios[k])
            boundary = 0.5 * (lower + upper)
            single = bool(col[k:].all()) and not col[:k].any()
        rows.append(
            {
                "alpha": float(a),
                "lower": lower,
                "upper": upper,
                "boundary": boundary,
                "theory": theory,
                "distance": abs(boundary - theory),
                "half_spacing": 0.5 * (upper - lower),
                "single_crossing": single,
            }
        )
    return pd.DataFrame(rows)


def boundary_distance(smap: StabilityMap) -> float:
    """Largest ``|observed boundary - R(alpha)|`` over the ``alpha`` columns, in units of ``eta lam / 2``.

    Raises ValueError if some column has no clean single crossing inside the grid (extend ``ratios``).
    """
    b = stability_boundary(smap)
    bad = b[b["boundary"].isna() | ~b["single_crossing"]]
    if len(bad):
        raise ValueError(
            f"{len(bad)} alpha column(s) have no single grow/shrink crossing inside the ratio grid "
            f"(e.g. alpha={bad['alpha'].iloc[0]:.3g}); extend the ratio grid to straddle R(alpha)"
        )
    return float(b["distance"].max())


__all__ = [
    "Quadratic",
    "QuadraticRun",
    "StabilityMap",
    "boundary_distance",
    "linear_thresholds",
    "random_orthogonal",
    "sam_run",
    "stability_boundary",
    "stability_map",
    "variant_run",
]
