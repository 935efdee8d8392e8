"""The reading side: claims with computed verdicts, figures and notebook helpers, from run records (no torch).

* ``claims`` -- the claims machinery and the book's tolerances (one band per notion);
* ``plots`` and ``style`` -- figures drawn from tidy tables; ``notebook`` -- the notebooks' parameter checks.

May import: ``record`` and ``theory``; never torch, ``core``, the engine or the chapters (reading never trains).
"""
