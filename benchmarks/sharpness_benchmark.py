"""Sharpness benchmark: how fast and how accurately can lambda_1 (and the top 5) be measured?

One command measures, at one weight point part-way through training of the paper's MNIST MLP:

1. the time of a gradient and of each HVP method (``samedge_lib.core.hessian.HVP_METHODS``) as a ratio to it;
2. a converged float64 reference for the top-1 and top-5 eigenvalues (Lanczos, tol 1e-10);
3. for top-1 and top-5, the cost (products, gradient-evaluation equivalents, wall time) and the relative
   error of the official finite-difference power iteration (several seeds), the PyHessian-style power
   iteration, scipy's ``eigsh`` (ARPACK) on the same operator and the book's default (Lanczos, exact HVP,
   tol 1e-3, with its residual certificate);
4. cost to accuracy: every top-1 solver with its stopping rule off, its error after every product, and
   what each needs to stay within 1e-3 (the equal-accuracy comparison);
5. warm starts: 100 more training steps (at the tracked runs' step size and at the pre-training one),
   then Lanczos from the previous eigenvectors against cold starts;
6. the tracking overhead of a check every 100 SAM steps (cold default, warm default, official);
7. peak memory of a gradient and of an exact-HVP check;
8. on CUDA only: SAM steps/s in strict float32 and with TF32, and the TF32 change of lambda_1;
9. the CNN (CIFAR-10) and the character Transformer at smaller scale: a pre-trained point, HVP-method
   timings, the top-1 solver comparison and the official and default traces.

It writes ``results/benchmark/<machine-tag>.json`` (``--out`` overrides) and prints a summary table.
``--max-seconds`` bounds the run: a section whose estimated cost does not fit in the time left is
skipped and the skip is recorded under ``"skipped"``.

Usage (from the repository root)::

    python benchmarks/sharpness_benchmark.py --preset cpu                 # 2 CPU cores, about 13 minutes
    python benchmarks/sharpness_benchmark.py --preset paper --device cuda --max-seconds 150
    python benchmarks/sharpness_benchmark.py --preset smoke --out /tmp/b.json   # seconds (tests)

The weights: ``samedge_lib.engine.train.run`` trains the task built by ``samedge_lib.engine.tasks.build_task`` with SAM
(rho 0.1) from the seeded initialisation for ``pretrain_steps`` steps at ``pretrain_eta`` (full batch for
the image tasks, the run's own minibatches for the Transformer, which is then measured on its fixed
evaluation batch). The paper's eta = 0.01 would need thousands of full-batch steps to leave the initial
regime, which no benchmark budget allows, so the pre-training uses a larger step (still below 2 / lambda_1
at initialisation, measured ~1.9 for the CPU net and ~2.9 for the paper net); the JSON records the loss,
accuracy and lambda_1 at the point against the initial values, so a reader can check that the point is
part-way through training (loss well down, not converged). The measuring itself lives in
``samedge_lib.chapters.benchmark_measure``; this script builds the points and composes the sections.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(REPO))

from samedge_lib.chapters import benchmark_measure as bm  # noqa: E402
from samedge_lib.chapters.benchmark_summary import stored_targets, summary_lines  # noqa: E402
from samedge_lib.core.eigen import lanczos, official_power_iteration  # noqa: E402
from samedge_lib.engine.device import collect_provenance, device_description, machine_tag, resolve_device  # noqa: E402
from samedge_lib.engine.models import count_parameters  # noqa: E402
from samedge_lib.engine.tasks import build_task  # noqa: E402
from samedge_lib.engine.train import run  # noqa: E402
from samedge_lib.record.config import RunConfig  # noqa: E402
from samedge_lib.theory.updates import sam_step  # noqa: E402

SCHEMA = "samedge-sharpness-benchmark/2"
#: Steps between checks in the tracking-overhead estimate.
CHECK_EVERY = 100
#: Pre-training counts as diverged once the loss exceeds this multiple of the initial loss.
DIVERGED_LOSS_FACTOR = 10.0

#: Solver comparison for the CNN and the Transformer (top-1 only, fewer seeds, official and Lanczos traces).
_SMALL: dict[str, Any] = dict(
    rho=0.1,
    solver_seeds=dict(lanczos=2, pyhessian=1, official=3),
    trace_caps=dict(lanczos=30, power=100),
    trace_seeds=2,
)
_SMALL_SMOKE: dict[str, Any] = _SMALL | dict(
    pretrain_steps=5,
    solver_seeds=dict(lanczos=1, pyhessian=1, official=1),
    trace_caps=dict(lanczos=20, power=100),
    trace_seeds=1,
)

#: Per preset: the MNIST setting, pre-training, repeats, seeds, the CNN/Transformer sizes and the time guard.
PRESETS: dict[str, dict[str, Any]] = {
    "smoke": dict(
        mnist=dict(n_train=256, depth=3, width=32),
        pretrain_steps=40,
        pretrain_eta=0.5,
        rho=0.1,
        warm_steps=20,
        repeats=3,
        official_seeds=(2, 0),  # (top-1, top-5); 0: not run (its top-5 takes 500 HVPs at this size)
        pyhessian_seeds=(1, 1),
        lanczos_seeds=(2, 2),
        cnn=dict(n_train=32, feature_multiplier=4, **_SMALL_SMOKE, pretrain_eta=0.01),
        transformer=dict(
            batch_size=4,
            num_layers=1,
            num_heads=2,
            key_size=8,
            d_model=16,
            seq_len=16,
            **_SMALL_SMOKE,
            pretrain_eta=0.1,
        ),
        tf32_steps=3,
        track_eta=0.01,
        trace_caps=dict(lanczos=30, power=100),
        trace_seeds=2,
        max_seconds=300.0,
    ),
    "cpu": dict(
        mnist=dict(n_train=2000, depth=3, width=256),
        pretrain_steps=120,
        pretrain_eta=0.5,
        rho=0.1,
        warm_steps=100,
        repeats=5,
        official_seeds=(5, 1),
        pyhessian_seeds=(2, 1),
        lanczos_seeds=(3, 2),
        cnn=dict(n_train=256, feature_multiplier=16, **_SMALL, pretrain_steps=50, pretrain_eta=0.005),
        transformer=dict(
            batch_size=32,
            num_layers=2,
            num_heads=4,
            key_size=16,
            d_model=64,
            seq_len=64,
            **_SMALL,
            pretrain_steps=50,
            pretrain_eta=0.1,
        ),
        tf32_steps=5,
        track_eta=0.01,
        trace_caps=dict(lanczos=40, power=200),
        trace_seeds=2,
        max_seconds=1200.0,
    ),
    "paper": dict(
        mnist=dict(n_train=None, depth=4, width=1000),
        pretrain_steps=200,
        pretrain_eta=0.3,
        rho=0.1,
        warm_steps=100,
        repeats=5,
        official_seeds=(3, 1),
        pyhessian_seeds=(2, 1),
        lanczos_seeds=(3, 2),
        cnn=dict(n_train=1000, feature_multiplier=16, **_SMALL, pretrain_steps=100, pretrain_eta=0.005),
        transformer=dict(
            batch_size=128,
            num_layers=6,
            num_heads=8,
            key_size=32,
            d_model=128,
            seq_len=64,
            **_SMALL,
            pretrain_steps=100,
            pretrain_eta=0.1,
        ),
        tf32_steps=20,
        track_eta=0.01,
        trace_caps=dict(lanczos=40, power=200),
        trace_seeds=2,
        max_seconds=240.0,
    ),
}

#: The three models: the task, its size keys in a preset, the extra run fields, the test examples measured.
MODELS: dict[str, dict[str, Any]] = {
    "mnist": dict(task="mnist", sizes=("depth", "width"), run={}, n_test=1000),
    "cnn": dict(task="cifar10", sizes=("feature_multiplier",), run={}, n_test=10),
    "transformer": dict(
        task="shakespeare",
        sizes=("num_layers", "num_heads", "key_size", "d_model", "seq_len"),
        run=dict(loss="cross_entropy", measure_data="fixed"),
        n_test=None,  # test chunks: one batch
    ),
}


# ------------------------------------------------------------------------------------------ the points
@dataclass
class Bench:
    """One benchmark run: settings, budget, remarks, the result so far and the MNIST point's state."""

    cfg: dict[str, Any]
    device: torch.device
    seed: int
    data_dir: str | None
    clock: bm.Clock
    notes: list[str]
    runs_root: Path
    result: dict[str, Any] = field(default_factory=dict)
    point: bm.Point | None = None
    first_vectors: dict[int, torch.Tensor] = field(default_factory=dict)

    def log(self, msg: str) -> None:
        """A progress line with the elapsed time."""
        print(f"[{self.clock.elapsed():7.1f} s] {msg}", flush=True)


