"""Eigen-solvers for symmetric operators (Hessians, explicit matrices).

Every solver takes any operator with ``.matvec``, ``.dim``, ``.dtype``, ``.device`` and
``.n_matvec`` (:class:`~samedge_lib.core.hessian.HessianOperator`,
:class:`~samedge_lib.core.hessian.DenseOperator`) and returns an :class:`EigResult`.

* :func:`lanczos` -- the book's measurement: top-``k`` eigenpairs (largest *algebraic* by default)
  by Lanczos with full reorthogonalisation, a residual-based stop and warm starts.
* :func:`official_power_iteration` -- the paper's estimator, reproduced exactly (the official code's
  ``hessian_norm.py``, https://github.com/google-deepmind/sam_edge). It estimates the largest
  *magnitude* ``||H||_op``, not the largest signed eigenvalue. Its stopping rule lives in one place,
  :func:`official_rule_stops`, which :func:`official_stop` also replays on a recorded trace.
* :func:`pyhessian_power_iteration` -- PyHessian-style deflated power iteration (benchmarks).
* :func:`eigsh_reference` -- scipy's ARPACK in float64 (a converged reference, or a solver to compare).
* :func:`relative_residuals` -- ``||H u - theta u|| / |theta|`` of given pairs (the certificate of a Ritz pair).

Numerics: the Lanczos basis, dot products and norms are kept in float64 while the products ``H v``
are computed in the operator's dtype. A float32 norm of ~1M entries is off by a relative ~5e-6
(accumulated rounding), which is where float32-only solvers plateau.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from samedge_lib.core.hessian import SymmetricOperator

#: Eigenvalue selections :func:`lanczos` understands.
WHICH: tuple[str, ...] = ("LA", "SA", "LM")

#: ``NORMALIZING_EPS`` of the official code (vector normalisation ``v / (||v|| + 1e-5)``).
OFFICIAL_NORMALIZING_EPS = 1e-5

#: The official power iteration stops once ``||Hv||`` changes by at most this fraction between products
#: (``hessian_norm.py`` of https://github.com/google-deepmind/sam_edge), or falls below :data:`OFFICIAL_ABS_TOL`.
OFFICIAL_REL_TOL = 1e-3
OFFICIAL_ABS_TOL = 1e-3
#: PyHessian's normalisation constant (``v / (||v|| + 1e-6)``) and denominator guard.
PYHESSIAN_EPS = 1e-6


@dataclass
class EigResult:
    """Eigenpairs found by a solver.

    Attributes:
        eigenvalues: ``[k]`` float64; for ``which="LA"`` in decreasing order, ``"SA"`` increasing,
            ``"LM"`` by decreasing magnitude; for the official estimator the norms ``||H v_i||``
            (>= 0) in decreasing order.
        eigenvectors: ``[dim, k]`` in the operator's dtype, unit columns, matching ``eigenvalues``.
        residuals: ``[k]`` relative residuals ``||H u - theta u|| / |theta|``: true residuals when
            they were computed, otherwise the solver's estimates (see each solver).
        n_matvec: products ``H v`` the call spent (all of them, residual checks included).
        n_iter: iterations (Lanczos steps, power-iteration sweeps).
        converged: whether the solver's stopping rule was met before its iteration cap.
        method: name of the solver.
        ritz_residuals: for Lanczos, the Ritz estimates ``beta_m |s_m| / |theta|`` that drove the stop.
        history: the estimate after every product, as ``(products so far, [k values], [k residual
            estimates or NaN])``: Lanczos' wanted Ritz values and Ritz estimates (from step ``k`` on), the
            official iteration's norms, PyHessian's found values followed by the current Rayleigh quotient.
            It costs nothing extra and lets a benchmark read off the error after any number of products.

    """

    eigenvalues: torch.Tensor
    eigenvectors: torch.Tensor
    residuals: torch.Tensor
    n_matvec: int
    n_iter: int
    converged: bool
    method: str
    ritz_residuals: torch.Tensor | None = None
    history: list[tuple[int, list[float], list[float]]] = field(default_factory=list)


# ---------------------------------------------------------------------------- validation helpers
def _check_operator(op: object) -> None:
    for name in ("matvec", "dim", "dtype", "device", "n_matvec"):
        if not hasattr(op, name):
            raise TypeError(
                f"the operator needs .matvec, .dim, .dtype, .device and .n_matvec; {type(op).__name__} "
                f"has no .{name} (use HessianOperator or DenseOperator)"
            )


def _check_k(k: int, dim: int) -> None:
    if isinstance(k, bool) or not isinstance(k, int):
        raise ValueError(f"k must be an int, got {k!r}")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if k > dim:
        raise ValueError(f"k = {k} exceeds the operator's dimension {dim}")


def _check_positive_int(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")


def _check_tol(name: str, value: float) -> None:
    if not (isinstance(value, int | float) and math.isfinite(value) and value >= 0):
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")


def _randn(dim: int, generator: torch.Generator | None, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """Standard normal vector drawn on the generator's device (CPU by default), moved to ``device``."""
    gen_device = generator.device if generator is not None else torch.device("cpu")
    return torch.randn(dim, generator=generator, dtype=dtype, device=gen_device).to(device)


