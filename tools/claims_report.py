"""Print every claim of the experiment chapters with its verdict and number, on live runs and on the stored runs.

The live runs are read from a runs folder (default ``$SAMEDGE_RUNS`` or ``<repo>/runs``, where ``make book`` leaves
them); nothing is computed, and a configuration without a finished run folder is reported as missing.

Usage: python tools/claims_report.py [--preset cpu] [--root RUNS]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from samedge_lib.chapters import paper_claims as pc  # noqa: E402
from samedge_lib.reading import claims as cl  # noqa: E402
from samedge_lib.record.config import SWEEP_RHOS, preset_config  # noqa: E402
from samedge_lib.record.results import stored_runs  # noqa: E402
from samedge_lib.record.runfolder import RunFolderError, load_run, run_path  # noqa: E402

#: Each chapter: its task and which measurements its statements use.
CHAPTERS = {"03": ("mnist", None), "04": ("cifar10", None), "05": ("shakespeare", "minibatch")}


def main(argv: list[str] | None = None) -> int:
    """Print the claims report; return 1 if a live run is missing."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="cpu")
    ap.add_argument("--root", type=Path, default=None)
    args = ap.parse_args(argv)
    missing = 0
    for number, (task, data) in CHAPTERS.items():
        live = {}
        for rho in (0.0, *SWEEP_RHOS[task][args.preset]):
            path = run_path(preset_config(task, args.preset, rho=rho), args.root)
            try:
                live[rho] = load_run(path)
            except (OSError, RunFolderError) as err:
                print(f"missing live run {path}: {err}")
                missing += 1
        stored = {r.config.rho: r for r in stored_runs() if r.config.task == task}
        runsets = [cl.RunSet(f"{args.preset} (live)", "", live, 0.1, data)]
        if stored:
            names = ", ".join(r.path.name for r in stored.values())
            runsets.append(cl.RunSet(f"paper scale (stored: {names})", "", stored, 0.1, data))
        print(f"\n## chapter {number} ({task})")
        ev = cl.evaluate(runsets, pc.CLAIMS)
        for c in pc.CLAIMS:
            rows = ev[ev["claim"] == c.key]
            print(f"- {c.statement}")
            for _, r in rows.iterrows():
                print(f"    {r['runset']}: {r['verdict'].value} -- {r['detail']}")
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main())
