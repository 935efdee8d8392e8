"""Every notebook end to end through papermill at the `smoke` preset, with checks on what it glued."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

REPO = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((REPO / "notebooks").glob("[0-9]*.ipynb"))

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
    "03_mnist_mlp": {"ch3_ratio_main": lambda v: v > 0, "ch3_gd_ratio": lambda v: 0 < v < 1.5},
    "04_cifar10_cnn": {"ch4_ratio_main": lambda v: v > 0, "ch4_gd_ratio": lambda v: v > 0},
    "05_shakespeare_transformer": {"ch5_ratio_main": lambda v: v > 0, "ch5_ratio_fixed": lambda v: v > 0},
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


def execute(src: Path, dest: Path, *params: str) -> subprocess.CompletedProcess:
    # the working directory is the output's folder, not the repository: every notebook must run from anywhere
    cmd = [sys.executable, "-m", "papermill", str(src), str(dest), "-k", "python3", "--cwd", str(dest.parent)]
    for i in range(0, len(params), 2):
        cmd += ["-p", params[i], params[i + 1]]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=900)


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