def _norm64(x: torch.Tensor) -> float:
    return torch.linalg.vector_norm(x.double()).item()


def relative_residuals(op: SymmetricOperator, eigenvalues: torch.Tensor, eigenvectors: torch.Tensor) -> torch.Tensor:
    """``||H u_i - theta_i u_i|| / |theta_i|`` for the columns ``u_i`` of ``eigenvectors`` (``k`` products).

    For a unit vector ``u`` and its Rayleigh quotient ``theta``, some eigenvalue lies within
    ``||H u - theta u||`` of ``theta`` (Weyl / Bauer-Fike), so the relative residual bounds the relative
    error of ``theta``: the certificate of a Ritz pair. Products in ``op.dtype``, the rest in float64.
    """
    vals = eigenvalues.to(torch.float64)
    out = torch.zeros(vals.shape[0], dtype=torch.float64)
    for i in range(vals.shape[0]):
        u = eigenvectors[:, i].to(device=op.device, dtype=torch.float64)
        hu = op.matvec(u.to(op.dtype)).to(torch.float64)
        out[i] = _norm64(hu - vals[i].item() * u) / max(abs(vals[i].item()), torch.finfo(torch.float64).tiny)
    return out


# ---------------------------------------------------------------------------- Lanczos
def _default_max_iter(dim: int, k: int) -> int:
    return min(dim, max(200, 30 * k))


def _select(theta: torch.Tensor, k: int, which: str) -> torch.Tensor:
    """Indices of the ``k`` wanted Ritz values, in the order they are reported."""
    if which == "LA":
        return torch.argsort(theta, descending=True)[:k]
    if which == "SA":
        return torch.argsort(theta)[:k]
    return torch.argsort(theta.abs(), descending=True)[:k]


