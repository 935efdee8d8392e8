"""The public API for your own PyTorch model and training loop.

* :class:`SAM`: sharpness-aware minimisation as a ``torch.optim.Optimizer`` over any base optimizer, with the official
  ascent ``rho g/(||g|| + 1e-5)`` (or the unnormalised ``rho g``), equal to the library's update rules.

Long & Bartlett (2024), "Sharpness-Aware Minimization and the Edge of Stability", https://arxiv.org/abs/2309.12488.
"""

from samedge_lib.api.optim import SAM

__all__ = ["SAM"]
