"""Sweep files -> configurations -> commands: each command builds its configuration, finished runs are skipped,
the chapters' sweeps are the same expansion, and every bad file is one line with exit code 2."""

from __future__ import annotations

import itertools
import json
import re
import shlex
from pathlib import Path

import pytest
import yaml

from samedge_lib import sweeps as sweeps_command
from samedge_lib.chapters import experiments as ex
from samedge_lib.engine import cli as run_cli
from samedge_lib.engine import sweeps
from samedge_lib.record.config import preset_config
from samedge_lib.record.runfolder import atomic_write_json, run_path

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = sorted((REPO / "sweeps").glob("*.yaml"))


def _config_of_command(command: str):
    """The configuration ``python -m samedge_lib.run ...`` builds from ``command`` (the command line's own parser)."""
    argv = shlex.split(command)
    assert argv[:3] == ["python", "-m", "samedge_lib.run"], command
    return run_cli._config(run_cli._parser().parse_args(argv[3:]))


def _write(tmp_path: Path, data) -> Path:
    path = tmp_path / "sweep.yaml"
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return path


def test_the_grid_is_every_combination_first_key_outermost_seeds_outside():
    (spec,) = sweeps.parse(
        {"task": "mnist", "preset": "smoke", "grid": {"eta": [0.05, 0.1], "rho": [0, 0.1, 0.2]}, "seeds": [3, 4]}
    )
    got = [(c.seed, c.eta, c.rho, c.optimizer) for c in sweeps.expand([spec])]
    want = [(s, e, r, "gd" if r == 0 else "sam") for s, e, r in itertools.product([3, 4], [0.05, 0.1], [0.0, 0.1, 0.2])]
    assert got == want
    # each is the preset's configuration with these fields changed, and nothing else
    for cfg in sweeps.expand([spec]):
        assert cfg == preset_config("mnist", "smoke", rho=cfg.rho, eta=cfg.eta, seed=cfg.seed)


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_each_command_builds_its_configuration(path):
    items = sweeps.items(sweeps.load(path))
    assert items
    for item in items:
        assert _config_of_command(sweeps.command(item)).identity() == item.config.identity()


def test_commands_carry_every_kind_of_value():
    spec = sweeps.SweepSpec(
        "cifar10",
        "smoke",
        {"model": ({"feature_multiplier": 2}, {"feature_multiplier": 3}), "tf32": (False, True)},
        {"n_train": None, "name": "it's quoted", "optimizer": "usam", "rho": 0.05, "lanczos_tol": 1e-4},
    )
    items = sweeps.items([spec])
    assert len(items) == 4 and {i.config.optimizer for i in items} == {"usam"}
    for item in items:
        cfg = _config_of_command(sweeps.command(item))
        assert cfg == item.config and cfg.name == "it's quoted" and cfg.n_train is None


def test_the_same_configuration_twice_is_one_run():
    specs = sweeps.parse({"sweeps": [{"task": "mnist", "preset": "smoke", "grid": {"rho": [0, 0.1]}}] * 2})
    assert len(sweeps.expand(specs)) == 2