def run_config(b: Bench, name: str, spec: dict[str, Any], train: dict[str, Any], **extra: Any) -> RunConfig:
    """The library run that pre-trains model ``name``: SAM for ``pretrain_steps``, checks at both ends."""
    model = MODELS[name]
    minibatch = {"batch_size": spec["batch_size"]} if "batch_size" in spec else {}
    return RunConfig(
        task=model["task"],
        eta=train["pretrain_eta"],
        rho=train["rho"],
        optimizer="sam",
        model={k: spec[k] for k in model["sizes"]},
        n_train=spec.get("n_train"),
        n_test=model["n_test"] or spec["batch_size"],
        seed=b.seed,
        steps=train["pretrain_steps"],
        measure_every=train["pretrain_steps"],
        device=b.device.type,
        **model["run"],
        **minibatch,
        **extra,
    ).validate()


def pretrained_point(b: Bench, name: str, spec: dict[str, Any], train: dict[str, Any]) -> tuple[bm.Point, dict]:
    """Train model ``name`` with ``samedge_lib.engine.train.run`` to the benchmark point; return it and its record.

    Divergence is the run's own rule (``max_loss``, here 10x the initial loss); on divergence the step
    size is halved (at most twice) and ``train["pretrain_eta"]`` records the one used.
    """
    for attempt in range(3):
        task = build_task(run_config(b, name, spec, train), b.device, torch.float32, b.data_dir)
        max_loss = DIVERGED_LOSS_FACTOR * float(task.loss(task.params, task.batch_at(0)).detach())
        res = run(
            run_config(b, name, spec, train, max_loss=max_loss), root=b.runs_root, data_dir=b.data_dir, progress=False
        )
        if res.status["state"] == "finished":
            break
        if attempt == 2:
            raise RuntimeError(f"{name}: pre-training diverged three times: {res.status.get('reason')}")
        b.notes.append(f"{name}: {res.status.get('reason')}; pre-training restarted with eta halved")
        train["pretrain_eta"] /= 2
    state = torch.load(res.path / "checkpoint.pt", map_location=b.device, weights_only=True)
    task64 = build_task(res.config, b.device, torch.float64, b.data_dir)
    pick = (lambda t: t.fixed_batch) if task.fixed_batch is not None else (lambda t: t.batch_at(0))
    point = bm.Point(task, pick(task), [p.to(b.device) for p in state["params"]], task64, pick(task64))
    first, last = res.measurements.iloc[0], res.measurements.iloc[-1]
    timings = res.provenance["timings"]
    record = {
        "pretrain_steps": train["pretrain_steps"],
        "eta": train["pretrain_eta"],
        "rho": train["rho"],
        "seconds": timings["wall_seconds"] - timings["measure_seconds"],
        "loss_init": float(first["loss"]),
        "loss": float(last["loss"]),
        "lambda1_init": float(first["lambda_1"]),
    }
    if "accuracy" in res.measurements:
        record |= {"train_accuracy_init": float(first["accuracy"]), "train_accuracy": float(last["accuracy"])}
    return point, record