class _Basis:
    """Row-stored float64 Lanczos basis that grows in chunks (no up-front ``max_iter x dim`` block)."""

    def __init__(self, dim: int, capacity: int, device: torch.device) -> None:
        self.dim, self.device, self.limit = dim, device, capacity
        self.rows = torch.empty(min(capacity, 16), dim, dtype=torch.float64, device=device)
        self.size = 0

    def append(self, v: torch.Tensor) -> None:
        if self.size == self.rows.shape[0]:
            extra = min(self.rows.shape[0], self.limit - self.size)
            more = torch.empty(extra, self.dim, dtype=torch.float64, device=self.device)
            self.rows = torch.cat([self.rows, more])
        self.rows[self.size] = v
        self.size += 1

    @property
    def active(self) -> torch.Tensor:
        return self.rows[: self.size]

    def orthogonalise(self, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Project the basis out of ``w`` twice (classical Gram-Schmidt, 'twice is enough')."""
        Q = self.active
        h = Q @ w
        w = w - h @ Q
        h2 = Q @ w
        w = w - h2 @ Q
        return w, h + h2


def _start_vector(
    op: SymmetricOperator, v0: torch.Tensor | None, generator: torch.Generator | None
) -> tuple[torch.Tensor, bool]:
    """Unit float64 start vector and whether it came from ``v0``.

    A block ``v0`` (``[dim, j]``, e.g. the previous eigenvectors) is reduced to the sum of its
    normalised columns: the Krylov space of that sum contains all of them after ``j`` steps.
    """
    dim = op.dim
    if v0 is not None:
        if not isinstance(v0, torch.Tensor) or v0.ndim not in (1, 2) or v0.shape[0] != dim:
            shape = list(v0.shape) if isinstance(v0, torch.Tensor) else type(v0).__name__
            raise ValueError(f"v0 must have shape [{dim}] or [{dim}, j], got {shape}")
        cols = v0.detach().to(dtype=torch.float64, device=op.device).reshape(dim, -1)
        if cols.shape[1] == 0:
            raise ValueError(f"v0 has no columns (shape {list(v0.shape)}); pass None for a random start")
        if not torch.isfinite(cols).all():
            raise ValueError("v0 contains NaN or inf")
        norms = torch.linalg.vector_norm(cols, dim=0)
        keep = norms > 0
        if keep.any():
            start = (cols[:, keep] / norms[keep]).sum(dim=1)
            n = _norm64(start)
            if n > 1e-8 * math.sqrt(int(keep.sum())):
                return start / n, True
    start = _randn(dim, generator, torch.float64, op.device)
    return start / _norm64(start), False


def lanczos(
    op: SymmetricOperator,
    k: int = 1,
    which: str = "LA",
    v0: torch.Tensor | None = None,
    tol: float = 1e-6,
    max_iter: int | None = None,
    generator: torch.Generator | None = None,
    true_residuals: bool = False,
) -> EigResult:
    """Top-``k`` eigenpairs of a symmetric operator by Lanczos with full reorthogonalisation.

    Args:
        op: the operator (``.matvec``, ``.dim``, ``.dtype``, ``.device``, ``.n_matvec``).
        k: number of eigenpairs.
        which: ``"LA"`` largest algebraic (the default; the sharpness of a Hessian that also has
            negative curvature), ``"SA"`` smallest algebraic, ``"LM"`` largest magnitude.
        v0: warm start, ``[dim]`` or ``[dim, j]`` (e.g. the previous measurement's eigenvectors).
            A block is reduced to the normalised sum of its normalised columns (see Notes).
            ``None`` (or an all-zero ``v0``): a standard normal start drawn from ``generator``.
        tol: stop when every wanted Ritz pair has ``beta_m |s_m| <= tol * |theta|`` (relative
            residual estimate; with full reorthogonalisation it matches the true residual).
        max_iter: cap on Lanczos steps (= products); default ``min(dim, max(200, 30 k))``.
        generator: random source of the start vector and of restarts after a breakdown.
        true_residuals: also compute ``||H u - theta u|| / |theta|`` for the returned vectors
            (``k`` extra products) and report them in ``residuals``.

    Returns:
        :class:`EigResult` with ``ritz_residuals`` always filled in.

    Notes:
        The basis, the tridiagonal matrix, all dot products and norms are float64; products are
        computed in ``op.dtype``. Every new vector is orthogonalised twice against the whole basis,
        so the Ritz estimates are reliable and no spurious copies appear. If the Krylov space
        becomes invariant (``beta ~ 0``) before ``k`` pairs have converged, the iteration
        continues from a random vector orthogonal to the basis. Like every single-vector Krylov
        method it finds one vector per exactly repeated eigenvalue from a given start (a second
        copy is only found after such a restart).

        Warm start: for ``k`` vectors close to eigenvectors, the Krylov space of their sum
        contains all ``k`` after ``k`` steps and then refines them with a polynomial filter of
        growing degree. Measured alternatives, on a 2000 x 2000 matrix perturbed by 1e-3 to 5e-2 of
        its norm (top gaps 10 %, and a 1 % cluster) and tolerances 1e-3 to 1e-6: block Krylov from
        the block (``k`` products per step) and block start + single-vector residual expansion.
        They win only for tiny perturbations at loose tolerance (k = 3, tol 1e-3: 3 products
        against 6-8); otherwise the single-vector start from the sum needs as many or fewer
        (k = 3, tol 1e-6: 11-17 against 17-30), so it is the one implemented.

    """
    _check_operator(op)
    if which not in WHICH:
        raise ValueError(f"unknown which={which!r}; choose one of {', '.join(WHICH)}")
    dim = op.dim
    _check_k(k, dim)
    _check_tol("tol", tol)
    if max_iter is None:
        max_iter = _default_max_iter(dim, k)
    _check_positive_int("max_iter", max_iter)
    max_iter = min(max_iter, dim)
    if max_iter < k:
        raise ValueError(f"max_iter = {max_iter} is smaller than k = {k}; at least k steps are needed")
    start_matvec = op.n_matvec

    v, _ = _start_vector(op, v0, generator)
    basis = _Basis(dim, max_iter, op.device)
    basis.append(v)
    alphas: list[float] = []
    betas: list[float] = []  # betas[j] couples basis vectors j and j+1 (0 after a breakdown restart)
    anorm = 0.0
    converged = False
    theta = torch.zeros(0, dtype=torch.float64)
    S = torch.zeros(0, 0, dtype=torch.float64)
    idx = torch.zeros(0, dtype=torch.long)
    ritz_abs = torch.zeros(0, dtype=torch.float64)
    beta = 0.0
    history: list[tuple[int, list[float], list[float]]] = []

    for j in range(max_iter):
        w = op.matvec(basis.rows[j].to(op.dtype)).to(torch.float64)
        if not torch.isfinite(w).all():
            raise FloatingPointError(f"the operator returned NaN/inf at Lanczos step {j + 1}")
        w, h = basis.orthogonalise(w)
        alphas.append(h[j].item())
        beta = _norm64(w)
        anorm = max(anorm, abs(alphas[-1]) + beta + (betas[-1] if betas else 0.0))
        breakdown = beta <= 1e-12 * max(anorm, torch.finfo(torch.float64).tiny)

        m = j + 1
        T = torch.diag(torch.tensor(alphas, dtype=torch.float64))
        if m > 1:
            off = torch.tensor(betas, dtype=torch.float64)
            T += torch.diag(off, 1) + torch.diag(off, -1)
        if m >= k:
            theta, S = torch.linalg.eigh(T)
            idx = _select(theta, k, which)
            last = 0.0 if breakdown else beta
            ritz_abs = last * S[m - 1, idx].abs()
            floor = torch.finfo(torch.float64).eps * anorm
            history.append((m, theta[idx].tolist(), (ritz_abs / theta[idx].abs().clamp(min=floor)).tolist()))
            if bool((ritz_abs <= tol * torch.clamp(theta[idx].abs(), min=floor)).all()):
                converged = True
                break
        if m == max_iter:
            break
        if breakdown:  # invariant subspace found: continue from a fresh orthogonal direction
            for _ in range(3):
                r, _ = basis.orthogonalise(_randn(dim, generator, torch.float64, op.device))
                rn = _norm64(r)
                if rn > 1e-8:
                    break
            else:  # pragma: no cover - only when the basis already spans everything
                break
            betas.append(0.0)
            basis.append(r / rn)
        else:
            betas.append(beta)
            basis.append(w / beta)

    m = len(alphas)
    Q = basis.rows[:m]
    if theta.shape[0] != m:  # the loop ended before m >= k could be examined (cannot happen) or stale
        raise RuntimeError("internal error: Ritz values out of date")  # pragma: no cover
    vals = theta[idx].clone()
    vecs64 = Q.T @ S[:, idx].to(Q.device)
    vecs64 = vecs64 / torch.linalg.vector_norm(vecs64, dim=0)
    ritz_rel = ritz_abs / vals.abs().clamp(min=torch.finfo(torch.float64).tiny)
    residuals = relative_residuals(op, vals, vecs64) if true_residuals else ritz_rel.clone()
    return EigResult(
        eigenvalues=vals.cpu(),
        eigenvectors=vecs64.to(op.dtype),
        residuals=residuals.cpu(),
        n_matvec=op.n_matvec - start_matvec,
        n_iter=m,
        converged=converged,
        method=f"lanczos-{which}",
        ritz_residuals=ritz_rel.cpu(),
        history=history,
    )


# ---------------------------------------------------------------------------- the paper's estimator
def _official_normalize(x: torch.Tensor) -> torch.Tensor:
    return x / (_norm64(x) + OFFICIAL_NORMALIZING_EPS)


def _official_orthonormal_basis(vectors: list[torch.Tensor]) -> list[torch.Tensor]:
    """``get_orthonormal_basis`` of the official code: modified Gram-Schmidt, in order, that
    re-normalises (``/(norm + 1e-5)``) after every single projection.
    """
    vs = list(vectors)
    vs[0] = _official_normalize(vs[0])
    for i in range(len(vs)):
        for j in range(i + 1, len(vs)):
            dot = torch.dot(vs[i].double(), vs[j].double()).item()
            vs[j] = _official_normalize(vs[j] - dot * vs[i])
    return vs


def official_rule_stops(
    current: float | torch.Tensor,
    last: float | torch.Tensor,
    rel_tol: float = OFFICIAL_REL_TOL,
    abs_tol: float = OFFICIAL_ABS_TOL,
) -> bool:
    """The official power iteration's stopping rule (``hessian_norm.py``): True when it stops here.

    It keeps going while ``|n_t - n_{t-1}| > rel_tol * |n_t|`` and ``|n_t| > abs_tol``; for top-k the
    ``n`` are vectors of norms and ``|.|`` is their 2-norm. Before the first product ``n_0`` is a dummy
    1.0 (a vector of ones for top-k).
    """
    cur = torch.as_tensor(current, dtype=torch.float64)
    size = torch.linalg.vector_norm(cur).item()
    change = torch.linalg.vector_norm(cur - torch.as_tensor(last, dtype=torch.float64)).item()
    return not (change > size * rel_tol and size > abs_tol)


def official_stop(norms: list[float], rel_tol: float = OFFICIAL_REL_TOL, abs_tol: float = OFFICIAL_ABS_TOL) -> int:
    """Products after which :func:`official_power_iteration` (k = 1) stops, given the norms after each product.

    Replays :func:`official_rule_stops` on the trace of a run that ignored it (``rel_tol = abs_tol = 0``):
    from the same start the products are the same, so this is where the official run would have stopped.
    A trace on which the rule is never met gives its full length.
    """
    last = 1.0
    for t, cur in enumerate(norms, start=1):
        if official_rule_stops(cur, last, rel_tol, abs_tol):
            return t
        last = cur
    return len(norms)


def official_power_iteration(
    op: SymmetricOperator,
    k: int = 1,
    generator: torch.Generator | None = None,
    rel_tol: float = OFFICIAL_REL_TOL,
    abs_tol: float = OFFICIAL_ABS_TOL,
    max_iter: int = 100,
) -> EigResult:
    """The paper's sharpness estimator (``hessian_norm.CurvatureEstimator``), reproduced exactly.

    ``k = 1`` (``curvature_and_direction``): start from a standard normal vector normalised with
    ``/(||v|| + 1e-5)``; iterate ``p = H v``, ``n = ||p||``, ``v = p / n``; keep going until
    :func:`official_rule_stops` (``|n_new - n_old| <= rel_tol * n_new`` or ``|n_new| <= abs_tol``, with
    the dummy ``n_old = 1.0`` before the first product) or ``max_iter`` products were taken (so at
    least one and at most ``max_iter`` products). It returns ``v_T . (H v_{T-1}) = ||H v_{T-1}|| >= 0``:
    the largest eigenvalue **magnitude**, not the largest signed eigenvalue, and ``v_T``.

    ``k > 1`` (``hessian_top_eigenvalues``): block power iteration on ``k`` vectors (random, then
    orthonormalised); each sweep takes ``H v_i`` for all ``i``, records the norms, and
    orthonormalises the products by the official Gram-Schmidt (re-normalising with ``+1e-5``
    after every projection). :func:`official_rule_stops` runs on the vector of norms (2-norms of the
    vector and of its change; the dummy is a vector of ones). Reported eigenvalues are the norms sorted
    in decreasing order (the code assumes the top eigenvalues are positive); the vectors are the
    orthonormalised products of the last sweep in the same order.

    Use it with ``HessianOperator(..., method="finite_difference")`` to get the official numbers
    (including the 0.995 factor of the difference quotient). Norms and dot products are computed
    in float64 here (the original is float32), which does not change the stopping decisions
    beyond rounding. ``residuals`` are free by-products, relative to the returned norm ``n``:
    ``||H v - s n v|| / n`` for the last vector ``v`` whose product is known (``v_{T-1}``),
    with ``s`` the sign of ``v . H v``, so they measure whether ``(+-n, v)`` is an eigenpair.
    ``converged`` is False when the iteration cap stopped it.
    """
    _check_operator(op)
    dim = op.dim
    _check_k(k, dim)
    _check_tol("rel_tol", rel_tol)
    _check_tol("abs_tol", abs_tol)
    _check_positive_int("max_iter", max_iter)
    start_matvec = op.n_matvec

    if k == 1:
        v = _official_normalize(_randn(dim, generator, op.dtype, op.device))
        last_norm = current_norm = 1.0  # the official dummy before the first product
        t = 0
        prev_v, product = v, v
        history: list[tuple[int, list[float], list[float]]] = []
        while t == 0 or (t < max_iter and not official_rule_stops(current_norm, last_norm, rel_tol, abs_tol)):
            last_norm = current_norm
            prev_v = v
            product = op.matvec(v)
            current_norm = _norm64(product)
            v = product / current_norm if current_norm > 0 else product
            t += 1
            history.append((t, [current_norm], [math.nan]))
        stopped_by_rule = official_rule_stops(current_norm, last_norm, rel_tol, abs_tol)
        n = current_norm
        sign = 1.0 if torch.dot(prev_v.double(), product.double()).item() >= 0 else -1.0
        res = _norm64(product.double() - sign * n * prev_v.double()) / n if n > 0 else 0.0
        return EigResult(
            eigenvalues=torch.tensor([n], dtype=torch.float64),
            eigenvectors=v.reshape(dim, 1).to(op.dtype),
            residuals=torch.tensor([res], dtype=torch.float64),
            n_matvec=op.n_matvec - start_matvec,
            n_iter=t,
            converged=stopped_by_rule,
            method="official_power_iteration",
            history=history,
        )

    comps = _official_orthonormal_basis(
        [_official_normalize(_randn(dim, generator, op.dtype, op.device)) for _ in range(k)]
    )
    last_norms = current_norms = torch.ones(k, dtype=torch.float64)  # the official dummy
    t = 0
    prev_comps, products = comps, comps
    block_history: list[tuple[int, list[float], list[float]]] = []

    while t == 0 or (t < max_iter and not official_rule_stops(current_norms, last_norms, rel_tol, abs_tol)):
        last_norms = current_norms
        prev_comps = comps
        products = [op.matvec(c) for c in comps]
        current_norms = torch.tensor([_norm64(p) for p in products], dtype=torch.float64)
        comps = _official_orthonormal_basis(products)
        t += 1
        block_history.append((t * k, sorted(current_norms.tolist(), reverse=True), [math.nan] * k))
    stopped_by_rule = official_rule_stops(current_norms, last_norms, rel_tol, abs_tol)
    order = torch.argsort(-current_norms)
    res = torch.zeros(k, dtype=torch.float64)
    for i in range(k):
        n = current_norms[i].item()
        p64, v64 = products[i].double(), prev_comps[i].double()
        sign = 1.0 if torch.dot(v64, p64).item() >= 0 else -1.0
        res[i] = _norm64(p64 - sign * n * v64 / max(_norm64(v64), 1e-300)) / n if n > 0 else 0.0
    return EigResult(
        eigenvalues=current_norms[order],
        eigenvectors=torch.stack([comps[i] for i in order.tolist()], dim=1).to(op.dtype),
        residuals=res[order],
        n_matvec=op.n_matvec - start_matvec,
        n_iter=t,
        converged=stopped_by_rule,
        method="official_power_iteration",
        history=block_history,
    )


# ---------------------------------------------------------------------------- PyHessian-style
def pyhessian_power_iteration(
    op: SymmetricOperator,
    k: int = 1,
    tol: float = 1e-3,
    max_iter: int = 100,
    generator: torch.Generator | None = None,
) -> EigResult:
    """PyHessian's ``eigenvalues()``: deflated power iteration with a Rayleigh-quotient stop.

    For each of the ``k`` eigenpairs in turn: draw a standard normal start, normalise it
    (``/(||v|| + 1e-6)``); repeat up to ``max_iter`` times: orthogonalise ``v`` against the
    eigenvectors found so far and normalise, take ``H v``, the Rayleigh quotient ``mu = H v . v``,
    and ``v = normalise(H v)``; stop once ``|mu_old - mu| / (|mu_old| + 1e-6) < tol`` (the reported
    value is then ``mu_old``, as in PyHessian). Eigenvalues are signed, reported in the order found
    (roughly decreasing magnitude). ``residuals`` are the free ``||H v - mu v|| / |mu|`` of the last
    product. ``converged`` is True when every pair met the tolerance before ``max_iter``.
    """
    _check_operator(op)
    dim = op.dim
    _check_k(k, dim)
    _check_tol("tol", tol)
    _check_positive_int("max_iter", max_iter)
    start_matvec = op.n_matvec

    def normalise(x: torch.Tensor) -> torch.Tensor:
        return x / (_norm64(x) + PYHESSIAN_EPS)

    values: list[float] = []
    vectors: list[torch.Tensor] = []
    residuals: list[float] = []
    all_converged = True
    sweeps = 0
    history: list[tuple[int, list[float], list[float]]] = []
    for _ in range(k):
        v = normalise(_randn(dim, generator, op.dtype, op.device))
        value: float | None = None
        res = float("nan")
        met = False
        for _ in range(max_iter):
            for u in vectors:
                v = v - torch.dot(u.double(), v.double()).item() * u
            v = normalise(v)
            hv = op.matvec(v)
            sweeps += 1
            mu = torch.dot(hv.double(), v.double()).item()
            res = _norm64(hv.double() - mu * v.double()) / max(abs(mu), 1e-300)
            history.append((sweeps, [*values, mu], [*residuals, res]))
            v = normalise(hv)
            if value is not None and abs(value - mu) / (abs(value) + PYHESSIAN_EPS) < tol:
                met = True
                break
            value = mu
        assert value is not None
        all_converged &= met
        values.append(value)
        vectors.append(v)
        residuals.append(res)
    return EigResult(
        eigenvalues=torch.tensor(values, dtype=torch.float64),
        eigenvectors=torch.stack(vectors, dim=1).to(op.dtype),
        residuals=torch.tensor(residuals, dtype=torch.float64),
        n_matvec=op.n_matvec - start_matvec,
        n_iter=sweeps,
        converged=all_converged,
        method="pyhessian_power_iteration",
        history=history,
    )


# ---------------------------------------------------------------------------- scipy reference
def eigsh_reference(
    op: SymmetricOperator,
    k: int = 1,
    which: str = "LA",
    tol: float = 0.0,
    generator: torch.Generator | None = None,
    true_residuals: bool = True,
) -> EigResult:
    """Eigenpairs from scipy's ARPACK (``eigsh``, implicitly restarted Lanczos) in float64.

    Products are computed in ``op.dtype`` and converted to float64. ARPACK needs ``k < dim``.
    ``tol = 0`` asks ARPACK for machine precision (a converged reference); a positive ``tol`` is its
    relative Ritz-residual stop, the same criterion as :func:`lanczos`'s ``tol``, so the two can be
    compared at equal accuracy. ``residuals`` are true residuals (``k`` extra products, counted in
    ``n_matvec``) when ``true_residuals``, else NaN (ARPACK does not return its estimates). ``n_iter``
    is the number of products ARPACK itself took. The ordering follows :func:`lanczos`.
    """
    import numpy as np
    from scipy.sparse.linalg import LinearOperator, eigsh

    _check_operator(op)
    if which not in WHICH:
        raise ValueError(f"unknown which={which!r}; choose one of {', '.join(WHICH)}")
    dim = op.dim
    _check_k(k, dim)
    if k >= dim:
        raise ValueError(f"ARPACK needs k < dim, got k = {k}, dim = {dim}; use a dense eigensolver instead")
    _check_tol("tol", tol)
    start_matvec = op.n_matvec

    def mv(x: np.ndarray) -> np.ndarray:
        y = op.matvec(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float64).reshape(-1)).to(op.device))
        return y.detach().to(torch.float64).cpu().numpy()

    lin = LinearOperator((dim, dim), matvec=mv, dtype=np.float64)
    start = _randn(dim, generator, torch.float64, torch.device("cpu")).numpy()
    vals, vecs = eigsh(lin, k=k, which=which, tol=tol, v0=start)
    theta = torch.from_numpy(vals)
    order = _select(theta, k, which)
    theta = theta[order]
    U = torch.from_numpy(vecs)[:, order].to(op.device)
    n_arpack = op.n_matvec - start_matvec
    res = relative_residuals(op, theta, U) if true_residuals else torch.full((k,), math.nan, dtype=torch.float64)
    return EigResult(
        eigenvalues=theta,
        eigenvectors=U.to(op.dtype),
        residuals=res,
        n_matvec=op.n_matvec - start_matvec,
        n_iter=n_arpack,
        converged=True,
        method=f"eigsh-{which}",
    )
