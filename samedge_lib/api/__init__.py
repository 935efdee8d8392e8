"""The public API for your own PyTorch model and training loop.

* :class:`SAM`: sharpness-aware minimisation as a ``torch.optim.Optimizer`` over any base optimizer, with the official
  ascent ``rho g/(||g|| + 1e-5)`` (or the unnormalised ``rho g``), equal to the library's update rules.
* :class:`EdgeMonitor`: called every few steps (or attached to the optimizer), it measures the top Hessian
  eigenvalues (certified by their residuals), ``||g||`` and the edge that applies to the optimizer, and logs them.

Long & Bartlett (2024), "Sharpness-Aware Minimization and the Edge of Stability", https://arxiv.org/abs/2309.12488.
"""

from samedge_lib.api.monitor import EdgeCheck, EdgeMonitor, EdgeRule, check_edge, edge_rule_of
from samedge_lib.api.optim import SAM

__all__ = ["SAM", "EdgeCheck", "EdgeMonitor", "EdgeRule", "check_edge", "edge_rule_of"]
