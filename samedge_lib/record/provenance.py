"""Where the repository is and which commit a result came from (the torch-free part of a provenance record).

Every run folder holds ``provenance.json``: the engine writes it with
:func:`samedge_lib.engine.device.collect_provenance` (this commit, the library versions, the device, the dtype and
TF32 flags), so a stored number can always be traced back. Readers of run folders need only what is here.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]


def git_commit(repo: Path = REPO_ROOT) -> dict[str, Any]:
    """The current commit and whether the tree has uncommitted changes (``None`` outside a git checkout)."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        dirty = bool(
            subprocess.run(
                ["git", "status", "--porcelain", "--untracked-files=no"],
                cwd=repo,
                capture_output=True,
                text=True,
                timeout=10,
                check=True,
            ).stdout.strip()
        )
        return {"commit": commit, "dirty": dirty}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}
