"""The command line of one run: ``python -m samedge_lib.run --task mnist --preset cpu --rho 0.1``.

The command is implemented in :mod:`samedge_lib.engine.cli`; this module keeps the documented name.
"""

from samedge_lib.engine.cli import entry, main

__all__ = ["entry", "main"]

if __name__ == "__main__":
    entry()
