"""Synthetic run tables with a known outcome for every claim: on the edge, above it, never reaching it.

The sharpness is written as ``lambda_1 = ratio(step) * edge`` with ``ratio`` a ramp from ``start`` to
``plateau`` reached at ``reach_step``; GD's edge is ``2/eta``, SAM's the SAM-edge of a falling ``||g||``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from samedge_lib.record.config import RunConfig
from samedge_lib.record.results import RunResult
from samedge_lib.theory.edges import alpha, gd_edge, sam_edge


def ramp(steps: np.ndarray, start: float, plateau: float, reach_step: float) -> np.ndarray:
    """Linear from ``start`` at step 0 to ``plateau`` at ``reach_step``, then constant."""
    return start + (plateau - start) * np.clip(steps / reach_step, 0, 1)


def measurements(
    cfg: RunConfig,
    *,
    plateau: float,
    start: float = 0.3,
    reach_frac: float = 0.3,
    lambda2_frac: float | None = 0.99,
    official_bias: float = -0.01,
    align_g: float = 0.1,
    align_sam: float = 0.2,
    loss_end: float = 0.05,
) -> pd.DataFrame:
    """A measurement table of ``cfg`` whose ``lambda_1 / edge`` ramps to ``plateau`` at ``reach_frac * steps``."""
    steps = np.arange(0, cfg.steps + 1, cfg.measure_every)
    g = 1.0 * np.exp(-3 * steps / cfg.steps)  # a falling gradient norm
    edge = np.full(len(steps), gd_edge(cfg.eta)) if cfg.rho == 0 else sam_edge(eta=cfg.eta, rho=cfg.rho, grad_norm=g)
    lam1 = ramp(steps.astype(float), start, plateau, reach_frac * cfg.steps) * edge
    loss = 2.0 * np.exp(np.log(loss_end / 2.0) * steps / cfg.steps)
    df = pd.DataFrame(
        {
            "step": steps,
            "data": "full",
            "data_label": "synthetic",
            "n_examples": 100,
            "loss": loss,
            "accuracy": 0.5,
            "grad_norm": g,
            "sam_grad_norm": g,
            "sam_edge": edge if cfg.rho > 0 else np.nan,
            "edge": edge,
            "gd_edge": gd_edge(cfg.eta),
            "alpha": alpha(eta=cfg.eta, rho=cfg.rho, grad_norm=g) if cfg.rho > 0 else np.inf,
            "lambda_1": lam1,
            "residual_1": 1e-5,
            "lanczos_matvecs": 10,
            "lanczos_converged": True,
            "align_g": align_g,
            "align_sam_g": align_sam if cfg.rho > 0 else align_g,
            "official_lambda": np.where(np.arange(len(steps)) % 2 == 0, lam1 * (1 + official_bias), np.nan),
            "official_matvecs": 20,
            "test_loss": loss * 1.1,
            "test_accuracy": 0.8,
            "measure_seconds": 0.01,
            "wall_time": steps * 0.01,
        }
    )
    if lambda2_frac is not None:
        df.insert(df.columns.get_loc("residual_1") + 1, "lambda_2", lam1 * lambda2_frac)
    return df


def steps_table(meas: pd.DataFrame, cfg: RunConfig) -> pd.DataFrame:
    """A per-step loss table consistent with ``meas`` (interpolated)."""
    steps = np.arange(cfg.steps)
    loss = np.interp(steps, meas["step"], meas["loss"])
    g = np.interp(steps, meas["step"], meas["grad_norm"])
    return pd.DataFrame(
        {"step": steps, "loss": loss, "grad_norm": g, "edge": np.interp(steps, meas["step"], meas["edge"])}
    )


def result(cfg: RunConfig, meas: pd.DataFrame, path: Path | None = None) -> RunResult:
    """An in-memory :class:`RunResult` of a finished run with the table ``meas``."""
    status = {"state": "finished", "steps_done": cfg.steps, "steps_total": cfg.steps}
    prov = {"device_name": "synthetic", "timings": {"wall_seconds": 1.0}}
    return RunResult(cfg, path or Path("/nonexistent"), meas, steps_table(meas, cfg), status, prov)


def write_folder(root: Path, cfg: RunConfig, meas: pd.DataFrame) -> Path:
    """Write a finished run folder of ``cfg`` holding ``meas``, as the engine would leave it."""
    path = root / cfg.run_name()
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2))
    meas.to_csv(path / "measurements.csv", index=False)
    steps_table(meas, cfg).to_csv(path / "steps.csv", index=False)
    (path / "status.json").write_text(
        json.dumps({"state": "finished", "steps_done": cfg.steps, "steps_total": cfg.steps})
    )
    (path / "provenance.json").write_text(json.dumps({"device_name": "synthetic", "timings": {"wall_seconds": 1.0}}))
    return path
