"""The paper's phenomenon in miniature: a tiny tanh network on which SAM sharpens to the SAM-edge (ch. 2 d).

A two-layer tanh network ``f(x) = tanh(x W1 + b1) w2`` (72 parameters with the defaults) is fitted full
batch, with the loss ``1/(2n) sum_i (f(x_i) - y_i)^2``, to a small synthetic regression problem whose
targets come from a random wider tanh "teacher". Started from a small initialisation (sharpness well below
``2/eta``), the network sharpens as it fits:

* under **GD** the top Hessian eigenvalue ``lambda1`` rises to ``2/eta`` and then hovers there (the edge
  of stability of Cohen et al., 2021);
* under **SAM** it rises only to the **SAM-edge** ``sam_edge(eta=eta, rho=rho, grad_norm=||g||)``, well below
  ``2/eta``, and then stays on it while the loss and ``||g||`` keep falling (Long & Bartlett, 2024).

Everything is float64 and small enough that ``lambda1`` is computed *exactly*, as the largest eigenvalue
(``torch.linalg.eigvalsh``) of the dense Hessian. Gradient and Hessian are written in closed form (a few
times faster than autograd at this size; the tests check both against autograd). The updates are
:func:`samedge_lib.theory.updates.sam_step` / :func:`samedge_lib.theory.updates.gd_step` (with the official ``1e-5`` in
SAM's normalisation) and the edges come from :mod:`samedge_lib.theory.edges`. A run of the defaults takes a few
seconds on one CPU core, and is deterministic given the seed.

The defaults (:class:`ToyProblem`, :data:`DEFAULT_ETA`, :data:`DEFAULT_RHO`, :data:`DEFAULT_STEPS`) were
chosen by experiment: they show a clear sharpening phase, and put the SAM-edge at about 0.7 of ``2/eta``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from samedge_lib.theory.edges import gd_edge, sam_edge
from samedge_lib.theory.rules import ASCENTS, UpdateRule
from samedge_lib.theory.updates import Params

DTYPE = torch.float64

#: Step size of the toy runs: ``2/eta = 2``.
DEFAULT_ETA = 1.0
#: SAM radius of the toy runs: the SAM-edge then sits around 0.65-0.8 of ``2/eta`` once ``||g||`` is small.
DEFAULT_RHO = 0.02
#: Number of full-batch steps: enough for the sharpening phase and a long stretch at the edge.
DEFAULT_STEPS = 2000
#: Take the exact top Hessian eigenvalue every this many steps (about 2 ms each).
DEFAULT_HESSIAN_EVERY = 5


@dataclass(frozen=True)
class ToyProblem:
    """The synthetic regression problem and the student network (all sizes small on purpose).

    Attributes:
        n: number of training points (full batch).
        dim: input dimension; inputs are standard Gaussian.
        width: hidden width of the student ``tanh(x W1 + b1) w2``; it has ``(dim + 2) width`` parameters.
        teacher_width: hidden width of the random teacher that makes the targets.
        teacher_scale: input scale of the teacher's tanh units (larger: a more nonlinear target).
        init_scale: the student's weights start as ``init_scale`` times the LeCun-normal initialisation
            (std ``1/sqrt(fan_in)``); a small value starts the network flat, so its sharpening is visible.
        seed: seeds the data, the teacher and the student initialisation (``torch.Generator``).

    """

    n: int = 100
    dim: int = 4
    width: int = 12
    teacher_width: int = 8
    teacher_scale: float = 2.0
    init_scale: float = 0.1
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("n", "dim", "width", "teacher_width"):
            value = getattr(self, name)
            if not (isinstance(value, int) and value >= 1):
                raise ValueError(f"ToyProblem.{name} must be a positive integer, got {value!r}")
        for name in ("teacher_scale", "init_scale"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ValueError(f"ToyProblem.{name} must be a positive number, got {value!r}")
        if not isinstance(self.seed, int):
            raise ValueError(f"ToyProblem.seed must be an integer, got {self.seed!r}")

    @property
    def num_params(self) -> int:
        """Number of parameters: ``dim * width`` weights, ``width`` biases, ``width`` output weights."""
        return (self.dim + 2) * self.width


class ToyModel:
    """A built :class:`ToyProblem`: data, initial parameters, loss, gradient function and exact Hessian.

    The parameters are one flat float64 vector ``w = [vec(W1), b1, w2]``, so that the dense Hessian is a
    plain ``P x P`` matrix.
    """

    def __init__(self, problem: ToyProblem) -> None:
        self.problem = problem
        p = problem
        gen = torch.Generator().manual_seed(p.seed)
        self.x = torch.randn(p.n, p.dim, generator=gen, dtype=DTYPE)
        u = torch.randn(p.dim, p.teacher_width, generator=gen, dtype=DTYPE) / math.sqrt(p.dim)
        a = torch.randn(p.teacher_width, generator=gen, dtype=DTYPE)
        y = torch.tanh(p.teacher_scale * self.x @ u) @ a
        self.y = (y - y.mean()) / y.std()  # centred, unit-variance targets
        w1 = p.init_scale * torch.randn(p.dim, p.width, generator=gen, dtype=DTYPE) / math.sqrt(p.dim)
        w2 = p.init_scale * torch.randn(p.width, generator=gen, dtype=DTYPE) / math.sqrt(p.width)
        self.w0 = torch.cat([w1.reshape(-1), torch.zeros(p.width, dtype=DTYPE), w2])

    def _unpack(self, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        d, h = self.problem.dim, self.problem.width
        if w.shape != (self.problem.num_params,):
            raise ValueError(f"w must have shape ({self.problem.num_params},), got {tuple(w.shape)}")
        return w[: d * h].reshape(d, h), w[d * h : d * h + h], w[d * h + h :]

    def predict(self, w: torch.Tensor) -> torch.Tensor:
        """The network's outputs on the training inputs."""
        w1, b1, w2 = self._unpack(w)
        return torch.tanh(self.x @ w1 + b1) @ w2

    def loss(self, w: torch.Tensor) -> torch.Tensor:
        """``1/(2n) sum_i (f(x_i) - y_i)^2`` on the full training set (differentiable by autograd)."""
        return 0.5 * ((self.predict(w) - self.y) ** 2).mean()

    def _forward(self, w: torch.Tensor) -> dict[str, torch.Tensor]:
        """Everything the closed-form derivatives need: activations, tanh derivatives, residuals, Jacobian.

        The Jacobian ``J`` (``n x P``) of the outputs has rows
        ``[w2_j tanh'(z_ij) [x_i, 1]_k ..., tanh(z_ij) ...]`` in the parameter order ``[vec(W1), b1, w2]``
        (``vec(W1)`` and ``b1`` together are the row-major flattening of the ``(dim + 1) x width`` matrix
        ``[W1; b1]``).
        """
        w1, b1, w2 = self._unpack(w)
        n = self.x.shape[0]
        t = torch.tanh(self.x @ w1 + b1)  # (n, h)
        s1 = 1.0 - t * t  # tanh'
        r = t @ w2 - self.y  # residuals (n,)
        x1 = torch.cat([self.x, torch.ones(n, 1, dtype=DTYPE)], dim=1)  # inputs with a 1 for the bias
        j_first = (w2 * s1).unsqueeze(1) * x1.unsqueeze(2)  # (n, d+1, h)
        jac = torch.cat([j_first.reshape(n, -1), t], dim=1)  # (n, P)
        return {"t": t, "s1": s1, "r": r, "x1": x1, "jac": jac, "w2": w2}

    def grad_fn(self, params: Sequence[torch.Tensor]) -> tuple[torch.Tensor, Params]:
        """The gradient function for :mod:`samedge_lib.theory.updates`: ``[w] -> (loss(w), [grad(w)])``.

        Closed form ``grad = J^T r / n`` (several times faster than autograd on a model this small; the tests
        check it against autograd).
        """
        if len(params) != 1:
            raise ValueError(f"the toy model takes one flat parameter vector, got {len(params)} tensors")
        fw = self._forward(params[0].detach())
        n = fw["r"].shape[0]
        return 0.5 * (fw["r"] ** 2).mean(), [fw["jac"].T @ fw["r"] / n]

    def hessian(self, w: torch.Tensor) -> torch.Tensor:
        """The dense ``P x P`` Hessian of the loss at ``w``: exact, float64, in closed form.

        ``H = (J^T J + sum_i r_i Hess f_i) / n``. The second derivatives of ``f_i`` are nonzero only inside
        one hidden unit ``j``: ``w2_j tanh''(z_ij) [x_i,1][x_i,1]^T`` within its first-layer weights and
        ``tanh'(z_ij) [x_i,1]`` between those and its output weight ``w2_j``. The tests check it against
        ``torch.autograd.functional.hessian``.
        """
        fw = self._forward(w.detach())
        t, s1, r, x1, jac, w2 = fw["t"], fw["s1"], fw["r"], fw["x1"], fw["jac"], fw["w2"]
        n, h = t.shape
        d1 = x1.shape[1]
        s2 = -2.0 * t * s1  # tanh''
        eye = torch.eye(h, dtype=DTYPE)
        inner = torch.einsum("i,ij,ik,im->jkm", r, s2, x1, x1) * w2[:, None, None]  # (h, d+1, d+1)
        h_ff = torch.einsum("jkm,jl->kjml", inner, eye).reshape(d1 * h, d1 * h)
        h_fa = torch.einsum("kj,jl->kjl", torch.einsum("i,ij,ik->kj", r, s1, x1), eye).reshape(d1 * h, h)
        residual = torch.zeros(jac.shape[1], jac.shape[1], dtype=DTYPE)
        residual[: d1 * h, : d1 * h] = h_ff
        residual[: d1 * h, d1 * h :] = h_fa
        residual[d1 * h :, : d1 * h] = h_fa.T
        return (jac.T @ jac + residual) / n

    def sharpness(self, w: torch.Tensor) -> float:
        """``lambda1``: the largest (algebraic) eigenvalue of the dense Hessian at ``w``."""
        return float(torch.linalg.eigvalsh(self.hessian(w))[-1])