def advance(point: bm.Point, params: list[torch.Tensor], steps: int, eta: float, rho: float) -> list[torch.Tensor]:
    """``steps`` more full-batch SAM steps from ``params`` on the point's batch (the warm-start gap)."""
    grad_fn = point.grad_fn()
    for _ in range(steps):
        params, _ = sam_step(params, grad_fn, eta, rho)
    return [p.detach() for p in params]


# ------------------------------------------------------------------------------------------ the sections
def mnist_point(b: Bench) -> bool:
    """1. The benchmark point of the MNIST MLP."""
    spec = b.cfg["mnist"]
    b.log(f"MNIST: pre-training {b.cfg['pretrain_steps']} SAM steps, eta {b.cfg['pretrain_eta']}, rho {b.cfg['rho']}")
    b.point, record = pretrained_point(b, "mnist", spec, b.cfg)
    b.result["mnist"] = {
        "setting": {
            "model": f"MLP depth {spec['depth']} width {spec['width']}",
            "n_params": count_parameters(b.point.task.model),
            "n_train": b.point.batch.size,
            "loss": "mse_mean",
            "dtype": "float32",
        },
        "point": {"how": "samedge_lib.engine.train.run: SAM from the seeded initialisation, full batch"} | record,
    }
    return True


def hvp_timing(b: Bench) -> bool:
    """2. Gradient and HVP-method times."""
    b.log("HVP timings")
    b.result["mnist"]["hvp_timing"] = bm.hvp_timings(b.point, b.cfg["repeats"], b.device)
    return True


