"""The device a run computes on, and the provenance record that names it.

:func:`resolve_device` turns the configuration's ``device`` into a ``torch.device`` (under ``torchrun``, the GPU of
the local rank); :func:`collect_provenance` is what every run folder's ``provenance.json`` holds: the commit, the
library versions, the device's name, the dtype and the numeric flags (TF32) that change results.
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
import re
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from samedge_lib.engine import distributed
from samedge_lib.record.provenance import git_commit


class DeviceError(RuntimeError):
    """The device asked for is not available, or the run did not fit into its memory."""


def resolve_device(name: str) -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU; ``"cuda"`` without a GPU is a :class:`DeviceError`.

    Under ``torchrun`` a CUDA run takes the GPU of its local rank (``cuda:LOCAL_RANK``).
    """
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise DeviceError("device='cuda' was asked for but torch sees no CUDA GPU; use --device cpu or auto")
    if name == "cuda" and distributed.launched():
        index = distributed.local_rank()
        if index >= torch.cuda.device_count():
            err = DeviceError(
                f"local rank {index} needs GPU {index}, but torch sees {torch.cuda.device_count()}; start at most "
                f"that many processes per node (torchrun --nproc-per-node)"
            )
            err.local = True  # type: ignore[attr-defined]  # this node's alone: its rank prints it (samedge_lib.engine.cli)
            raise err
        return torch.device("cuda", index)
    return torch.device(name)


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


def collect_provenance(device: torch.device, dtype: torch.dtype) -> dict[str, Any]:
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
