"""Full-batch MNIST SAM: steps per second of this library's tracked training against a JAX reference loop.

The question: how fast does ``samedge_lib.engine.train.run`` train the paper's MNIST MLP with SAM,
measuring the sharpness every ``--check-every`` steps, compared with the paper's own JAX code on the same
card in the same precision mode? The official repository is not part of this project, so the JAX side
is **a re-implementation of the official loop** (``train`` in ``sam_edge.py`` and ``hessian_norm.py`` of
https://github.com/google-deepmind/sam_edge, rewritten, not copied):
a jitted SAM step ``w - eta * grad(w + rho g / (||g|| + 1e-5))``, and at each check the official
measurement: the gradient, the SAM gradient, the finite-difference power iteration (``eps = 1e-3``,
denominator ``2 eps + 1e-5``, relative-change rule, at most 100 products) and the two alignments. Its
numbers are a stand-in for the official code's speed and are labelled as such.

Both sides start from the same weights (the seeded PyTorch initialisation, copied into JAX) and use the
same data. Before timing, ``--verify-steps`` SAM steps are taken by both from those weights and the
parameters compared: the two implementations must agree to float32 rounding, or the script stops.

Precision modes: ``strict`` (float32 matmuls; PyTorch ``allow_tf32=False``, JAX
``jax_default_matmul_precision="highest"``) and ``tf32`` (PyTorch ``allow_tf32=True``, JAX
``"tensorfloat32"``). TF32 only exists on NVIDIA GPUs from Ampere on; on a CPU both modes are the same.

Each framework runs in its own process (JAX is told not to pre-allocate GPU memory). Usage::

    python benchmarks/sam_speed.py --preset cpu                     # this machine, both frameworks
    python benchmarks/sam_speed.py --preset paper --precision both --out-dir "$OUT"   # on a GPU
    python benchmarks/sam_speed.py --preset smoke --framework torch   # one side only (seconds)

It writes ``results/benchmark/sam-speed-<machine-tag>.json`` and prints a summary. Without JAX installed
(``pip install -r benchmarks/requirements-jax.txt``) only the PyTorch side runs and the file says so.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(REPO))

SCHEMA = "samedge-sam-speed/1"
#: Finite-difference step and normalising epsilon of the official estimator (``hessian_norm.py``).
FD_STEP, NORMALIZING_EPS, SAM_EPS = 1e-3, 1e-5, 1e-5
#: Per preset: MNIST size and model, steps (warm-up excluded), check cadence, verification steps.
PRESETS: dict[str, dict[str, Any]] = {
    "smoke": dict(n_train=256, depth=3, width=32, eta=0.05, rho=0.1, warmup=3, steps=20, check_every=10),
    "cpu": dict(n_train=2000, depth=3, width=256, eta=0.01, rho=0.1, warmup=5, steps=200, check_every=100),
    "paper": dict(n_train=None, depth=4, width=1000, eta=0.01, rho=0.1, warmup=10, steps=600, check_every=100),
}


class ImplementationsDisagreeError(RuntimeError):
    """The PyTorch and JAX SAM steps gave different parameters from the same start."""


# --------------------------------------------------------------------------------------------- shared setup
def load_problem(
    preset: dict[str, Any], seed: int, data_dir: str | None
) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
    """The seeded PyTorch initialisation as ``[W1, b1, W2, b2, ...]`` (``W`` as ``[in, out]``) and the data."""
    from samedge_lib.engine import data as data_mod
    from samedge_lib.engine.models import make_model

    ds = data_mod.load_mnist(data_dir=data_dir, n_train=preset["n_train"], n_test=10)
    model = make_model("mnist", seed=seed, depth=preset["depth"], width=preset["width"])
    arrays = []
    for name, p in model.named_parameters():
        a = p.detach().cpu().numpy().astype(np.float32)
        arrays.append(a.T.copy() if name.endswith("weight") else a)
    x = ds.x_train.reshape(ds.x_train.shape[0], -1).cpu().numpy().astype(np.float32)
    y = ds.t_train.cpu().numpy().astype(np.float32)
    return arrays, x, y


# --------------------------------------------------------------------------------------------- JAX side
def jax_side(preset: dict[str, Any], precision: str, seed: int, data_dir: str | None) -> dict[str, Any]:
    """Time the JAX reference loop; returns its numbers and the parameters after the verification steps."""
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    import jax
    import jax.numpy as jnp

    jax.config.update("jax_default_matmul_precision", "highest" if precision == "strict" else "tensorfloat32")
    arrays, x_np, y_np = load_problem(preset, seed, data_dir)
    x, y = jnp.asarray(x_np), jnp.asarray(y_np)
    params = [jnp.asarray(a) for a in arrays]

    def loss_fn(ps: list[jax.Array]) -> jax.Array:
        h = x
        n_layers = len(ps) // 2
        for i in range(n_layers):
            h = h @ ps[2 * i] + ps[2 * i + 1]
            if i < n_layers - 1:
                h = jax.nn.relu(h)
        return jnp.mean((h - y) ** 2)

    grad = jax.grad(loss_fn)

    def norm(ts: list[jax.Array]) -> jax.Array:
        return jnp.sqrt(sum(jnp.vdot(t, t) for t in ts))

    eta, rho = preset["eta"], preset["rho"]

    @jax.jit
    def sam_step(ps: list[jax.Array]) -> list[jax.Array]:
        g = grad(ps)
        scale = rho / (norm(g) + SAM_EPS)
        gs = grad([p + scale * gi for p, gi in zip(ps, g, strict=True)])
        return [p - eta * gi for p, gi in zip(ps, gs, strict=True)]

    @jax.jit
    def fd_hvp(ps: list[jax.Array], v: list[jax.Array]) -> list[jax.Array]:
        gp = grad([p + FD_STEP * vi for p, vi in zip(ps, v, strict=True)])
        gm = grad([p - FD_STEP * vi for p, vi in zip(ps, v, strict=True)])
        return [(a - b) / (2 * FD_STEP + NORMALIZING_EPS) for a, b in zip(gp, gm, strict=True)]

    @jax.jit
    def grads_at(ps: list[jax.Array]) -> tuple[jax.Array, list[jax.Array], list[jax.Array]]:
        g = grad(ps)
        scale = rho / (norm(g) + SAM_EPS)
        gs = grad([p + scale * gi for p, gi in zip(ps, g, strict=True)])
        return loss_fn(ps), g, gs

    key = jax.random.PRNGKey(seed)

    def measure(ps: list[jax.Array], key: jax.Array) -> dict[str, float]:
        """The official measurement: loss, gradients, power iteration, alignments (host values)."""
        loss, g, gs = grads_at(ps)
        keys = jax.random.split(key, len(ps))
        v = [jax.random.normal(k, p.shape, p.dtype) for k, p in zip(keys, ps, strict=True)]
        vn = float(norm(v))
        v = [t / (vn + NORMALIZING_EPS) for t in v]
        last, current, t = None, 1.0, 0
        while (last is None or (abs(current - last) > 1e-3 * current and abs(current) > 1e-3)) and t < 100:
            last = current
            p = fd_hvp(ps, v)
            current = float(norm(p))
            v = [q / (current + NORMALIZING_EPS) for q in p]
            t += 1
        gn, gsn = float(norm(g)), float(norm(gs))
        align_g = abs(float(sum(jnp.vdot(a, b) for a, b in zip(g, v, strict=True)))) / (gn * float(norm(v)))
        align_s = abs(float(sum(jnp.vdot(a, b) for a, b in zip(gs, v, strict=True)))) / (gsn * float(norm(v)))
        return {
            "loss": float(loss),
            "hessian_norm": current,
            "n_hvp": t,
            "grad_norm": gn,
            "align_g": align_g,
            "align_sam": align_s,
        }

    # verification steps (also compile everything)
    ps = params
    for _ in range(preset["verify_steps"]):
        ps = sam_step(ps)
    verify_params = [np.asarray(p) for p in ps]
    key, sub = jax.random.split(key)
    measure(ps, sub)

    # steps without checks
    ps = params
    for _ in range(preset["warmup"]):
        ps = sam_step(ps)
    jax.block_until_ready(ps)
    t0 = time.perf_counter()
    for _ in range(preset["check_every"]):
        ps = sam_step(ps)
    jax.block_until_ready(ps)
    step_s = (time.perf_counter() - t0) / preset["check_every"]

    # the loop with checks every check_every steps (a check before the update, as the official loop)
    ps = params
    for _ in range(preset["warmup"]):
        ps = sam_step(ps)
    jax.block_until_ready(ps)
    checks, check_s = [], 0.0
    t0 = time.perf_counter()
    for step in range(preset["steps"]):
        if step % preset["check_every"] == 0:
            c0 = time.perf_counter()
            key, sub = jax.random.split(key)
            checks.append(measure(ps, sub))
            check_s += time.perf_counter() - c0
        ps = sam_step(ps)
    jax.block_until_ready(ps)
    wall = time.perf_counter() - t0
    return {
        "framework": "jax",
        "implementation": "JAX re-implementation of the official sam_edge.py loop, not the official code",
        "jax": jax.__version__,
        "backend": jax.default_backend(),
        "device": str(jax.devices()[0].device_kind),
        "precision": precision,
        "step_ms_without_checks": 1e3 * step_s,
        "steps_per_s_with_checks": preset["steps"] / wall,
        "check_share_of_wall": check_s / wall,
        "checks": checks,
        "_verify_params": verify_params,
    }


# --------------------------------------------------------------------------------------------- PyTorch side
def torch_side(preset: dict[str, Any], precision: str, seed: int, data_dir: str | None) -> dict[str, Any]:
    """Time ``samedge_lib.engine.train.run`` (SAM, Lanczos checks) and take the verification steps with ``sam_step``."""
    import torch

    from samedge_lib.engine.train import run
    from samedge_lib.record.config import RunConfig
    from samedge_lib.theory.updates import sam_step

    torch.backends.cuda.matmul.allow_tf32 = precision == "tf32"
    torch.backends.cudnn.allow_tf32 = precision == "tf32"
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    arrays, x_np, y_np = load_problem(preset, seed, data_dir)
    x, y = torch.from_numpy(x_np).to(device), torch.from_numpy(y_np).to(device)
    params = [torch.from_numpy(a).to(device) for a in arrays]

    def grad_fn(ps: list[torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        leaves = [p.detach().requires_grad_(True) for p in ps]
        h = x
        for i in range(len(leaves) // 2):
            h = h @ leaves[2 * i] + leaves[2 * i + 1]
            if i < len(leaves) // 2 - 1:
                h = torch.relu(h)
        loss = ((h - y) ** 2).mean()
        return loss.detach(), [g.detach() for g in torch.autograd.grad(loss, leaves)]

    ps = params
    for _ in range(preset["verify_steps"]):
        ps, _ = sam_step(ps, grad_fn, preset["eta"], preset["rho"])
    verify_params = [p.cpu().numpy() for p in ps]

    total = preset["warmup"] + preset["steps"]
    cfg = RunConfig(
        task="mnist",
        eta=preset["eta"],
        rho=preset["rho"],
        optimizer="sam",
        n_train=preset["n_train"],
        n_test=None if preset["n_train"] is None else 1000,  # the paper preset's full test set
        model=dict(depth=preset["depth"], width=preset["width"]),
        seed=seed,
        steps=total,
        measure_every=preset["check_every"],
        k=1,
        tf32=precision == "tf32",
        device="auto",
    )
    with tempfile.TemporaryDirectory() as root:
        res = run(cfg, root=root, data_dir=data_dir, progress=False)
    steps = res.steps.set_index("step")["wall_time"]
    meas = res.measurements
    w0 = preset["warmup"]
    wall = float(steps.loc[total - 1] - steps.loc[w0 - 1])
    in_window = meas[(meas["step"] >= w0) & (meas["step"] < total)]
    plain = [
        float(steps.loc[s] - steps.loc[s - 1])
        for s in range(w0, total)
        if s % preset["check_every"] != 0 and s - 1 >= 0
    ]
    return {
        "framework": "torch",
        "implementation": "samedge_lib.engine.train.run: SAM with a Lanczos check (k = 1, tol 1e-3, warm start), "
        "gradient "
        "and SAM-gradient norms, alignments and test loss at every check",
        "torch": torch.__version__,
        "device": torch.cuda.get_device_name(0) if device.type == "cuda" else "cpu",
        "device_type": device.type,
        "precision": precision,
        "step_ms_without_checks": 1e3 * float(np.median(plain)),
        "steps_per_s_with_checks": (total - w0) / wall,
        "check_share_of_wall": float(in_window["measure_seconds"].sum()) / wall,
        "checks": in_window[["step", "lambda_1", "lanczos_matvecs", "measure_seconds"]].to_dict("records"),
        "_verify_params": verify_params,
    }


# --------------------------------------------------------------------------------------------- driver
def compare_params(a: list[np.ndarray], b: list[np.ndarray]) -> float:
    """Largest ``||a_i - b_i|| / ||b_i||`` over the parameter tensors."""
    return max(float(np.linalg.norm(x - y) / max(np.linalg.norm(y), 1e-30)) for x, y in zip(a, b, strict=True))


def run_child(framework: str, args: argparse.Namespace, precision: str, out: Path) -> dict[str, Any] | str:
    """Run one framework's side in a fresh process; returns its result or why it could not run."""
    cmd = [sys.executable, __file__, "--child", framework, "--preset", args.preset, "--precision", precision]
    cmd += ["--seed", str(args.seed), "--child-out", str(out)]
    if args.data_dir:
        cmd += ["--data-dir", args.data_dir]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout)[-2000:]
        if "No module named 'jax'" in tail:
            return "JAX is not installed here (pip install -r benchmarks/requirements-jax.txt)"
        raise RuntimeError(f"the {framework} side failed:\n{tail}")
    data = np.load(out, allow_pickle=True)
    result = json.loads(str(data["result"]))
    result["_verify_params"] = [data[f"p{i}"] for i in range(int(data["n"]))]
    return result