def spectrum(b: Bench, out: dict[str, Any], point: bm.Point, spec: dict[str, Any], prefix: str) -> None:
    """Reference spectrum, product bias, solvers with their own rules and cost to accuracy, into ``out``.

    ``out`` must already hold ``hvp_timing``. ``spec``: ``ks`` (eigenvalue counts to compare, e.g.
    ``(1, 5)``), ``ref_k`` (size of the float64 reference), ``seeds`` (per solver, one count per ``k``),
    ``trace_caps``, ``trace_seeds`` and optionally ``trace_solvers``. The first Lanczos run's eigenvectors
    per ``k`` go to ``b.first_vectors`` for the MNIST point (the warm-start section starts from them).
    """
    timing = out["hvp_timing"]
    hvp_s = timing["methods"]["exact"]["median_s"]
    fd_s = timing["methods"]["finite_difference"]["median_s"]
    if not b.clock.fits(f"{prefix}reference", 150 * hvp_s * 3):
        return
    b.log(f"{prefix}float64 reference (top-{spec['ref_k']}, tol 1e-10)")
    ref, ref_res = bm.reference_spectrum(point, spec["ref_k"], b.device)
    out["reference"] = ref
    out["product_bias"] = bm.product_bias(point, ref_res.eigenvectors, ref["eigenvalues"])
    # Sanity check for the official estimator (largest magnitude): the most negative eigenvalue, roughly.
    sa = lanczos(point.operator64(), k=1, which="SA", tol=1e-3, max_iter=40, generator=torch.Generator().manual_seed(5))
    ref["lambda_min_estimate"] = float(sa.eigenvalues[0])
    ref["lambda_min_note"] = "Lanczos SA, <= 40 steps, tol 1e-3 (rough); |lambda_min| < lambda_1 means LM = LA"

    out["solvers"] = {}
    for idx, k in enumerate(spec["ks"]):
        key, block = f"top{k}", {}
        out["solvers"][key] = block
        seeds = spec["seeds"]
        plan = [
            ("lanczos", seeds["lanczos"][idx], 40 * k * hvp_s),
            ("pyhessian", seeds["pyhessian"][idx], 100 * k * hvp_s),
            ("official", seeds["official"][idx], 100 * k * fd_s),
            *([("official_exact_hvp", 1, 100 * hvp_s)] if k == 1 else []),
            ("eigsh", seeds["lanczos"][idx], 60 * k * hvp_s),
        ]
        for solver, n_seeds, worst in plan:
            rows = []
            for seed in range(n_seeds):
                # always at least one run when it fits; further seeds only while there is time
                if not b.clock.fits(f"{prefix}{key}/{solver}/seed{seed}", worst if seed == 0 else worst * 0.5):
                    break
                row, res = bm.solve(point, solver, k, seed, ref["eigenvalues"][:k], b.device)
                rows.append(row)
                if solver == "lanczos" and seed == 0 and point is b.point:
                    b.first_vectors[k] = res.eigenvectors.detach().clone()
            if rows:
                block[solver] = {"runs": rows, "summary": bm.summarise_runs(rows)}
                sm = block[solver]["summary"]
                b.log(
                    f"{prefix}{key} {solver:18s} HVPs {sm['n_matvec']['median']:6.0f}  grad-evals "
                    f"{sm['n_grad_evals']['median']:6.0f}  rel.err {sm['max_rel_err']['median']:.2e}"
                )

    if "top1" in out["solvers"]:
        b.log(f"{prefix}convergence traces (top-1, stopping rules off)")
        out["traces"] = bm.convergence_traces(point, ref["eigenvalues"], spec, b.clock, hvp_s, fd_s)
        eq = bm.equal_accuracy(out["traces"], hvp_s, fd_s, timing["gradient"]["median_s"])
        if eq is not None:
            out["equal_accuracy"] = eq
            bound = ">=" if eq["lower_bound"] else "="
            b.log(
                f"{prefix}to rel. err <= {bm.TARGET_REL_ERR:g}: official {bound} "
                f"{eq['official_grad_evals_to_target']:.0f} grad-evals,"
                f" default {eq['default_grad_evals']:.0f} (ratio {bound} {eq['grad_eval_ratio']:.1f})"
            )


