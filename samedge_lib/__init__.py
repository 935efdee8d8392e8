"""samedge_lib: the support library of the companion book to Long & Bartlett (2024).

See CONTRIBUTING.md for the module map. The most used names are re-exported here.
"""

from samedge_lib.theory.edges import (
    alpha,
    edge_ratio,
    gd_edge,
    sam_edge,
    sam_multiplier,
    two_cycle_amplitude,
    usam_edge,
)

__all__ = ["alpha", "edge_ratio", "gd_edge", "sam_edge", "sam_multiplier", "two_cycle_amplitude", "usam_edge"]
__version__ = "0.1.0"
