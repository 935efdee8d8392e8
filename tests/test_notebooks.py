"""Every notebook end to end through papermill at the `smoke` preset, with checks on what it glued."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import nbformat
import numpy as np
import pandas as pd
import pytest
from synthetic_runs import measurements, write_folder
from test_claims_stochastic import table as stochastic_table

from samedge_lib.chapters.experiments import Sweep
from samedge_lib.chapters.stochastic import StochasticSweep

REPO = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((REPO / "notebooks").glob("[0-9]*.ipynb"))

VERDICTS = ("holds", "does not hold", "not reached yet", "not measured")


def _stored_main(task: str) -> pd.DataFrame:
    """The stored paper-scale SAM rho=0.1 run of ``task``, read with pandas alone (independent of the library)."""
    (folder,) = (REPO / "results" / "paper").glob(f"{task}-sam-rho0.1-*")
    df = pd.read_csv(folder / "measurements.csv")
    return df[df["data"] == df["data"].iloc[0]].sort_values("step")


def stored_official_bias(task: str) -> float:
    """Median of official/exact - 1 over the checks where the paper's estimator ran."""
    df = _stored_main(task).dropna(subset=["official_lambda"])
    return float(np.median(df["official_lambda"] / df["lambda_1"] - 1))


def stored_tracking_median(task: str) -> float:
    """Median lambda_1/edge from the later of the first check at 0.9 x edge and the middle of the run."""
    df = _stored_main(task)
    r = (df["lambda_1"] / df["edge"]).to_numpy()
    start = max(len(r) // 2, int(np.flatnonzero(r >= 0.9)[0]))
    return float(np.median(r[start:]))


#: Per notebook: glue key -> predicate on the glued value (checked at the smoke preset).
GLUE_CHECKS: dict[str, dict] = {
    "01_sam_edge_derivation": {
        "ch1_R1": lambda v: abs(v - (5**0.5 - 1) / 2) < 1e-12,
        "ch1_max_rel_err": lambda v: 0 <= v < 1e-12,
        "ch1_fig_ratio": lambda v: v == "<image>",
    },
    "02_quadratic_ground_truth": {
        "ch2_mult_err": lambda v: 0 <= v < 1e-10,
        "ch2_cycle_rel_err": lambda v: 0 <= v < 1e-8,
        "ch2_map_max_dist": lambda v: 0 <= v < 0.05,
    },
    "03_mnist_mlp": {
        "ch3_sam_on_edge_live_verdict": lambda v: v.strip("'") in VERDICTS,
        "ch3_edge_far_below_live_value": lambda v: 0 < v < 1,
        "ch3_official_agrees_stored_value": lambda v: abs(v - stored_official_bias("mnist")) < 1e-12,
    },
    "04_cifar10_cnn": {
        "ch4_gd_at_edge_live_verdict": lambda v: v.strip("'") in VERDICTS,
        "ch4_sam_on_edge_stored_value": lambda v: abs(v - stored_tracking_median("cifar10")) < 1e-12,
    },
    "05_shakespeare_transformer": {
        "ch5_sam_on_edge_fixed_verdict": lambda v: v.strip("'") in VERDICTS,
        "ch5_edge_far_below_live_value": lambda v: 0 < v < 1,
    },
    "07_sam_variants": {
        "ch7_n_proved": lambda v: v >= 30,
        "ch7_lib_max_err": lambda v: 0 <= v < 1e-12,
        "ch7_thr_inside": lambda v: v > 0,
        "ch7_cycle_err": lambda v: 0 <= v < 1e-8,
        "ch7_usam_on_edge_live_verdict": lambda v: v.strip("'") in VERDICTS,
        "ch7_switch_first_step_live_verdict": lambda v: v.strip("'") in VERDICTS,
    },
    "08_phase_diagram": {
        "ch8_n_proved": lambda v: v >= 15,
        "ch8_lib_max_err": lambda v: 0 <= v < 1e-12,
        "ch8_cycle_err": lambda v: 0 <= v < 1e-8,
        "ch8_phase_collapse_live_verdict": lambda v: v.strip("'") in VERDICTS,
    },
    "09_stochastic_sam": {
        # the two routes to E||g_B||^2 (per-example gradients, random minibatches) agree to Monte Carlo error; at
        # smoke only 4 batches are drawn, so the bound is loose, but a wrong factor in the identity breaks it
        "ch9_identity_value": lambda v: 0 <= v < 0.5,
        "ch9_identity_verdict": lambda v: v.strip("'") in VERDICTS,
        "ch9_drift_value": lambda v: 0 <= v <= 1,
        "ch9_m_edge_verdict": lambda v: v.strip("'") in VERDICTS,
    },
    "10_your_network": {
        "ch10_on_edge_verdict": lambda v: v.strip("'") in VERDICTS,
        "ch10_certified_verdict": lambda v: v.strip("'") in VERDICTS,
        "ch10_certified_value": lambda v: 0 <= v < 1e-2,
        "ch10_matvecs": lambda v: v >= 1,
        "ch10_fig_edge": lambda v: v == "<image>",
    },
    "06_sharpness_benchmark": {
        "ch6_default_rel_err": lambda v: 0 <= v <= 1e-3,
        "ch6_equal_accuracy_grad_eval_ratio": lambda v: v >= 3,
        "ch6_tracking_share_mnist_sam": lambda v: 0 < v <= 10,
        "ch6_warm_percent_top1_track_eta": lambda v: 0 < v < 100,
    },
}


def glued_values(nb: nbformat.NotebookNode) -> dict[str, object]:
    """Map glue key -> value of an executed notebook (numbers parsed; figures as the string '<image>')."""
    out: dict[str, object] = {}
    for cell in nb.cells:
        for o in cell.get("outputs", []):
            meta = o.get("metadata", {}).get("scrapbook", {})
            name = meta.get("name")
            if name is None:
                continue
            data = o.get("data", {})
            prefix = meta.get("mime_prefix", "")
            if any(k.startswith(prefix + "image/") for k in data):
                out[name] = "<image>"
                continue
            text = data.get(prefix + "text/plain", data.get("text/plain", ""))
            try:
                out[name] = float(text)
            except ValueError:
                out[name] = text
    return out


def execute(src: Path, dest: Path, *params: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    # the working directory is the output's folder, not the repository: every notebook must run from anywhere
    cmd = [sys.executable, "-m", "papermill", str(src), str(dest), "-k", "python3", "--cwd", str(dest.parent)]
    for i in range(0, len(params), 2):
        cmd += ["-p", params[i], params[i + 1]]
    # as the book build: no progress bars (they write to stderr)
    full_env = {**os.environ, "SAMEDGE_PROGRESS": "0", **(env or {})}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=full_env)


def test_sources_are_committed_without_outputs():
    assert NOTEBOOKS, "no notebooks found"
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        code = [c for c in nb.cells if c.cell_type == "code"]
        assert not any(c.get("outputs") or c.get("execution_count") for c in code), f"{path.name} has outputs"
        assert "colab-setup" in code[0].metadata.get("tags", []), f"{path.name}: first code cell: the Colab set-up"
        assert "parameters" in code[1].metadata.get("tags", []), f"{path.name}: second code cell must be tagged"
        assert "preset" in code[1].source, f"{path.name}: parameters cell must define preset"


@pytest.mark.notebooks
@pytest.mark.parametrize("src", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_at_smoke_preset(src: Path, tmp_path: Path, data_dir: Path, monkeypatch):
    dest = tmp_path / src.name
    proc = execute(src, dest, "preset", "smoke")
    assert proc.returncode == 0, f"{src.name} failed:\n{proc.stderr[-4000:]}"
    nb = nbformat.read(dest, as_version=4)
    glued = glued_values(nb)
    assert glued, f"{src.name} glued no values"
    for key, check in GLUE_CHECKS.get(src.stem, {}).items():
        assert key in glued, f"{src.name} did not glue {key!r}"
        assert check(glued[key]), f"{src.name}: glued {key}={glued[key]!r} fails its check"
    for cell in nb.cells:
        for o in cell.get("outputs", []):
            assert not (o.get("output_type") == "stream" and o.get("name") == "stderr"), (
                f"{src.name} wrote to stderr: {o.get('text', '')[:500]}"
            )


@pytest.mark.notebooks
def test_bad_preset_fails_at_once_listing_allowed_values(tmp_path: Path):
    src = NOTEBOOKS[0]
    proc = execute(src, tmp_path / "bad.ipynb", "preset", "nonsense")
    assert proc.returncode != 0
    text = proc.stderr + (tmp_path / "bad.ipynb").read_text()
    for allowed in ("'smoke'", "'cpu'", "'paper'"):
        assert allowed in text


@pytest.mark.notebooks
@pytest.mark.parametrize(("plateau_rho03", "builds"), [(1.02, True), (1.6, False)], ids=["claims-hold", "claim-fails"])
def test_chapter_fails_where_a_claim_it_makes_does_not_hold(tmp_path: Path, plateau_rho03: float, builds: bool):
    """Chapter 03 at the cpu preset on synthetic finished runs: it builds when its claims hold, fails when one does not.

    Every run sits on its edge except SAM at rho = 0.3, whose sharpness settles at ``plateau_rho03`` times its
    edge: at 1.6 the claim "every radius sits on its own edge" does not hold, and the chapter must fail naming it.
    """
    root = tmp_path / "runs"
    sweep = Sweep.from_parameters("mnist", "cpu")
    for cfg in sweep.configs:
        plateau = {0.0: 1.0, 0.3: plateau_rho03}.get(cfg.rho, 1.02)
        write_folder(root, cfg, measurements(cfg, plateau=plateau))
    src = REPO / "notebooks" / "03_mnist_mlp.ipynb"
    proc = execute(src, tmp_path / "out.ipynb", "preset", "cpu", "band_seeds", "[]", env={"SAMEDGE_RUNS": str(root)})
    if builds:
        assert proc.returncode == 0, proc.stderr[-3000:]
    else:
        assert proc.returncode != 0
        text = (tmp_path / "out.ipynb").read_text()
        assert "ClaimError" in text and "Every radius sits on its own edge" in text and "does not hold" in text


@pytest.mark.notebooks
@pytest.mark.parametrize(("ratio_b100", "builds"), [(1.05, True), (1.5, False)], ids=["claims-hold", "claim-fails"])
def test_stochastic_chapter_fails_where_a_prediction_it_makes_does_not_hold(tmp_path: Path, ratio_b100, builds):
    """Chapter 09 at the cpu preset on synthetic finished runs: every run sits where its predictions say, except SAM at
    B = 100, whose minibatch sharpness settles at ``ratio_b100`` times S_B: at 1.5 the chapter must fail naming it.
    """
    root = tmp_path / "runs"
    sweep = StochasticSweep.from_parameters("cpu")
    for b, cfg in sweep.sam.items():
        write_folder(root, cfg, stochastic_table(cfg, ratio=ratio_b100 if b == 100 else 1.0))
    for cfg in [*sweep.sgd.values(), *sweep.msam.values()]:
        write_folder(root, cfg, stochastic_table(cfg))
    src = REPO / "notebooks" / "09_stochastic_sam.ipynb"
    proc = execute(src, tmp_path / "out.ipynb", "preset", "cpu", env={"SAMEDGE_RUNS": str(root)})
    if builds:
        assert proc.returncode == 0, proc.stderr[-3000:]
    else:
        assert proc.returncode != 0
        text = (tmp_path / "out.ipynb").read_text()
        assert "ClaimError" in text and "At B ≥ 100 the stepped minibatch" in text and "does not hold" in text
