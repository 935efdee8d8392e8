"""What the three experiment chapters share: a rho sweep of runs and the tables made from them.

A chapter calls :func:`run_sweep` (configs -> runs, reusing finished ones), then
:func:`setup_table` (the configurations actually run, so prose and runs cannot disagree) and
:func:`results_table` (the quantitative section's numbers, one row per run). Figures are drawn by
:mod:`samedge_lib.plots` from the same tables.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from .config import RunConfig, preset_config
from .results import gd_edge_ratio, measurements_on, stored_runs, tracking_ratio
from .train import RunResult, run

LOSS_DESCRIPTION = {
    "mse_mean": "squared error, mean over N x 10 (official)",
    "mse_half_sum": "squared error, 1/2 sum over classes",
    "cross_entropy": "cross-entropy per token",
}


def sweep_configs(task: str, preset: str, rhos: Sequence[float], **overrides: object) -> list[RunConfig]:
    """GD (rho = 0) and SAM at each rho in ``rhos``, all at ``preset`` with the same overrides."""
    values = [0.0, *[float(r) for r in rhos if r != 0]]
    return [preset_config(task, preset, rho=r, **overrides) for r in values]


def run_sweep(
    configs: Sequence[RunConfig], *, root: str | Path | None = None, progress: bool = False
) -> dict[float, RunResult]:
    """Run (or load) each configuration; return ``{rho: result}``. Diverged runs are returned, not raised."""
    return {cfg.rho: run(cfg, root=root, progress=progress) for cfg in configs}


def label(cfg: RunConfig) -> str:
    """A short legend label: ``GD`` or ``SAM rho=0.1``."""
    return "GD" if cfg.optimizer == "gd" else f"{cfg.optimizer.upper()} rho={cfg.rho:g}"


def setup_table(results: dict[float, RunResult]) -> pd.DataFrame:
    """One row per run: the settings that define it, read from the configs and provenance actually used."""
    rows = []
    for res in results.values():
        cfg, prov = res.config, res.provenance
        meas = measurements_on(res)
        rows.append(
            {
                "run": label(cfg),
                "model": ", ".join(f"{k}={v}" for k, v in cfg.model.items()) or "paper size",
                "train data": meas["data_label"].iloc[0] if len(meas) else "",
                "loss": LOSS_DESCRIPTION[cfg.loss],
                "eta": cfg.eta,
                "2/eta": 2 / cfg.eta,
                "rho": cfg.rho,
                "batch": "full" if cfg.batch_size is None else cfg.batch_size,
                "steps": cfg.steps,
                "measure every": cfg.measure_every,
                "top-k": cfg.k,
                "HVP": cfg.hvp,
                "dtype": cfg.dtype,
                "TF32": cfg.tf32,
                "device": prov.get("device_name", ""),
                "seed": cfg.seed,
                "wall time (s)": round(prov.get("timings", {}).get("wall_seconds", math.nan), 1),
            }
        )
    return pd.DataFrame(rows)


def results_table(results: dict[float, RunResult], data: str | None = None) -> pd.DataFrame:
    """The quantitative section: one row per run (tracking ratio, GD ratio, edge vs 2/eta, alignments, loss)."""
    rows = []
    for res in results.values():
        cfg = res.config
        df = measurements_on(res, data)
        if df.empty:
            continue
        last = df.iloc[-1]
        row = {
            "run": label(cfg),
            "state": res.status.get("state"),
            "measured on": df["data"].iloc[0],
            "lambda1/edge median": math.nan,
            "p10": math.nan,
            "p90": math.nan,
            "official/edge median": math.nan,
            "eta*lambda1/2 (last third)": gd_edge_ratio(df)["median_last_third"],
            "final edge/(2/eta)": last["edge"] / last["gd_edge"],
            "final lambda1": last["lambda_1"],
            "mean |cos(g,v1)|": df["align_g"].mean(),
            "mean |cos(g_SAM,v1)|": df["align_sam_g"].mean(),
            "final train loss": last["loss"],
            "lanczos converged": float(df["lanczos_converged"].mean()),
        }
        if cfg.optimizer != "gd":
            tr = tracking_ratio(df)
            row.update({"lambda1/edge median": tr["median"], "p10": tr["p10"], "p90": tr["p90"]})
            off = df.dropna(subset=["official_lambda"])
            if len(off):
                row["official/edge median"] = tracking_ratio(off, "official_lambda")["median"]
        for key in ("test_accuracy", "test_loss"):
            if key in df:
                row[f"final {key.replace('_', ' ')}"] = last[key]
        rows.append(row)
    return pd.DataFrame(rows)


def stored_for(task: str) -> dict[float, RunResult]:
    """Paper-scale runs of ``task`` stored in ``results/paper`` (``{rho: result}``; empty if none)."""
    return {r.config.rho: r for r in stored_runs() if r.config.task == task}


def stored_verdicts(stored: dict[float, RunResult], data: str | None = None) -> pd.DataFrame:
    """For stored paper-scale runs: how far each got, on what, and where its sharpness ended relative to its edge.

    The verdict rule: final ``lambda_1/edge`` in [0.8, 1.25] is "at its edge"; below 0.8 "below its edge (still
    sharpening)"; above 1.25 "above its edge".
    """
    rows = []
    for res in stored.values():
        df = measurements_on(res, data)
        if df.empty:
            continue
        last = df.iloc[-1]
        ratio = float(last["lambda_1"] / last["edge"])
        if ratio < 0.8:
            verdict = "below its edge (still sharpening)"
        elif ratio > 1.25:
            verdict = "above its edge"
        else:
            verdict = "at its edge"
        timings = res.provenance.get("timings", {})
        rows.append(
            {
                "run": label(res.config),
                "state": res.status.get("state"),
                "steps done": f"{res.status.get('steps_done')} of {res.config.steps}",
                "device": res.provenance.get("device_name"),
                "TF32": res.config.tf32,
                "ms per step (no checks)": 1000 * timings.get("seconds_per_step_excluding_measurements", math.nan),
                "share of time measuring": timings.get("measure_share", math.nan),
                "final lambda1": float(last["lambda_1"]),
                "final edge": float(last["edge"]),
                "final lambda1/edge": ratio,
                "verdict": verdict,
            }
        )
    return pd.DataFrame(rows)
