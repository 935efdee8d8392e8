"""The engine: everything that trains (torch).

* ``train`` -- the run loop and ``run``; ``measure`` -- the checks; ``commits`` -- commits and exact resume;
  ``checkpoint`` -- the checkpoint's I/O; ``device`` -- the device and the provenance record;
* ``tasks``, ``models``, ``losses``, ``data`` (with ``download``) -- what a run trains on;
* ``distributed`` -- data parallelism under torchrun; ``sweeps``, ``cli`` -- the command lines.

May import: ``core``, ``record``, ``theory``; never the reading side or the chapters (training never plots).
"""
