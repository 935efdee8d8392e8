"""The designs of the chapters beyond the paper: reuse of chapter 3's runs, momentum step sizes, USAM matching.

Truths used: chapter 3's own sweep (its configurations must be reused, not recomputed), the closed-form
effective step sizes ``eta/(1 + beta)`` and ``eta (1 + 2 beta)/(1 + beta)``, the SAM-edge at the matched gradient
norm, and a tiny real run whose ascent point is taken by hand.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from samedge_lib.chapters.experiments import Sweep
from samedge_lib.chapters.variants import PhaseDesign, VariantsDesign, ascent_check, gamma_ref
from samedge_lib.engine.train import run
from samedge_lib.reading.notebook import NotebookParameterError
from samedge_lib.record.config import preset_config
from samedge_lib.record.results import RunResult
from samedge_lib.theory.edges import sam_edge, usam_edge


def test_book_grids_reuse_chapter_three_runs():
    ch3 = {c.identity() for c in Sweep.from_parameters("mnist", "cpu").configs}
    variants = VariantsDesign.from_parameters("cpu")
    assert {variants.configs[k].identity() for k in ("gd", "sam/0.03", "sam/0.1", "sam/0.3")} == ch3
    phase = PhaseDesign.from_parameters("cpu")
    reused = {c.identity() for c in phase.configs.values()} & ch3
    assert len(reused) == 4
    new = [c for c in phase.configs.values() if c.identity() not in ch3]
    assert new and all(c.k == 1 and c.official_every == 0 for c in new)
    assert {c.eta for c in phase.configs.values()} == {1.25, 0.5}


@pytest.mark.parametrize("grid", ["book", "full"])
def test_momentum_runs_keep_the_effective_step_size_of_chapter_three(grid):
    d = VariantsDesign.from_parameters("cpu", grid)
    base = d.configs["gd"].eta
    for key, cfg in d.configs.items():
        if cfg.momentum == 0:
            continue
        b = cfg.momentum
        eff = cfg.eta * (1 + 2 * b) / (1 + b) if cfg.nesterov else cfg.eta / (1 + b)
        assert eff == pytest.approx(base, rel=1e-12), key
    betas = sorted({c.momentum for c in d.configs.values() if c.momentum and not c.nesterov})
    assert betas == ([0.8] if grid == "book" else [0.5, 0.8])
    switch = d.configs["switch/0.1"]
    assert switch.sam_start == switch.steps // 2 and switch.measure_after_switch >= 6


def _fake(cfg, lam1, edge, g) -> RunResult:
    df = pd.DataFrame({"step": np.arange(len(g)) * 20, "data": "full", "lambda_1": lam1, "edge": edge, "grad_norm": g})
    return RunResult(cfg, Path("/nonexistent"), df, pd.DataFrame(), {"state": "finished"}, {})


def test_usam_starts_on_the_same_edge_as_its_sam_run():
    d = VariantsDesign.from_parameters("cpu")
    g = np.array([0.34, 0.05, 0.04, 0.03])
    results = {}
    for rho in d.refs:
        cfg = d.configs[f"sam/{rho:g}"]
        edge = sam_edge(eta=cfg.eta, rho=rho, grad_norm=g)
        results[f"sam/{rho:g}"] = _fake(cfg, np.array([0.5, 0.95, 1.0, 1.0]) * edge, edge, g)  # reached at check 1
    for rho in d.refs:
        assert gamma_ref(results[f"sam/{rho:g}"]) == 0.05
    usam = d.usam_configs(results)
    for rho in d.refs:
        cfg = usam[f"usam/{rho:g}"]
        assert cfg.optimizer == "usam" and cfg.k == 1
        assert usam_edge(eta=cfg.eta, r=cfg.rho) == pytest.approx(
            sam_edge(eta=cfg.eta, rho=rho, grad_norm=0.05), rel=1e-3
        )  # 4 digits of r


def test_bad_grid_is_one_clear_error():
    with pytest.raises(NotebookParameterError, match="grid='huge'.*'book', 'full'"):
        VariantsDesign.from_parameters("cpu", "huge")
    with pytest.raises(NotebookParameterError, match="preset"):
        PhaseDesign.from_parameters("gpu")


def test_ascent_check_at_a_tiny_radius_sees_the_quadratic_picture(tmp_path, data_dir):
    cfg = preset_config("mnist", "smoke", rho=1e-4, steps=6, measure_every=3, k=1, n_train=64, n_test=32)
    res = run(cfg, root=tmp_path, progress=False)
    got = ascent_check(res)
    params = torch.load(res.path / "checkpoint.pt", weights_only=True)["params"]
    w_norm = float(torch.sqrt(sum((p.double() ** 2).sum() for p in params)))
    assert got["w_norm"] == pytest.approx(w_norm, rel=1e-6)
    assert got["rho_over_w"] == pytest.approx(1e-4 / w_norm, rel=1e-3)
    assert got["lambda_w"] == res.measurements["lambda_1"].iloc[-1]
    assert abs(got["gradient_ratio"] - 1) < 1e-3 and abs(got["ascent_ratio"] - 1) < 2e-2
    gd = run(cfg.replace(optimizer="gd", rho=0.0), root=tmp_path, progress=False)
    assert np.isnan(ascent_check(gd)["ascent_ratio"])
