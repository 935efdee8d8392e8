"""Hessian-vector products behind one linear-operator interface.

Every sharpness number in the book comes from a symmetric operator ``v -> H v`` on flat vectors.
:class:`HessianOperator` provides it for the Hessian of a batch loss at a fixed point ``w``, with
interchangeable ways of computing the product (the *HVP method*); :class:`DenseOperator` provides
the same interface for an explicit matrix (quadratics, tests, references). The solvers in
:mod:`samedge_lib.core.eigen` accept either.

HVP methods (``HVP_METHODS``):

``"exact"``
    Double backward through a gradient built **once** with ``create_graph=True`` and reused for
    every vector (``retain_graph=True``). The fastest exact method on CPU (about 1.5-2x a gradient
    per product, plus one gradient to build the graph per point, in ``results/benchmark/``; it holds
    several gradients' worth of memory while the operator lives). The same graph also yields
    :meth:`HessianOperator.gradient`, so ``g`` costs nothing extra.
``"exact_fresh"``
    Plain double backward that rebuilds the gradient graph for every vector (2.6-2.8x a gradient
    on CPU); kept for benchmarks.
``"forward_over_reverse"``
    ``torch.func.jvp`` of ``torch.func.grad`` (3-4x a gradient on CPU, may be faster on GPUs). Not of
    ``torch.func.jacrev``: in torch 2.13 that route gets the mixed second derivatives of a LayerNorm
    block wrong (``tests/test_hessian.py`` checks the route on the CNN's LayerNorm).
``"finite_difference"``
    The **official estimator** (``hessian_norm.py`` of the official code, https://github.com/google-deepmind/sam_edge):
    for a unit vector ``u``,
    ``(grad(w + eps u) - grad(w - eps u)) / (2 eps + 1e-5)`` with ``eps = 1e-3``. The denominator
    ``0.00201`` scales every product by ``0.995025`` (a systematic -0.5 %), reproduced on
    purpose. It is biased on ReLU networks (a ``+-eps`` step flips activation patterns), and in
    float32 it is noisy: ``eps * u`` has entries of order ``1e-3 / sqrt(dim)``, so rounding ``w +
    eps u`` to float32 already perturbs the step by a relative ``~1e-7 |w| / |eps u|``; TF32
    matmuls (GPU) make it far worse, so keep TF32 off when using this method.

Exact methods differentiate the current linear piece of a ReLU network (as Cohen et al., PyHessian
and every Lanczos code do); the finite difference straddles kinks.

The operator never mutates the caller's tensors: it works on detached clones of ``params``.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import Protocol, runtime_checkable

import torch

from samedge_lib.record.config import HVP_METHODS as _RECORD_HVP_METHODS

#: ``loss_fn(params) -> scalar loss`` on one fixed batch, computed functionally from ``params``.
LossFn = Callable[[Sequence[torch.Tensor]], torch.Tensor]

#: The HVP methods :class:`HessianOperator` accepts: the run record's vocabulary
#: (:data:`samedge_lib.record.config.HVP_METHODS`), so a configuration is checked without importing torch.
HVP_METHODS: tuple[str, ...] = _RECORD_HVP_METHODS

#: ``DIFFERENTIATION_STEP_SIZE`` of the official code: the finite-difference step along a unit vector.
FD_STEP = 1e-3
#: ``NORMALIZING_EPS`` of the official code, added to the finite-difference denominator ``2 eps``.
FD_DENOMINATOR_EPS = 1e-5

#: Nominal cost of one matvec in gradient evaluations (forward + backward passes), per method.
#: ``exact`` additionally pays one gradient evaluation per point to build the graph (shared with
#: :meth:`HessianOperator.gradient`). Measured CPU wall-clock ratios differ (see module docstring).
GRAD_EVALS_PER_MATVEC: dict[str, int] = {
    "exact": 1,
    "exact_fresh": 2,
    "forward_over_reverse": 2,
    "finite_difference": 2,
}


@runtime_checkable
class SymmetricOperator(Protocol):
    """What the eigen-solvers need: a symmetric linear map on flat vectors of length ``dim``."""

    @property
    def dim(self) -> int:
        """Length of the flat vectors the operator acts on."""
        ...

    @property
    def dtype(self) -> torch.dtype:
        """Dtype in which products are computed."""
        ...

    @property
    def device(self) -> torch.device:
        """Device of the vectors."""
        ...

    n_matvec: int

    def matvec(self, v: torch.Tensor) -> torch.Tensor:
        """``H v`` for a flat vector ``v`` of length ``dim``."""
        ...


def _check_vector(v: torch.Tensor, dim: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    if not isinstance(v, torch.Tensor):
        raise TypeError(f"matvec expects a torch.Tensor, got {type(v).__name__}")
    if v.ndim != 1 or v.shape[0] != dim:
        raise ValueError(f"matvec expects a flat vector of shape [{dim}], got shape {list(v.shape)}")
    return v.detach().to(dtype=dtype, device=device)


def _check_matrix(V: torch.Tensor, dim: int) -> None:
    if not isinstance(V, torch.Tensor) or V.ndim != 2 or V.shape[0] != dim:
        shape = list(V.shape) if isinstance(V, torch.Tensor) else type(V).__name__
        raise ValueError(f"matmat expects a matrix of shape [{dim}, k], got {shape}")


class DenseOperator:
    """An explicit symmetric matrix behind the operator interface (quadratics, tests, references).

    Args:
        H: a square matrix; it must be symmetric up to ``symmetry_rtol * max|H|`` and is stored
            symmetrised, ``(H + H^T) / 2``, so that the solvers see an exactly symmetric operator.
        symmetry_rtol: tolerance of the symmetry check; default ``1000 * finfo(H.dtype).eps``.

    """

    def __init__(self, H: torch.Tensor, symmetry_rtol: float | None = None) -> None:
        if not isinstance(H, torch.Tensor) or H.ndim != 2 or H.shape[0] != H.shape[1]:
            shape = list(H.shape) if isinstance(H, torch.Tensor) else type(H).__name__
            raise ValueError(f"DenseOperator needs a square matrix, got {shape}")
        if H.shape[0] == 0:
            raise ValueError("DenseOperator needs a non-empty matrix")
        if not H.is_floating_point():
            raise ValueError(f"DenseOperator needs a floating-point matrix, got dtype {H.dtype}")
        H = H.detach()
        rtol = 1000 * torch.finfo(H.dtype).eps if symmetry_rtol is None else symmetry_rtol
        asym = (H - H.T).abs().max().item()
        scale = H.abs().max().item()
        if asym > rtol * max(scale, torch.finfo(H.dtype).tiny):
            raise ValueError(
                f"DenseOperator needs a symmetric matrix: max|H - H^T| = {asym:.3g} exceeds "
                f"{rtol:.3g} * max|H| = {rtol * scale:.3g}; symmetrise it or raise symmetry_rtol"
            )
        self.matrix = (H + H.T) / 2
        self.n_matvec = 0
        #: Always 0: kept so that benchmark code can treat all operators alike.
        self.n_grad_evals = 0

    @property
    def dim(self) -> int:
        """Number of rows (= columns) of the matrix."""
        return self.matrix.shape[0]

    @property
    def dtype(self) -> torch.dtype:
        """Dtype of the matrix (products are computed in it)."""
        return self.matrix.dtype

    @property
    def device(self) -> torch.device:
        """Device of the matrix."""
        return self.matrix.device

    def matvec(self, v: torch.Tensor) -> torch.Tensor:
        """``H v`` (counts one matvec)."""
        v = _check_vector(v, self.dim, self.dtype, self.device)
        self.n_matvec += 1
        return self.matrix @ v

    def matmat(self, V: torch.Tensor) -> torch.Tensor:
        """``H V`` for ``V`` of shape ``[dim, k]`` (counts ``k`` matvecs)."""
        _check_matrix(V, self.dim)
        self.n_matvec += V.shape[1]
        return self.matrix @ V.detach().to(dtype=self.dtype, device=self.device)


class HessianOperator:
    """The Hessian of a batch loss at a fixed point, as a linear operator on flat vectors.

    Args:
        loss_fn: ``loss_fn(params) -> scalar`` computing the loss on one fixed batch from the
            given list of tensors (e.g. via ``torch.func.functional_call``). It must be a pure
            function of its argument: it is called at shifted points and under ``torch.func``.
        params: the point ``w`` as a list of tensors (all of one floating dtype and device). They
            are cloned and detached; the caller's tensors are never modified, and later in-place
            changes to them do not affect the operator.
        method: one of :data:`HVP_METHODS` (see the module docstring).
        fd_eps: finite-difference step along the unit vector (official: ``1e-3``).
        fd_denominator_eps: constant added to ``2 * fd_eps`` in the denominator (official: ``1e-5``;
            set 0 for an unbiased central difference).

    Counters: ``n_matvec`` counts products, ``n_grad_evals`` counts nominal gradient evaluations
    (see :data:`GRAD_EVALS_PER_MATVEC`; :meth:`gradient` costs one, shared with the ``exact``
    graph), so that benchmarks can compare methods and solvers on one scale.

    """

    def __init__(
        self,
        loss_fn: LossFn,
        params: Sequence[torch.Tensor],
        method: str = "exact",
        fd_eps: float = FD_STEP,
        fd_denominator_eps: float = FD_DENOMINATOR_EPS,
    ) -> None:
        if not callable(loss_fn):
            raise TypeError(f"loss_fn must be callable, got {type(loss_fn).__name__}")
        if method not in HVP_METHODS:
            raise ValueError(f"unknown HVP method {method!r}; choose one of {', '.join(HVP_METHODS)}")
        params = list(params)
        if not params:
            raise ValueError("params is empty: pass the list of parameter tensors the loss depends on")
        for i, p in enumerate(params):
            if not isinstance(p, torch.Tensor) or not p.is_floating_point():
                raise ValueError(f"params[{i}] must be a floating-point tensor, got {p!r:.80}")
        dtypes = {p.dtype for p in params}
        devices = {p.device for p in params}
        if len(dtypes) > 1 or len(devices) > 1:
            raise ValueError(
                f"all params must share one dtype and device, got dtypes {sorted(map(str, dtypes))} "
                f"and devices {sorted(map(str, devices))}"
            )
        if not fd_eps > 0:
            raise ValueError(f"fd_eps must be > 0, got {fd_eps!r}")
        if not fd_denominator_eps >= 0:
            raise ValueError(f"fd_denominator_eps must be >= 0, got {fd_denominator_eps!r}")
        self.loss_fn = loss_fn
        self.method = method
        self.fd_eps = float(fd_eps)
        self.fd_denominator_eps = float(fd_denominator_eps)
        self._point = [p.detach().clone() for p in params]
        self._shapes = [p.shape for p in self._point]
        self._numels = [p.numel() for p in self._point]
        self._dim = sum(self._numels)
        self.n_matvec = 0
        self.n_grad_evals = 0
        self._loss: torch.Tensor | None = None
        self._grad_flat: torch.Tensor | None = None
        # "exact": leaves and the differentiable gradient, built once and reused.
        self._leaves: list[torch.Tensor] | None = None
        self._graph_grads: list[torch.Tensor | None] | None = None

    # ------------------------------------------------------------------ shape helpers
    @property
    def dim(self) -> int:
        """Total number of parameters (length of the flat vectors)."""
        return self._dim

    @property
    def dtype(self) -> torch.dtype:
        """Dtype of the parameters; products are computed in it."""
        return self._point[0].dtype

    @property
    def device(self) -> torch.device:
        """Device of the parameters."""
        return self._point[0].device

    @property
    def params(self) -> list[torch.Tensor]:
        """The (cloned, detached) point ``w`` at which the Hessian is taken."""
        return list(self._point)

    def flatten(self, tensors: Sequence[torch.Tensor]) -> torch.Tensor:
        """Concatenate a list shaped like ``params`` into one flat vector."""
        tensors = list(tensors)
        if len(tensors) != len(self._shapes) or any(t.shape != s for t, s in zip(tensors, self._shapes, strict=True)):
            got = [list(t.shape) for t in tensors]
            raise ValueError(f"flatten expects tensors of shapes {[list(s) for s in self._shapes]}, got {got}")
        return torch.cat([t.reshape(-1) for t in tensors])

    def unflatten(self, flat: torch.Tensor) -> list[torch.Tensor]:
        """Split a flat vector into views shaped like ``params``."""
        if flat.ndim != 1 or flat.shape[0] != self._dim:
            raise ValueError(f"unflatten expects a flat vector of shape [{self._dim}], got {list(flat.shape)}")
        return [c.view(s) for c, s in zip(torch.split(flat, self._numels), self._shapes, strict=True)]

    # ------------------------------------------------------------------ gradients
    def _fresh_leaves(self, point: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        return [p.detach().requires_grad_(True) for p in point]

    def _loss_at(self, leaves: Sequence[torch.Tensor]) -> torch.Tensor:
        loss = self.loss_fn(leaves)
        if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
            raise ValueError(f"loss_fn must return a scalar tensor, got {loss!r:.80}")
        return loss.reshape(())

    def _zeros_for_none(self, grads: Sequence[torch.Tensor | None]) -> list[torch.Tensor]:
        return [torch.zeros_like(p) if g is None else g for g, p in zip(grads, self._point, strict=True)]

    def _plain_gradient(self, point: Sequence[torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        leaves = self._fresh_leaves(point)
        with torch.enable_grad():
            loss = self._loss_at(leaves)
            grads = torch.autograd.grad(loss, leaves, allow_unused=True) if loss.requires_grad else [None] * len(leaves)
        self.n_grad_evals += 1
        return loss.detach(), self._zeros_for_none(grads)

    def _build_graph(self) -> None:
        """Build (once) the differentiable gradient that every ``exact`` product reuses."""
        if self._graph_grads is not None:
            return
        leaves = self._fresh_leaves(self._point)
        with torch.enable_grad():
            loss = self._loss_at(leaves)
            if loss.requires_grad:
                grads = list(torch.autograd.grad(loss, leaves, create_graph=True, allow_unused=True))
            else:
                grads = [None] * len(leaves)
        self.n_grad_evals += 1
        self._leaves = leaves
        self._graph_grads = grads
        self._loss = loss.detach()
        self._grad_flat = torch.cat(
            [
                (torch.zeros_like(p) if g is None else g.detach()).reshape(-1)
                for g, p in zip(grads, self._point, strict=True)
            ]
        )

    def gradient(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(loss, flat gradient)`` at the point, computed once and cached (both detached)."""
        if self._grad_flat is None:
            if self.method == "exact":
                self._build_graph()
            else:
                loss, grads = self._plain_gradient(self._point)
                self._loss = loss
                self._grad_flat = self.flatten(grads)
        assert self._loss is not None and self._grad_flat is not None
        return self._loss, self._grad_flat

    # ------------------------------------------------------------------ products
    def matvec(self, v: torch.Tensor) -> torch.Tensor:
        """``H v`` for a flat vector ``v`` (cast to the operator's dtype and device)."""
        v = _check_vector(v, self._dim, self.dtype, self.device)
        self.n_matvec += 1
        if self.method == "exact":
            return self._hvp_exact(v)
        if self.method == "exact_fresh":
            return self._hvp_exact_fresh(v)
        if self.method == "forward_over_reverse":
            return self._hvp_forward_over_reverse(v)
        return self._hvp_finite_difference(v)

    def matmat(self, V: torch.Tensor) -> torch.Tensor:
        """``H V`` for ``V`` of shape ``[dim, k]``, column by column (counts ``k`` matvecs)."""
        _check_matrix(V, self._dim)
        if V.shape[1] == 0:
            return torch.empty(self._dim, 0, dtype=self.dtype, device=self.device)
        return torch.stack([self.matvec(V[:, j]) for j in range(V.shape[1])], dim=1)

    def _hvp_exact(self, v: torch.Tensor) -> torch.Tensor:
        self._build_graph()
        assert self._graph_grads is not None and self._leaves is not None
        self.n_grad_evals += GRAD_EVALS_PER_MATVEC["exact"]
        pairs = [(g, vi) for g, vi in zip(self._graph_grads, self.unflatten(v), strict=True) if g is not None]
        pairs = [(g, vi) for g, vi in pairs if g.requires_grad]
        if not pairs:  # the gradient does not depend on the parameters: H = 0
            return torch.zeros_like(v)
        with torch.enable_grad():
            hv = torch.autograd.grad(
                [g for g, _ in pairs],
                self._leaves,
                grad_outputs=[vi for _, vi in pairs],
                retain_graph=True,
                allow_unused=True,
            )
        return self.flatten(self._zeros_for_none(hv)).detach()

    def _hvp_exact_fresh(self, v: torch.Tensor) -> torch.Tensor:
        self.n_grad_evals += GRAD_EVALS_PER_MATVEC["exact_fresh"]
        leaves = self._fresh_leaves(self._point)
        with torch.enable_grad():
            loss = self._loss_at(leaves)
            if not loss.requires_grad:
                return torch.zeros_like(v)
            grads = torch.autograd.grad(loss, leaves, create_graph=True, allow_unused=True)
            pairs = [(g, vi) for g, vi in zip(grads, self.unflatten(v), strict=True) if g is not None]
            pairs = [(g, vi) for g, vi in pairs if g.requires_grad]
            if not pairs:
                return torch.zeros_like(v)
            hv = torch.autograd.grad(
                [g for g, _ in pairs], leaves, grad_outputs=[vi for _, vi in pairs], allow_unused=True
            )
        return self.flatten(self._zeros_for_none(hv)).detach()

    def _hvp_forward_over_reverse(self, v: torch.Tensor) -> torch.Tensor:
        self.n_grad_evals += GRAD_EVALS_PER_MATVEC["forward_over_reverse"]
        loss_fn = self.loss_fn

        def loss_of_tuple(*ps: torch.Tensor) -> torch.Tensor:
            return loss_fn(list(ps)).reshape(())

        argnums = tuple(range(len(self._point)))
        grad_fn = torch.func.grad(loss_of_tuple, argnums=argnums)
        with warnings.catch_warnings():
            # torch's first forward-AD call loads its jvp decompositions through torch.jit.script,
            # which warns about its own deprecation; nothing the caller can act on.
            warnings.filterwarnings("ignore", message=r".*torch\.jit\.script.*", category=DeprecationWarning)
            _, hv = torch.func.jvp(grad_fn, tuple(self._point), tuple(self.unflatten(v)))
        return self.flatten([h.detach() for h in hv])

    def _hvp_finite_difference(self, v: torch.Tensor) -> torch.Tensor:
        # The difference is taken along the unit vector u = v/||v|| (the official code only ever
        # passes unit vectors) and rescaled by ||v||, so the map is positively homogeneous.
        scale = torch.linalg.vector_norm(v.double()).item()
        if scale == 0.0:
            return torch.zeros_like(v)
        u = self.unflatten(v / scale)
        eps = self.fd_eps
        plus = [p + eps * ui for p, ui in zip(self._point, u, strict=True)]
        minus = [p - eps * ui for p, ui in zip(self._point, u, strict=True)]
        _, g_plus = self._plain_gradient(plus)
        _, g_minus = self._plain_gradient(minus)
        denom = 2.0 * eps + self.fd_denominator_eps
        return self.flatten([(gp - gm) / denom for gp, gm in zip(g_plus, g_minus, strict=True)]) * scale


