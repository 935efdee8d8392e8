"""The runs of the chapters beyond the paper: SAM's variants and the phase diagram in alpha.

Two designs, each a set of configurations by key (the keys :mod:`samedge_lib.chapters.variants_claims` reads):

* :class:`VariantsDesign` (chapter "SAM's variants"): GD and SAM at three radii; unnormalised SAM (USAM)
  started on the same edge as each SAM run; GD and SAM with heavy-ball momentum and SAM with Nesterov momentum
  at step sizes whose momentum edge equals the momentum-free edge of the SAM runs; and SAM switched on halfway
  through a GD run.
* :class:`PhaseDesign` (chapter "The phase diagram"): an ``eta x rho`` grid of SAM runs and GD.

Each design has a ``book`` grid, sized so that both chapters build in a few minutes on two cores, and a
``full`` grid: more radii, both momenta, longer runs. In the book grid at the ``cpu`` preset the GD and SAM
runs at the MNIST chapter's step size *are* that chapter's configurations, so the book reuses their run folders
instead of recomputing them; the new runs track one eigenvalue and skip the paper's estimator. The ``smoke``
preset runs the book grid on the tiny smoke model (seconds, for the tests); ``paper`` runs the full grid (these
chapters go beyond the paper, which has no such runs; they stay on the ``cpu`` task).

:func:`ascent_check` measures, at a finished run's final weights, how far SAM's ascent point leaves the
quadratic picture: the sharpness there, and the gradient there against its quadratic model ``g + H eps``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from samedge_lib.chapters.experiments import run_all
from samedge_lib.chapters.variants_stats import ESCAPE_STEPS, VariantRuns
from samedge_lib.core.eigen import lanczos
from samedge_lib.engine.tasks import build_task
from samedge_lib.reading.notebook import check_choice, check_number, check_preset
from samedge_lib.record.config import SWEEP_RHOS, RunConfig, preset_config
from samedge_lib.record.results import REACH, RunResult, measurements_on
from samedge_lib.record.runfolder import CHECKPOINT
from samedge_lib.theory.rules import UpdateRule
from samedge_lib.theory.updates import global_norm

#: The grids a chapter can run: the book's (minutes on two cores) or the full design.
GRIDS = ("book", "full")

#: The task both chapters train (the MNIST MLP; its ``cpu`` preset has ``2/eta = 1.6``, just above the
#: initial sharpness, so GD reaches its edge within a few hundred steps).
TASK = "mnist"

#: The radius of the main statements (the paper's README value).
MAIN_RHO = 0.1

#: The momentum of the chapter's main momentum runs (heavy ball and Nesterov): the value the momentum predictions
#: of chapter 7 are tested at, the usual SGD momentum scale, with the naive and the momentum edges well apart.
MOMENTUM_BETA = 0.8


def _base_preset(preset: str) -> str:
    """The task preset a chapter's runs start from: ``smoke`` for the tests, else ``cpu``."""
    return "smoke" if preset == "smoke" else "cpu"


def _check(preset: Any, grid: Any, seed: Any) -> str:
    """Validate the chapter parameters; return the grid to run (``paper`` runs the full one)."""
    check_preset(preset)
    check_choice("grid", grid, GRIDS)
    check_number("seed", seed, minimum=0, integer=True)
    return "full" if preset == "paper" else grid


@dataclass(frozen=True)
class Design:
    """A chapter's runs: configurations by key, run (or loaded) together.

    Attributes:
        preset: the preset the chapter was asked for.
        grid: ``"book"`` or ``"full"``.
        configs: the configurations by key, in the order they are shown.
        parameters: the values the chapter runs with, for its parameter box.

    """

    preset: str
    grid: str
    configs: dict[str, RunConfig]
    parameters: dict[str, Any] = field(default_factory=dict)

    def run(self, *, root: str | Path | None = None) -> dict[str, RunResult]:
        """Run (or load) every configuration, in parallel workers (``SAMEDGE_WORKERS``); ``{key: result}``."""
        keys = list(self.configs)
        results = run_all([self.configs[k] for k in keys], root=root)
        return dict(zip(keys, results, strict=True))


def gamma_ref(result: RunResult) -> float:
    """``||g||`` at a SAM run's first check with ``lambda_1 >= 0.9 x`` its edge: where its USAM twin starts.

    An unnormalised run with ``r = rho / gamma_ref`` has the edge ``usam_edge(eta=eta, r=r) = sam_edge(eta=eta,
    rho=rho, grad_norm=gamma_ref)``: both rules start on the same edge. A run that never got there (the seconds-long
    ``smoke`` runs) is matched at its first check; its own claims then say that it did not reach its edge.
    """
    df = measurements_on(result)
    if df.empty:
        raise ValueError(f"{result.config.run_name()} has no measurements: no USAM radius to match")
    hit = df.index[(df["lambda_1"] >= REACH * df["edge"]).to_numpy()]
    return float(df.loc[hit[0] if len(hit) else df.index[0], "grad_norm"])


