"""The command line of sweep files: ``python -m samedge_lib.sweeps expand|count|run|book FILE``.

The command is implemented in :mod:`samedge_lib.engine.sweeps`; this module keeps the documented name.
"""

from samedge_lib.engine.sweeps import entry, main

__all__ = ["entry", "main"]

if __name__ == "__main__":
    entry()
