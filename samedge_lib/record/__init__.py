"""The run record: a run's configuration, its folder on disk, its provenance and its tables (no torch).

* ``config`` -- ``RunConfig`` (validated, hashed: the run folder's name) and the presets;
* ``runfolder`` -- the folder's layout, atomic writes, the lock, status and tables, ``load_run``;
* ``provenance`` -- the repository and the commit; ``results`` -- tidy tables and statistics of runs.

This is the one contract between the engine that writes runs and everything that reads them. May import:
``theory``; never torch, ``core``, the engine, the reading side or the chapters.
"""
