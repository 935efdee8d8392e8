"""One rank of the data-parallel tests: ``torchrun --nproc-per-node N tests/distributed_worker.py SPEC.json``.

The spec lists jobs that every rank runs in order, in one process group (one launch pays for the start-up of
``torchrun`` and the workers once). A job has ``cfg`` (``samedge_lib.engine.train.run(cfg, root=..., stop_after=...)``,
as a script calling the library would) or ``argv`` (``samedge_lib.engine.cli.main(argv)``, stdout and stderr captured:
what each rank prints), and may inject a ``fault`` on one ``rank``:

* ``data_fails``: loading MNIST fails on that rank only;
* ``peer_lost``: that rank runs out of memory after ``after_gradients`` gradients and then exits at once, as a
  process that crashed would; it is the last job, since the process group does not survive it.

Each rank writes ``OUT/rank<r>.json``: every job's outcome, and, on ranks > 0, every file operation under the
spec's ``watch`` folders that the audit hook saw (https://docs.python.org/3/library/sys.html#sys.addaudithook):
the other ranks must never touch the run folders.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import sys
import time
from pathlib import Path

import torch

from samedge_lib.engine import cli as cli
from samedge_lib.engine import data as data_mod
from samedge_lib.engine import distributed, train
from samedge_lib.engine.tasks import Task
from samedge_lib.record.config import RunConfig

#: Audit events that read, create, change or list a path (their first argument).
FILE_EVENTS = {"open", "os.rename", "os.replace", "os.remove", "os.unlink", "os.mkdir", "os.rmdir", "os.scandir"}
FILE_EVENTS |= {"os.listdir", "os.truncate", "shutil.rmtree", "os.chmod"}


def main(spec_path: str) -> None:
    """Run the spec's jobs on this rank and write what happened."""
    spec = json.loads(Path(spec_path).read_text())
    rank = int(os.environ["RANK"])
    out = Path(spec["out"])
    watch = [os.path.realpath(p) for p in spec["watch"]]
    touched: list[str] = []
    if rank != 0:

        def audit(event: str, args: tuple) -> None:
            if event in FILE_EVENTS and args and isinstance(args[0], (str, bytes, os.PathLike)):
                path = os.path.realpath(os.fsdecode(args[0]))
                if any(path == w or path.startswith(w + os.sep) for w in watch):
                    touched.append(f"{event} {path}")

        sys.addaudithook(audit)
    report: dict = {"rank": rank, "jobs": {}, "touched": touched, "started": time.time()}

    def save() -> None:
        (out / f"rank{rank}.json").write_text(json.dumps(report, indent=1))

    for job in spec["jobs"]:
        outcome: dict = {}
        start = time.perf_counter()
        try:
            with _fault(job.get("fault"), rank):
                if "argv" in job:
                    stdout, stderr = io.StringIO(), io.StringIO()
                    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
                        outcome["exit"] = cli.main(job["argv"])
                    outcome.update(stdout=stdout.getvalue(), stderr=stderr.getvalue())
                else:
                    cfg = RunConfig.from_dict(job["cfg"])
                    kw = {"root": job["root"], "progress": False, "stop_after": job.get("stop_after")}
                    result = train.run(cfg, **kw)
                    outcome.update(state=result.state, path=str(result.path))
        except BaseException as err:  # every rank reports what it raised, whatever it was
            outcome.update(error=type(err).__name__, message=str(err), shared=bool(getattr(err, "shared", False)))
        outcome["seconds"] = time.perf_counter() - start
        report["jobs"][job["name"]] = outcome
        if (job.get("fault") or {}).get("kind") == "peer_lost":
            save()
            os._exit(0)  # the group is broken: leave without the collectives of a clean shutdown
    save()
    distributed.shutdown()


@contextlib.contextmanager
def _fault(fault: dict | None, rank: int):
    """The fault a job injects on its one rank (see the module docstring)."""
    if fault is None or fault["rank"] != rank:
        yield
        return
    with contextlib.ExitStack() as stack:
        if fault["kind"] == "data_fails":

            def missing(*args, **kwargs):
                raise data_mod.DataError("MNIST/raw/train-images-idx3-ubyte.gz is missing on this node")

            stack.callback(setattr, data_mod, "load_mnist", data_mod.load_mnist)
            data_mod.load_mnist = missing
        else:
            original = Task.grad_fn
            calls = {"n": 0}

            def failing(self, batch, chunk=None):
                calls["n"] += 1
                if calls["n"] > fault["after_gradients"]:
                    raise torch.cuda.OutOfMemoryError("injected: this rank ran out of memory")
                return original(self, batch, chunk)

            stack.callback(setattr, Task, "grad_fn", original)
            Task.grad_fn = failing
        yield


if __name__ == "__main__":
    main(sys.argv[1])
