"""The sympy derivations of the chapters beyond the paper: SAM's variants (chapter 7) and the phase diagram (chapter 8).

Every identity those chapters state is proved here, on sympy expressions: a simplification to 0, a polynomial
identity, or a sign decided from the symbols' assumptions (declared positive where the text says so). Each proof
goes through one helper, :meth:`Proofs.prove`, which fails at once where an identity does not hold and records
it otherwise, so a chapter shows the list it proved and the tests re-check it.

* :class:`SamVariants` (chapter 7): USAM's edge ``E_U(eta, r)`` and its stable set, the Jacobians of USAM and
  SAM, the characteristic polynomials and edges of SAM with heavy-ball and Nesterov momentum (the SAM-edge at an
  effective step size), their 2-cycles, the edge's elasticity, the switch-on growth and the collapse variable.
* :class:`PhaseDiagram` (chapter 8): the curve ``R(alpha)``, its inverse, series and regimes, the elasticities
  in ``eta``, ``rho`` and ``||g||``, and the collapse variable ``Lambda = y (1 + y/alpha)``.

Each class also compares the library's :mod:`samedge_lib.theory.edges` with the derived expressions in 50-digit
arithmetic (:meth:`SamVariants.library_errors`, :meth:`PhaseDiagram.library_errors`). sympy is a dependency of
the book, not of the library: this module is the only one that imports it, and nothing imports this module
except the chapters and the tests.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import mpmath
import numpy as np
import sympy as sp

from samedge_lib.theory import edges

#: The library must equal a derived expression to this relative error (float64 against 50 digits).
LIBRARY_TOL = 1e-12


@dataclass(frozen=True)
class Proof:
    """One proved identity: its name and the section of the derivation it belongs to."""

    name: str
    section: str


@dataclass
class Proofs:
    """The identities a derivation proved, in order: a checkable record.

    :meth:`prove` is the one way to add to it: it raises ``AssertionError`` where the check failed, so a record
    holds only identities that were proved.
    """

    proofs: list[Proof] = field(default_factory=list)
    section: str = ""

    def prove(self, name: str, ok: object) -> Proof:
        """Record the identity ``name`` once its check ``ok`` (a sympy comparison or a sign) is true."""
        if not bool(ok):
            raise AssertionError(f"not proved: {name}")
        proof = Proof(name, self.section)
        self.proofs.append(proof)
        return proof

    @property
    def names(self) -> list[str]:
        """The names of the proved identities, in the order they were proved."""
        return [p.name for p in self.proofs]

    def __len__(self) -> int:
        return len(self.proofs)


def sq(e: sp.Expr) -> sp.Expr:
    """Take square roots of perfect squares (sympy keeps ``sqrt((u + 1)**2)`` otherwise)."""
    return e.replace(lambda t: t.is_Pow and t.exp == sp.Rational(1, 2), lambda t: sp.sqrt(sp.factor(t.base)))


def _ref(fn: Callable[..., Any], *cols: np.ndarray) -> np.ndarray:
    """``fn`` (an mpmath lambdification) at every row of ``cols``, in 50-digit arithmetic, as float64."""
    mp = mpmath.mpf
    with mpmath.workdps(50):
        return np.array([float(fn(*map(mp, vals))) for vals in zip(*cols, strict=True)])


def _relative(lib: np.ndarray, want: np.ndarray) -> float:
    return float(np.max(np.abs(lib - want) / np.maximum(np.abs(want), 1e-300)))


def assert_library(errors: dict[str, float], what: str = "derived expression") -> None:
    """Fail where a library function differs from its derivation by more than :data:`LIBRARY_TOL`."""
    for name, err in errors.items():
        assert err < LIBRARY_TOL, f"the library's {name} differs from the {what} by {err:.3g}"


class SamVariants:
    """Chapter 7's derivations, one method per section (in the chapter's order; each proves into :attr:`proofs`).

    Construct it, then call :meth:`usam_edge`, :meth:`usam_window`, :meth:`jacobians`, :meth:`momentum`,
    :meth:`momentum_edges` and :meth:`elasticity` (or :meth:`derive_all`); the expressions they derive are kept
    as attributes for :meth:`library_errors`.
    """

    def __init__(self) -> None:
        self.proofs = Proofs()
        self.eta, self.rho, self.r, self.g, self.lam, self.beta, self.z, self.h, self.a = sp.symbols(
            "eta rho r g lambda beta z h alpha", positive=True
        )
        self.x = sp.Symbol("x", real=True)
        self.l1, self.l2, self.c1, self.c2, self.w1, self.w2 = sp.symbols(
            "lambda_1 lambda_2 c_1 c_2 w_1 w_2", real=True
        )
        self.e = sp.symbols("e", positive=True)  # a generic effective step size

    def derive_all(self) -> SamVariants:
        """Every section, in order."""
        self.usam_edge()
        self.usam_window()
        self.jacobians()
        self.momentum()
        self.momentum_edges()
        self.elasticity()
        return self

    def usam_edge(self) -> sp.Eq:
        """USAM on a quadratic is linear; its edge ``E_U`` and ``S(eta, rho, g) = E_U(eta, rho/g)``."""
        self.proofs.section = "USAM"
        eta, rho, r, g, lam, x = self.eta, self.rho, self.r, self.g, self.lam, self.x
        l1, l2, c1, c2 = self.l1, self.l2, self.c1, self.c2
        prove = self.proofs.prove
        H = sp.diag(l1, l2)
        c = sp.Matrix([c1, c2])
        c_next = c - eta * H * (c + r * H * c)  # the gradient at w + r g is H (w - w* + r H (w - w*))
        m_u = 1 - eta * x - eta * r * x**2
        prove("USAM multiplier, direction 1", sp.simplify(c_next[0] / c1 - m_u.subs(x, l1)) == 0)
        prove("USAM multiplier, direction 2", sp.simplify(c_next[1] / c2 - m_u.subs(x, l2)) == 0)
        roots = sp.solve(sp.Eq(m_u.subs(x, lam), -1), lam)
        E_U = 4 / (eta * (1 + sp.sqrt(1 + 8 * r / eta)))
        S = 4 / (eta * (1 + sp.sqrt(1 + 8 * rho / (eta * g))))  # the SAM-edge of chapter 1
        prove("one positive root of m_U = -1", len(roots) == 1)
        prove(
            "E_U = (sqrt(1 + 8r/eta) - 1)/(2r)", sp.simplify(roots[0] - (sp.sqrt(1 + 8 * r / eta) - 1) / (2 * r)) == 0
        )
        prove("E_U, rationalised form", sp.simplify(roots[0] - E_U) == 0)
        prove("S(eta, rho, g) = E_U(eta, rho/g)", sp.simplify(E_U.subs(r, rho / g) - S) == 0)
        prove(
            "E_U = 2/eta - 4r/eta^2 + O(r^2)",
            sp.simplify(sp.series(E_U, r, 0, 2).removeO() - (2 / eta - 4 * r / eta**2)) == 0,
        )
        self.H, self.m_u, self.E_U, self.S = H, m_u, E_U, S
        return sp.Eq(sp.Symbol("E_{U}(\\eta, r)"), E_U)

    def usam_window(self) -> None:
        """The whole stable set of one USAM step: ``(0, E_U)`` and a window of negative curvature."""
        self.proofs.section = "USAM"
        eta, r, x, m_u = self.eta, self.r, self.x, self.m_u
        prove = self.proofs.prove
        u = sp.symbols("u", positive=True)
        lam_minus = -(1 + sp.sqrt(1 + 8 * r / eta)) / (2 * r)
        lam_plus = (sp.sqrt(1 + 8 * r / eta) - 1) / (2 * r)
        prove("m_U - 1 = -eta lambda (1 + r lambda)", sp.expand(m_u - 1 + eta * x * (1 + r * x)) == 0)
        prove(
            "m_U + 1 = -eta r (x - lambda_-)(x - lambda_+)",
            sp.simplify(sp.expand(-eta * r * (x - lam_minus) * (x - lam_plus)) - (m_u + 1)) == 0,
        )
        r_u = eta * u * (u + 2) / 8  # then sqrt(1 + 8 r/eta) = 1 + u
        for lo, hi, what in [
            (lam_minus, -1 / r, "lambda_- < -1/r"),
            (-1 / r, 0, "-1/r < 0"),
            (0, lam_plus, "0 < lambda_+"),
        ]:
            prove(what, sp.factor(sq((hi - lo).subs(r, r_u))).is_positive)
        self.lam_minus = lam_minus

    def jacobians(self) -> None:
        """USAM's Jacobian on a generic quartic and at a stationary point; SAM's on a quadratic and its 2-cycle."""
        self.proofs.section = "Jacobians"
        eta, rho, r, H = self.eta, self.rho, self.r, self.H
        w1, w2, l1, l2, c1 = self.w1, self.w2, self.l1, self.l2, self.c1
        prove = self.proofs.prove
        p3, q3, s4, A, B, D = sp.symbols("p q s A B D", real=True)
        W = sp.Matrix([w1, w2])
        ell = (A * w1**2 + 2 * B * w1 * w2 + D * w2**2) / 2 + p3 * w1**3 + q3 * w1 * w2**2 + s4 * w1**4
        G = sp.Matrix([sp.diff(ell, v) for v in (w1, w2)])
        Hs = sp.hessian(ell, (w1, w2))
        shift = {w1: w1 + r * G[0], w2: w2 + r * G[1]}
        F = W - eta * G.subs(shift, simultaneous=True)
        J = F.jacobian(W)
        H0 = Hs.subs({w1: 0, w2: 0})
        prove(
            "USAM Jacobian everywhere",
            sp.expand(J - (sp.eye(2) - eta * Hs.subs(shift, simultaneous=True) * (sp.eye(2) + r * Hs))) == sp.zeros(2),
        )
        prove(
            "USAM Jacobian at a stationary point",
            sp.simplify(J.subs({w1: 0, w2: 0}) - (sp.eye(2) - eta * H0 - eta * r * H0**2)) == sp.zeros(2),
        )
        gq = H * W
        gam = sp.sqrt(gq.dot(gq))
        Fq = W - eta * H * (W + rho * gq / gam)
        uq = gq / gam
        prove(
            "SAM Jacobian on a quadratic",
            sp.simplify(Fq.jacobian(W) - (sp.eye(2) - eta * H - eta * rho / gam * H * (sp.eye(2) - uq * uq.T) * H))
            == sp.zeros(2),
        )
        on_cycle = (sp.eye(2) - eta * H - eta * rho / gam * H * (sp.eye(2) - uq * uq.T) * H).subs({w1: c1, w2: 0})
        prove(
            "SAM Jacobian on the 2-cycle",
            sp.simplify(on_cycle - sp.diag(1 - eta * l1, 1 - eta * l2 - eta * rho * l2**2 / sp.Abs(l1 * c1)))
            == sp.zeros(2),
        )

    def momentum(self) -> list[dict[str, Any]]:
        """Characteristic polynomials of SAM with momentum at frozen ``||g||`` and their Jury thresholds.

        Returns one row per rule (heavy ball, Nesterov, EMA): ``p(z)``, ``p(1)``, ``p(-1)`` and the threshold
        on ``eta h``.
        """
        self.proofs.section = "momentum"
        eta, beta, z, h = self.eta, self.beta, self.z, self.h
        prove = self.proofs.prove
        cc, vv = sp.symbols("c v", real=True)
        v_next = beta * vv + h * cc
        steps = {
            "heavy ball": cc - eta * v_next,
            "Nesterov": cc - eta * (h * cc + beta * v_next),
            "EMA (v+ = beta v + (1 - beta) s)": cc - eta * (beta * vv + (1 - beta) * h * cc),
        }
        rows = []
        thresholds = {}
        for name, c_next in steps.items():
            vn = beta * vv + (1 - beta) * h * cc if name.startswith("EMA") else v_next
            A_mat = sp.Matrix([[sp.diff(c_next, cc), sp.diff(c_next, vv)], [sp.diff(vn, cc), sp.diff(vn, vv)]])
            p = sp.expand((z * sp.eye(2) - A_mat).det())
            (th,) = sp.solve(sp.Eq(p.subs(z, -1), 0), h)
            thresholds[name] = th
            rows.append(
                {
                    "rule": name,
                    "p(z)": sp.factor(p),
                    "p(1)": sp.factor(p.subs(z, 1)),
                    "p(-1)": sp.factor(p.subs(z, -1)),
                    "threshold on eta h": sp.simplify(eta * th),
                }
            )
        prove(
            "heavy-ball polynomial z^2 - (1 + beta - eta h) z + beta",
            sp.expand(
                sp.expand((z * sp.eye(2) - sp.Matrix([[1 - eta * h, -eta * beta], [h, beta]])).det())
                - (z**2 - (1 + beta - eta * h) * z + beta)
            )
            == 0,
        )
        p_n = z**2 - (1 + beta) * (1 - eta * h) * z + beta * (1 - eta * h)
        A_n = sp.Matrix([[sp.diff(steps["Nesterov"], cc), sp.diff(steps["Nesterov"], vv)], [h, beta]])
        prove(
            "Nesterov polynomial z^2 - (1 + beta)(1 - eta h) z + beta (1 - eta h)",
            sp.expand((z * sp.eye(2) - A_n).det() - p_n) == 0,
        )
        prove("heavy ball: eta h < 2 (1 + beta)", sp.simplify(thresholds["heavy ball"] - 2 * (1 + beta) / eta) == 0)
        prove(
            "Nesterov: eta h < 2 (1 + beta)/(1 + 2 beta)",
            sp.simplify(thresholds["Nesterov"] - 2 * (1 + beta) / (eta * (1 + 2 * beta))) == 0,
        )
        prove(
            "EMA: eta h < 2 (1 + beta)/(1 - beta)",
            sp.simplify(thresholds["EMA (v+ = beta v + (1 - beta) s)"] - 2 * (1 + beta) / (eta * (1 - beta))) == 0,
        )
        prove(
            "Nesterov: |p(0)| < 1 at its threshold",
            sp.simplify((beta * (1 - eta * h)).subs(h, thresholds["Nesterov"]) + 1).is_positive,
        )
        self.thresholds = thresholds
        self.momentum_rows = rows
        return rows

    def momentum_edges(self) -> None:
        """The momentum edges are the SAM-edge at an effective step size; the 2-cycle and the limits."""
        self.proofs.section = "momentum"
        eta, rho, g, lam, beta, e, S = self.eta, self.rho, self.g, self.lam, self.beta, self.e, self.S
        thresholds = self.thresholds
        prove = self.proofs.prove
        cc = sp.symbols("c", real=True)
        eff = {"heavy ball": eta / (1 + beta), "Nesterov": eta * (1 + 2 * beta) / (1 + beta)}
        S_e = 4 / (e * (1 + sp.sqrt(1 + 8 * rho / (e * g))))
        (root,) = sp.solve(sp.Eq(lam + rho * lam**2 / g, 2 / e), lam)
        prove("positive root of e h(lambda) = 2 is S at step size e", sp.simplify(root - S_e) == 0)
        for name, eta_eff in eff.items():
            prove(f"{name}: threshold = 2/eta_eff", sp.simplify(thresholds[name] * eta_eff - 2) == 0)
        # the 2-cycle along v1: s = lambda (c + rho) at c > 0; (c, v) -> (-c, -v) gives v = -s/(1 + beta)
        s_c = lam * (cc + rho)
        v_c = -s_c / (1 + beta)
        amp_hb = sp.solve(sp.Eq(cc - eta * (-v_c), -cc), cc)  # c+ = c - eta v+ with v+ = -v
        amp_n = sp.solve(sp.Eq(cc - eta * (s_c + beta * (-v_c)), -cc), cc)
        amp_e = e * rho * lam / (2 - e * lam)
        prove(
            "heavy-ball cycle amplitude = chapter 1's at eta/(1 + beta)",
            sp.simplify(amp_hb[0] - amp_e.subs(e, eff["heavy ball"])) == 0,
        )
        prove(
            "Nesterov cycle amplitude = chapter 1's at eta (1 + 2 beta)/(1 + beta)",
            sp.simplify(amp_n[0] - amp_e.subs(e, eff["Nesterov"])) == 0,
        )
        vpos = sp.symbols("v_+", positive=True)
        lam_cycle = 2 / (e * (1 + vpos))  # e lambda < 2
        prove(
            "on the cycle lambda_1 = S(e, rho, lambda_1 |c|)",
            sp.simplify(sq(S_e.subs(g, lam * amp_e).subs(lam, lam_cycle)) - lam_cycle) == 0,
        )
        prove("beta = 0 gives the SAM-edge", sp.simplify(S_e.subs(e, eff["heavy ball"]).subs(beta, 0) - S) == 0)
        prove(
            "rho -> 0 gives GD with momentum, 2 (1 + beta)/eta",
            sp.simplify(sp.limit(S_e.subs(e, eff["heavy ball"]), rho, 0) - 2 * (1 + beta) / eta) == 0,
        )
        prove(
            "||g|| -> oo gives 2 (1 + beta)/(eta (1 + 2 beta)) (Nesterov)",
            sp.simplify(sp.limit(S_e.subs(e, eff["Nesterov"]), g, sp.oo) - 2 * (1 + beta) / (eta * (1 + 2 * beta)))
            == 0,
        )
        self.eff, self.S_e, self.amp_e = eff, S_e, amp_e

    def elasticity(self) -> None:
        """The edge's elasticity in ``||g||``, the growth when SAM is switched on at GD's edge, and ``Lambda``."""
        self.proofs.section = "elasticity, switch, collapse"
        eta, rho, g, lam, a, S = self.eta, self.rho, self.g, self.lam, self.a, self.S
        prove = self.proofs.prove
        eps_expr = sp.simplify((g * sp.diff(S, g) / S).subs(g, 2 * rho * a / eta))
        eps_lib = 2 / (a + 4 + sp.sqrt(a * (a + 4)))
        prove("elasticity = 2/(alpha + 4 + sqrt(alpha (alpha + 4)))", sp.simplify(eps_expr - eps_lib) == 0)
        prove("elasticity < 1/2 (1/elasticity - 2 > 0)", sp.simplify(1 / eps_lib - 2).is_positive)
        m_sam = 1 - eta * lam - eta * rho * lam**2 / g
        growth = sp.simplify(-m_sam.subs(lam, 2 / eta).subs(g, 2 * rho * a / eta))
        prove("switch at lambda_1 = 2/eta: multiplier -(1 + 2/alpha)", sp.simplify(growth - (1 + 2 / a)) == 0)
        Lam = eta / 2 * lam * (1 + rho * lam / g)
        prove("Lambda = 1 on the SAM-edge", sp.simplify(sq(Lam.subs(lam, S)) - 1) == 0)
        prove("Lambda increases with lambda_1", sp.diff(Lam, lam).is_positive)
        self.eps, self.Lam = eps_lib, Lam

    def library_errors(self, n: int, seed: int = 0) -> dict[str, float]:
        """Largest relative error of each :mod:`~samedge_lib.theory.edges` function against its derivation.

        At ``n`` random points over orders of magnitude (``1e-3 <= eta <= 10``, ``1e-5 <= rho, r <= 10``,
        ``1e-6 <= ||g|| <= 1e3``, ``0 <= beta < 0.999``), the derivation evaluated in 50-digit arithmetic.
        Needs every section derived first.
        """
        eta, rho, r, g, lam, beta, a, x, e = (
            self.eta,
            self.rho,
            self.r,
            self.g,
            self.lam,
            self.beta,
            self.a,
            self.x,
            self.e,
        )
        rng = np.random.default_rng(seed)
        E = 10.0 ** rng.uniform(-3, 1, n)
        P = 10.0 ** rng.uniform(-5, 1, n)
        Gn = 10.0 ** rng.uniform(-6, 3, n)
        Bt = rng.uniform(0.0, 0.999, n)
        Bn = rng.uniform(0.001, 0.999, n)  # Nesterov needs beta > 0
        U = rng.uniform(0.01, 0.99, n)  # lambda = U 2/eta_eff keeps the cycles inside eta_eff lambda < 2
        AL = 10.0 ** rng.uniform(-4, 4, n)
        L = rng.uniform(-5.0, 5.0, n) * 2 / E
        derived = {
            "E_U": sp.lambdify((eta, r), self.E_U, "mpmath"),
            "S_e": sp.lambdify((e, rho, g), self.S_e, "mpmath"),
            "amp_e": sp.lambdify((e, rho, lam), self.amp_e, "mpmath"),
            "eff_hb": sp.lambdify((eta, beta), self.eff["heavy ball"], "mpmath"),
            "eff_n": sp.lambdify((eta, beta), self.eff["Nesterov"], "mpmath"),
            "eps": sp.lambdify(a, self.eps, "mpmath"),
            "growth": sp.lambdify(a, 1 + 2 / a, "mpmath"),
            "Lam": sp.lambdify((lam, g, eta, rho), self.Lam, "mpmath"),
            "m_u": sp.lambdify((x, eta, r), self.m_u, "mpmath"),
            "window": sp.lambdify((eta, r), self.lam_minus, "mpmath"),
        }
        eff_hb, eff_n = _ref(derived["eff_hb"], E, Bt), _ref(derived["eff_n"], E, Bn)
        lam_hb, lam_n = U * 2 / eff_hb, U * 2 / eff_n
        checks = {
            "usam_edge(eta, r)": (edges.usam_edge(eta=E, r=P), _ref(derived["E_U"], E, P)),
            "usam_multiplier(lambda, eta, r)": (
                edges.usam_multiplier(lam=L, eta=E, r=P),
                _ref(derived["m_u"], L, E, P),
            ),
            "usam_negative_window(eta, r)[0]": (
                edges.usam_negative_window(eta=E, r=P)[0],
                _ref(derived["window"], E, P),
            ),
            "effective_eta (heavy ball)": (edges.effective_eta(eta=E, beta=Bt), eff_hb),
            "effective_eta (Nesterov)": (edges.effective_eta(eta=E, beta=Bn, nesterov=True), eff_n),
            "momentum_sam_edge (heavy ball)": (
                edges.momentum_sam_edge(grad_norm=Gn, eta=E, rho=P, beta=Bt),
                _ref(derived["S_e"], eff_hb, P, Gn),
            ),
            "momentum_sam_edge (Nesterov)": (
                edges.momentum_sam_edge(grad_norm=Gn, eta=E, rho=P, beta=Bn, nesterov=True),
                _ref(derived["S_e"], eff_n, P, Gn),
            ),
            "momentum_usam_edge (heavy ball)": (
                edges.momentum_usam_edge(eta=E, r=P, beta=Bt),
                _ref(derived["E_U"], eff_hb, P),
            ),
            "momentum_two_cycle_amplitude (heavy ball)": (
                edges.momentum_two_cycle_amplitude(lam1=lam_hb, eta=E, rho=P, beta=Bt),
                _ref(derived["amp_e"], eff_hb, P, lam_hb),
            ),
            "momentum_two_cycle_amplitude (Nesterov)": (
                edges.momentum_two_cycle_amplitude(lam1=lam_n, eta=E, rho=P, beta=Bn, nesterov=True),
                _ref(derived["amp_e"], eff_n, P, lam_n),
            ),
            "edge_elasticity(alpha)": (edges.edge_elasticity(AL), _ref(derived["eps"], AL)),
            "switch_growth(alpha)": (edges.switch_growth(AL), _ref(derived["growth"], AL)),
            "collapse_variable(S, g, eta, rho)": (
                edges.collapse_variable(lam1=edges.sam_edge(grad_norm=Gn, eta=E, rho=P), grad_norm=Gn, eta=E, rho=P),
                np.ones(n),
            ),
            "collapse_variable(lambda, g, eta, rho)": (
                edges.collapse_variable(lam1=np.abs(L), grad_norm=Gn, eta=E, rho=P),
                _ref(derived["Lam"], np.abs(L), Gn, E, P),
            ),
        }
        return {k: _relative(lib, want) for k, (lib, want) in checks.items()}


class PhaseDiagram:
    """Chapter 8's derivations: :meth:`curve` (``R(alpha)``) and :meth:`collapse` (``Lambda`` and the 2-cycle)."""

    def __init__(self) -> None:
        self.proofs = Proofs()
        self.a, self.eta, self.rho, self.g, self.y, self.t, self.Rs, self.lam, self.c = sp.symbols(
            "alpha eta rho g y t R lambda c", positive=True
        )

    def derive_all(self) -> PhaseDiagram:
        """Every section, in order."""
        self.curve()
        self.collapse()
        return self

    def curve(self) -> sp.Eq:
        """``R(alpha)``: its equation, inverse, series at both ends, elasticities and the three regimes."""
        self.proofs.section = "R(alpha)"
        a, eta, rho, g, t, Rs = self.a, self.eta, self.rho, self.g, self.t, self.Rs
        prove = self.proofs.prove
        R = 2 / (1 + sp.sqrt(1 + 4 / a))
        S = 4 / (eta * (1 + sp.sqrt(1 + 8 * rho / (eta * g))))
        prove("SAM-edge/(2/eta) = R(alpha)", sp.simplify((S / (2 / eta)).subs(g, 2 * rho * a / eta) - R) == 0)
        prove("R^2 + alpha R - alpha = 0", sp.simplify(R**2 + a * R - a) == 0)
        (inverse,) = sp.solve(sp.Eq(Rs**2 + a * Rs - a, 0), a)
        prove("alpha = R^2/(1 - R)", sp.simplify(inverse - Rs**2 / (1 - Rs)) == 0)
        small = sp.expand(sp.series(R.subs(a, t**2), t, 0, 6).removeO())
        prove(
            "R = sqrt(alpha) - alpha/2 + alpha^(3/2)/8 - alpha^(5/2)/128 + O(alpha^3)",
            sp.expand(small - (t - t**2 / 2 + t**3 / 8 - t**5 / 128)) == 0,
        )
        large = sp.expand(sp.series(R.subs(a, 1 / t), t, 0, 8).removeO())
        prove(
            "R = sum (-1)^n C_n alpha^-n (Catalan numbers, n <= 7)",
            all(large.coeff(t, n) == (-1) ** n * sp.catalan(n) for n in range(8)),
        )
        S_small = sp.series(S.subs(g, t**2), t, 0, 4).removeO().subs(t, sp.sqrt(g))
        prove(
            "S = sqrt(2g/(eta rho)) - g/(2 rho) + sqrt(2 eta) g^(3/2)/(16 rho^(3/2)) + O(g^2)",
            sp.simplify(
                S_small
                - (
                    sp.sqrt(2 * g / (eta * rho))
                    - g / (2 * rho)
                    + sp.sqrt(2 * eta) * g ** sp.Rational(3, 2) / (16 * rho ** sp.Rational(3, 2))
                )
            )
            == 0,
        )
        eps_ = 2 / (a + 4 + sp.sqrt(a * (a + 4)))
        d_eta = sp.simplify((eta * sp.diff(S, eta) / S).subs(g, 2 * rho * a / eta))
        d_rho = sp.simplify((rho * sp.diff(S, rho) / S).subs(g, 2 * rho * a / eta))
        d_g = sp.simplify((g * sp.diff(S, g) / S).subs(g, 2 * rho * a / eta))
        prove("d ln S/d ln ||g|| = epsilon(alpha)", sp.simplify(d_g - eps_) == 0)
        prove("d ln S/d ln eta = -(1 - epsilon)", sp.simplify(d_eta + 1 - eps_) == 0)
        prove("d ln S/d ln rho = -epsilon", sp.simplify(d_rho + eps_) == 0)
        tol = sp.Rational(1, 10)
        (a_sqrt,) = sp.solve(sp.Eq(R / sp.sqrt(a), 1 - tol), a)
        (a_gd,) = sp.solve(sp.Eq(R, 1 - tol), a)
        (a_half,) = sp.solve(sp.Eq(R, sp.Rational(1, 2)), a)
        prove("square-root regime ends at alpha = (1/0.9 - 0.9)^2 = 361/8100", a_sqrt == sp.Rational(361, 8100))
        prove("GD-like regime starts at alpha = 0.81/0.1 = 81/10", a_gd == sp.Rational(81, 10))
        prove("R(1/2) = 1/2: the edge is 1/eta", a_half == sp.Rational(1, 2))
        prove("R/sqrt(alpha) decreases with alpha", sp.diff(sp.simplify(R / sp.sqrt(a)), a).is_negative)
        self.R, self.S, self.a_sqrt, self.a_gd = R, S, a_sqrt, a_gd
        return sp.Eq(sp.Symbol("R(\\alpha)"), R)

    def collapse(self) -> None:
        """``Lambda = y (1 + y/alpha)``, 1 exactly on ``y = R(alpha)``; the quadratic's 2-cycle lies on the curve."""
        self.proofs.section = "collapse"
        a, eta, rho, g, y, lam = self.a, self.eta, self.rho, self.g, self.y, self.lam
        prove = self.proofs.prove
        Lam = eta / 2 * lam * (1 + rho * lam / g)
        prove(
            "Lambda = y (1 + y/alpha)",
            sp.simplify(Lam.subs(g, 2 * rho * a / eta).subs(lam, 2 * y / eta) - y * (1 + y / a)) == 0,
        )
        prove("Lambda = 1 on y = R(alpha)", sp.simplify((y * (1 + y / a)).subs(y, self.R) - 1) == 0)
        lam1 = 2 * y / eta
        amp = eta * rho * lam1 / (2 - eta * lam1)
        prove("2-cycle: alpha* = y^2/(1 - y)", sp.simplify(eta * lam1 * amp / (2 * rho) - y**2 / (1 - y)) == 0)

    def library_errors(self, n: int, seed: int = 0) -> dict[str, float]:
        """``edge_ratio``, ``alpha_of_ratio``, ``regime_bounds``, ``edge_regime`` and ``collapse_variable``
        against the derivation at ``n`` random points (50-digit arithmetic); needs :meth:`curve` first.
        """
        a, y, Rs = self.a, self.y, self.Rs
        rng = np.random.default_rng(seed)
        AL = 10.0 ** rng.uniform(-5, 5, n)
        RR = rng.uniform(0.0, 0.999, n)
        Y = rng.uniform(0.0, 3.0, n)
        E = 10.0 ** rng.uniform(-3, 1, n)
        P = 10.0 ** rng.uniform(-4, 1, n)
        ref_ratio = _ref(sp.lambdify(a, self.R, "mpmath"), AL)
        ref_inv = _ref(sp.lambdify(Rs, Rs**2 / (1 - Rs), "mpmath"), RR)
        ref_lam = _ref(sp.lambdify((y, a), y * (1 + y / a), "mpmath"), Y, AL)
        G = 2 * P * AL / E  # the gradient norm with this alpha
        lib_lam = edges.collapse_variable(lam1=2 * Y / E, grad_norm=G, eta=E, rho=P)
        a_sqrt, a_gd = float(self.a_sqrt), float(self.a_gd)
        low, high = edges.regime_bounds(0.1)
        errors = {
            "edge_ratio(alpha)": float(np.max(np.abs(edges.edge_ratio(AL) - ref_ratio) / ref_ratio)),
            "alpha_of_ratio(R)": float(
                np.max(np.abs(edges.alpha_of_ratio(RR) - ref_inv) / np.maximum(ref_inv, 1e-300))
            ),
            "collapse_variable = y (1 + y/alpha)": float(
                np.max(np.abs(lib_lam - ref_lam) / np.maximum(ref_lam, 1e-300))
            ),
            "regime_bounds(0.1)": float(max(abs(low / a_sqrt - 1), abs(high / a_gd - 1))),
        }
        regimes = [edges.edge_regime(v) for v in AL]
        want = ["square-root" if v <= a_sqrt else "GD-like" if v >= a_gd else "crossover" for v in AL]
        errors["edge_regime (share misclassified)"] = float(
            np.mean([p != q for p, q in zip(regimes, want, strict=True)])
        )
        return errors
