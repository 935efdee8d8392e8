"""The run engine's stochastic-SAM columns and m-SAM option: configuration, the trajectory they predict, resume."""

from __future__ import annotations

import hashlib
import json
import math

import numpy as np
import pytest
import torch
from test_faults import KILLED, _assert_same_run, _run_killed_at

from samedge_lib.core import stochastic as st
from samedge_lib.core.eigen import eigsh_reference
from samedge_lib.engine.tasks import build_task
from samedge_lib.engine.train import run
from samedge_lib.record import runfolder as rf
from samedge_lib.record.config import (
    STOCHASTIC_PRESETS,
    ConfigError,
    RunConfig,
    preset_config,
    stochastic_config,
)
from samedge_lib.theory.updates import global_norm, sam_gradient

WALL_COLUMNS = {"wall_time", "measure_seconds"}


def _small(**kw) -> RunConfig:
    rho = kw.pop("rho", 0.1)
    base = dict(steps=4, measure_every=2, k=1, n_train=64, n_test=32, model={"depth": 2, "width": 16})
    base.update(kw)
    return preset_config("mnist", "smoke", rho=rho, **base)


@pytest.mark.parametrize(
    ("changes", "words"),
    [
        ({"micro_batch": 16, "rho": 0.0, "optimizer": "gd"}, ["micro_batch (m-SAM) needs optimizer='sam'"]),
        ({"micro_batch": 24, "batch_size": 32}, ["micro_batch=24 must divide batch_size=32"]),
        ({"micro_batch": 24}, ["micro_batch=24 must divide n_train (the full batch)=64"]),
        ({"micro_batch": 0}, ["micro_batch", "> 0"]),
        ({"measure_data": "both"}, ["measure_data='both' needs minibatches", "set batch_size"]),
        ({"noise_every": -1}, ["noise_every", ">= 0"]),
        ({"noise_batches": 0}, ["noise_batches", "> 0"]),
        ({"batch_sharpness": 1}, ["batch_sharpness must be true or false"]),
    ],
)
def test_invalid_stochastic_fields_name_the_field_and_the_fix(changes, words):
    fields = dict(task="mnist", eta=0.05, rho=0.1, optimizer="sam", n_train=64)
    fields.update(changes)
    with pytest.raises(ConfigError) as err:
        RunConfig(**fields).validate()
    for w in words:
        assert w in str(err.value)


def test_transformer_refuses_per_example_measurements_and_m_sam():
    with pytest.raises(ConfigError, match="noise_every needs per-example gradients"):
        preset_config("shakespeare", "smoke", rho=0.1, noise_every=1)
    with pytest.raises(ConfigError, match="applies to the image tasks"):
        preset_config("shakespeare", "smoke", rho=0.1, micro_batch=4)


def test_new_fields_at_their_defaults_leave_identities_as_they_were():
    """A configuration that uses none of the new fields hashes exactly as before they existed (runs are reused)."""
    cfg = preset_config("mnist", "cpu", rho=0.1)
    old = cfg.to_dict()
    for key in ("name", "checkpoint_every", "checkpoint_seconds", "device"):
        old.pop(key)
    variants = ("momentum", "nesterov", "sam_start", "measure_after_switch")  # SAM's variants, added before
    stochastic = ("micro_batch", "batch_sharpness", "noise_every", "noise_batches", "hutchinson_probes", "drift_every")
    for key in variants + stochastic:
        old.pop(key)
    expected = hashlib.sha256(json.dumps(old, sort_keys=True, default=str).encode()).hexdigest()[:10]
    assert cfg.identity() == expected
    assert cfg.replace(batch_sharpness=True).identity() != expected
    assert cfg.replace(micro_batch=100).run_name().startswith("mnist-msam100-rho0.1-")


def test_chapter_presets_build_valid_configurations():
    for preset, spec in STOCHASTIC_PRESETS.items():
        for b in spec["batch_sizes"]:
            cfg = stochastic_config(preset, batch_size=b, rho=spec["rho"])
            full = cfg.batch_size is None
            assert cfg.measure_data == ("batch" if full else "both") and cfg.batch_sharpness and cfg.drift_every
        for m in spec["micro_batches"]:
            n = preset_config("mnist", spec["base"]).n_train
            assert stochastic_config(preset, batch_size=n, rho=spec["rho"], micro_batch=m).micro_batch == m
        assert stochastic_config(preset, batch_size=spec["sgd_batch_sizes"][0], rho=0.0).drift_every == 0
    with pytest.raises(ConfigError, match="exceeds the 1000 training examples"):
        stochastic_config("cpu", batch_size=2000, rho=0.1)


def test_minibatch_run_measures_both_data_and_the_noise_identity(tmp_path, data_dir):
    cfg = _small(batch_size=16, measure_data="both", batch_sharpness=True, noise_every=1, noise_batches=40)
    res = run(cfg, root=tmp_path, progress=False)
    m = res.measurements
    assert list(m["data"]) == ["minibatch", "full"] * 3
    assert list(m["n_examples"]) == [16, 64] * 3
    full, mini = m[m["data"] == "full"], m[m["data"] == "minibatch"]
    # the noise columns live in the full-batch row only
    assert full["trace_sigma"].notna().all() and mini["trace_sigma"].isna().all()
    np.testing.assert_allclose(
        full["expected_sq_grad_norm"], full["grad_norm"] ** 2 + st.sampling_factor(64, 16) * full["trace_sigma"]
    )
    # the identity against its Monte Carlo check over random batches, within 4 standard errors
    gap = (full["mc_sq_grad_norm"] - full["expected_sq_grad_norm"]).abs()
    assert (gap < 4 * full["mc_sq_grad_norm_se"]).all()
    assert (full["trace_h_se"] > 0).all() and full["trace_h"].notna().all()
    # the minibatch row's gradient norm is the one the update saw (the step log at the same steps)
    steps = res.steps.set_index("step")
    np.testing.assert_allclose(mini["grad_norm"].iloc[:2], steps.loc[[0, 2], "grad_norm"], rtol=1e-6)
    assert m["q_sam"].notna().all() and m["osc_cos"].between(-1, 1).all()


