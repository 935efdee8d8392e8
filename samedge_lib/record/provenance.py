"""Provenance records: which code, libraries, device and numeric mode produced a result.

Every run folder holds ``provenance.json`` written from :func:`collect`, so a stored number can
always be traced to a commit, a torch version, a device name and the dtype/TF32 flags.
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

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


def device_description(device: torch.device) -> str:
    """A human-readable name of the device (GPU model, or CPU model and thread count)."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"CPU: {cpu} ({os.cpu_count()} cores, torch threads {torch.get_num_threads()})"


def machine_tag(device: torch.device) -> str:
    """A file-name tag for the machine: ``cpu-<n>core``, or the GPU's name slugified (``nvidia-h200``)."""
    if device.type == "cuda":
        return re.sub(r"[^a-z0-9]+", "-", torch.cuda.get_device_name(device).lower()).strip("-")
    return f"cpu-{os.cpu_count()}core"


def numeric_mode() -> dict[str, Any]:
    """The global numeric flags that change results: TF32 switches and float32 matmul precision."""
    return {
        "cuda_matmul_allow_tf32": bool(torch.backends.cuda.matmul.allow_tf32),
        "cudnn_allow_tf32": bool(torch.backends.cudnn.allow_tf32),
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
        "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
    }


def collect(device: torch.device, dtype: torch.dtype) -> dict[str, Any]:
    """A provenance record for a run on ``device`` in ``dtype``."""
    return {
        "created_utc": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "git": git_commit(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "versions": {"torch": torch.__version__, "numpy": np.__version__, "cuda": torch.version.cuda},
        "device": str(device),
        "device_name": device_description(device),
        "dtype": str(dtype).replace("torch.", ""),
        "numeric_mode": numeric_mode(),
    }