def test_pending_leaves_out_finished_and_diverged_runs(tmp_path, capsys):
    path = _write(tmp_path, {"task": "mnist", "preset": "smoke", "grid": {"rho": [0, 0.1, 0.2]}, "seeds": [0]})
    configs = sweeps.expand(sweeps.load(path))
    root = tmp_path / "runs"
    for cfg, state in zip(configs[:2], ("finished", "diverged"), strict=True):
        run_path(cfg, root).mkdir(parents=True)
        atomic_write_json(run_path(cfg, root) / "status.json", {"state": state})
    assert sweeps.main(["expand", str(path), "--root", str(root), "--pending", "--format", "index"]) == 0
    assert capsys.readouterr().out.split() == ["2"]
    assert sweeps.main(["expand", str(path), "--root", str(root), "--format", "json"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [x["state"] for x in lines] == ["finished", "diverged", "pending"]
    assert [x["identity"] for x in lines] == [c.identity() for c in configs]
    assert all(f"--root {root}" in x["command"] for x in lines)


def test_run_item_computes_then_loads(tmp_path, data_dir, capsys):
    path = _write(tmp_path, {"task": "mnist", "preset": "smoke", "grid": {"rho": [0.1]}, "set": {"steps": 3}})
    root = tmp_path / "runs"
    argv = ["run", str(path), "--index", "0", "--root", str(root), "--no-progress"]
    assert sweeps.main(argv) == 0
    (cfg,) = sweeps.expand(sweeps.load(path))
    assert sweeps.is_done(cfg, root)
    stamp = (run_path(cfg, root) / "status.json").stat().st_mtime_ns
    assert sweeps.main(argv) == 0  # a finished run is loaded, not recomputed
    assert (run_path(cfg, root) / "status.json").stat().st_mtime_ns == stamp
    assert sweeps.main(["count", str(path)]) == 0 and capsys.readouterr().out.split()[-1] == "1"


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ("task: mnist\npreset: cpu\ngrid: {rho: [0.1,\n", "not valid YAML"),
        ("[1, 2]", "a sweep is a mapping"),
        ("task: mnistt\npreset: cpu\n", "task='mnistt' is not allowed"),
        ("task: mnist\npreset: fast\n", "preset='fast'"),
        ("task: mnist\npreset: cpu\ngrid: {rhoo: [0.1]}\n", "'rhoo' is not a run configuration field"),
        ("task: mnist\npreset: cpu\ngrid: {rho: 0.1}\n", "grid.rho must be a non-empty list"),
        ("task: mnist\npreset: cpu\ngrid: {rho: [-1]}\n", "rho=-1"),
        ("task: mnist\npreset: cpu\nseeds: [0]\nset: {seed: 1}\n", "give the seeds once"),
        ("task: mnist\npreset: cpu\nsteps: 10\n", "unknown keys \\['steps'\\]"),
        ("sweeps: []\n", "non-empty list"),
    ],
)
def test_a_bad_sweep_file_is_one_line_and_exit_2(tmp_path, capsys, content, match):
    path = _write(tmp_path, content)
    assert sweeps.main(["expand", str(path)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and err.startswith("samedge-sweeps: invalid sweep:")
    assert re.search(match, err), err


def test_an_index_outside_the_sweep_is_one_line(tmp_path, capsys):
    path = _write(tmp_path, {"task": "mnist", "preset": "smoke", "grid": {"rho": [0.1]}})
    assert sweeps.main(["run", str(path), "--index", "1"]) == 2
    assert "--index 1 is not a run" in capsys.readouterr().err


@pytest.mark.parametrize("preset", ["smoke", "cpu"])
def test_the_chapters_sweeps_are_the_same_expansion(tmp_path, capsys, preset):
    """``sweeps book`` writes a chapter's sweep; expanding that file gives the chapter's runs, band included."""
    assert sweeps_command.main(["book", "mnist", "--preset", preset]) == 0
    path = _write(tmp_path, capsys.readouterr().out)
    chapter = ex.Sweep.from_parameters("mnist", preset)
    band = [c for cfgs in chapter.band.values() for c in cfgs]
    assert sweeps.expand(sweeps.load(path)) == [*chapter.configs, *band]
    # the band is what band_config makes of the chapter's GD and main-radius runs
    pair = [c for c in chapter.configs if c.rho in (0.0, chapter.main_rho)]
    assert band == [ex.band_config(c, s) for s in chapter.band for c in pair]
    assert len(band) == 2 * len(ex.BAND_SEEDS[preset]["mnist"])  # MNIST has a band at cpu (two extra seeds)


def test_sweep_configs_are_gd_then_each_radius_of_the_preset():
    """The chapters' expansion equals the preset configurations it replaced, in the same order."""
    got = ex.sweep_configs("shakespeare", "smoke", [0.3, 0.0, 0.1], steps=5, seed=2)
    want = [preset_config("shakespeare", "smoke", rho=r, steps=5, seed=2) for r in (0.0, 0.3, 0.1)]
    assert got == want
