"""Sharpness benchmark: how fast and how accurately can lambda_1 (and the top 5) be measured?

One command measures, at one weight point part-way through training of the paper's MNIST MLP:

1. the time of a gradient and of each HVP method (``samedge_lib.hessian.HVP_METHODS``) as a ratio to it;
2. a converged float64 reference for the top-1 and top-5 eigenvalues (Lanczos, tol 1e-10);
3. for top-1 and top-5, the cost (products, gradient-evaluation equivalents, wall time) and the relative
   error of the official finite-difference power iteration (several seeds), the PyHessian-style power
   iteration and the book's default (Lanczos, exact HVP, tol 1e-3, with its residual certificate);
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

The weights: training from the seeded initialisation with SAM (rho 0.1) for ``pretrain_steps`` steps at
``pretrain_eta``. The paper's eta = 0.01 would need thousands of full-batch steps to leave the
initial regime, which no benchmark budget allows, so the pre-training uses a larger step (still below
2 / lambda_1 at initialisation, measured ~1.9 for the CPU net and ~2.9 for the paper net); the JSON
records the loss, accuracy and lambda_1 at the point against the initial values, so a reader can check
that the point is part-way through training (loss well down, not converged).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch.func import functional_call

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(REPO))

from samedge_lib import data as data_mod  # noqa: E402
from samedge_lib.eigen import EigResult, lanczos, official_power_iteration, pyhessian_power_iteration  # noqa: E402
from samedge_lib.hessian import GRAD_EVALS_PER_MATVEC, HVP_METHODS, HessianOperator  # noqa: E402
from samedge_lib.losses import get_loss  # noqa: E402
from samedge_lib.models import count_parameters, make_model  # noqa: E402
from samedge_lib.provenance import collect, device_description, machine_tag  # noqa: E402
from samedge_lib.updates import sam_step  # noqa: E402

SCHEMA = "samedge-sharpness-benchmark/2"
#: The book's default check: Lanczos on exact HVPs at this relative residual tolerance.
DEFAULT_TOL = 1e-3
#: Tolerance of the float64 reference.
REFERENCE_TOL = 1e-10
#: Accuracy the summary's target line is about.
TARGET_REL_ERR = 1e-3
#: Steps between checks in the tracking-overhead estimate.
CHECK_EVERY = 100

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


# ------------------------------------------------------------------------------------------ timing helpers
class Clock:
    """Wall-clock budget of the whole run; sections ask whether their estimated cost still fits."""

    def __init__(self, max_seconds: float) -> None:
        self.start = time.perf_counter()
        self.max_seconds = max_seconds
        self.skipped: dict[str, str] = {}

    def elapsed(self) -> float:
        """Seconds since the start of the run."""
        return time.perf_counter() - self.start

    def fits(self, section: str, estimate_s: float) -> bool:
        """True if ``estimate_s`` more seconds fit in the budget; else record why ``section`` is skipped."""
        left = self.max_seconds - self.elapsed()
        if estimate_s <= left:
            return True
        self.skipped[section] = (
            f"skipped by --max-seconds {self.max_seconds:g}: estimated {estimate_s:.1f} s, {max(left, 0):.1f} s left"
        )
        print(f"  [skip] {section}: {self.skipped[section]}", flush=True)
        return False


def sync(device: torch.device) -> None:
    """Wait for queued GPU work so wall-clock times mean what they say."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], Any], device: torch.device) -> tuple[Any, float]:
    """``(fn(), seconds)`` with device synchronisation on both ends."""
    sync(device)
    t0 = time.perf_counter()
    out = fn()
    sync(device)
    return out, time.perf_counter() - t0


def repeat_time(fn: Callable[[], Any], device: torch.device, repeats: int, warmup: int = 1) -> dict[str, Any]:
    """Median/min/max seconds of ``repeats`` calls of ``fn`` after ``warmup`` untimed calls."""
    for _ in range(warmup):
        timed(fn, device)
    times = [timed(fn, device)[1] for _ in range(repeats)]
    return {"median_s": statistics.median(times), "min_s": min(times), "max_s": max(times), "n": repeats}


def spread(values: Sequence[float]) -> dict[str, float]:
    """Median and range of a list of numbers."""
    vals = [float(v) for v in values]
    return {"median": statistics.median(vals), "min": min(vals), "max": max(vals), "n": len(vals)}


