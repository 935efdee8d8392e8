"""The curvature core: Hessian operators, eigen-solvers, stochastic quantities, quadratics and the toy model (torch).

* ``hessian`` -- Hessian-vector products on any loss (one operator protocol); ``eigen`` -- the solvers on it;
* ``stochastic`` -- per-example gradients, noise, m-SAM's operator; ``quadratic``, ``toy`` -- the ground truths.

May import: ``theory`` and the run record's vocabulary (``record``); never the engine, the reading side or the
chapters.
"""
