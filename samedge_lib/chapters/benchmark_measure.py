"""The sharpness benchmark's measurements: timing, errors and spreads, solver runs, traces, equal accuracy.

``benchmarks/sharpness_benchmark.py`` is the executor: it builds the weight points and composes these
functions into the sections of its JSON file, which :mod:`samedge_lib.chapters.benchmark_report` reads back for
the appendix. Everything here measures at a :class:`Point` (a :class:`~samedge_lib.engine.tasks.Task`, the batch
whose loss Hessian is measured, and the weights) and calls the library's solvers as they are; nothing
here trains.

Cost is counted three ways: products ``H v``, nominal gradient evaluations
(:attr:`~samedge_lib.core.hessian.HessianOperator.n_grad_evals`: a finite-difference product is 2, an exact
product 1 plus 1 per point for the graph) and measured wall time. Errors are relative to a converged
float64 reference (:func:`reference_spectrum`).
"""

from __future__ import annotations

import ctypes
import re
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from samedge_lib.chapters.benchmark_report import TARGET_REL_ERR
from samedge_lib.core.eigen import (
    EigResult,
    eigsh_reference,
    lanczos,
    official_power_iteration,
    official_stop,
    pyhessian_power_iteration,
    relative_residuals,
)
from samedge_lib.core.hessian import GRAD_EVALS_PER_MATVEC, HVP_METHODS, HessianOperator
from samedge_lib.engine.tasks import Batch, GradFn, Task

#: The book's default check: Lanczos on exact HVPs at this relative residual tolerance.
DEFAULT_TOL = 1e-3
#: Tolerance of the float64 reference.
REFERENCE_TOL = 1e-10
#: The solvers compared with their own stopping rules: name -> (HVP method, ``run(op, k, generator, v0)``).
SOLVERS: dict[str, tuple[str, Callable[..., EigResult]]] = {
    "lanczos": ("exact", lambda op, k, gen, v0: lanczos(op, k=k, v0=v0, tol=DEFAULT_TOL, generator=gen)),
    "eigsh": (
        "exact",
        lambda op, k, gen, v0: eigsh_reference(op, k=k, tol=DEFAULT_TOL, generator=gen, true_residuals=False),
    ),
    "pyhessian": ("exact", lambda op, k, gen, v0: pyhessian_power_iteration(op, k=k, tol=1e-3, generator=gen)),
    "official": ("finite_difference", lambda op, k, gen, v0: official_power_iteration(op, k=k, generator=gen)),
    "official_exact_hvp": ("exact", lambda op, k, gen, v0: official_power_iteration(op, k=k, generator=gen)),
}
#: Solvers whose stop is a residual certificate; their runs also get true residuals (not counted in the cost).
CERTIFIED = ("lanczos", "eigsh")

#: Solvers traced with their stopping rules off: name -> (HVP method, grad evals per product, once per check).
TRACE_SOLVERS: dict[str, tuple[str, int, int]] = {
    "lanczos": ("exact", 1, 1),
    "official": ("finite_difference", 2, 0),
    "official_exact_hvp": ("exact", 1, 1),
    "pyhessian": ("exact", 1, 1),
}


# ------------------------------------------------------------------------------------------------ timing
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


# ------------------------------------------------------------------------------------ errors and spreads
def spread(values: Sequence[float]) -> dict[str, float]:
    """Median and range of a list of numbers."""
    vals = [float(v) for v in values]
    return {"median": statistics.median(vals), "min": min(vals), "max": max(vals), "n": len(vals)}


def rel_errors(estimate: Sequence[float], reference: Sequence[float]) -> list[float]:
    """``|est_i - ref_i| / |ref_i|`` index by index (both sorted in decreasing order)."""
    est = sorted((float(e) for e in estimate), reverse=True)
    ref = sorted((float(r) for r in reference), reverse=True)[: len(est)]
    return [abs(e - r) / abs(r) for e, r in zip(est, ref, strict=True)]


