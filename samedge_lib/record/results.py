"""Reading results and the summary statistics the book reports.

The statistics are defined once here, with their rules stated, so every chapter, the claims
(:mod:`samedge_lib.reading.claims`) and the command line report the same numbers:

* **tracking ratio** ``lambda_1 / edge`` after the transient. The transient ends at the later of
  (i) the first measurement where ``lambda_1 >= REACH * edge`` and (ii) the start of the second half
  of the measurements. A run in which (i) never happens **did not reach its edge**: it gets no
  tracking statistic at all (a median over a still-rising curve would describe the transient, not the
  edge). We report median, 10th and 90th percentiles.
* **GD's** ``eta * lambda_1 / 2`` -- median over the last third of the measurements, as Cohen et al.
  (2021, https://arxiv.org/abs/2103.00065) summarise the edge of stability.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd

from samedge_lib.record.config import RunConfig
from samedge_lib.record.provenance import REPO_ROOT
from samedge_lib.record.runfolder import RunResult, RunWarning, load_run
from samedge_lib.theory.rules import UpdateRule

#: Where paper-scale (GPU) runs are stored in the repository.
STORED_RESULTS = REPO_ROOT / "results" / "paper"

#: The transient ends when ``lambda_1`` first reaches this fraction of the edge. 0.9 rather than 1: at the edge
#: the sharpness oscillates around it (the 2-cycle of chapter 2), so a run on its edge can sit a few per cent
#: below it for many checks; 0.9 is below those oscillations and far above a run that is still sharpening.
REACH = 0.9

#: A tracking statistic needs at least this many measurements after the transient; fewer say nothing about
#: *staying* on the edge.
MIN_TRACKED = 3


def label(cfg: RunConfig) -> str:
    """A short legend label: ``GD`` (``SGD`` on minibatches) or ``SAM rho=0.1``."""
    return UpdateRule.of(cfg).label(minibatch=cfg.batch_size is not None)


def measurements_on(result: RunResult, data: str | None = None) -> pd.DataFrame:
    """The measurement rows of one data kind (``"full"``, ``"minibatch"``, ``"fixed"``); default: the first kind."""
    df = result.measurements
    if df.empty:
        return df
    if data is None:
        data = str(df["data"].iloc[0])
    return df[df["data"] == data].sort_values("step").reset_index(drop=True)


def reached_at(df: pd.DataFrame, column: str = "lambda_1", reach: float = REACH) -> int | None:
    """Index of the first measurement where ``column >= reach * edge``; ``None`` if it never happens."""
    if df.empty:
        return None
    ratio = (df[column] / df["edge"]).to_numpy()
    hit = np.flatnonzero(ratio >= reach)
    return int(hit[0]) if len(hit) else None


def tracking_window(df: pd.DataFrame, column: str = "lambda_1", reach: float = REACH) -> pd.DataFrame:
    """Measurements after the transient (rule in the module docstring); empty if the edge was never reached."""
    first = reached_at(df, column, reach)
    if first is None:
        return df.iloc[0:0]
    return df.iloc[max(len(df) // 2, first) :]


def tracking_ratio(df: pd.DataFrame, column: str = "lambda_1") -> dict[str, float]:
    """Median and 10/90th percentiles of ``column / edge`` over :func:`tracking_window`.

    Always returned: ``reached`` (bool), ``reached_step`` (step of the first measurement at ``REACH``, or NaN),
    ``final_ratio`` and ``last_step`` (the run's last measurement), ``n`` (measurements in the window). The
    statistics are NaN when the edge was not reached or fewer than :data:`MIN_TRACKED` measurements follow.
    """
    df = df.dropna(subset=[column])
    nan = math.nan
    out: dict[str, float] = {"median": nan, "p10": nan, "p90": nan, "n": 0, "from_step": nan}
    if df.empty:
        return {**out, "reached": False, "reached_step": nan, "final_ratio": nan, "last_step": nan}
    first = reached_at(df, column)
    out.update(
        reached=first is not None,
        reached_step=float(df["step"].iloc[first]) if first is not None else nan,
        final_ratio=float(df[column].iloc[-1] / df["edge"].iloc[-1]),
        last_step=float(df["step"].iloc[-1]),
    )
    win = tracking_window(df, column)
    r = (win[column] / win["edge"]).to_numpy()
    r = r[np.isfinite(r)]
    out["n"] = int(len(r))
    if len(r) < MIN_TRACKED:
        return out
    out.update(
        median=float(np.median(r)),
        p10=float(np.percentile(r, 10)),
        p90=float(np.percentile(r, 90)),
        from_step=float(win["step"].iloc[0]),
    )
    return out


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
    if result.state != "finished":
        out.update(steps_total=cfg.steps, note=result.state_note)  # where it stopped, as the command line says
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
    if not UpdateRule.of(cfg).is_gd:
        out["tracking_ratio"] = tracking_ratio(df)
        if df["official_lambda"].notna().any():
            out["tracking_ratio_official"] = tracking_ratio(df.dropna(subset=["official_lambda"]), "official_lambda")
    for key in ("test_loss", "test_accuracy", "accuracy"):
        if key in df:
            out[f"final_{key}"] = float(last[key])
    if result.state == "diverged":
        _divergence(result, out, int(last["step"]), float(last["loss"]))
    return out


def _divergence(result: RunResult, out: dict, last_check: int, check_loss: float) -> None:
    """A diverged run's summary: ``final_loss`` is the training loss where it diverged, not the last finite check's.

    The other ``final_*`` numbers are of the last check (``last_check_step``); a :class:`RunWarning` says so, as the
    command line reports a divergence (exit code 3).
    """
    steps = result.steps
    loss, at = check_loss, last_check
    if not steps.empty and int(steps["step"].iloc[-1]) >= last_check:  # the update that diverged, after that check
        loss, at = float(steps["loss"].iloc[-1]), int(steps["step"].iloc[-1])
    out.update(
        final_loss=loss, final_loss_step=at, diverged_at_step=result.status.get("step"), last_check_step=last_check
    )
    warnings.warn(
        f"run {result.config.run_name()} diverged at step {result.status.get('step', '?')} "
        f"({result.status.get('reason', 'no reason recorded')}): its final_loss is the training loss at step {at} "
        f"({loss:.4g}); final_lambda_1 and the other final_* numbers are of the last check, at step {last_check}",
        RunWarning,
        stacklevel=3,
    )


def stored_runs(root: str | Path = STORED_RESULTS, *, warn: bool = True) -> list[RunResult]:
    """All paper-scale runs stored under ``results/paper`` (empty list if none).

    A run that stopped early (``RunResult.stopped_early``: interrupted, failed, still running) is returned as it is,
    with :attr:`~samedge_lib.record.runfolder.RunResult.state_note` saying at which step of how many; with ``warn``
    a :class:`~samedge_lib.record.runfolder.RunWarning` lists them. The book passes ``warn=False`` and shows
    :func:`stopped_early_note` instead (a warning would be a stderr line, which fails the build).
    """
    root = Path(root)
    if not root.exists():
        return []
    runs = [load_run(p) for p in sorted(root.iterdir()) if (p / "config.json").exists()]
    note = stopped_early_note(runs, markdown=False)
    if warn and note:
        warnings.warn(note, RunWarning, stacklevel=2)
    return runs


def stopped_early_note(runs: Iterable[RunResult], *, markdown: bool = True) -> str:
    """One sentence naming the runs that stopped early and where (``""`` when every run finished or diverged).

    The book shows it wherever stored runs are used (``chapter.ExperimentChapter.show_stored``, the appendix's
    tracking-cost table): their numbers describe only the steps they reached.
    """
    runs = list(runs)
    early = [r for r in runs if r.stopped_early]
    if not early:
        return ""
    name = (lambda r: f"`{r.path.name}`") if markdown else (lambda r: r.path.name)
    listed = "; ".join(f"{name(r)}: {r.state_note}" for r in early)
    return (
        f"{len(early)} of {len(runs)} stored runs stopped early, and their numbers describe only the steps they "
        f"reached: {listed}"
    )
