"""Chapter sweeps: parameters to configurations, and runs in parallel worker processes."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import torch

from samedge_lib.chapters import experiments as ex
from samedge_lib.reading.notebook import NotebookParameterError


def test_parameters_resolve_to_the_preset_and_are_reported():
    sweep = ex.Sweep.from_parameters("mnist", "smoke")
    assert [c.rho for c in sweep.configs] == [0.0, 0.1]
    assert sweep.main_rho == 0.1
    assert sweep.parameters["steps"] == sweep.configs[1].steps and sweep.parameters["rhos"] == [0.1]


@pytest.mark.parametrize("rhos", [[0.05, 0.2], "[0.05, 0.2]"])
def test_rhos_as_list_or_yaml_text(rhos):
    sweep = ex.Sweep.from_parameters("mnist", "smoke", rhos=rhos, steps=7)
    assert [c.rho for c in sweep.configs] == [0.0, 0.05, 0.2]
    assert sweep.main_rho == 0.05  # the paper's 0.1 is not swept: the smallest radius
    assert all(c.steps == 7 for c in sweep.configs)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"rhos": "[0.1,"}, "rhos"),
        ({"rhos": [-0.1]}, r"rhos\[0\]"),
        ({"rhos": [0.0]}, "no radius > 0"),
        ({"steps": 0}, "steps"),
        ({"official_every": -1}, "official_every"),
    ],
)
def test_bad_parameters_fail_naming_the_parameter(kwargs, match):
    with pytest.raises(NotebookParameterError, match=match):
        ex.Sweep.from_parameters("mnist", "smoke", **kwargs)


def test_two_workers_give_the_runs_of_one(tmp_path: Path, data_dir: Path, monkeypatch):
    """Runs in two worker processes (one thread each) equal the same runs one after another with one thread."""
    monkeypatch.setenv("SAMEDGE_DATA", str(data_dir))
    configs = ex.Sweep.from_parameters("mnist", "smoke", rhos=[0.05, 0.1], steps=12).configs
    parallel = ex.run_all(configs, root=tmp_path / "par", workers=2, threads=1)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        serial = ex.run_all(configs, root=tmp_path / "ser", workers=1, progress=False)
    finally:
        torch.set_num_threads(before)
    timing = ["measure_seconds", "wall_time"]
    for p, s in zip(parallel, serial, strict=True):
        assert p.finished and s.finished
        pd.testing.assert_frame_equal(
            p.measurements.drop(columns=timing, errors="ignore"), s.measurements.drop(columns=timing, errors="ignore")
        )
        pd.testing.assert_frame_equal(
            p.steps.drop(columns=timing, errors="ignore"), s.steps.drop(columns=timing, errors="ignore")
        )
    assert ex.is_done(configs[0], tmp_path / "par") and not ex.is_done(configs[0], tmp_path / "nowhere")