@dataclass(frozen=True)
class VariantsDesign(Design):
    """The runs of the chapter on SAM's variants (keys: see :class:`~samedge_lib.chapters.variants_stats.VariantRuns`).

    The USAM runs are derived from the SAM runs (:func:`gamma_ref`), so :meth:`run` runs GD and SAM first and
    everything else after.
    """

    refs: tuple[float, ...] = ()
    new: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_parameters(cls, preset: Any, grid: Any = "book", seed: Any = 0) -> VariantsDesign:
        """Validate the chapter's parameters and lay out its runs (before anything is computed)."""
        grid = _check(preset, grid, seed)
        base = _base_preset(preset)
        full = grid == "full"
        refs = tuple(SWEEP_RHOS[TASK][base])
        ref_kw: dict[str, Any] = {"seed": seed}
        new: dict[str, Any] = {"seed": seed, "k": 1, "official_every": 0}
        if base == "smoke":  # seconds for the tests: three checks per new run
            new.update(measure_every=15)
        elif full:  # longer, so that ||g|| falls further while the runs sit on their edges
            ref_kw.update(steps=1200, official_every=0)
            new.update(steps=1200)
        configs: dict[str, RunConfig] = {"gd": preset_config(TASK, base, **ref_kw)}
        for rho in refs:
            configs[f"sam/{rho:g}"] = preset_config(TASK, base, rho=rho, **ref_kw)
        eta = configs["gd"].eta
        mom: dict[str, Any] = {**new, "steps": 600} if base == "cpu" else dict(new)
        for beta in (0.5, MOMENTUM_BETA) if full else (MOMENTUM_BETA,):
            hb = dict(mom, eta=eta * (1 + beta), momentum=beta)  # eta/(1 + beta) = eta: the same edge curve
            configs[f"gd+hb/{beta:g}"] = preset_config(TASK, base, **hb)
            configs[f"sam+hb/{beta:g}"] = preset_config(TASK, base, rho=MAIN_RHO, **hb)
        beta = MOMENTUM_BETA
        nag = dict(mom, eta=eta * (1 + beta) / (1 + 2 * beta), momentum=beta, nesterov=True)
        configs[f"sam+nesterov/{beta:g}"] = preset_config(TASK, base, rho=MAIN_RHO, **nag)
        steps = mom.get("steps", configs["gd"].steps)
        configs[f"switch/{MAIN_RHO:g}"] = preset_config(
            TASK, base, rho=MAIN_RHO, sam_start=steps // 2, measure_after_switch=ESCAPE_STEPS + 1, **mom
        )
        params = {"preset": preset, "grid": grid, "seed": seed, "radii": list(refs), "steps (SAM, USAM)": steps}
        return cls(preset, grid, configs, params, refs, new)

    def usam_configs(self, results: Mapping[str, RunResult]) -> dict[str, RunConfig]:
        """USAM at ``r = rho / gamma_ref`` (4 significant digits) for each SAM radius, like its SAM run otherwise."""
        out = {}
        for rho in self.refs:
            sam = results[f"sam/{rho:g}"]
            r = float(f"{rho / gamma_ref(sam):.4g}")
            cfg = sam.config
            kw = dict(self.new, steps=cfg.steps)
            out[f"usam/{rho:g}"] = preset_config(TASK, _base_preset(self.preset), rho=r, optimizer="usam", **kw)
        return out

    def run(self, *, root: str | Path | None = None) -> dict[str, RunResult]:
        """GD and SAM first (their folders are usually there already), then USAM and the rest together."""
        first = ["gd", *[f"sam/{rho:g}" for rho in self.refs]]
        done = dict(zip(first, run_all([self.configs[k] for k in first], root=root), strict=True))
        rest = {**self.usam_configs(done), **{k: c for k, c in self.configs.items() if k not in done}}
        done.update(zip(rest, run_all(list(rest.values()), root=root), strict=True))
        return done

    def runset(self, results: Mapping[str, RunResult], name: str = "live") -> VariantRuns:
        """The runs as the claims read them, with each USAM run's ``gamma_ref``."""
        extras = {f"usam/{rho:g}": {"gamma_ref": gamma_ref(results[f"sam/{rho:g}"])} for rho in self.refs}
        return VariantRuns(name, f"{self.preset} preset, {self.grid} grid (this page)", dict(results), extras)