# ------------------------------------------------------------------------------------------ problem setup
class Problem:
    """A model, a fixed batch and a functional loss; builds gradients, operators and SAM steps."""

    def __init__(self, model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, loss_name: str) -> None:
        self.model = model
        self.names = [n for n, _ in model.named_parameters()]
        self.x, self.y = x, y
        self.loss = get_loss(loss_name)
        self.loss_name = loss_name

    def loss_fn(self, params: Sequence[torch.Tensor]) -> torch.Tensor:
        """The batch loss at ``params`` (functional: the model's own parameters are not used)."""
        out = functional_call(self.model, dict(zip(self.names, params, strict=True)), (self.x,))
        return self.loss(out, self.y)

    def grad_fn(self, params: Sequence[torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """``(loss, grads)`` at ``params`` (one forward and one backward pass)."""
        leaves = [p.detach().requires_grad_(True) for p in params]
        with torch.enable_grad():
            loss = self.loss_fn(leaves)
            grads = torch.autograd.grad(loss, leaves)
        return loss.detach(), [g.detach() for g in grads]

    def operator(self, params: Sequence[torch.Tensor], method: str) -> HessianOperator:
        """A fresh Hessian operator at ``params``."""
        return HessianOperator(self.loss_fn, params, method=method)

    def as_dtype(self, dtype: torch.dtype) -> Problem:
        """The same problem with the model and the floating-point data cast to ``dtype``."""
        import copy

        model = copy.deepcopy(self.model).to(dtype=dtype)
        x = self.x.to(dtype) if self.x.is_floating_point() else self.x
        y = self.y.to(dtype) if self.y.is_floating_point() else self.y
        return Problem(model, x, y, self.loss_name)


def mnist_problem(spec: dict[str, Any], device: torch.device, seed: int, data_dir: str | None) -> Problem:
    """The MNIST MLP of ``spec`` on the first ``n_train`` training images (full batch), float32."""
    ds = data_mod.load_mnist(data_dir=data_dir, n_train=spec["n_train"], n_test=1000)
    model = make_model("mnist", seed=seed, depth=spec["depth"], width=spec["width"]).to(device)
    return Problem(model, ds.x_train.to(device), ds.t_train.to(device), "mse_mean")


def cnn_problem(spec: dict[str, Any], device: torch.device, seed: int, data_dir: str | None) -> Problem:
    """The CIFAR-10 CNN on the first ``n_train`` training images (full batch), float32."""
    ds = data_mod.load_cifar10(data_dir=data_dir, n_train=spec["n_train"], n_test=10)
    model = make_model("cifar10", seed=seed, feature_multiplier=spec["feature_multiplier"]).to(device)
    return Problem(model, ds.x_train.to(device), ds.t_train.to(device), "mse_mean")


def transformer_problem(spec: dict[str, Any], device: torch.device, seed: int, data_dir: str | None) -> Problem:
    """The character Transformer on one minibatch of tiny_shakespeare (the batch of step 0)."""
    text = data_mod.load_tiny_shakespeare(data_dir=data_dir)
    batcher = data_mod.ChunkBatcher.from_tokens(
        text.train_tokens, batch_size=spec["batch_size"], seq_len=spec["seq_len"], seed=seed
    )
    xb, yb = batcher.batch(0)
    sizes = {k: spec[k] for k in ("num_layers", "num_heads", "key_size", "d_model", "seq_len")}
    model = make_model("shakespeare", seed=seed, **sizes).to(device)
    return Problem(model, xb.to(device), yb.to(device), "cross_entropy")


def initial_params(problem: Problem) -> list[torch.Tensor]:
    """The model's (seeded) initial parameters as detached clones."""
    return [p.detach().clone() for p in problem.model.parameters()]


@torch.no_grad()
def accuracy(problem: Problem, params: Sequence[torch.Tensor]) -> float:
    """Training accuracy of an image classifier at ``params``."""
    out = functional_call(problem.model, dict(zip(problem.names, params, strict=True)), (problem.x,))
    return float((out.argmax(-1) == problem.y.argmax(-1)).float().mean())


class TrainingDivergedError(RuntimeError):
    """The pre-training loss became non-finite or grew tenfold: the step size is too large."""


def train(problem: Problem, params: list[torch.Tensor], steps: int, eta: float, rho: float) -> list[torch.Tensor]:
    """``steps`` full-batch SAM steps (``samedge_lib.updates.sam_step``) from ``params``."""
    first: float | None = None
    for step in range(steps):
        params, info = sam_step(params, problem.grad_fn, eta, rho)
        loss = float(info.loss)
        first = loss if first is None else first
        if not math.isfinite(loss) or loss > 10 * first:
            raise TrainingDivergedError(
                f"SAM at eta {eta:g} diverged at step {step} (loss {loss:.3g}, first {first:.3g})"
            )
    return [p.detach() for p in params]


def pretrain(
    problem: Problem, params0: list[torch.Tensor], cfg: dict[str, Any], notes: list[str]
) -> list[torch.Tensor]:
    """Pre-train to the benchmark point; on divergence halve ``cfg["pretrain_eta"]`` (at most twice)."""
    for attempt in range(3):
        try:
            return train(problem, params0, cfg["pretrain_steps"], cfg["pretrain_eta"], cfg["rho"])
        except TrainingDivergedError as exc:
            if attempt == 2:
                raise
            notes.append(f"{exc}; pre-training restarted from the initialisation with eta halved")
            cfg["pretrain_eta"] /= 2
    raise AssertionError("unreachable")


# ------------------------------------------------------------------------------------------ measurements
def hvp_timings(problem: Problem, params: list[torch.Tensor], repeats: int, device: torch.device) -> dict[str, Any]:
    """Gradient time and, per HVP method, the median product time and its ratio to a gradient."""
    grad = repeat_time(lambda: problem.grad_fn(params), device, repeats)
    gen = torch.Generator().manual_seed(1234)
    dim = sum(p.numel() for p in params)
    vectors = [torch.randn(dim, generator=gen).to(device=device, dtype=params[0].dtype) for _ in range(repeats + 1)]
    methods: dict[str, Any] = {}
    for method in HVP_METHODS:
        op = problem.operator(params, method)
        build_s = None
        if method == "exact":  # the one-off graph build a check pays per point (shared with the gradient)
            _, build_s = timed(op.gradient, device)
        timed(lambda op=op: op.matvec(vectors[0]), device)  # warm-up (forward-AD decompositions, allocator)
        times = [timed(lambda op=op, v=v: op.matvec(v), device)[1] for v in vectors[1:]]
        med = statistics.median(times)
        methods[method] = {
            "median_s": med,
            "min_s": min(times),
            "max_s": max(times),
            "ratio_to_gradient": med / grad["median_s"],
            "nominal_grad_evals": GRAD_EVALS_PER_MATVEC[method],
            "graph_build_s": build_s,
            "graph_build_ratio": None if build_s is None else build_s / grad["median_s"],
        }
        del op
    return {"gradient": grad, "methods": methods, "n_params": dim}


def rel_errors(estimate: Sequence[float], reference: Sequence[float]) -> list[float]:
    """``|est_i - ref_i| / |ref_i|`` index by index (both sorted in decreasing order)."""
    est = sorted((float(e) for e in estimate), reverse=True)
    ref = sorted((float(r) for r in reference), reverse=True)[: len(est)]
    return [abs(e - r) / abs(r) for e, r in zip(est, ref, strict=True)]


def solve(
    problem: Problem,
    params: list[torch.Tensor],
    solver: str,
    k: int,
    seed: int,
    reference: Sequence[float],
    device: torch.device,
    v0: torch.Tensor | None = None,
) -> tuple[dict[str, Any], EigResult]:
    """One solver run from a fresh operator (its graph build and gradient included in the cost)."""
    gen = torch.Generator().manual_seed(seed)
    method = "finite_difference" if solver == "official" else "exact"
    op = problem.operator(params, method)

    def run() -> EigResult:
        if solver in ("official", "official_exact_hvp"):
            return official_power_iteration(op, k=k, generator=gen)
        if solver == "pyhessian":
            return pyhessian_power_iteration(op, k=k, tol=1e-3, max_iter=100, generator=gen)
        if solver == "lanczos":
            return lanczos(op, k=k, v0=v0, tol=DEFAULT_TOL, generator=gen)
        raise ValueError(f"unknown solver {solver!r}")

    res, wall = timed(run, device)
    errs = rel_errors(res.eigenvalues.tolist(), reference)
    row: dict[str, Any] = {
        "seed": seed,
        "eigenvalues": [float(e) for e in res.eigenvalues],
        "rel_err": errs,
        "max_rel_err": max(errs),
        "n_matvec": int(res.n_matvec),
        "n_grad_evals": int(op.n_grad_evals),
        "wall_s": wall,
        "converged": bool(res.converged),
        "residuals": [float(r) for r in res.residuals],
        "warm": v0 is not None,
    }
    if res.ritz_residuals is not None:
        row["ritz_residuals"] = [float(r) for r in res.ritz_residuals]
    if solver == "lanczos":  # the largest wanted residual estimate after every product (warm-start figure)
        row["residual_history"] = [[int(h[0]), max(float(x) for x in h[2])] for h in res.history]
    if solver == "lanczos":  # validate the certificate with true residuals (extra products, not counted)
        true_res = []
        for i in range(res.eigenvectors.shape[1]):
            u = res.eigenvectors[:, i]
            hu = op.matvec(u).double()
            theta = float(res.eigenvalues[i])
            true_res.append(float(torch.linalg.vector_norm(hu - theta * u.double())) / abs(theta))
        row["true_residuals"] = true_res
        # |theta - lambda| <= ||r|| for a unit vector (Weyl/Bauer-Fike), i.e. rel. error <= residual.
        row["certified_rel_err_bound"] = max(true_res)
    return row, res


def summarise_runs(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Median and range over seeds of cost and error."""
    return {key: spread([r[key] for r in rows]) for key in ("n_matvec", "n_grad_evals", "wall_s", "max_rel_err")} | {
        "all_converged": all(r["converged"] for r in rows)
    }


#: Nominal gradient evaluations per product and per check (graph build + gradient) of each traced solver.
TRACE_SOLVERS: dict[str, tuple[str, int, int]] = {
    # name: (HVP method, gradient evaluations per product, once per check)
    "lanczos": ("exact", 1, 1),
    "official": ("finite_difference", 2, 0),
    "official_exact_hvp": ("exact", 1, 1),
    "pyhessian": ("exact", 1, 1),
}


def official_default_stop(values: Sequence[float], rel_tol: float = 1e-3, abs_tol: float = 1e-3) -> int:
    """Products after which the official rule (SPEC 5.4) stops, given the norms it saw after each product.

    The rule keeps going while ``|n_t - n_{t-1}| > rel_tol * n_t`` and ``|n_t| > abs_tol``, with the dummy
    ``n_0 = 1.0``; applied to the norms of a run that ignored it, it says where the default run would
    have stopped (the trajectory up to there is the same: same start, same products).
    """
    last = 1.0
    for t, cur in enumerate(values, start=1):
        if not (abs(cur - last) > cur * rel_tol and abs(cur) > abs_tol):
            return t
        last = cur
    return len(values)


def products_to_reach(errors: Sequence[float], target: float) -> int | None:
    """The first product count from which the error stays <= ``target`` to the end of the trace (1-based)."""
    first = None
    for i, e in enumerate(errors, start=1):
        if e <= target:
            first = i if first is None else first
        else:
            first = None
    return first


def convergence_traces(
    problem: Problem,
    params: list[torch.Tensor],
    reference: Sequence[float],
    cfg: dict[str, Any],
    device: torch.device,
    clock: Clock,
    hvp_s: float,
    fd_s: float,
) -> dict[str, Any]:
    """Cost to accuracy: the top-1 error after every product of each solver, run past its stopping rule.

    Each solver runs with its stopping rule switched off up to a cap of products, from the same seeded
    starts as the solver section, and its estimate after every product is compared with the float64
    reference. From the traces: the products each needs before its error stays below 1e-3 (an *oracle*
    stop that no solver can apply, which favours the power iterations), where the official rule and the
    default's residual certificate stop, and the errors there.
    """
    lam = float(reference[0])
    out: dict[str, Any] = {"target_rel_err": TARGET_REL_ERR, "caps": dict(cfg["trace_caps"]), "solvers": {}}
    for solver, (method, per_product, once) in TRACE_SOLVERS.items():
        if solver not in cfg.get("trace_solvers", TRACE_SOLVERS):
            continue
        cap = cfg["trace_caps"]["lanczos" if solver == "lanczos" else "power"]
        n_seeds = cfg["trace_seeds"] if solver == "official" else 1
        per_s = fd_s if method == "finite_difference" else hvp_s
        runs = []
        for seed in range(n_seeds):
            if not clock.fits(f"traces/{solver}/seed{seed}", 1.2 * cap * per_s + 2 * per_s):
                break
            gen = torch.Generator().manual_seed(seed)
            op = problem.operator(params, method)
            if solver == "lanczos":
                res = lanczos(op, k=1, tol=0.0, max_iter=cap, generator=gen)
            elif solver == "pyhessian":
                res = pyhessian_power_iteration(op, k=1, tol=0.0, max_iter=cap, generator=gen)
            else:
                res = official_power_iteration(op, k=1, generator=gen, rel_tol=0.0, abs_tol=0.0, max_iter=cap)
            products = [int(h[0]) for h in res.history]
            values = [float(h[1][-1] if solver == "pyhessian" else h[1][0]) for h in res.history]
            errors = [abs(v - lam) / abs(lam) for v in values]
            run: dict[str, Any] = {
                "seed": seed,
                "products": products,
                "values": values,
                "rel_err": errors,
                "grad_evals": [once + per_product * n for n in products],
                "products_to_target": products_to_reach(errors, TARGET_REL_ERR),
            }
            if solver == "lanczos":
                est = [float(h[2][0]) for h in res.history]
                run["residual_estimates"] = est
                stop = next((i for i, r in enumerate(est) if r <= DEFAULT_TOL), None)
                run["certified_stop"] = (
                    None
                    if stop is None
                    else {
                        "products": products[stop],
                        "grad_evals": once + per_product * products[stop],
                        "rel_err": errors[stop],
                        "residual_estimate": est[stop],
                    }
                )
            if solver in ("official", "official_exact_hvp"):
                t = official_default_stop(values)
                run["default_stop"] = {
                    "products": t,
                    "grad_evals": once + per_product * t,
                    "rel_err": errors[t - 1],
                }
            runs.append(run)
        if runs:
            reached = [r["products_to_target"] for r in runs]
            out["solvers"][solver] = {
                "hvp_method": method,
                "grad_evals_per_product": per_product,
                "grad_evals_per_check": once,
                "cap_products": cap,
                "runs": runs,
                "reached_target_all_seeds": all(x is not None for x in reached),
            }
    return out


def equal_accuracy(traces: dict[str, Any], hvp_s: float, fd_s: float, grad_s: float) -> dict[str, Any] | None:
    """Cost of the official estimator to reach the target (oracle stop) over the default's certified cost.

    Gradient evaluations are nominal (a finite-difference product is 2, an exact product 1, plus 1 per
    check for the graph); the time ratio uses the measured product times. When the official iteration
    never stays below the target within its cap, the ratio is a lower bound (``lower_bound`` True).
    """
    sv = traces.get("solvers", {})
    if "lanczos" not in sv or "official" not in sv:
        return None
    stops = [r["certified_stop"] for r in sv["lanczos"]["runs"] if r.get("certified_stop")]
    if not stops:
        return None
    ours_evals = statistics.median(s["grad_evals"] for s in stops)
    ours_products = statistics.median(s["products"] for s in stops)
    cap = sv["official"]["cap_products"]
    needed = [r["products_to_target"] for r in sv["official"]["runs"]]
    lower = any(n is None for n in needed)
    official_products = statistics.median(cap if n is None else n for n in needed)
    official_evals = 2 * official_products
    return {
        "target_rel_err": TARGET_REL_ERR,
        "default_products": ours_products,
        "default_grad_evals": ours_evals,
        "default_rel_err_at_stop": max(s["rel_err"] for s in stops),
        "official_products_to_target": official_products,
        "official_grad_evals_to_target": official_evals,
        "lower_bound": lower,
        "grad_eval_ratio": official_evals / ours_evals,
        "time_ratio": (official_products * fd_s) / (ours_products * hvp_s + grad_s),
        "official_default_stop_rel_err": statistics.median(
            r["default_stop"]["rel_err"] for r in sv["official"]["runs"]
        ),
        "official_default_stop_grad_evals": statistics.median(
            r["default_stop"]["grad_evals"] for r in sv["official"]["runs"]
        ),
    }


def reference_spectrum(
    problem64: Problem, params: list[torch.Tensor], k: int, device: torch.device
) -> tuple[dict[str, Any], EigResult]:
    """Converged float64 reference: Lanczos on exact HVPs of the float64 model, tol 1e-10, true residuals."""
    p64 = [p.double() for p in params]
    op = problem64.operator(p64, "exact")
    res, wall = timed(
        lambda: lanczos(op, k=k, tol=REFERENCE_TOL, generator=torch.Generator().manual_seed(777), true_residuals=True),
        device,
    )
    return {
        "eigenvalues": [float(e) for e in res.eigenvalues],
        "true_residuals": [float(r) for r in res.residuals],
        "n_matvec": int(res.n_matvec),
        "wall_s": wall,
        "converged": bool(res.converged),
        "dtype": "float64",
        "method": f"lanczos k={k} tol={REFERENCE_TOL:g} on exact HVPs, float64 model, data, weights",
    }, res


def product_bias(
    problem: Problem, params: list[torch.Tensor], vectors: torch.Tensor, eigenvalues: Sequence[float]
) -> dict[str, Any]:
    """Bias of one product at the reference eigenvectors, for the official and the exact HVP (float32).

    For a reference eigenpair ``(lambda, u)``, an unbiased product gives ``u . Hu = ||Hu|| = lambda``.
    The relative deviations of the Rayleigh quotient and of the norm (the quantity the official power
    iteration reports) isolate the error of the *product* from that of the solver.
    """
    out: dict[str, Any] = {}
    for method in ("finite_difference", "exact"):
        op = problem.operator(params, method)
        rows = []
        for i, lam in enumerate(eigenvalues):
            u64 = vectors[:, i].double()
            u64 = u64 / torch.linalg.vector_norm(u64)
            hu = op.matvec(u64.to(params[0].dtype)).double()
            rows.append(
                {
                    "index": i + 1,
                    "rayleigh_rel": (float(u64 @ hu) - lam) / abs(lam),
                    "norm_rel": (float(torch.linalg.vector_norm(hu)) - abs(lam)) / abs(lam),
                }
            )
        out[method] = rows
    return out


def _proc_status_kib(field: str) -> int | None:
    """A ``/proc/self/status`` field in KiB (Linux), or None where it does not exist."""
    try:
        m = re.search(rf"^{field}:\s+(\d+)\s+kB", Path("/proc/self/status").read_text(), re.MULTILINE)
    except OSError:
        return None
    return int(m.group(1)) if m else None


def _reset_peak_rss() -> bool:
    """Trim the heap and reset the kernel's peak-RSS mark, so that the next peak is the next operation's.

    glibc ``malloc_trim`` returns freed heap memory to the OS; writing 5 to ``/proc/self/clear_refs``
    (Linux >= 4.0) resets VmHWM to the current RSS.
    """
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def saved_tensor_mib(fn: Callable[[], Any]) -> float:
    """MiB of distinct tensors autograd saves for backward while ``fn`` runs (device independent).

    A gradient saves the activations of one forward pass; an exact-HVP check saves those of the
    forward pass and of the differentiable backward pass (``create_graph=True``), which it holds for the
    whole check. Tensors are counted once per storage.
    """
    seen: dict[tuple[int, int], int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        try:
            key = (t.untyped_storage().data_ptr(), t.untyped_storage().nbytes())
            seen[key] = key[1]
        except (RuntimeError, NotImplementedError):
            pass
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return sum(seen.values()) / 2**20


def memory_section(problem: Problem, params: list[torch.Tensor], device: torch.device) -> dict[str, Any]:
    """Peak memory of a gradient, of the default exact-HVP check and of the official check."""
    out: dict[str, Any] = {}

    def grad() -> Any:
        return problem.grad_fn(params)

    def check() -> Any:
        return lanczos(
            problem.operator(params, "exact"),
            k=1,
            tol=DEFAULT_TOL,
            generator=torch.Generator().manual_seed(0),
        )

    def official() -> Any:
        op = problem.operator(params, "finite_difference")
        return official_power_iteration(op, k=1, generator=torch.Generator().manual_seed(0))

    ops = (("gradient", grad), ("check", check), ("official_check", official))
    if device.type == "cuda":
        out["how"] = "torch.cuda.max_memory_allocated during the operation minus memory_allocated before it (MiB)"
        for name, fn in ops:
            torch.cuda.empty_cache()
            sync(device)
            base = torch.cuda.memory_allocated(device)
            torch.cuda.reset_peak_memory_stats(device)
            fn()
            sync(device)
            out[f"{name}_mib"] = (torch.cuda.max_memory_allocated(device) - base) / 2**20
    else:
        out["how"] = (
            "CPU: increase of the process's peak resident set size (Linux VmHWM, reset before each operation "
            "via /proc/self/clear_refs after glibc malloc_trim) over the RSS before it (MiB). Memory the "
            "allocator kept from earlier work can be reused without raising RSS, so these are lower bounds; "
            "see saved_tensor_mib for a device-independent count"
        )
        for name, fn in ops:
            if not _reset_peak_rss():
                out["how"] = "peak RSS unavailable (no /proc/self/clear_refs)"
                out[f"{name}_mib"] = None
                continue
            before = _proc_status_kib("VmRSS") or 0
            fn()
            peak = _proc_status_kib("VmHWM") or 0
            out[f"{name}_mib"] = max(peak - before, 0) / 1024
    # The official check's products are plain gradients: it saves what a gradient saves.
    out["saved_tensor_mib"] = {name: saved_tensor_mib(fn) for name, fn in ops[:2]}
    out["saved_tensor_how"] = (
        "MiB of distinct storages autograd saved for backward during the operation (gradient; default check)"
    )
    out["param_mib"] = sum(p.numel() * p.element_size() for p in params) / 2**20
    g, c = out.get("gradient_mib"), out.get("check_mib")
    out["check_over_gradient"] = c / g if g and c is not None else None
    st = out["saved_tensor_mib"]
    out["saved_check_over_gradient"] = st["check"] / st["gradient"] if st["gradient"] > 0 else None
    return out


def set_tf32(enabled: bool) -> None:
    """Switch TF32 for matmuls and cuDNN convolutions."""
    torch.backends.cuda.matmul.allow_tf32 = enabled
    torch.backends.cudnn.allow_tf32 = enabled


def tf32_section(
    problem: Problem, params: list[torch.Tensor], cfg: dict[str, Any], device: torch.device, reference: float
) -> dict[str, Any]:
    """SAM steps/s and lambda_1 (exact Lanczos, tol 1e-6) in strict float32 and with TF32, same weights."""
    out: dict[str, Any] = {}
    eta, rho = cfg["pretrain_eta"], cfg["rho"]
    for mode, flag in (("strict_fp32", False), ("tf32", True)):
        set_tf32(flag)
        t = repeat_time(lambda: sam_step(params, problem.grad_fn, eta, rho), device, cfg["tf32_steps"], warmup=2)
        op = problem.operator(params, "exact")
        res = lanczos(op, k=1, tol=1e-6, generator=torch.Generator().manual_seed(0))
        fd_op = problem.operator(params, "finite_difference")
        off = official_power_iteration(fd_op, k=1, generator=torch.Generator().manual_seed(0))
        out[mode] = {
            "sam_step_s": t["median_s"],
            "sam_steps_per_s": 1.0 / t["median_s"],
            "lambda1_lanczos": float(res.eigenvalues[0]),
            "lambda1_rel_err_vs_fp64": abs(float(res.eigenvalues[0]) - reference) / abs(reference),
            "official_lambda1_seed0": float(off.eigenvalues[0]),
            "official_rel_err_vs_fp64": abs(float(off.eigenvalues[0]) - reference) / abs(reference),
        }
    set_tf32(False)
    a, b = out["strict_fp32"]["lambda1_lanczos"], out["tf32"]["lambda1_lanczos"]
    out["lambda1_rel_diff_tf32_vs_strict"] = abs(b - a) / abs(a)
    out["speedup_tf32"] = out["tf32"]["sam_steps_per_s"] / out["strict_fp32"]["sam_steps_per_s"]
    return out


# ------------------------------------------------------------------------------------------ the run
def pick_device(arg: str) -> torch.device:
    """``auto``: CUDA when available, else CPU."""
    if arg == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if arg == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda was asked for but torch.cuda.is_available() is False; use --device cpu")
    if arg not in ("cpu", "cuda"):
        raise ValueError(f"--device must be auto, cpu or cuda, got {arg!r}")
    return torch.device(arg)


def spectrum_sections(
    out: dict[str, Any],
    prob: Problem,
    params: list[torch.Tensor],
    spec: dict[str, Any],
    device: torch.device,
    clock: Clock,
    log: Callable[[str], None],
    prefix: str,
) -> dict[int, torch.Tensor]:
    """Reference spectrum, product bias, solvers with their own rules and cost to accuracy, into ``out``.

    ``out`` must already hold ``hvp_timing``. ``spec``: ``ks`` (eigenvalue counts to compare, e.g.
    ``(1, 5)``), ``ref_k`` (size of the float64 reference), ``seeds`` (per solver, one count per ``k``),
    ``trace_caps``, ``trace_seeds`` and optionally ``trace_solvers``. Returns the first Lanczos run's
    eigenvectors per ``k`` (the warm-start section starts from them).
    """
    timing = out["hvp_timing"]
    tg = timing["gradient"]["median_s"]
    hvp_s = timing["methods"]["exact"]["median_s"]
    fd_s = timing["methods"]["finite_difference"]["median_s"]
    first_vectors: dict[int, torch.Tensor] = {}
    prob64 = prob.as_dtype(torch.float64)
    if not clock.fits(f"{prefix}reference", 150 * hvp_s * 3):
        return first_vectors
    log(f"{prefix}float64 reference (top-{spec['ref_k']}, tol 1e-10)")
    ref, ref_res = reference_spectrum(prob64, params, spec["ref_k"], device)
    out["reference"] = ref
    out["product_bias"] = product_bias(prob, params, ref_res.eigenvectors, ref["eigenvalues"])
    ref_vals = ref["eigenvalues"]
    # Sanity check for the official estimator (largest magnitude): the most negative eigenvalue, roughly.
    op_sa = prob64.operator([p.double() for p in params], "exact")
    sa = lanczos(op_sa, k=1, which="SA", tol=1e-3, max_iter=40, generator=torch.Generator().manual_seed(5))
    ref["lambda_min_estimate"] = float(sa.eigenvalues[0])
    ref["lambda_min_note"] = "Lanczos SA, <= 40 steps, tol 1e-3 (rough); |lambda_min| < lambda_1 means LM = LA"

    out["solvers"] = {}
    for idx, k in enumerate(spec["ks"]):
        key = f"top{k}"
        block: dict[str, Any] = {}
        out["solvers"][key] = block
        plan = [
            ("lanczos", spec["seeds"]["lanczos"][idx], 40 * k * hvp_s),
            ("pyhessian", spec["seeds"]["pyhessian"][idx], 100 * k * hvp_s),
            ("official", spec["seeds"]["official"][idx], 100 * k * fd_s),
        ]
        if k == 1:
            plan.append(("official_exact_hvp", 1, 100 * hvp_s))
        for solver, n_seeds, worst in plan:
            rows = []
            for seed in range(n_seeds):
                # always at least one run when it fits; further seeds only while there is time
                if not clock.fits(f"{prefix}{key}/{solver}/seed{seed}", worst if seed == 0 else worst * 0.5):
                    break
                row, res = solve(prob, params, solver, k, seed, ref_vals[:k], device)
                rows.append(row)
                if solver == "lanczos" and seed == 0:
                    first_vectors[k] = res.eigenvectors.detach().clone()
            if rows:
                block[solver] = {"runs": rows, "summary": summarise_runs(rows)}
                sm = block[solver]["summary"]
                log(
                    f"{prefix}{key} {solver:18s} HVPs {sm['n_matvec']['median']:6.0f}  grad-evals "
                    f"{sm['n_grad_evals']['median']:6.0f}  rel.err {sm['max_rel_err']['median']:.2e}"
                )

    if "top1" in out["solvers"]:
        log(f"{prefix}convergence traces (top-1, stopping rules off)")
        out["traces"] = convergence_traces(prob, params, ref_vals, spec, device, clock, hvp_s, fd_s)
        eq = equal_accuracy(out["traces"], hvp_s, fd_s, tg)
        if eq is not None:
            out["equal_accuracy"] = eq
            bound = ">=" if eq["lower_bound"] else "="
            log(
                f"{prefix}to rel. err <= {TARGET_REL_ERR:g}: official {bound} "
                f"{eq['official_grad_evals_to_target']:.0f} grad-evals,"
                f" default {eq['default_grad_evals']:.0f} (ratio {bound} {eq['grad_eval_ratio']:.1f})"
            )
    return first_vectors


def benchmark(
    cfg: dict[str, Any], device: torch.device, seed: int, data_dir: str | None, clock: Clock, notes: list[str]
) -> dict[str, Any]:
    """Run every section that fits in the budget; return the JSON-ready result (``notes`` gets remarks)."""
    result: dict[str, Any] = {}
    log = lambda msg: print(f"[{clock.elapsed():7.1f} s] {msg}", flush=True)  # noqa: E731

    # ---- 1. the benchmark point
    log("MNIST: loading data and model")
    prob = mnist_problem(cfg["mnist"], device, seed, data_dir)
    params0 = initial_params(prob)
    loss0 = float(prob.loss_fn(params0))
    acc0 = accuracy(prob, params0)
    log(f"pre-training: {cfg['pretrain_steps']} SAM steps, eta {cfg['pretrain_eta']}, rho {cfg['rho']}")
    params, pre_s = timed(lambda: pretrain(prob, params0, cfg, notes), device)
    mn: dict[str, Any] = {
        "setting": {
            "model": f"MLP depth {cfg['mnist']['depth']} width {cfg['mnist']['width']}",
            "n_params": count_parameters(prob.model),
            "n_train": int(prob.x.shape[0]),
            "loss": "mse_mean",
            "dtype": "float32",
        },
        "point": {
            "how": "SAM (samedge_lib.updates.sam_step) from the seeded initialisation, full batch",
            "pretrain_steps": cfg["pretrain_steps"],
            "eta": cfg["pretrain_eta"],
            "rho": cfg["rho"],
            "seconds": pre_s,
            "loss_init": loss0,
            "loss": float(prob.loss_fn(params)),
            "train_accuracy_init": acc0,
            "train_accuracy": accuracy(prob, params),
        },
    }
    result["mnist"] = mn

    # ---- 2. HVP timings
    log("HVP timings")
    mn["hvp_timing"] = hvp_timings(prob, params, cfg["repeats"], device)
    tg = mn["hvp_timing"]["gradient"]["median_s"]
    hvp_s = mn["hvp_timing"]["methods"]["exact"]["median_s"]

    # ---- 3.-5. reference, solvers with their own rules, cost to accuracy
    spec = {
        "ks": (1, 5),
        "ref_k": 5,
        "seeds": {
            "lanczos": cfg["lanczos_seeds"],
            "pyhessian": cfg["pyhessian_seeds"],
            "official": cfg["official_seeds"],
        },
        "trace_caps": cfg["trace_caps"],
        "trace_seeds": cfg["trace_seeds"],
    }
    first_vectors = spectrum_sections(mn, prob, params, spec, device, clock, log, "")
    if "reference" not in mn:
        return result
    ref_vals = mn["reference"]["eigenvalues"]
    lam1 = ref_vals[0]
    prob64 = prob.as_dtype(torch.float64)
    mn["point"]["lambda1"] = lam1
    mn["point"]["two_over_eta"] = 2 / cfg["pretrain_eta"]

    # ---- 6. warm starts: 100 more steps at the tracked runs' step size and at the pre-training one
    log("SAM step time")
    sam_t = repeat_time(
        lambda: sam_step(params, prob.grad_fn, cfg["pretrain_eta"], cfg["rho"]),
        device,
        cfg["repeats"],
        warmup=1,
    )
    cases = {"track_eta": cfg["track_eta"], "pretrain_eta": cfg["pretrain_eta"]}
    warm_all: dict[str, Any] = {}
    for case, eta in cases.items():
        if 1 not in first_vectors or not clock.fits(
            f"warm_start/{case}", 2 * cfg["warm_steps"] * tg + 200 * hvp_s * 3 + 60 * hvp_s
        ):
            continue
        log(f"warm start ({case}): {cfg['warm_steps']} more SAM steps at eta {eta:g}, fresh reference")
        params_b = train(prob, params, cfg["warm_steps"], eta, cfg["rho"])
        ref_b, _ = reference_spectrum(prob64, params_b, 5, device)
        warm: dict[str, Any] = {
            "eta": eta,
            "steps_between": cfg["warm_steps"],
            "reference": ref_b,
            "loss": float(prob.loss_fn(params_b)),
            "lambda1_change": (ref_b["eigenvalues"][0] - lam1) / lam1,
        }
        for k, idx in ((1, 0), (5, 1)):
            if k not in first_vectors:
                continue
            cold = [
                solve(prob, params_b, "lanczos", k, 100 + s, ref_b["eigenvalues"][:k], device)[0]
                for s in range(cfg["lanczos_seeds"][idx])
            ]
            hot, _ = solve(prob, params_b, "lanczos", k, 0, ref_b["eigenvalues"][:k], device, v0=first_vectors[k])
            cold_sum = summarise_runs(cold)
            warm[f"top{k}"] = {
                "cold": {"runs": cold, "summary": cold_sum},
                "warm": hot,
                "warm_over_cold_matvec": hot["n_matvec"] / cold_sum["n_matvec"]["median"],
                "start_rayleigh_rel_err": None,
            }
            if k == 1:  # how good the previous vector is by itself: its Rayleigh quotient at the new point
                u_prev = first_vectors[1][:, 0].double()
                hu = prob.operator(params_b, "exact").matvec(u_prev.to(params_b[0].dtype)).double()
                rq = float(u_prev @ hu) / float(u_prev @ u_prev)
                warm["top1"]["start_rayleigh_rel_err"] = abs(rq - ref_b["eigenvalues"][0]) / ref_b["eigenvalues"][0]
            log(f"warm top{k} ({case}): {hot['n_matvec']} HVPs vs cold {cold_sum['n_matvec']['median']:.0f}")
        warm_all[case] = warm
    if warm_all:
        mn["warm_start"] = {"cases": warm_all}

    # ---- 7. tracking overhead of a check every CHECK_EVERY steps: cold check, warm check (tracked eta), official
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
    hot_track = warm_all.get("track_eta", {}).get("top1", {}).get("warm")
    if hot_track is not None:
        checks["lanczos_warm"] = (hot_track["wall_s"], hot_track["n_grad_evals"])
    for name, (check_s, evals) in checks.items():
        over[name] = {
            "check_s": check_s,
            "share_of_wall_time": check_s / (CHECK_EVERY * sam_t["median_s"] + check_s),
            "share_in_grad_evals": evals / (2 * CHECK_EVERY + evals),
        }
    mn["overhead"] = over

    # ---- 8. memory
    if clock.fits("memory", 4 * (2 * tg + 30 * hvp_s + 200 * tg)):
        log("peak memory")
        mn["memory"] = memory_section(prob, params, device)

    # ---- 9. TF32 (CUDA only)
    if device.type == "cuda":
        if clock.fits("tf32", 2 * (cfg["tf32_steps"] + 2) * 2 * tg + 2 * 60 * hvp_s + 2 * 200 * tg):
            log("TF32 versus strict float32")
            mn["tf32"] = tf32_section(prob, params, cfg, device, lam1)
    else:
        clock.skipped["tf32"] = "CUDA only (TF32 does not exist on CPUs)"

    # ---- 10. CNN and Transformer at smaller scale: a pre-trained point, HVP timings, solvers, traces
    for name, builder in (("cnn", cnn_problem), ("transformer", transformer_problem)):
        mcfg = cfg[name]
        if not clock.fits(name, 10.0 if device.type == "cuda" else 30.0):
            continue
        p = builder(mcfg, device, seed, data_dir)
        p0 = initial_params(p)
        sub: dict[str, Any] = {"setting": dict(mcfg) | {"n_params": count_parameters(p.model)}}
        result[name] = sub
        log(f"{name}: {mcfg['pretrain_steps']} SAM steps at eta {mcfg['pretrain_eta']} on its fixed batch")
        loss0 = float(p.loss_fn(p0))
        pp, pre_s = timed(lambda p=p, p0=p0, mcfg=mcfg: pretrain(p, p0, mcfg, notes), device)
        sub["point"] = {
            "how": "SAM (rho 0.1) from the seeded initialisation on the benchmark's fixed batch",
            "pretrain_steps": mcfg["pretrain_steps"],
            "eta": mcfg["pretrain_eta"],
            "rho": mcfg["rho"],
            "seconds": pre_s,
            "loss_init": loss0,
            "loss": float(p.loss_fn(pp)),
        }
        log(f"{name}: HVP timings")
        sub["hvp_timing"] = hvp_timings(p, pp, cfg["repeats"], device)
        spec = {
            "ks": (1,),
            "ref_k": 2,
            "seeds": {k: (v,) for k, v in mcfg["solver_seeds"].items()},
            "trace_caps": mcfg["trace_caps"],
            "trace_seeds": mcfg["trace_seeds"],
            "trace_solvers": ("lanczos", "official"),
        }
        spectrum_sections(sub, p, pp, spec, device, clock, log, f"{name}: ")
        if "reference" in sub:
            sub["point"]["lambda1"] = sub["reference"]["eigenvalues"][0]
        del p, p0, pp
    return result


def targets(result: dict[str, Any]) -> dict[str, Any]:
    """The headline numbers, computed from the measurements (absent when a section was skipped)."""
    out: dict[str, Any] = {}
    mn = result.get("mnist", {})
    top1 = mn.get("solvers", {}).get("top1", {})
    if "lanczos" in top1 and "official" in top1:
        lz, off = top1["lanczos"]["summary"], top1["official"]["summary"]
        out["default_max_rel_err"] = lz["max_rel_err"]["max"]
        out["default_reaches_target"] = lz["max_rel_err"]["max"] <= TARGET_REL_ERR
        out["official_median_rel_err"] = off["max_rel_err"]["median"]
        out["grad_eval_ratio_official_over_default"] = off["n_grad_evals"]["median"] / lz["n_grad_evals"]["median"]
        out["wall_ratio_official_over_default"] = off["wall_s"]["median"] / lz["wall_s"]["median"]
    eq = mn.get("equal_accuracy")
    if eq:
        out["equal_accuracy_grad_eval_ratio"] = eq["grad_eval_ratio"]
        out["equal_accuracy_time_ratio"] = eq["time_ratio"]
        out["equal_accuracy_lower_bound"] = eq["lower_bound"]
        out["equal_accuracy_meets_3x"] = eq["grad_eval_ratio"] >= 3
    for name in ("cnn", "transformer"):
        eq_m = result.get(name, {}).get("equal_accuracy")
        if eq_m:
            out[f"{name}_equal_accuracy_grad_eval_ratio"] = eq_m["grad_eval_ratio"]
            out[f"{name}_equal_accuracy_lower_bound"] = eq_m["lower_bound"]
    for case, warm in mn.get("warm_start", {}).get("cases", {}).items():
        for key in ("top1", "top5"):
            if key in warm:
                out[f"warm_percent_of_cold_{key}_{case}"] = 100 * warm[key]["warm_over_cold_matvec"]
    ov = mn.get("overhead", {})
    for name in ("lanczos", "lanczos_warm", "official"):
        if name in ov:
            out[f"overhead_percent_{name}"] = 100 * ov[name]["share_of_wall_time"]
    return out


def summary_lines(result: dict[str, Any]) -> list[str]:
    """The human summary table (also stored in the JSON)."""
    lines: list[str] = []
    mn = result.get("mnist", {})
    if "hvp_timing" in mn:
        ht = mn["hvp_timing"]
        lines.append(f"gradient: {1e3 * ht['gradient']['median_s']:.1f} ms (median); HVP time / gradient time:")
        for m, d in ht["methods"].items():
            extra = f"  (+ graph build {d['graph_build_ratio']:.2f}x once per point)" if d["graph_build_ratio"] else ""
            lines.append(f"  {m:22s} {d['ratio_to_gradient']:5.2f}x{extra}")
    if "reference" in mn:
        ref = mn["reference"]["eigenvalues"]
        lines.append("float64 reference top-5: " + ", ".join(f"{v:.6g}" for v in ref))
    pb = mn.get("product_bias")
    if pb:
        fd = ", ".join(f"{r['rayleigh_rel']:+.1e}" for r in pb["finite_difference"])
        ex = max(abs(r["rayleigh_rel"]) for r in pb["exact"])
        lines.append(f"one product at reference eigenvectors u_1..u_5, (u.Hu - lambda)/lambda: finite difference {fd};")
        lines.append(f"  exact HVP (float32) at most {ex:.1e}")
    for key in ("top1", "top5"):
        blk = mn.get("solvers", {}).get(key)
        if not blk:
            continue
        lines.append(f"{key}: solver               HVPs      grad-evals  wall [s]  max rel. error (median [min, max])")
        for solver, d in blk.items():
            s = d["summary"]
            e = s["max_rel_err"]
            lines.append(
                f"  {solver:20s} {s['n_matvec']['median']:6.0f} {s['n_grad_evals']['median']:12.0f} "
                f"{s['wall_s']['median']:9.3f}  {e['median']:.2e} [{e['min']:.2e}, {e['max']:.2e}]"
            )
        lz = blk.get("lanczos")
        if lz:
            cert = max(max(r["true_residuals"]) for r in lz["runs"])
            lines.append(f"  default certificate: max true relative residual {cert:.1e} (bounds the rel. error)")
    eq = mn.get("equal_accuracy")
    if eq:
        bound = ">=" if eq["lower_bound"] else "="
        lines.append(
            f"to stay within rel. error {TARGET_REL_ERR:g}: official needs {bound} "
            f"{eq['official_grad_evals_to_target']:.0f}"
            f" gradient evaluations (oracle stop), the default {eq['default_grad_evals']:.0f} (certified stop):"
            f" ratio {bound} {eq['grad_eval_ratio']:.1f} (time ratio {bound} {eq['time_ratio']:.1f})"
        )
        lines.append(
            f"  the official rule itself stops after {eq['official_default_stop_grad_evals']:.0f} gradient evaluations"
            f" at rel. error {eq['official_default_stop_rel_err']:.1e}"
        )
    ov = mn.get("overhead", {})
    for name, label in (("lanczos", "default, cold"), ("lanczos_warm", "default, warm"), ("official", "official")):
        if name in ov:
            lines.append(
                f"overhead of a check every {CHECK_EVERY} SAM steps ({label}): "
                f"{100 * ov[name]['share_of_wall_time']:.2f}% of wall time"
            )
    mem = mn.get("memory")
    if mem:
        lines.append(
            f"peak memory: gradient {mem['gradient_mib']:.0f} MiB, "
            f"exact-HVP check {mem['check_mib']:.0f} MiB, "
            f"official check {mem['official_check_mib']:.0f} MiB"
        )
    tf = mn.get("tf32")
    if tf:
        lines.append(
            f"SAM steps/s: strict fp32 {tf['strict_fp32']['sam_steps_per_s']:.1f}, "
            f"TF32 {tf['tf32']['sam_steps_per_s']:.1f}; "
            f"lambda_1 TF32 vs strict: rel. diff {tf['lambda1_rel_diff_tf32_vs_strict']:.1e}"
        )
    for name in ("cnn", "transformer"):
        if name in result:
            sub = result[name]
            ht = sub["hvp_timing"]
            ratios = ", ".join(f"{m} {d['ratio_to_gradient']:.2f}x" for m, d in ht["methods"].items())
            lines.append(f"{name}: gradient {1e3 * ht['gradient']['median_s']:.1f} ms; {ratios}")
            top1 = sub.get("solvers", {}).get("top1", {})
            if "reference" in sub and top1:
                cells = ", ".join(
                    f"{solver} {d['summary']['n_grad_evals']['median']:.0f} grad-evals "
                    f"(rel. err {d['summary']['max_rel_err']['median']:.1e})"
                    for solver, d in top1.items()
                )
                lines.append(f"  lambda_1 {sub['reference']['eigenvalues'][0]:.6g}; {cells}")
            eq = sub.get("equal_accuracy")
            if eq:
                bound = ">=" if eq["lower_bound"] else "="
                lines.append(
                    f"  to stay within {TARGET_REL_ERR:g}: official {bound} {eq['official_grad_evals_to_target']:.0f}, "
                    f"default {eq['default_grad_evals']:.0f} gradient evaluations "
                    f"(ratio {bound} {eq['grad_eval_ratio']:.1f})"
                )
    t = result.get("targets", {})
    if "grad_eval_ratio_official_over_default" in t:
        verb = "reaches" if t["default_reaches_target"] else "does NOT reach"
        lines.append(
            f"default {verb} rel. error <= {TARGET_REL_ERR:g} (worst seed {t['default_max_rel_err']:.1e}) "
            f"with {t['grad_eval_ratio_official_over_default']:.1f} times fewer gradient evaluations "
            "than official "
            f"(whose median rel. error is {t['official_median_rel_err']:.1e})"
        )
    for warm in mn.get("warm_start", {}).get("cases", {}).values():
        for key in ("top1", "top5"):
            if key in warm:
                lines.append(
                    f"warm start after {warm['steps_between']} steps at eta {warm['eta']:g}: "
                    f"{100 * warm[key]['warm_over_cold_matvec']:.0f}% of a cold start's HVPs ({key})"
                )
    return lines


def load_note() -> str:
    """The 1-minute load average against the core count (other processes distort CPU timings)."""
    try:
        la = os.getloadavg()[0]
    except OSError:
        return "load average unavailable"
    return f"1-min load average {la:.2f} on {os.cpu_count()} cores at the start"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--preset", choices=sorted(PRESETS), default="cpu")
    ap.add_argument("--device", default="auto", help="auto (CUDA when available), cpu or cuda")
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
    return args


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the benchmark, write the JSON, print the summary; returns the result."""
    args = parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    cfg = json.loads(json.dumps(PRESETS[args.preset]))  # deep copy (tuples become lists)
    if args.pretrain_steps is not None:
        cfg["pretrain_steps"] = args.pretrain_steps
    if args.n_train is not None:
        cfg["mnist"]["n_train"] = args.n_train
    max_seconds = args.max_seconds if args.max_seconds is not None else cfg["max_seconds"]
    clock = Clock(max_seconds)
    set_tf32(False)  # strict float32 everywhere except the TF32 section
    torch.manual_seed(args.seed)
    notes = [load_note(), *args.note]
    if device.type == "cpu":
        notes.append(
            "CPU timings on a shared machine: other processes may have been running; ratios are more robust "
            "than absolute times"
        )
    provenance = collect(device, torch.float32)
    print(
        f"sharpness benchmark, preset {args.preset}, {device_description(device)}, budget {max_seconds:g} s",
        flush=True,
    )
    result = benchmark(cfg, device, args.seed, args.data_dir, clock, notes)
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
            "default_solver": f"lanczos, exact HVP (double backward re-using one graph), tol {DEFAULT_TOL:g}",
            "official_solver": (
                "official_power_iteration on finite_difference HVPs (eps 1e-3, denominator 2 eps + 1e-5)"
            ),
            "pyhessian_solver": "pyhessian_power_iteration on exact HVPs, tol 1e-3, max_iter 100",
            "reference": f"lanczos in float64, tol {REFERENCE_TOL:g}",
            "check_every": CHECK_EVERY,
            "torch_threads": torch.get_num_threads(),
            "platform": platform.platform(),
        },
        "provenance": provenance,
        "notes": notes + [load_note().replace("at the start", "at the end")],
        **result,
    }
    result["targets"] = targets(result)
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
