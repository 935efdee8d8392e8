"""benchmarks/sam_speed.py: the PyTorch side end to end, and the JAX side when JAX is installed."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest
from scripts import load_script

from samedge_lib.chapters import benchmark_report as br

speed = load_script("benchmarks/sam_speed.py")


def test_compare_params_is_the_worst_relative_difference():
    a = [np.ones(4), np.full(2, 2.0)]
    b = [np.ones(4), np.full(2, 2.2)]
    assert speed.compare_params(a, b) == pytest.approx(np.linalg.norm([0.2, 0.2]) / np.linalg.norm([2.2, 2.2]))
    assert speed.compare_params(a, a) == 0


def test_initial_weights_are_the_torch_models_transposed(data_dir):
    import torch

    from samedge_lib.engine.models import make_model

    preset = speed.PRESETS["smoke"]
    arrays, x, y = speed.load_problem(preset, seed=0, data_dir=str(data_dir))
    model = make_model("mnist", seed=0, depth=preset["depth"], width=preset["width"])
    with torch.no_grad():
        expected = model(torch.from_numpy(x[:5]).reshape(5, 1, 28, 28)).numpy()
    h = x[:5]
    for i in range(0, len(arrays), 2):
        h = h @ arrays[i] + arrays[i + 1]
        if i + 2 < len(arrays):
            h = np.maximum(h, 0)
    assert np.allclose(h, expected, atol=1e-5)
    assert x.shape == (preset["n_train"], 784) and y.shape == (preset["n_train"], 10)


@pytest.mark.slow
def test_smoke_run_writes_a_comparison(tmp_path, data_dir):
    out = tmp_path / "sam-speed-test.json"
    result = speed.main(["--preset", "smoke", "--out", str(out), "--data-dir", str(data_dir)])
    stored = json.loads(out.read_text())
    assert stored["schema"] == speed.SCHEMA == br.SPEED_SCHEMA and result["modes"].keys() == {"strict"}
    entry = stored["modes"]["strict"]
    torch_side = entry["torch"]
    assert torch_side["steps_per_s_with_checks"] > 0 and 0 < torch_side["check_share_of_wall"] < 1
    assert all(c["lanczos_matvecs"] >= 1 for c in torch_side["checks"])
    if importlib.util.find_spec("jax") is None:
        assert "not installed" in entry["jax"]["not_run"]
    else:  # two independent implementations from the same weights agree to float32 rounding
        assert entry["verify_max_rel_param_diff"] < 1e-4
        assert 1 <= min(c["n_hvp"] for c in entry["jax"]["checks"])
    table = br.speed_table(br.load_speed_comparisons(tmp_path))
    assert set(table.index.get_level_values("machine")) == {stored["machine_tag"]} and len(table) == 2