def main(argv: list[str] | None = None) -> dict[str, Any] | None:
    """Run both sides per precision mode, check they agree, write and print the comparison."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", choices=sorted(PRESETS), default="cpu")
    ap.add_argument("--precision", choices=("strict", "tf32", "both"), default="strict")
    ap.add_argument("--framework", choices=("both", "torch", "jax"), default="both")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--data-dir", default=None, help="data folder (default $SAMEDGE_DATA)")
    ap.add_argument("--out", default=None, help="JSON path (default results/benchmark/sam-speed-<machine>.json)")
    ap.add_argument("--out-dir", default=None, help="write <out-dir>/sam-speed-<machine>.json instead")
    ap.add_argument("--timeout", type=float, default=1800.0, help="seconds per side")
    ap.add_argument("--verify-steps", type=int, default=3)
    ap.add_argument("--child", choices=("torch", "jax"), help=argparse.SUPPRESS)
    ap.add_argument("--child-out", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    preset = dict(PRESETS[args.preset], verify_steps=args.verify_steps)

    if args.child:  # one side, in its own process; results go to an .npz file
        side = jax_side if args.child == "jax" else torch_side
        res = side(preset, args.precision, args.seed, args.data_dir)
        params = res.pop("_verify_params")
        arrays = {f"p{i}": p for i, p in enumerate(params)}
        np.savez(args.child_out, result=json.dumps(res, default=float), n=len(params), **arrays)
        return None

    import torch

    from samedge_lib.engine.device import machine_tag

    modes = ("strict", "tf32") if args.precision == "both" else (args.precision,)
    frameworks = ("torch", "jax") if args.framework == "both" else (args.framework,)
    out: dict[str, Any] = {
        "schema": SCHEMA,
        "preset": args.preset,
        "settings": preset,
        "machine_tag": machine_tag(torch.device("cuda" if torch.cuda.is_available() else "cpu")),
        "modes": {},
    }
    lines = []
    with tempfile.TemporaryDirectory() as tmp:
        for mode in modes:
            sides: dict[str, Any] = {}
            for fw in frameworks:
                print(f"{fw}, {mode} float32 ...", flush=True)
                sides[fw] = run_child(fw, args, mode, Path(tmp) / f"{fw}-{mode}.npz")
            entry: dict[str, Any] = {}
            for fw, res in sides.items():
                if isinstance(res, str):
                    entry[fw] = {"not_run": res}
                    lines.append(f"{mode}: {fw} not run: {res}")
                    continue
                entry[fw] = {k: v for k, v in res.items() if k != "_verify_params"}
                lines.append(
                    f"{mode}: {fw:5s} {res['steps_per_s_with_checks']:8.2f} SAM steps/s with checks every "
                    f"{preset['check_every']} ({100 * res['check_share_of_wall']:.1f}% in checks); "
                    f"{res['step_ms_without_checks']:.2f} ms per step without"
                )
            both = [r for r in sides.values() if not isinstance(r, str)]
            if len(both) == 2:
                diff = compare_params(both[0]["_verify_params"], both[1]["_verify_params"])
                entry["verify_max_rel_param_diff"] = diff
                limit = 1e-4 if mode == "strict" else 1e-2
                if diff > limit:
                    raise ImplementationsDisagreeError(
                        f"after {args.verify_steps} SAM steps from the same weights, PyTorch and JAX parameters "
                        f"differ by {diff:.2e} (relative) > {limit:g} in {mode} mode: the comparison would be "
                        "between different computations"
                    )
                torch_dev, jax_backend = entry["torch"]["device_type"], entry["jax"]["backend"]
                if (torch_dev == "cuda") != (jax_backend in ("gpu", "cuda")):
                    entry["not_comparable"] = (
                        f"PyTorch ran on {torch_dev}, JAX on {jax_backend}: install the JAX build for this device"
                    )
                    lines.append(f"{mode}: not comparable: {entry['not_comparable']}")
                else:
                    entry["torch_over_jax_steps_per_s"] = (
                        entry["torch"]["steps_per_s_with_checks"] / entry["jax"]["steps_per_s_with_checks"]
                    )
                    lines.append(
                        f"{mode}: same-start check {diff:.1e}; torch / JAX steps per second with checks: "
                        f"{entry['torch_over_jax_steps_per_s']:.2f}x"
                    )
            out["modes"][mode] = entry
    out["summary_lines"] = lines
    folder = Path(args.out_dir) if args.out_dir else REPO / "results" / "benchmark"
    path = Path(args.out) if args.out else folder / f"sam-speed-{out['machine_tag']}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=1, default=float))
    print("\n".join(["", "=== summary ===", *lines, f"-> {path}"]))
    return out


if __name__ == "__main__":
    main()