def mnist_spectrum(b: Bench) -> bool:
    """3.-5. Reference, solvers with their own rules, cost to accuracy; stop here without a reference."""
    cfg, mn = b.cfg, b.result["mnist"]
    seeds = {s: cfg[f"{s}_seeds"] for s in ("lanczos", "pyhessian", "official")}
    spec = dict(ks=(1, 5), ref_k=5, seeds=seeds, trace_caps=cfg["trace_caps"], trace_seeds=cfg["trace_seeds"])
    spectrum(b, mn, b.point, spec, "")
    if "reference" not in mn:
        return False
    mn["point"]["lambda1"] = mn["reference"]["eigenvalues"][0]
    mn["point"]["two_over_eta"] = 2 / cfg["pretrain_eta"]
    return True


def warm_start(b: Bench) -> bool:
    """6. Warm starts: more steps at the tracked runs' step size and at the pre-training one, then Lanczos."""
    cfg, mn, point = b.cfg, b.result["mnist"], b.point
    tg, hvp_s = mn["hvp_timing"]["gradient"]["median_s"], mn["hvp_timing"]["methods"]["exact"]["median_s"]
    lam1 = mn["reference"]["eigenvalues"][0]
    cases: dict[str, Any] = {}
    for case, eta in (("track_eta", cfg["track_eta"]), ("pretrain_eta", cfg["pretrain_eta"])):
        estimate = 2 * cfg["warm_steps"] * tg + 200 * hvp_s * 3 + 60 * hvp_s
        if 1 not in b.first_vectors or not b.clock.fits(f"warm_start/{case}", estimate):
            continue
        b.log(f"warm start ({case}): {cfg['warm_steps']} more SAM steps at eta {eta:g}, fresh reference")
        params_b = advance(point, point.params, cfg["warm_steps"], eta, cfg["rho"])
        ref_b, _ = bm.reference_spectrum(point, 5, b.device, params_b)
        lam_b = ref_b["eigenvalues"]
        warm: dict[str, Any] = {
            "eta": eta,
            "steps_between": cfg["warm_steps"],
            "reference": ref_b,
            "loss": point.loss(params_b),
            "lambda1_change": (lam_b[0] - lam1) / lam1,
        }
        for k, idx in ((1, 0), (5, 1)):
            if k not in b.first_vectors:
                continue
            n_cold = cfg["lanczos_seeds"][idx]
            cold = [bm.solve(point, "lanczos", k, 100 + s, lam_b[:k], b.device, params_b)[0] for s in range(n_cold)]
            hot, _ = bm.solve(point, "lanczos", k, 0, lam_b[:k], b.device, params_b, v0=b.first_vectors[k])
            cold_sum = bm.summarise_runs(cold)
            warm[f"top{k}"] = {
                "cold": {"runs": cold, "summary": cold_sum},
                "warm": hot,
                "warm_over_cold_matvec": hot["n_matvec"] / cold_sum["n_matvec"]["median"],
                "start_rayleigh_rel_err": None,
            }
            if k == 1:  # how good the previous vector is by itself: its Rayleigh quotient at the new point
                u_prev = b.first_vectors[1][:, 0].double()
                hu = point.operator("exact", params_b).matvec(u_prev.to(params_b[0].dtype)).double()
                rq = float(u_prev @ hu) / float(u_prev @ u_prev)
                warm["top1"]["start_rayleigh_rel_err"] = abs(rq - lam_b[0]) / lam_b[0]
            b.log(f"warm top{k} ({case}): {hot['n_matvec']} HVPs vs cold {cold_sum['n_matvec']['median']:.0f}")
        cases[case] = warm
    if cases:
        mn["warm_start"] = {"cases": cases}
    return True


