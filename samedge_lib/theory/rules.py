"""The update rules as objects: each variant's step, its edge and its collapse variable, in one place.

A rule is an :class:`Ascent` (what the step perturbs along before it takes its gradient: nothing for GD, the
normalised ascent ``rho g/(||g|| + 1e-5)`` of SAM, the unnormalised ``r g`` of USAM) combined with the forms every
ascent shares: heavy-ball or Nesterov momentum in ``torch.optim.SGD``'s convention, a late switch from GD at
``sam_start``, and m-SAM's micro-batches (:class:`UpdateRule`). The run loop, the quadratics, the toy model and the
claims all ask a rule for the three things that differ between variants, so a new ascent is one entry in
:data:`ASCENTS` and nothing compares an optimizer's name anywhere else.

* the **step** (:meth:`UpdateRule.step`), through :mod:`samedge_lib.theory.updates`;
* the **edge**, the largest top eigenvalue the rule sustains (:meth:`UpdateRule.edge`): ``2/eta`` for GD, the
  SAM-edge of Long & Bartlett (2024, Theorem 1; :func:`~samedge_lib.theory.edges.sam_edge`), the USAM edge, each at
  the momentum's effective step size (:func:`~samedge_lib.theory.edges.effective_eta`);
* the **collapse variable** ``Lambda = (eta_eff/2) lam1 (1 + rho lam1/||g||)`` (:meth:`UpdateRule.collapse`;
  :func:`~samedge_lib.theory.edges.collapse_variable`), exactly 1 on the edge; USAM puts its ``r`` in place of
  ``rho/||g||`` and GD has ``rho = 0``.

Like the rest of :mod:`samedge_lib.theory`, this module imports no torch (the steps use the tensors' own methods),
so the reading side can ask a stored run's rule for its edge without loading the engine.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from samedge_lib.theory.edges import (
    SAM_NORM_EPS,
    collapse_variable,
    effective_eta,
    momentum_sam_edge,
    momentum_usam_edge,
    sam_edge,
)
from samedge_lib.theory.updates import (
    GradFn,
    Params,
    StepInfo,
    add_scaled,
    gd_step,
    momentum_step,
    sam_gradient,
    sam_step,
    usam_step,
)

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class Ascent:
    """What distinguishes GD, SAM and USAM: the perturbation the step's gradient is taken at.

    Attributes:
        name: the value of ``RunConfig.optimizer`` (and the CLI's ``--optimizer``) that selects it.
        label: how figures and tables name it.
        has_radius: the rule has a radius (``rho`` or ``r``) that must be > 0; GD has none (``rho = 0``).
        normalized: the ascent is divided by ``||g||`` (SAM, and GD as SAM at ``rho = 0``): the edge then depends
            on ``||g||`` and is the SAM-edge; USAM's does not.
        micro_batches: the rule can be cut into m-SAM's micro-batches (Foret et al., 2021, m-sharpness).

    """

    name: str
    label: str
    has_radius: bool
    normalized: bool
    micro_batches: bool
    _step: Callable[..., tuple[Params, StepInfo]]

    def perturbation_scale(self, rho: float, grad_norm: float, eps: float = SAM_NORM_EPS) -> float:
        """The factor ``c`` of the ascent step ``e = c g``: ``rho/(||g|| + eps)`` (SAM), ``r`` (USAM), 0 (GD)."""
        if not self.has_radius or rho == 0:
            return 0.0
        return rho / (grad_norm + eps) if self.normalized else rho

    def update_gradient(
        self, params: Sequence[torch.Tensor], grads: Sequence[torch.Tensor], grad_fn: GradFn, rho: float, eps: float
    ) -> Params:
        """The gradient the step moves along, given ``g = grad(w)``: ``g`` itself when ``rho = 0``."""
        if self.normalized or rho == 0:
            return sam_gradient(params, grads, grad_fn, rho, eps)
        _, g_u = grad_fn(add_scaled(params, grads, rho))
        return g_u

    def plain_step(
        self, params: Sequence[torch.Tensor], grad_fn: GradFn, eta: float, rho: float, eps: float
    ) -> tuple[Params, StepInfo]:
        """One momentum-free step at radius ``rho`` (``rho = 0``: GD's step, whatever the ascent)."""
        if rho == 0:
            return gd_step(params, grad_fn, eta)
        return self._step(params, grad_fn, eta, rho, eps)


def _sam(params: Sequence[torch.Tensor], grad_fn: GradFn, eta: float, rho: float, eps: float):
    return sam_step(params, grad_fn, eta, rho, eps=eps)


def _usam(params: Sequence[torch.Tensor], grad_fn: GradFn, eta: float, rho: float, eps: float):
    return usam_step(params, grad_fn, eta, rho)


def _gd(params: Sequence[torch.Tensor], grad_fn: GradFn, eta: float, rho: float, eps: float):
    return gd_step(params, grad_fn, eta)


GD = Ascent("gd", "GD", has_radius=False, normalized=True, micro_batches=False, _step=_gd)
SAM = Ascent("sam", "SAM", has_radius=True, normalized=True, micro_batches=True, _step=_sam)
USAM = Ascent("usam", "USAM", has_radius=True, normalized=False, micro_batches=False, _step=_usam)

#: Every ascent by its configuration name; ``RunConfig.optimizer`` takes exactly these keys.
ASCENTS: dict[str, Ascent] = {a.name: a for a in (GD, SAM, USAM)}


class RuleConfig(Protocol):
    """What a rule is read from: a :class:`~samedge_lib.record.config.RunConfig` or anything with its fields."""

    optimizer: str
    eta: float
    rho: float
    momentum: float
    nesterov: bool
    sam_start: int
    micro_batch: int | None


def ascent_of(name: str) -> Ascent:
    """The ascent called ``name``; a ValueError lists the known names."""
    try:
        return ASCENTS[name]
    except KeyError:
        raise ValueError(f"unknown optimizer {name!r}; choose one of {', '.join(ASCENTS)}") from None


@dataclass(frozen=True)
class UpdateRule:
    """One configured update rule: an ascent with its step size, radius and forms.

    Attributes:
        ascent: GD, SAM or USAM (:data:`ASCENTS`).
        eta: the step size.
        rho: SAM's radius (USAM's ``r``); 0 for GD.
        momentum: heavy-ball ``beta`` in ``torch.optim.SGD``'s convention (0: none).
        nesterov: Nesterov's form of the momentum.
        sam_start: the steps before it are GD steps (with the same momentum): a late switch.
        micro_batch: m-SAM's micro-batch size (``None``: the ascent is taken on the whole batch).
        eps: the constant added to ``||g||`` in SAM's ascent (the official code's ``1e-5``).

    """

    ascent: Ascent
    eta: float
    rho: float = 0.0
    momentum: float = 0.0
    nesterov: bool = False
    sam_start: int = 0
    micro_batch: int | None = None
    eps: float = SAM_NORM_EPS

    @classmethod
    def of(cls, cfg: RuleConfig) -> UpdateRule:
        """The rule a run configuration describes."""
        return cls(
            ascent_of(cfg.optimizer),
            eta=cfg.eta,
            rho=cfg.rho,
            momentum=cfg.momentum,
            nesterov=cfg.nesterov,
            sam_start=cfg.sam_start,
            micro_batch=cfg.micro_batch,
        )

    @property
    def is_gd(self) -> bool:
        """Whether the rule never perturbs (GD, or SGD on minibatches)."""
        return not self.ascent.has_radius

    @property
    def is_msam(self) -> bool:
        """Whether the ascent is cut into m-SAM's micro-batches."""
        return self.micro_batch is not None

    def rho_at(self, step: int | None = None) -> float:
        """The radius of the update of ``step``: 0 for GD and for the GD steps before ``sam_start``.

        ``step=None`` is the rule after any switch (its configured radius).
        """
        if self.is_gd or (step is not None and step < self.sam_start):
            return 0.0
        return self.rho

    @property
    def eta_eff(self) -> float:
        """The step size of the momentum-free rule with the same edge (``eta`` itself without momentum)."""
        return (
            float(effective_eta(eta=self.eta, beta=self.momentum, nesterov=self.nesterov))
            if self.momentum > 0
            else self.eta
        )

    # -- the edge -------------------------------------------------------------------------
    def edge(self, grad_norm: float, step: int | None = None) -> float:
        """The edge of the update of ``step``; NaN for a non-finite ``||g||`` where the edge depends on it.

        ``2/eta`` (GD), the SAM-edge (SAM) or the USAM edge, each at the momentum's effective step size:
        ``2 (1 + beta)/eta`` for GD with heavy-ball momentum, and so on (:func:`~samedge_lib.theory.edges.
        momentum_sam_edge`, :func:`~samedge_lib.theory.edges.momentum_usam_edge`).
        """
        rho = self.rho_at(step)
        if not self.ascent.normalized and rho > 0:
            return float(momentum_usam_edge(eta=self.eta, r=rho, beta=self.momentum, nesterov=self.nesterov))
        if math.isnan(grad_norm):
            return math.nan
        return float(
            momentum_sam_edge(grad_norm=grad_norm, eta=self.eta, rho=rho, beta=self.momentum, nesterov=self.nesterov)
        )

    def sam_edge(self, grad_norm: float) -> float:
        """The paper's momentum-free SAM-edge ``sam_edge(||g||, eta, rho)`` for the rule's ``eta`` and ``rho``.

        ``2/eta`` for GD; NaN for USAM (whose edge does not depend on ``||g||``) and for a non-finite ``||g||``.
        """
        if not self.ascent.normalized or not math.isfinite(grad_norm):
            return math.nan
        return float(sam_edge(grad_norm=grad_norm, eta=self.eta, rho=self.rho))

    # -- the collapse variable --------------------------------------------------------------
    def _norm_in_collapse(self, grad_norm: Any, rho: Any) -> Any:
        """The ``||g||`` that :func:`~samedge_lib.theory.edges.collapse_variable` divides by: 1 where the rule's
        curvature does not scale with ``1/||g||`` (USAM, whose ``r`` stands for ``rho/||g||``; GD, ``rho = 0``).
        """
        if isinstance(grad_norm, np.ndarray):
            if not self.ascent.normalized:
                return np.ones_like(grad_norm)
            return np.where(grad_norm > 0, grad_norm, np.nan)
        return grad_norm if self.ascent.normalized and rho > 0 else 1.0

    def collapse(self, lam1: float, grad_norm: float, step: int | None = None) -> float:
        """``Lambda = (eta_eff/2) lam1 (1 + rho lam1/||g||)``, exactly 1 on the edge of the update of ``step``.

        NaN for a non-finite or negative ``lam1``, a non-finite ``||g||``, or a zero ``||g||`` under SAM.
        """
        rho = self.rho_at(step)
        if not (math.isfinite(lam1) and math.isfinite(grad_norm)) or lam1 < 0:
            return math.nan
        if rho > 0 and self.ascent.normalized and grad_norm == 0:
            return math.nan
        return float(
            collapse_variable(lam1=lam1, grad_norm=self._norm_in_collapse(grad_norm, rho), eta=self.eta_eff, rho=rho)
        )

    def collapse_columns(self, lam1: np.ndarray, grad_norm: np.ndarray, steps: np.ndarray) -> np.ndarray:
        """:meth:`collapse` over a table's columns at once (NaN where ``||g|| = 0`` under SAM).

        The same expression as :func:`~samedge_lib.theory.edges.collapse_variable`, which refuses the NaN rows a
        stored table can hold, so it is written out here.
        """
        lam, g, steps = (np.asarray(a, dtype=float) for a in (lam1, grad_norm, steps))
        rho = np.where(steps >= self.sam_start, self.rho, 0.0) if not self.is_gd else 0.0
        return 0.5 * self.eta_eff * lam * (1 + rho * lam / self._norm_in_collapse(g, rho))

    # -- the step -------------------------------------------------------------------------
    def update_gradient(
        self, params: Sequence[torch.Tensor], grads: Sequence[torch.Tensor], grad_fn: GradFn, step: int | None = None
    ) -> Params:
        """The gradient the update of ``step`` moves along, given ``g = grad(w)`` on its batch (m-SAM aside)."""
        return self.ascent.update_gradient(params, grads, grad_fn, self.rho_at(step), self.eps)

    def step(
        self,
        params: Sequence[torch.Tensor],
        velocity: Sequence[torch.Tensor] | None,
        grad_fn: GradFn,
        step: int | None = None,
    ) -> tuple[Params, Params | None, StepInfo]:
        """One update from ``params`` (and the momentum buffer ``velocity``): new parameters, new buffer, what it
        computed at ``w_t``. The buffer is ``None`` without momentum. m-SAM's step needs the per-example loss and
        is taken by :func:`samedge_lib.core.stochastic.msam_step`.
        """
        if self.is_msam:
            raise ValueError("m-SAM's step takes micro-batches: use samedge_lib.core.stochastic.msam_step")
        rho = self.rho_at(step)
        if self.momentum > 0:
            return momentum_step(
                params,
                velocity,
                grad_fn,
                self.eta,
                rho,
                self.momentum,
                nesterov=self.nesterov,
                normalized=self.ascent.normalized,
                eps=self.eps,
            )
        new, info = self.ascent.plain_step(params, grad_fn, self.eta, rho, self.eps)
        return new, None, info

    # -- names ------------------------------------------------------------------------------
    def label(self, minibatch: bool = False) -> str:
        """A short legend label: ``GD`` (``SGD`` when ``minibatch``), ``SAM rho=0.1``, ``USAM rho=0.3``."""
        if self.is_gd:
            return "SGD" if minibatch else "GD"
        return f"{self.ascent.label} rho={self.rho:g}"


def rule_of(cfg: RuleConfig) -> UpdateRule:
    """The update rule of a run configuration (:meth:`UpdateRule.of`)."""
    return UpdateRule.of(cfg)
