"""The checks of a run in progress: the sharpness and everything measured beside it at a measurement step.

At steps ``0, m, 2m, ...`` and the last step, :meth:`Measuring.measure` computes at ``w_t``, on the data the
configuration asks for and before the update: the top-k Hessian eigenvalues with residuals (Lanczos on exact
Hessian-vector products, warm-started from the last check), ``||g||`` and the edges of the run's update rule,
the alignments of ``g`` and of the update's gradient with ``v1``, the paper's power-iteration estimator when asked
for (Long & Bartlett, 2024, Appendix; ``hessian_norm.py`` of https://github.com/google-deepmind/sam_edge), m-SAM's
stability operator, the gradient noise and the two-step look-ahead of the stochastic-SAM chapter.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import Any

import torch

from samedge_lib.core import stochastic as st
from samedge_lib.core.eigen import lanczos, official_power_iteration
from samedge_lib.engine.tasks import Batch
from samedge_lib.theory.edges import alpha, gd_edge
from samedge_lib.theory.updates import global_norm

#: The gradient-noise columns (``noise_every``): set in the full-batch row of a check, NaN elsewhere.
_NOISE_COLUMNS = (
    "trace_sigma",
    "noise_sq",
    "expected_sq_grad_norm",
    "mc_sq_grad_norm",
    "mc_sq_grad_norm_se",
    "trace_h",
    "trace_h_se",
)


def _flat(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    return torch.cat([t.reshape(-1) for t in tensors])


def _abs_cos(u: torch.Tensor, v: torch.Tensor) -> float:
    u64, v64 = u.double(), v.double()
    den = float(u64.norm() * v64.norm())
    return float(abs(u64 @ v64)) / den if den > 0 else math.nan


class Measuring:
    """The measuring half of :class:`samedge_lib.engine.train._Runner` (its state: ``cfg``, ``rule``, ``task``,
    ``params``, ``gen``, ``prev_vecs``, ``comm``), one method per kind of check.
    """

    def micro(self, batch: Batch, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """m-SAM's micro-batches of ``batch`` at ``step`` (a fresh partition every step, seeded by seed and step)."""
        order = st.msam_permutation(batch.size, self.cfg.seed, step)
        return st.micro_batches(batch.x, batch.y, self.cfg.micro_batch, order)

    def lookahead(self, step: int) -> dict[str, Any]:
        """The next two updates from the current parameters (the run takes exactly these unless they lie past its last
        step): the oscillation cosine ``cos(w_{t+1} - w_t, w_{t+2} - w_{t+1})`` and the two-step drift residual of
        :func:`samedge_lib.core.stochastic.drift_residual`.
        """
        w1, info1 = self.step_from(self.params, step)
        w2, info2 = self.step_from(w1, step + 1)
        d1 = _flat([b - a for a, b in zip(self.params, w1, strict=True)])
        d2 = _flat([b - a for a, b in zip(w1, w2, strict=True)])
        residual = st.drift_residual(self.params, w2, info1.grad, info2.grad, self.cfg.eta)
        return {"osc_cos": st.cosine(d1, d2), "residual": residual}

    def noise(self, step: int) -> dict[str, float]:
        """Gradient noise on the whole training set at the current parameters (the ``noise_every`` columns)."""
        cfg, task = self.cfg, self.task
        full = task.fixed_batch if task.fixed_batch is not None else task.batch_at(step)
        n = full.size
        b = min(cfg.batch_size or n, n)
        gen = torch.Generator().manual_seed((2 << 40) + cfg.seed * 1_000_003 + step)  # not the solvers' generator
        op = task.operator(self.params, full, cfg.hvp)
        _, g = op.gradient()
        g_norm = float(g.double().norm())
        tr_sigma = st.gradient_noise_trace(task.data_loss, self.params, full.x, full.y, mean_grad=g)
        out = {
            "trace_sigma": tr_sigma,
            "noise_sq": st.sampling_factor(n, b) * tr_sigma,
            "expected_sq_grad_norm": st.expected_sq_grad_norm(g_norm, tr_sigma, n, b),
            "mc_sq_grad_norm": math.nan,
            "mc_sq_grad_norm_se": math.nan,
        }
        if b < n:
            grad_fn = self.grad_fn_for

            def sq_norm(idx: torch.Tensor) -> float:
                idx = idx.to(full.x.device)
                _, gb = grad_fn(Batch(full.x[idx], full.y[idx], full.label, "minibatch"))(self.params)
                return float(global_norm(gb).double()) ** 2

            sq = st.random_batch_sq_grad_norms(sq_norm, n, b, cfg.noise_batches, gen)
            se = float(sq.std(unbiased=True)) / math.sqrt(len(sq)) if len(sq) > 1 else math.nan
            out.update(mc_sq_grad_norm=float(sq.mean()), mc_sq_grad_norm_se=se)
        out["trace_h"], out["trace_h_se"] = st.hutchinson_trace(op, cfg.hutchinson_probes, gen)
        return out

    def measure(self, step: int) -> tuple[list[dict], dict[str, torch.Tensor]]:
        """Measure at the current parameters on the data the config asks for (before the update).

        Returns the rows and the new warm-start eigenvectors; the caller applies both.
        """
        cfg = self.cfg
        batches: list[Batch] = []
        if cfg.measure_data in ("batch", "both"):
            batches.append(self.task.batch_at(step))
        if cfg.measure_data in ("fixed", "both") and self.task.fixed_batch is not None:
            batches.append(self.task.fixed_batch)
        rows = []
        vecs = dict(self.prev_vecs)
        test = self.task.metrics(self.params, self.task.test_batch) if self.task.test_batch is not None else {}
        t0 = time.perf_counter()
        drift = self._due(cfg.drift_every, step)
        look = self.lookahead(step) if cfg.batch_sharpness or drift else None
        noise = self.noise(step) if self._due(cfg.noise_every, step) else None
        shared_seconds = time.perf_counter() - t0
        for batch in batches:
            t0 = time.perf_counter()
            rows.append(self._measure_on(step, batch, test, vecs, look if drift else None))
            if cfg.batch_sharpness:
                rows[-1]["osc_cos"] = look["osc_cos"]
            rows[-1]["measure_seconds"] = time.perf_counter() - t0
        if cfg.noise_every:  # the training set's noise: in the full-batch row (the first row of a full-batch run)
            for r in rows:
                r.update(dict.fromkeys(_NOISE_COLUMNS, math.nan))
            target = next((r for r in rows if r["data"] == "full"), rows[0])
            target.update(noise or {})
        rows[0]["measure_seconds"] += shared_seconds
        return rows, vecs

    def _measure_on(
        self,
        step: int,
        batch: Batch,
        test: dict[str, float],
        vecs: dict[str, torch.Tensor],
        look: dict[str, Any] | None = None,
    ) -> dict:
        cfg = self.cfg

        op = self.task.operator(self.params, batch, cfg.hvp)
        loss, g_flat = op.gradient()
        g_norm = float(g_flat.double().norm())
        res = lanczos(
            op,
            k=cfg.k,
            v0=vecs.get(batch.kind),
            tol=cfg.lanczos_tol,
            max_iter=cfg.lanczos_max_iter,
            generator=self.gen,
        )
        vecs[batch.kind] = res.eigenvectors.detach().clone()
        v1 = res.eigenvectors[:, 0]
        grad_fn = self.grad_fn_for(batch)
        g_list = op.unflatten(g_flat)
        extra: dict[str, Any] = {}
        if cfg.micro_batch is not None:  # m-SAM's direction on this data, and its stability operator A_m
            xs, ys = self.micro(batch, step)
            mg = st.msam_gradient(self.task.data_loss, self.params, xs, ys, cfg.rho)
            g_upd = mg.direction
            a_op = st.MSamOperator(self.task.data_loss, self.params, xs, ys, mg.micro_grad_norms, cfg.rho)
            key = f"msam_{batch.kind}"
            a_res = lanczos(
                a_op, k=1, v0=vecs.get(key), tol=cfg.lanczos_tol, max_iter=cfg.lanczos_max_iter, generator=self.gen
            )
            vecs[key] = a_res.eigenvectors.detach().clone()
            extra.update(
                msam_lambda=float(a_res.eigenvalues[0]),
                msam_residual=float(a_res.residuals[0]),
                msam_matvecs=int(a_res.n_matvec),
                msam_converged=bool(a_res.converged),
                msam_micro_batches=int(xs.shape[0]),
            )
        else:
            g_upd = self.rule.update_gradient(self.params, g_list, grad_fn, step)
        row: dict[str, Any] = {
            "step": step,
            "data": batch.kind,
            "data_label": batch.label,
            "n_examples": batch.global_size,
            "loss": float(loss),
        }
        if self.task.classification:
            row["accuracy"] = self.task.metrics(self.params, batch)["accuracy"]
        finite_g = math.isfinite(g_norm)
        row.update(
            grad_norm=g_norm,
            sam_grad_norm=float(global_norm(g_upd)),
            sam_edge=self.rule.sam_edge(grad_norm=g_norm),
            edge=self.edge_of(g_norm, step),
            gd_edge=float(gd_edge(cfg.eta)),
            alpha=math.inf
            if cfg.rho == 0
            else float(alpha(grad_norm=g_norm, eta=cfg.eta, rho=cfg.rho))
            if finite_g
            else math.nan,
        )
        for i in range(cfg.k):
            row[f"lambda_{i + 1}"] = float(res.eigenvalues[i])
            row[f"residual_{i + 1}"] = float(res.residuals[i])
        row.update(
            collapse=self.collapse_of(row["lambda_1"], g_norm, step),
            lanczos_matvecs=int(res.n_matvec),
            lanczos_converged=bool(res.converged),
            align_g=_abs_cos(g_flat, v1),
            align_sam_g=_abs_cos(_flat(g_upd), v1),
        )
        if cfg.batch_sharpness:
            row["q_sam"] = st.sam_batch_sharpness(op, g_flat, _flat(g_upd), cfg.eta)
        row.update(extra)
        if cfg.drift_every:
            row.update(drift_cos=math.nan, drift_norm=math.nan, sharpness_grad_norm=math.nan)
        if look is not None:
            grad_l1 = st.sharpness_gradient(lambda ps: self.task.loss(ps, batch), self.params, v1)
            row.update(
                drift_cos=st.drift_alignment(look["residual"], grad_l1),
                drift_norm=float(look["residual"].double().norm()),
                sharpness_grad_norm=float(grad_l1.double().norm()),
            )
        if cfg.official_every and (step // cfg.measure_every) % cfg.official_every == 0:
            fd = self.task.operator(self.params, batch, "finite_difference")
            off = official_power_iteration(fd, k=1, generator=self.gen)
            row.update(official_lambda=float(off.eigenvalues[0]), official_matvecs=int(off.n_matvec))
        else:
            row.update(official_lambda=math.nan, official_matvecs=0)
        row.update({f"test_{k}": v for k, v in test.items()})
        return row