def overhead(b: Bench) -> bool:
    """7. The share of time a check every ``CHECK_EVERY`` SAM steps takes: cold, warm (tracked eta), official."""
    cfg, mn, point = b.cfg, b.result["mnist"], b.point
    b.log("SAM step time")
    grad_fn = point.grad_fn()
    sam_t = bm.repeat_time(
        lambda: sam_step(point.params, grad_fn, cfg["pretrain_eta"], cfg["rho"]), b.device, cfg["repeats"]
    )
    tg = mn["hvp_timing"]["gradient"]["median_s"]
    over: dict[str, Any] = {
        "check_every": CHECK_EVERY,
        "sam_step": sam_t,
        "sam_step_over_gradient": sam_t["median_s"] / tg,
    }
    checks: dict[str, tuple[float, float]] = {}
    for solver in ("lanczos", "official"):
        blk = mn["solvers"].get("top1", {}).get(solver)
        if blk is not None:
            checks[solver] = (blk["summary"]["wall_s"]["median"], blk["summary"]["n_grad_evals"]["median"])
    hot = mn.get("warm_start", {}).get("cases", {}).get("track_eta", {}).get("top1", {}).get("warm")
    if hot is not None:
        checks["lanczos_warm"] = (hot["wall_s"], hot["n_grad_evals"])
    for name, (check_s, evals) in checks.items():
        over[name] = {
            "check_s": check_s,
            "share_of_wall_time": check_s / (CHECK_EVERY * sam_t["median_s"] + check_s),
            "share_in_grad_evals": evals / (2 * CHECK_EVERY + evals),
        }
    mn["overhead"] = over
    return True


def memory(b: Bench) -> bool:
    """8. Peak memory of a gradient and of the two checks."""
    tg = b.result["mnist"]["hvp_timing"]["gradient"]["median_s"]
    hvp_s = b.result["mnist"]["hvp_timing"]["methods"]["exact"]["median_s"]
    if b.clock.fits("memory", 4 * (2 * tg + 30 * hvp_s + 200 * tg)):
        b.log("peak memory")
        b.result["mnist"]["memory"] = bm.memory_section(b.point, b.device)
    return True


def set_tf32(enabled: bool) -> None:
    """Switch TF32 for matmuls and cuDNN convolutions."""
    torch.backends.cuda.matmul.allow_tf32 = enabled
    torch.backends.cudnn.allow_tf32 = enabled


