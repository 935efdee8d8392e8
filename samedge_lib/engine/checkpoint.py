"""The checkpoint of a run folder: the commit record ``checkpoint.pt``, written and read with torch.

The run folder's layout, its atomic writes and its lock are the run record's (:mod:`samedge_lib.record.runfolder`,
which reads a run's tables without torch); the checkpoint holds tensors, so its I/O lives with the engine that
resumes from it. Loaded with ``weights_only=True``
(https://pytorch.org/docs/stable/generated/torch.load.html): plain data and tensors only, nothing is run.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import torch

from samedge_lib.record.runfolder import CHECKPOINT, atomic_write, checkpoint_refused


def save_checkpoint(folder: Path, state: dict[str, Any]) -> None:
    """Write the commit record ``checkpoint.pt`` atomically and durably (``torch.save`` format)."""
    atomic_write(Path(folder) / CHECKPOINT, lambda f: torch.save(state, f))


def load_checkpoint(folder: Path) -> dict[str, Any] | None:
    """The folder's commit record, or ``None`` when there is none.

    Loaded with ``weights_only=True``: a file asking the unpickler for anything but tensors and plain data is
    refused before any of it runs. A torn or foreign file raises :class:`RunFolderError` saying how to go on.
    """
    path = Path(folder) / CHECKPOINT
    if not path.exists():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        lines = str(err).splitlines()
        detail = next((ln.strip().rstrip(".") for ln in lines if "unsupported" in ln.lower()), "not plain data")
        why = f"it asks the unpickler for code ({detail}), which was refused, not run"
        raise checkpoint_refused(path, why) from None
    except Exception as err:  # torn zip archives raise RuntimeError, EOFError, ... depending on where they end
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise checkpoint_refused(path, f"it cannot be read ({type(err).__name__}: {first})") from None
    if not isinstance(state, dict):
        raise checkpoint_refused(path, f"it holds a {type(state).__name__}, not a checkpoint record")
    return state
