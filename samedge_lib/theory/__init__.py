"""The theory: the formulas of Long & Bartlett (2024) and the update rules, with no torch and no other layer.

* ``edges`` -- the SAM-edge and its relatives (the one home of every edge formula);
* ``updates`` -- GD, SAM, USAM and momentum steps on lists of tensors, through the tensors' own methods;
* ``rules`` -- one object per update rule (its step, its edge, its collapse variable);
* ``derivations`` -- the sympy derivations the chapters prove the formulas against (imports sympy; book only).

May import: nothing of ``samedge_lib`` outside this package, and not torch (import-linter contracts in
``pyproject.toml``).
"""