def tf32(b: Bench) -> bool:
    """9. CUDA only: SAM steps/s and lambda_1 (exact Lanczos, tol 1e-6) in strict float32 and with TF32."""
    if b.device.type != "cuda":
        b.clock.skipped["tf32"] = "CUDA only (TF32 does not exist on CPUs)"
        return True
    cfg, mn, point = b.cfg, b.result["mnist"], b.point
    tg, hvp_s = mn["hvp_timing"]["gradient"]["median_s"], mn["hvp_timing"]["methods"]["exact"]["median_s"]
    if not b.clock.fits("tf32", 2 * (cfg["tf32_steps"] + 2) * 2 * tg + 2 * 60 * hvp_s + 2 * 200 * tg):
        return True
    b.log("TF32 versus strict float32")
    reference, grad_fn, out = mn["reference"]["eigenvalues"][0], point.grad_fn(), {}
    for mode, flag in (("strict_fp32", False), ("tf32", True)):
        set_tf32(flag)
        t = bm.repeat_time(
            lambda: sam_step(point.params, grad_fn, cfg["pretrain_eta"], cfg["rho"]), b.device, cfg["tf32_steps"], 2
        )
        lam = float(lanczos(point.operator(), k=1, tol=1e-6, generator=torch.Generator().manual_seed(0)).eigenvalues[0])
        off = official_power_iteration(point.operator("finite_difference"), generator=torch.Generator().manual_seed(0))
        out[mode] = {
            "sam_step_s": t["median_s"],
            "sam_steps_per_s": 1.0 / t["median_s"],
            "lambda1_lanczos": lam,
            "lambda1_rel_err_vs_fp64": abs(lam - reference) / abs(reference),
            "official_lambda1_seed0": float(off.eigenvalues[0]),
            "official_rel_err_vs_fp64": abs(float(off.eigenvalues[0]) - reference) / abs(reference),
        }
    set_tf32(False)
    a, c = out["strict_fp32"]["lambda1_lanczos"], out["tf32"]["lambda1_lanczos"]
    out["lambda1_rel_diff_tf32_vs_strict"] = abs(c - a) / abs(a)
    out["speedup_tf32"] = out["tf32"]["sam_steps_per_s"] / out["strict_fp32"]["sam_steps_per_s"]
    mn["tf32"] = out
    return True


def other_models(b: Bench) -> bool:
    """10. The CNN and the Transformer at smaller scale: a pre-trained point, HVP timings, solvers, traces."""
    for name, how in (
        ("cnn", "samedge_lib.engine.train.run: SAM from the seeded initialisation, full batch"),
        ("transformer", "samedge_lib.engine.train.run: SAM on the run's minibatches, measured on its fixed batch"),
    ):
        mcfg = b.cfg[name]
        if not b.clock.fits(name, 10.0 if b.device.type == "cuda" else 30.0):
            continue
        b.log(f"{name}: {mcfg['pretrain_steps']} SAM steps at eta {mcfg['pretrain_eta']}")
        point, record = pretrained_point(b, name, mcfg, mcfg)
        sub: dict[str, Any] = {"setting": dict(mcfg) | {"n_params": count_parameters(point.task.model)}}
        sub["point"] = {"how": how} | record
        b.result[name] = sub
        b.log(f"{name}: HVP timings")
        sub["hvp_timing"] = bm.hvp_timings(point, b.cfg["repeats"], b.device)
        spec = {
            "ks": (1,),
            "ref_k": 2,
            "seeds": {k: (v,) for k, v in mcfg["solver_seeds"].items()},
            "trace_caps": mcfg["trace_caps"],
            "trace_seeds": mcfg["trace_seeds"],
            "trace_solvers": ("lanczos", "official"),
        }
        spectrum(b, sub, point, spec, f"{name}: ")
        if "reference" in sub:
            sub["point"]["lambda1"] = sub["reference"]["eigenvalues"][0]
    return True


#: The benchmark, in order; a section returning False ends it (no reference: nothing to compare against).
SECTIONS: tuple[Callable[[Bench], bool], ...] = (
    mnist_point,
    hvp_timing,
    mnist_spectrum,
    warm_start,
    overhead,
    memory,
    tf32,
    other_models,
)


def benchmark(b: Bench) -> dict[str, Any]:
    """Run every section that fits in the budget; return the measured sections (``b.notes`` gets remarks)."""
    for section in SECTIONS:
        if not section(b):
            break
    return b.result