def test_oscillation_and_drift_columns_describe_the_steps_the_run_then_takes(tmp_path, data_dir):
    """The check at step 0 looks two updates ahead; runs of one and two steps take exactly those updates."""
    cfg = _small(steps=2, measure_every=2, batch_sharpness=True, drift_every=1, dtype="float64")
    res = run(cfg, root=tmp_path, progress=False)
    row = res.measurements.iloc[0]
    task = build_task(cfg, torch.device("cpu"), torch.float64)
    w0 = [p.clone() for p in task.params]
    w1 = torch.load(run(cfg.replace(steps=1), root=tmp_path, progress=False).path / rf.CHECKPOINT, weights_only=True)
    w2 = torch.load(res.path / rf.CHECKPOINT, weights_only=True)
    w1, w2 = w1["params"], w2["params"]

    def flat(ts):
        return torch.cat([t.reshape(-1) for t in ts])

    d1, d2 = flat(w1) - flat(w0), flat(w2) - flat(w1)
    assert row["osc_cos"] == pytest.approx(float(d1 @ d2 / (d1.norm() * d2.norm())), rel=1e-9)
    g0 = task.grad_fn(task.batch_at(0))(w0)[1]
    g1 = task.grad_fn(task.batch_at(1))(w1)[1]
    residual = (flat(w2) - flat(w0)) / 2 + cfg.eta * (flat(g0) + flat(g1)) / 2
    assert row["drift_norm"] == pytest.approx(float(residual.norm()), rel=1e-9)
    assert -1 <= row["drift_cos"] <= 1 and row["sharpness_grad_norm"] > 0
    # Q at step 0, recomputed with another HVP route (a gradient graph rebuilt for every product)
    op = task.operator(w0, task.batch_at(0), "exact_fresh")
    _, g = op.gradient()
    s = flat(sam_gradient(w0, op.unflatten(g), task.grad_fn(task.batch_at(0)), cfg.rho))
    q = cfg.eta * float(s @ op.matvec(s)) / (2 * float(g @ s))
    assert row["q_sam"] == pytest.approx(q, rel=1e-9)
    assert row["sam_grad_norm"] == pytest.approx(float(global_norm(op.unflatten(s))), rel=1e-12)


def test_msam_run_steps_along_the_micro_batch_direction_and_measures_its_operator(tmp_path, data_dir):
    cfg = _small(micro_batch=16, steps=1, measure_every=1, dtype="float64", lanczos_tol=1e-8)
    res = run(cfg, root=tmp_path, progress=False)
    task = build_task(cfg, torch.device("cpu"), torch.float64)
    batch = task.batch_at(0)
    xs, ys = st.micro_batches(batch.x, batch.y, 16, st.msam_permutation(64, cfg.seed, 0))
    new, _ = st.msam_step(task.params, task.data_loss, xs, ys, cfg.eta, cfg.rho)
    got = torch.load(res.path / rf.CHECKPOINT, weights_only=True)["params"]
    for a, b in zip(new, got, strict=True):
        assert torch.equal(a, b)
    row = res.measurements.iloc[0]
    assert row["msam_micro_batches"] == 4 and row["msam_converged"]
    norms = st.msam_gradient(task.data_loss, task.params, xs, ys, cfg.rho).micro_grad_norms
    op = st.MSamOperator(task.data_loss, task.params, xs, ys, norms, cfg.rho)
    ref = eigsh_reference(op, k=1, generator=torch.Generator().manual_seed(0))
    assert row["msam_lambda"] == pytest.approx(float(ref.eigenvalues[0]), rel=1e-6)


@pytest.mark.usefixtures("one_torch_thread")  # the killed child computes with one thread
def test_msam_run_stopped_or_killed_resumes_bitwise(tmp_path, data_dir):
    cfg = _small(micro_batch=16, steps=6, measure_every=2, checkpoint_every=1, batch_sharpness=True, drift_every=2)
    ref = run(cfg, root=tmp_path / "ref", progress=False)
    part = run(cfg, root=tmp_path / "b", progress=False, stop_after=3)
    assert part.status["state"] == "interrupted"
    _assert_same_run(ref, run(cfg, root=tmp_path / "b", progress=False))
    # killed in the middle of the run (the 40th fault point: past the first checks), then resumed
    assert _run_killed_at(cfg, tmp_path / "k", 40) == KILLED
    _assert_same_run(ref, run(cfg, root=tmp_path / "k", progress=False))
    cols = [c for c in ref.measurements.columns if c not in WALL_COLUMNS]
    assert {"msam_lambda", "q_sam", "osc_cos", "drift_cos"} <= set(cols)
    assert ref.measurements["drift_cos"].notna().sum() == 2  # every second check: steps 0 and 4
    assert math.isfinite(float(ref.measurements["msam_lambda"].iloc[-1]))