def summarise_runs(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Median and range over seeds of cost and error."""
    return {key: spread([r[key] for r in rows]) for key in ("n_matvec", "n_grad_evals", "wall_s", "max_rel_err")} | {
        "all_converged": all(r["converged"] for r in rows)
    }


def products_to_reach(errors: Sequence[float], target: float) -> int | None:
    """The first product count from which the error stays <= ``target`` to the end of the trace (1-based)."""
    first = None
    for i, e in enumerate(errors, start=1):
        if e <= target:
            first = i if first is None else first
        else:
            first = None
    return first


# ------------------------------------------------------------------------------------------- the point
@dataclass
class Point:
    """Weights at which the benchmark measures, with the task and the batch whose loss Hessian is measured.

    ``task64`` / ``batch64`` are the same model and data in float64 (built by ``build_task`` with
    ``torch.float64``), for the converged reference; the weights are cast, never retrained.
    """

    task: Task
    batch: Batch
    params: list[torch.Tensor]
    task64: Task
    batch64: Batch

    def grad_fn(self) -> GradFn:
        """``grad_fn(params) -> (loss, grads)`` on the batch (:meth:`Task.grad_fn`)."""
        return self.task.grad_fn(self.batch)

    def operator(self, method: str = "exact", params: Sequence[torch.Tensor] | None = None) -> HessianOperator:
        """A fresh float32 Hessian operator at ``params`` (default: the point's weights)."""
        return self.task.operator(self.params if params is None else params, self.batch, method)

    def operator64(self, params: Sequence[torch.Tensor] | None = None) -> HessianOperator:
        """A fresh float64 exact-HVP operator at ``params`` cast to float64 (model and data in float64)."""
        ps = [p.double() for p in (self.params if params is None else params)]
        return self.task64.operator(ps, self.batch64, "exact")

    def loss(self, params: Sequence[torch.Tensor] | None = None) -> float:
        """The batch loss at ``params`` (default: the point's weights)."""
        with torch.no_grad():
            return float(self.task.loss(self.params if params is None else params, self.batch))


# ------------------------------------------------------------------------------------------ measurements
def hvp_timings(point: Point, repeats: int, device: torch.device) -> dict[str, Any]:
    """Gradient time and, per HVP method, the median product time and its ratio to a gradient."""
    params, grad_fn = point.params, point.grad_fn()
    grad = repeat_time(lambda: grad_fn(params), device, repeats)
    gen = torch.Generator().manual_seed(1234)
    dim = sum(p.numel() for p in params)
    vectors = [torch.randn(dim, generator=gen).to(device=device, dtype=params[0].dtype) for _ in range(repeats + 1)]
    methods: dict[str, Any] = {}
    for method in HVP_METHODS:
        op = point.operator(method)
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


def solve(
    point: Point,
    solver: str,
    k: int,
    seed: int,
    reference: Sequence[float],
    device: torch.device,
    params: Sequence[torch.Tensor] | None = None,
    v0: torch.Tensor | None = None,
) -> tuple[dict[str, Any], EigResult]:
    """One run of a :data:`SOLVERS` entry from a fresh operator (graph build and gradient in its cost).

    Solvers with a residual certificate (:data:`CERTIFIED`) also get their true residuals, computed
    after the timed run and not counted in its cost (``certified_rel_err_bound``: by Weyl/Bauer-Fike the
    relative error is at most the largest of them).
    """
    method, run = SOLVERS[solver]
    op = point.operator(method, params)
    gen = torch.Generator().manual_seed(seed)
    res, wall = timed(lambda: run(op, k, gen, v0), device)
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
    if solver in CERTIFIED:
        row["true_residuals"] = relative_residuals(op, res.eigenvalues, res.eigenvectors).tolist()
        row["certified_rel_err_bound"] = max(row["true_residuals"])
    return row, res


def convergence_traces(
    point: Point,
    reference: Sequence[float],
    spec: dict[str, Any],
    clock: Clock,
    hvp_s: float,
    fd_s: float,
) -> dict[str, Any]:
    """Cost to accuracy: the top-1 error after every product of each solver, run past its stopping rule.

    Each solver runs with its stopping rule switched off up to a cap of products (``spec["trace_caps"]``),
    from the same seeded starts as the solver section, and its estimate after every product is compared
    with the float64 reference. From the traces: the products each needs before its error stays below
    :data:`TARGET_REL_ERR` (an *oracle* stop that no solver can apply, which favours the power
    iterations), where the official rule and the default's residual certificate stop, and the errors there.
    """
    lam = float(reference[0])
    out: dict[str, Any] = {"target_rel_err": TARGET_REL_ERR, "caps": dict(spec["trace_caps"]), "solvers": {}}
    for solver, (method, per_product, once) in TRACE_SOLVERS.items():
        if solver not in spec.get("trace_solvers", TRACE_SOLVERS):
            continue
        cap = spec["trace_caps"]["lanczos" if solver == "lanczos" else "power"]
        per_s = fd_s if method == "finite_difference" else hvp_s
        runs = []
        for seed in range(spec["trace_seeds"] if solver == "official" else 1):
            if not clock.fits(f"traces/{solver}/seed{seed}", 1.2 * cap * per_s + 2 * per_s):
                break
            gen = torch.Generator().manual_seed(seed)
            op = point.operator(method)
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
                run["certified_stop"] = None
                if stop is not None:
                    run["certified_stop"] = {
                        "products": products[stop],
                        "grad_evals": once + per_product * products[stop],
                        "rel_err": errors[stop],
                        "residual_estimate": est[stop],
                    }
            if solver in ("official", "official_exact_hvp"):
                t = official_stop(values)
                run["default_stop"] = {"products": t, "grad_evals": once + per_product * t, "rel_err": errors[t - 1]}
            runs.append(run)
        if runs:
            out["solvers"][solver] = {
                "hvp_method": method,
                "grad_evals_per_product": per_product,
                "grad_evals_per_check": once,
                "cap_products": cap,
                "runs": runs,
                "reached_target_all_seeds": all(r["products_to_target"] is not None for r in runs),
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
    official_products = statistics.median(cap if n is None else n for n in needed)
    official_evals = 2 * official_products
    return {
        "target_rel_err": TARGET_REL_ERR,
        "default_products": ours_products,
        "default_grad_evals": ours_evals,
        "default_rel_err_at_stop": max(s["rel_err"] for s in stops),
        "official_products_to_target": official_products,
        "official_grad_evals_to_target": official_evals,
        "lower_bound": any(n is None for n in needed),
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
    point: Point, k: int, device: torch.device, params: Sequence[torch.Tensor] | None = None
) -> tuple[dict[str, Any], EigResult]:
    """Converged float64 reference: Lanczos on exact HVPs of the float64 model, tol 1e-10, true residuals."""
    op = point.operator64(params)
    gen = torch.Generator().manual_seed(777)
    res, wall = timed(lambda: lanczos(op, k=k, tol=REFERENCE_TOL, generator=gen, true_residuals=True), device)
    return {
        "eigenvalues": [float(e) for e in res.eigenvalues],
        "true_residuals": [float(r) for r in res.residuals],
        "n_matvec": int(res.n_matvec),
        "wall_s": wall,
        "converged": bool(res.converged),
        "dtype": "float64",
        "method": f"lanczos k={k} tol={REFERENCE_TOL:g} on exact HVPs, float64 model, data, weights",
    }, res


def product_bias(point: Point, vectors: torch.Tensor, eigenvalues: Sequence[float]) -> dict[str, Any]:
    """Bias of one product at the reference eigenvectors, for the official and the exact HVP (float32).

    For a reference eigenpair ``(lambda, u)``, an unbiased product gives ``u . Hu = ||Hu|| = lambda``.
    The relative deviations of the Rayleigh quotient and of the norm (the quantity the official power
    iteration reports) isolate the error of the *product* from that of the solver.
    """
    out: dict[str, Any] = {}
    for method in ("finite_difference", "exact"):
        op = point.operator(method)
        rows = []
        for i, lam in enumerate(eigenvalues):
            u64 = vectors[:, i].double()
            u64 = u64 / torch.linalg.vector_norm(u64)
            hu = op.matvec(u64.to(op.dtype)).double()
            rows.append(
                {
                    "index": i + 1,
                    "rayleigh_rel": (float(u64 @ hu) - lam) / abs(lam),
                    "norm_rel": (float(torch.linalg.vector_norm(hu)) - abs(lam)) / abs(lam),
                }
            )
        out[method] = rows
    return out


# ------------------------------------------------------------------------------------------------ memory
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
    (Linux >= 4.0, https://docs.kernel.org/filesystems/proc.html) resets VmHWM to the current RSS.
    """
    try:
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


def memory_section(point: Point, device: torch.device) -> dict[str, Any]:
    """Peak memory of a gradient, of the default exact-HVP check and of the official check."""
    out: dict[str, Any] = {}
    grad_fn = point.grad_fn()
    ops = (
        ("gradient", lambda: grad_fn(point.params)),
        ("check", lambda: solve_quietly(point, "lanczos")),
        ("official_check", lambda: solve_quietly(point, "official")),
    )
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
    out["param_mib"] = sum(p.numel() * p.element_size() for p in point.params) / 2**20
    g, c = out.get("gradient_mib"), out.get("check_mib")
    out["check_over_gradient"] = c / g if g and c is not None else None
    st = out["saved_tensor_mib"]
    out["saved_check_over_gradient"] = st["check"] / st["gradient"] if st["gradient"] > 0 else None
    return out


def solve_quietly(point: Point, solver: str, seed: int = 0) -> EigResult:
    """One top-1 run of ``solver`` at the point, nothing recorded (what a check does, for memory)."""
    method, run = SOLVERS[solver]
    return run(point.operator(method), 1, torch.Generator().manual_seed(seed), None)
