"""SAM as a ``torch.optim.Optimizer`` over any base optimizer, for ordinary PyTorch training loops.

The step is the one of Long & Bartlett (2024, https://arxiv.org/abs/2309.12488) and of the official code
(``sam_neighbor`` and ``update`` in ``sam_edge.py`` of https://github.com/google-deepmind/sam_edge): from ``w``, with
``g = grad L(w)`` on the step's batch, ascend to ``w + e`` with

* ``e = rho g/(||g|| + 1e-5)`` (SAM; ``||g||`` the *global* L2 norm over every parameter of every group), or
* ``e = rho g`` (``normalized=False``: unnormalised SAM, "USAM"),

take the gradient there on the same batch, return to ``w`` and let the base optimizer step on that gradient. With
``torch.optim.SGD`` (plain, heavy-ball or Nesterov momentum, ``dampening=0``) this is exactly the library's update
rules (:func:`samedge_lib.theory.updates.sam_step`, :func:`~samedge_lib.theory.updates.usam_step`,
:func:`~samedge_lib.theory.updates.momentum_step`); with ``torch.optim.Adam`` it is Adam stepped on the SAM gradient.

The interface is closure-based, as the most used PyTorch SAM (https://github.com/davda54/sam)::

    opt = SAM(model.parameters(), torch.optim.SGD, rho=0.05, lr=0.1, momentum=0.9)

    def closure():
        opt.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        return loss

    loss = opt.step(closure)  # calls closure twice: at w and at w + e

or in two passes (:meth:`SAM.first_step`, :meth:`SAM.second_step`) when the two forward passes must differ (for
example to keep BatchNorm's running statistics from being updated twice).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch

from samedge_lib.theory.edges import SAM_NORM_EPS
from samedge_lib.theory.updates import global_norm

__all__ = ["SAM"]

Closure = Callable[[], torch.Tensor]


def _check_finite(name: str, value: Any, *, positive: bool = False) -> float:
    """``float(value)``, or one line saying why ``value`` is not an admissible ``name``."""
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a real number, got {value!r:.80}") from None
    if not math.isfinite(x):
        raise ValueError(f"{name} must be a finite number, got {x!r}")
    if x < 0 or (positive and x == 0):
        raise ValueError(f"{name} must be {'> 0' if positive else '>= 0'}, got {x!r}")
    return x


class SAM(torch.optim.Optimizer):
    """Sharpness-aware minimisation over a base optimizer (Foret et al., 2021; the step of Long & Bartlett, 2024).

    Args:
        params: the parameters (or parameter groups) to optimise, as for any ``torch.optim.Optimizer``.
        base_optimizer: the optimizer class that takes the descent step (``torch.optim.SGD``, ``torch.optim.Adam``,
            ...); it is built on this optimizer's parameter groups with ``**base_kwargs`` (``lr``, ``momentum``,
            ``nesterov``, ``betas``, ...).
        rho: the radius of the ascent step (a group may set its own ``rho``); ``rho = 0`` gives the base optimizer's
            plain step. For ``normalized=False`` it is USAM's ``r``.
        normalized: ``True``: SAM's ascent ``rho g/(||g|| + eps)``; ``False``: the unnormalised ``rho g``.
        sam_eps: added to ``||g||`` in SAM's ascent (the official code's ``1e-5``; named apart from Adam's ``eps``).
        **base_kwargs: passed to ``base_optimizer`` (``lr``, ``momentum``, ``betas``, ``eps``, ...).

    Attributes:
        base_optimizer: the wrapped optimizer instance (it shares :attr:`param_groups` and holds the state).
        grad_norm: ``||g||`` at the point of the last step, on its batch (a float; NaN before the first step): the
            number the SAM-edge is evaluated at.

    Raises:
        ValueError: no parameters, or a non-finite or negative ``rho``, ``sam_eps`` or ``lr`` (one line, before any
            compute).

    """

    def __init__(
        self,
        params: Iterable[torch.Tensor] | Iterable[dict[str, Any]],
        base_optimizer: type[torch.optim.Optimizer] = torch.optim.SGD,
        rho: float = 0.05,
        *,
        normalized: bool = True,
        sam_eps: float = SAM_NORM_EPS,
        **base_kwargs: Any,
    ) -> None:
        if isinstance(base_optimizer, torch.optim.Optimizer) or not (
            isinstance(base_optimizer, type) and issubclass(base_optimizer, torch.optim.Optimizer)
        ):
            raise TypeError(
                f"base_optimizer must be an optimizer class such as torch.optim.SGD (its keyword arguments go to SAM), "
                f"got {base_optimizer!r:.80}"
            )
        rho = _check_finite("rho", rho)
        sam_eps = _check_finite("sam_eps", sam_eps)
        if "lr" in base_kwargs:
            _check_finite("lr", base_kwargs["lr"], positive=True)
        params = list(params)
        if not params:
            raise ValueError("SAM got no parameters: pass model.parameters() of a model that has some")
        defaults = dict(rho=rho, normalized=bool(normalized), sam_eps=sam_eps, **base_kwargs)
        super().__init__(params, defaults)
        for group in self.param_groups:
            group["rho"] = _check_finite("rho", group["rho"])
            if "lr" in group:
                _check_finite("lr", group["lr"], positive=True)
        self.base_optimizer = base_optimizer(self.param_groups, **base_kwargs)
        self.param_groups = self.base_optimizer.param_groups
        self.defaults.update(self.base_optimizer.defaults)
        self.grad_norm = math.nan

    # -- the two passes ------------------------------------------------------------------------------
    def _params_with_grad(self) -> list[torch.Tensor]:
        return [p for group in self.param_groups for p in group["params"] if p.grad is not None]

    @torch.no_grad()
    def first_step(self, zero_grad: bool = False) -> None:
        """Ascend from ``w`` to ``w + e`` along the gradients in ``.grad`` (which must be those at ``w``).

        ``w`` is kept exactly (restored by copy, not by subtraction) for :meth:`second_step`.
        """
        with_grad = self._params_with_grad()
        if not with_grad:
            raise ValueError("no parameter has a gradient: call loss.backward() before first_step")
        norm = global_norm([p.grad for p in with_grad])  # the global norm over every group, as the official code
        self.grad_norm = float(norm)
        for group in self.param_groups:
            rho = group["rho"]
            scale = rho / (norm + group["sam_eps"]) if group["normalized"] else rho
            for p in group["params"]:
                if p.grad is None:
                    continue
                self.state[p]["sam_point"] = p.detach().clone()
                if rho != 0:
                    p.add_(scale * p.grad)
        if zero_grad:
            self.zero_grad()

    @torch.no_grad()
    def second_step(self, zero_grad: bool = False) -> None:
        """Return to ``w`` and let the base optimizer step along the gradients in ``.grad`` (those at ``w + e``)."""
        for group in self.param_groups:
            for p in group["params"]:
                point = self.state[p].pop("sam_point", None)
                if point is not None:
                    p.copy_(point)
        self.base_optimizer.step()
        if zero_grad:
            self.zero_grad()

    # -- the step ------------------------------------------------------------------------------------
    def step(self, closure: Closure | None = None) -> torch.Tensor:  # type: ignore[override]
        """One SAM step; ``closure`` zeroes the gradients, computes the loss, calls ``backward`` and returns the loss.

        It is called twice: at ``w`` (its loss is returned: the loss of the step's batch at ``w``) and at ``w + e``.
        With every group at ``rho = 0`` it is called once and the step is the base optimizer's.
        """
        if closure is None:
            raise ValueError("SAM.step needs a closure that computes the loss and calls backward (see the docstring)")
        closure = torch.enable_grad()(closure)
        loss = closure()
        if all(group["rho"] == 0 for group in self.param_groups):
            self.grad_norm = float(global_norm([p.grad for p in self._params_with_grad()]))
            self.base_optimizer.step()
            return loss
        self.first_step(zero_grad=True)
        closure()
        self.second_step()
        return loss

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Clear the gradients of every parameter (as ``torch.optim.Optimizer.zero_grad``)."""
        self.base_optimizer.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict[str, Any]:
        """The base optimizer's state and the groups (with ``rho``, ``normalized``, ``sam_eps``)."""
        return self.base_optimizer.state_dict()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
        self.base_optimizer.load_state_dict(state_dict)
        self.param_groups = self.base_optimizer.param_groups

    def __repr__(self) -> str:
        g = self.param_groups[0]
        kind = "SAM" if g["normalized"] else "USAM"
        return f"{kind}(rho={g['rho']:g}, base={type(self.base_optimizer).__name__}, lr={g.get('lr')})"