@contextmanager
def _single_thread() -> Iterator[None]:
    """Run torch on one thread: on a model this small, intra-op threading costs more than it saves
    (several times slower when the cores are shared with other work). Restores the previous setting.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def train_toy(
    optimizer: str = "sam",
    eta: float = DEFAULT_ETA,
    rho: float = DEFAULT_RHO,
    steps: int = DEFAULT_STEPS,
    hessian_every: int = DEFAULT_HESSIAN_EVERY,
    problem: ToyProblem | None = None,
) -> pd.DataFrame:
    """Train the toy network full batch with SAM or GD and return a tidy per-step table.

    Args:
        optimizer: ``"sam"`` (:func:`samedge_lib.theory.updates.sam_step`) or ``"gd"``
            (:func:`samedge_lib.theory.updates.gd_step`; ``rho`` is then ignored and the SAM-edge column is
            ``2/eta``).
        eta: step size.
        rho: SAM radius (> 0 for ``"sam"``).
        steps: number of updates.
        hessian_every: ``lambda1`` is computed exactly at steps ``0, k, 2k, ...`` and at the last step; it is
            NaN on the other rows (``hessian_every=1`` measures every step, at about twice the cost of a run).
        problem: the data and network; ``None`` means ``ToyProblem()`` (the documented defaults).

    Returns:
        One row per step ``t`` (measured at ``w_t``, before the update), columns ``step``, ``loss``,
        ``grad_norm`` (``||grad l(w_t)||``), ``lambda1``, ``sam_edge`` (``sam_edge(eta=eta, rho=rho,
        grad_norm=grad_norm)``, or ``2/eta`` for GD), ``gd_edge`` (``2/eta``) and ``optimizer``. Raises
        FloatingPointError if the loss becomes non-finite.

    """
    ascent = ASCENTS.get(optimizer)
    if ascent is None or not ascent.normalized:
        raise ValueError(f"optimizer must be 'sam' or 'gd' (the rules whose edge follows ||g||), got {optimizer!r}")
    if not (isinstance(eta, (int, float)) and eta > 0):
        raise ValueError(f"eta must be > 0, got {eta!r}")
    if ascent.has_radius and not (isinstance(rho, (int, float)) and rho > 0):
        raise ValueError(f"rho must be > 0 for SAM (use optimizer='gd' for rho = 0), got {rho!r}")
    if not (isinstance(steps, int) and steps >= 1):
        raise ValueError(f"steps must be a positive integer, got {steps!r}")
    if not (isinstance(hessian_every, int) and hessian_every >= 1):
        raise ValueError(f"hessian_every must be a positive integer, got {hessian_every!r}")
    model = ToyModel(problem if problem is not None else ToyProblem())
    rule = UpdateRule(ascent, eta=eta, rho=float(rho) if ascent.has_radius else 0.0)
    eff_rho = rule.rho

    loss = np.empty(steps)
    gnorm = np.empty(steps)
    lam1 = np.full(steps, np.nan)
    params: Params = [model.w0.clone()]
    with _single_thread():
        for t in range(steps):
            if t % hessian_every == 0 or t == steps - 1:
                lam1[t] = model.sharpness(params[0])
            params, _, info = rule.step(params, None, model.grad_fn)
            loss[t] = info.loss.item()
            gnorm[t] = info.grad_norm.item()
            if not math.isfinite(loss[t]):
                raise FloatingPointError(f"the toy {optimizer} run diverged at step {t} (eta={eta}, rho={rho})")
    return pd.DataFrame(
        {
            "step": np.arange(steps),
            "loss": loss,
            "grad_norm": gnorm,
            "lambda1": lam1,
            "sam_edge": np.asarray(sam_edge(eta=eta, rho=eff_rho, grad_norm=gnorm), dtype=float),
            "gd_edge": float(gd_edge(eta)),
            "optimizer": optimizer,
        }
    )


def edge_tracking(frame: pd.DataFrame, last_fraction: float = 0.5) -> float:
    """Median of ``lambda1 / sam_edge`` over the measured rows in the last ``last_fraction`` of a run.

    Close to 1 when the sharpness sits on the run's edge (the SAM-edge for SAM, ``2/eta`` for GD, since a GD
    table's ``sam_edge`` column is ``2/eta``).
    """
    if not 0 < last_fraction <= 1:
        raise ValueError(f"last_fraction must lie in (0, 1], got {last_fraction!r}")
    start = frame["step"].max() * (1.0 - last_fraction)
    tail = frame[(frame["step"] >= start) & frame["lambda1"].notna()]
    if tail.empty:
        raise ValueError("no lambda1 measurement in the requested part of the run")
    return float((tail["lambda1"] / tail["sam_edge"]).median())


__all__ = [
    "DEFAULT_ETA",
    "DEFAULT_HESSIAN_EVERY",
    "DEFAULT_RHO",
    "DEFAULT_STEPS",
    "ToyModel",
    "ToyProblem",
    "edge_tracking",
    "train_toy",
]
