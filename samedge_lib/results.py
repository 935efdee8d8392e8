"""Reading results and the summary statistics the book reports.

The statistics are defined once here, with their rules stated, so every chapter and the command
line report the same numbers:

* **tracking ratio** ``lambda_1 / edge`` after the transient. The transient ends at the later of
  (i) the first measurement where ``lambda_1 >= 0.9 * edge`` and (ii) the start of the second half
  of the measurements (SPEC B2). We report median, 10th and 90th percentiles.
* **GD's** ``eta * lambda_1 / 2`` -- median over the last third of the measurements (SPEC B1).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from .provenance import REPO_ROOT
from .runfolder import RunResult, load_run

#: Where paper-scale (GPU) runs are stored in the repository.
STORED_RESULTS = REPO_ROOT / "results" / "paper"


def measurements_on(result: RunResult, data: str | None = None) -> pd.DataFrame:
    """The measurement rows of one data kind (``"full"``, ``"minibatch"``, ``"fixed"``); default: the first kind."""
    df = result.measurements
    if df.empty:
        return df
    if data is None:
        data = str(df["data"].iloc[0])
    return df[df["data"] == data].sort_values("step").reset_index(drop=True)


def tracking_window(df: pd.DataFrame, reach: float = 0.9) -> pd.DataFrame:
    """Measurements after the transient (rule in the module docstring)."""
    if df.empty:
        return df
    ratio = df["lambda_1"] / df["edge"]
    reached = np.flatnonzero(ratio.to_numpy() >= reach)
    start = len(df) // 2
    if len(reached):
        start = max(start, int(reached[0]))
    return df.iloc[start:]


def tracking_ratio(df: pd.DataFrame, column: str = "lambda_1") -> dict[str, float]:
    """Median and 10/90th percentiles of ``column / edge`` over :func:`tracking_window`."""
    win = tracking_window(df)
    if win.empty:
        return {"median": math.nan, "p10": math.nan, "p90": math.nan, "n": 0}
    r = (win[column] / win["edge"]).to_numpy()
    r = r[np.isfinite(r)]
    if len(r) == 0:
        return {"median": math.nan, "p10": math.nan, "p90": math.nan, "n": 0}
    return {
        "median": float(np.median(r)),
        "p10": float(np.percentile(r, 10)),
        "p90": float(np.percentile(r, 90)),
        "n": int(len(r)),
        "from_step": int(win["step"].iloc[0]),
    }


def gd_edge_ratio(df: pd.DataFrame) -> dict[str, float]:
    """``eta * lambda_1 / 2`` = ``lambda_1 / (2/eta)``: median over the last third, and the maximum."""
    if df.empty:
        return {"median_last_third": math.nan, "max": math.nan}
    r = (df["lambda_1"] / df["gd_edge"]).to_numpy()
    return {"median_last_third": float(np.median(r[-max(1, len(r) // 3) :])), "max": float(np.max(r))}


def summarize(result: RunResult, data: str | None = None) -> dict:
    """The headline numbers of one run (used by the CLI and the chapters)."""
    df = measurements_on(result, data)
    cfg = result.config
    out: dict = {
        "run": cfg.run_name(),
        "state": result.status.get("state"),
        "steps_done": result.status.get("steps_done"),
        "wall_seconds": result.provenance.get("timings", {}).get("wall_seconds"),
        "device": result.provenance.get("device_name"),
    }
    if df.empty:
        return out
    last = df.iloc[-1]
    out.update(
        measured_on=str(df["data_label"].iloc[0]),
        final_loss=float(last["loss"]),
        final_lambda_1=float(last["lambda_1"]),
        final_edge=float(last["edge"]),
        final_edge_over_gd_edge=float(last["edge"] / last["gd_edge"]),
        gd_edge_ratio=gd_edge_ratio(df),
        mean_align_g=float(df["align_g"].mean()),
        mean_align_sam_g=float(df["align_sam_g"].mean()),
    )
    if cfg.optimizer != "gd":
        out["tracking_ratio"] = tracking_ratio(df)
        if df["official_lambda"].notna().any():
            out["tracking_ratio_official"] = tracking_ratio(df.dropna(subset=["official_lambda"]), "official_lambda")
    for key in ("test_loss", "test_accuracy", "accuracy"):
        if key in df:
            out[f"final_{key}"] = float(last[key])
    return out


def stored_runs(root: str | Path = STORED_RESULTS) -> list[RunResult]:
    """All paper-scale runs stored under ``results/paper`` (empty list if none)."""
    root = Path(root)
    if not root.exists():
        return []
    return [load_run(p) for p in sorted(root.iterdir()) if (p / "config.json").exists()]
