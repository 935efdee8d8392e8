"""Which edge applies to a PyTorch optimizer: its update rule read from its settings, or no closed form (Adam).

:func:`edge_rule_of` reads SGD (with heavy-ball or Nesterov momentum), the library's :class:`samedge_lib.api.SAM` over
SGD, or Adam, and returns an :class:`EdgeRule`: the edge of :class:`samedge_lib.theory.rules.UpdateRule` (GD's
``2/eta``, the SAM-edge of Long & Bartlett (2024, Theorem 1), the USAM edge, at the momentum's effective step size),
or for Adam the adaptive threshold of Cohen et al. (2022, https://arxiv.org/abs/2207.14484) on the preconditioned
sharpness.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from samedge_lib.api.optim import SAM, _check_finite
from samedge_lib.theory.edges import adaptive_edge
from samedge_lib.theory.rules import SAM as SAM_ASCENT
from samedge_lib.theory.rules import USAM as USAM_ASCENT
from samedge_lib.theory.rules import UpdateRule, ascent_of


# ------------------------------------------------------------------------------------------------------
# Which edge applies
# ------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class EdgeRule:
    """The edge that applies to an optimizer.

    Attributes:
        kind: ``"rule"`` (GD, SAM or USAM with or without momentum: ``rule`` gives the edge), ``"adaptive"`` (Adam:
            the preconditioned sharpness against :func:`~samedge_lib.theory.edges.adaptive_edge`) or ``"none"``.
        description: in words, for the log.
        rule: the update rule (``kind == "rule"``).
        eta: the step size (``lr``).
        beta1: Adam's first-moment coefficient (``kind == "adaptive"``).
        why_none: why no edge applies (``kind == "none"``).

    """

    kind: str
    description: str
    rule: UpdateRule | None = None
    eta: float = math.nan
    beta1: float = math.nan
    why_none: str = ""

    def edge(self, grad_norm: float) -> float:
        """The edge at ``||g||`` (NaN for ``kind == "none"``)."""
        if self.kind == "rule":
            assert self.rule is not None
            return self.rule.edge(grad_norm)
        if self.kind == "adaptive":
            return float(adaptive_edge(self.eta, self.beta1))
        return math.nan


def _one_group(optimizer: torch.optim.Optimizer, keys: Sequence[str]) -> dict[str, Any] | str:
    """The settings ``keys`` shared by every parameter group, or why there is no single set."""
    groups = optimizer.param_groups
    first = {k: groups[0].get(k) for k in keys}
    for g in groups[1:]:
        if any(g.get(k) != first[k] for k in keys):
            return f"its parameter groups differ in {', '.join(k for k in keys if g.get(k) != first[k])}"
    return first


def _rule_description(rule: UpdateRule) -> str:
    name = {"gd": "GD: 2/eta", "sam": "SAM-edge", "usam": "USAM edge"}[rule.ascent.name]
    if rule.momentum > 0:
        name += f" at the effective step size of {'Nesterov' if rule.nesterov else 'heavy-ball'} momentum"
        name += f" {rule.momentum:g}"
    return f"{name} (eta={rule.eta:g}" + (f", rho={rule.rho:g})" if rule.rho else ")")


def edge_rule_of(optimizer: torch.optim.Optimizer | None = None, **rule: Any) -> EdgeRule:
    """The edge that applies to ``optimizer``: a :class:`SAM` over SGD or Adam, ``torch.optim.SGD``, ``Adam``.

    Without an optimizer, the rule is given by keywords: ``eta`` and optionally ``rho``, ``normalized``,
    ``momentum``, ``nesterov`` (as for :class:`SAM`).
    """
    if optimizer is None:
        if "eta" not in rule:
            raise ValueError("give the optimizer, or the rule by keywords: eta= (and rho=, momentum=, nesterov=)")
        eta = _check_finite("eta", rule["eta"], positive=True)
        rho = _check_finite("rho", rule.get("rho", 0.0))
        ascent = ascent_of("gd") if rho == 0 else SAM_ASCENT if rule.get("normalized", True) else USAM_ASCENT
        r = UpdateRule(
            ascent, eta=eta, rho=rho, momentum=float(rule.get("momentum", 0.0)), nesterov=bool(rule.get("nesterov"))
        )
        return EdgeRule("rule", _rule_description(r), rule=r, eta=eta)
    if rule:
        raise TypeError(f"give either the optimizer or the rule's keywords, not both (got {', '.join(rule)})")
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError(f"optimizer must be a torch.optim.Optimizer, got {type(optimizer).__name__}")
    base = optimizer.base_optimizer if isinstance(optimizer, SAM) else optimizer
    name = type(base).__name__
    if isinstance(base, (torch.optim.Adam, torch.optim.AdamW)):
        g = _one_group(optimizer, ("lr", "betas"))
        if isinstance(g, str):
            return EdgeRule("none", f"{name}: no single edge", why_none=g)
        eta, beta1 = float(g["lr"]), float(g["betas"][0])
        sam = f" (SAM's ascent is not in the threshold: {optimizer!r})" if isinstance(optimizer, SAM) else ""
        desc = (
            f"{name}: no closed-form edge of lambda_1 applies; preconditioned sharpness lambda_max(P^-1 H) against "
            f"(2 + 2 beta1)/((1 - beta1) eta) (eta={eta:g}, beta1={beta1:g}; Cohen et al. 2022){sam}"
        )
        return EdgeRule("adaptive", desc, eta=eta, beta1=beta1)
    if isinstance(base, torch.optim.SGD):
        keys = ["lr", "momentum", "nesterov", "dampening", "weight_decay"]
        if isinstance(optimizer, SAM):
            keys += ["rho", "normalized", "sam_eps"]
        g = _one_group(optimizer, keys)
        if isinstance(g, str):
            return EdgeRule("none", f"{name}: no single edge", why_none=g)
        if g["dampening"] or g["weight_decay"]:
            why = "dampening" if g["dampening"] else "weight_decay"
            return EdgeRule("none", f"{name}: no closed-form edge", why_none=f"{why} > 0 is not in the edge formulas")
        rho = float(g.get("rho", 0.0) or 0.0)
        ascent = ascent_of("gd") if rho == 0 else SAM_ASCENT if g.get("normalized", True) else USAM_ASCENT
        r = UpdateRule(
            ascent,
            eta=float(g["lr"]),
            rho=rho,
            momentum=float(g["momentum"]),
            nesterov=bool(g["nesterov"]),
            eps=float(g.get("sam_eps", UpdateRule.eps)),
        )
        return EdgeRule("rule", _rule_description(r), rule=r, eta=float(g["lr"]))
    return EdgeRule("none", f"{name}: no edge known", why_none=f"no stability threshold is known for {name}")