def dense_hessian(loss_fn: LossFn, params: Sequence[torch.Tensor]) -> torch.Tensor:
    """The full Hessian ``[dim, dim]`` of ``loss_fn`` at ``params`` (tiny models only), symmetrised.

    It uses ``torch.autograd.functional.hessian`` on the flattened parameters, independently of
    the HVP code of :class:`HessianOperator`, so it can serve as a reference for it. The result has
    the dtype of ``params``: for a float64 reference pass float64 parameters and a loss whose data
    are float64 too.
    """
    params = [p.detach() for p in params]
    if not params:
        raise ValueError("params is empty: pass the list of parameter tensors the loss depends on")
    shapes = [p.shape for p in params]
    numels = [p.numel() for p in params]
    flat0 = torch.cat([p.reshape(-1) for p in params])

    def flat_loss(flat: torch.Tensor) -> torch.Tensor:
        parts = [c.view(s) for c, s in zip(torch.split(flat, numels), shapes, strict=True)]
        return loss_fn(parts).reshape(())

    with torch.enable_grad():
        try:  # vmap over the rows: ~100x faster than the Python loop for small models
            H = torch.autograd.functional.hessian(flat_loss, flat0, vectorize=True)
        except RuntimeError:  # an op without a batching rule: fall back to one backward per row
            H = torch.autograd.functional.hessian(flat_loss, flat0, vectorize=False)
    return ((H + H.T) / 2).detach()


def check_deterministic(op: SymmetricOperator, v: torch.Tensor, rtol: float = 0.0) -> bool:
    """Whether two products ``H v`` agree to ``||Hv_1 - Hv_2|| <= rtol ||Hv_1||`` (default: bitwise).

    Nondeterministic kernels (some GPU reductions, atomics) make repeated products differ, which
    breaks the assumptions of Lanczos at tight tolerances; probe once per setup. Costs 2 matvecs.
    """
    if rtol < 0:
        raise ValueError(f"rtol must be >= 0, got {rtol!r}")
    a = op.matvec(v)
    b = op.matvec(v)
    diff = torch.linalg.vector_norm((a - b).double()).item()
    return diff <= rtol * torch.linalg.vector_norm(a.double()).item()