# ------------------------------------------------------------------------------------------ command line
def load_note(when: str = "start") -> str:
    """The 1-minute load average against the core count (other processes distort CPU timings)."""
    try:
        la = os.getloadavg()[0]
    except OSError:
        return "load average unavailable"
    return f"1-min load average {la:.2f} on {os.cpu_count()} cores at the {when}"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--preset", choices=sorted(PRESETS), default="cpu")
    ap.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="auto: CUDA when available")
    ap.add_argument("--out", default=None, help="JSON path (default results/benchmark/<machine-tag>.json)")
    ap.add_argument("--out-dir", default=None, help="write <out-dir>/<machine-tag>.json instead")
    ap.add_argument("--max-seconds", type=float, default=None, help="time guard (default: the preset's)")
    ap.add_argument("--seed", type=int, default=0, help="model initialisation seed")
    ap.add_argument("--data-dir", default=None, help="data folder (default $SAMEDGE_DATA)")
    ap.add_argument("--pretrain-steps", type=int, default=None, help="override the preset's pre-training steps")
    ap.add_argument("--n-train", type=int, default=None, help="override the MNIST training-set size")
    ap.add_argument("--note", action="append", default=[], help="free-text note stored in the JSON (repeatable)")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    args = ap.parse_args(argv)
    if args.out and args.out_dir:
        ap.error("give --out or --out-dir, not both")
    if args.max_seconds is not None and not args.max_seconds > 0:
        ap.error(f"--max-seconds must be > 0, got {args.max_seconds}")
    for name in ("pretrain_steps", "n_train", "threads"):
        value = getattr(args, name)
        if value is not None and value < 1:
            ap.error(f"--{name.replace('_', '-')} must be >= 1, got {value}")
    if args.device == "cuda" and not torch.cuda.is_available():
        ap.error("--device cuda was asked for but torch.cuda.is_available() is False; use --device cpu")
    return args


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the benchmark, write the JSON, print the summary; returns the result."""
    args = parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    cfg = json.loads(json.dumps(PRESETS[args.preset]))  # deep copy (tuples become lists)
    if args.pretrain_steps is not None:
        cfg["pretrain_steps"] = args.pretrain_steps
    if args.n_train is not None:
        cfg["mnist"]["n_train"] = args.n_train
    max_seconds = args.max_seconds if args.max_seconds is not None else cfg["max_seconds"]
    clock = bm.Clock(max_seconds)
    set_tf32(False)  # strict float32 everywhere except the TF32 section
    torch.manual_seed(args.seed)
    notes = [load_note(), *args.note]
    if device.type == "cpu":
        notes.append(
            "CPU timings on a shared machine: other processes may have been running; ratios are more robust "
            "than absolute times"
        )
    provenance = collect_provenance(device, torch.float32)
    print(
        f"sharpness benchmark, preset {args.preset}, {device_description(device)}, budget {max_seconds:g} s",
        flush=True,
    )
    with tempfile.TemporaryDirectory(prefix="samedge-benchmark-runs-") as runs_root:
        b = Bench(cfg, device, args.seed, args.data_dir, clock, notes, Path(runs_root))
        measured = benchmark(b)
    result = {
        "schema": SCHEMA,
        "machine_tag": machine_tag(device),
        "preset": args.preset,
        "device": device_description(device),
        "torch": torch.__version__,
        "dtype": "float32 (strict, TF32 off) except the float64 reference and the TF32 section",
        "settings": cfg
        | {
            "seed": args.seed,
            "max_seconds": max_seconds,
            "default_solver": f"lanczos, exact HVP (double backward re-using one graph), tol {bm.DEFAULT_TOL:g}",
            "official_solver": (
                "official_power_iteration on finite_difference HVPs (eps 1e-3, denominator 2 eps + 1e-5)"
            ),
            "pyhessian_solver": "pyhessian_power_iteration on exact HVPs, tol 1e-3, max_iter 100",
            "eigsh_solver": f"scipy.sparse.linalg.eigsh (ARPACK) on exact HVPs, tol {bm.DEFAULT_TOL:g}",
            "reference": f"lanczos in float64, tol {bm.REFERENCE_TOL:g}",
            "check_every": CHECK_EVERY,
            "torch_threads": torch.get_num_threads(),
            "platform": platform.platform(),
        },
        "provenance": provenance,
        "notes": [*notes, load_note("end")],
        **measured,
    }
    result["targets"] = stored_targets(result)
    result["skipped"] = clock.skipped
    result["elapsed_s"] = clock.elapsed()
    result["summary_lines"] = summary_lines(result)
    folder = Path(args.out_dir) if args.out_dir else REPO / "results" / "benchmark"
    out = Path(args.out) if args.out else folder / f"{result['machine_tag']}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    print("\n".join(["", "=== summary ===", *result["summary_lines"], f"elapsed {result['elapsed_s']:.1f} s -> {out}"]))
    return result


if __name__ == "__main__":
    main()