@dataclass(frozen=True)
class PhaseDesign(Design):
    """The runs of the phase-diagram chapter: keys ``"<eta>/<rho>"`` (``rho = 0`` is GD)."""

    @classmethod
    def from_parameters(cls, preset: Any, grid: Any = "book", seed: Any = 0) -> PhaseDesign:
        """Validate the chapter's parameters and lay out its grid (before anything is computed)."""
        grid = _check(preset, grid, seed)
        base = _base_preset(preset)
        eta0 = preset_config(TASK, base).eta
        reuse = {0.0, *SWEEP_RHOS[TASK][base]}  # the MNIST chapter's own runs: same configurations, reused
        new: dict[str, Any] = {"seed": seed, "k": 1, "official_every": 0}
        if base == "smoke":  # seconds for the tests: three checks per new run
            new.update(measure_every=15)
        cells: list[tuple[float, float, dict[str, Any]]] = []
        if grid == "full":
            for eta, steps in ((eta0, 600), (round(0.4 * eta0, 12), 1500)):  # equal eta x steps
                for rho in (0.0, 0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0):
                    cells.append((eta, rho, dict(new, steps=steps, measure_every=10)))
        elif base == "cpu":
            # after its crossing the network's ||g|| is about 0.02-0.05, so the GD-like regime (alpha >= 8.1 at
            # eta = 1.25) needs rho <= 0.002: rho = 0.001 reaches it, 0.003 does not
            for rho in (0.0, 0.001, 0.03, 0.1, 0.3, 1.0):
                cells.append((eta0, rho, {"seed": seed} if rho in reuse else new))
            for rho in (0.1, 1.0):
                cells.append((round(0.4 * eta0, 12), rho, new))
        else:
            cells = [(eta0, 0.0, new), (eta0, 0.1, new), (eta0, 1.0, new), (round(0.4 * eta0, 12), 0.1, new)]
        configs = {
            f"{eta:g}/{rho:g}": preset_config(TASK, base, rho=rho, **({} if eta == eta0 else {"eta": eta}), **kw)
            for eta, rho, kw in cells
        }
        etas = sorted({c.eta for c in configs.values()}, reverse=True)
        params = {"preset": preset, "grid": grid, "seed": seed, "etas": etas}
        params["rhos"] = sorted({c.rho for c in configs.values() if c.rho > 0})
        return cls(preset, grid, configs, params)

    def runset(
        self,
        results: Mapping[str, RunResult],
        extras: Mapping[str, Mapping[str, float]] | None = None,
        name: str = "live",
    ) -> VariantRuns:
        """The runs as the claims read them, with the ascent-point diagnostics of :func:`ascent_check`."""
        return VariantRuns(name, f"{self.preset} preset, {self.grid} grid (this page)", dict(results), extras or {})


def ascent_check(result: RunResult, data_dir: str | Path | None = None) -> dict[str, float]:
    """How far SAM's ascent step leaves the quadratic picture, at a finished run's final weights ``w``.

    With ``g`` the gradient, ``H`` the Hessian at ``w`` and ``eps`` the run's ascent step (``rho g/(||g|| +
    1e-5)``; ``r g`` for USAM): ``ascent_ratio`` is ``lambda_1(w + eps) / lambda_1(w)`` and ``gradient_ratio``
    is ``||grad(w + eps)|| / ||g + H eps||`` (1 where the gradient is linear along the step, as on a quadratic);
    ``rho_over_w`` is ``||eps|| / ||w||``. ``lambda_1(w)`` is the run's last check (at ``w``); the sharpness at
    ``w + eps`` is computed by Lanczos, warm-started from the run's last eigenvector. All NaN without a
    checkpoint (stored runs) or for GD.
    """
    cfg = result.config
    keys = ("w_norm", "rho_over_w", "lambda_w", "lambda_ascent", "ascent_ratio", "gradient_ratio")
    nan = dict.fromkeys(keys, math.nan)
    ckpt = Path(result.path) / CHECKPOINT
    if cfg.rho == 0 or not ckpt.exists() or result.state != "finished":
        return nan
    state = torch.load(ckpt, weights_only=True)
    device, dtype = torch.device("cpu"), getattr(torch, cfg.dtype)
    task = build_task(cfg, device, dtype, data_dir)
    batch = task.batch_at(cfg.steps)
    params = [p.to(device) for p in state["params"]]

    op = task.operator(params, batch, cfg.hvp)
    _, g = op.gradient()
    eps = UpdateRule.of(cfg).ascent.perturbation_scale(cfg.rho, float(g.double().norm())) * g
    h_eps = op.matvec(eps)
    shifted = [p + e for p, e in zip(params, op.unflatten(eps), strict=True)]
    op_eps = task.operator(shifted, batch, cfg.hvp)
    _, g_eps = op_eps.gradient()
    vecs = state.get("prev_vecs", {}).get(batch.kind)
    res = lanczos(
        op_eps,
        k=1,
        v0=None if vecs is None else vecs[:, :1],
        tol=cfg.lanczos_tol,
        max_iter=cfg.lanczos_max_iter,
        generator=torch.Generator().manual_seed(cfg.seed + 12345),
    )
    lam_w = float(measurements_on(result)["lambda_1"].iloc[-1])
    lam_eps = float(res.eigenvalues[0])
    w_norm = float(global_norm(params))
    return {
        "w_norm": w_norm,
        "rho_over_w": float(eps.double().norm()) / w_norm,
        "lambda_w": lam_w,
        "lambda_ascent": lam_eps,
        "ascent_ratio": lam_eps / lam_w,
        "gradient_ratio": float(g_eps.double().norm() / (g + h_eps).double().norm()),
    }
