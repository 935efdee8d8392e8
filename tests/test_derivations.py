"""The sympy derivations of chapters 7 and 8 (theory.derivations): every identity proved, the library equal to them."""

from __future__ import annotations

import sys

import pytest

sp = pytest.importorskip("sympy")
pytest.importorskip("mpmath")

from samedge_lib.theory import derivations as dv  # noqa: E402


@pytest.fixture(scope="module")
def variants() -> dv.SamVariants:
    return dv.SamVariants().derive_all()


@pytest.fixture(scope="module")
def phase() -> dv.PhaseDiagram:
    return dv.PhaseDiagram().derive_all()


def test_chapter7_proves_its_36_identities(variants):
    assert len(variants.proofs) == 36
    assert len(set(variants.proofs.names)) == 36
    assert {p.section for p in variants.proofs.proofs} == {
        "USAM",
        "Jacobians",
        "momentum",
        "elasticity, switch, collapse",
    }


def test_chapter8_proves_its_16_identities(phase):
    assert len(phase.proofs) == 16
    assert phase.proofs.names[0] == "SAM-edge/(2/eta) = R(alpha)"


def test_prove_records_only_what_holds():
    proofs = dv.Proofs(section="s")
    rec = proofs.prove("x - x = 0", sp.simplify(sp.Symbol("x") - sp.Symbol("x")) == 0)
    assert rec == dv.Proof("x - x = 0", "s") and proofs.names == ["x - x = 0"]
    with pytest.raises(AssertionError, match="not proved: wrong"):
        proofs.prove("wrong", sp.Symbol("x", positive=True).is_negative)
    assert len(proofs) == 1


def test_momentum_thresholds_table(variants):
    rows = {r["rule"]: r for r in variants.momentum_rows}
    eta, beta = variants.eta, variants.beta
    assert sp.simplify(rows["heavy ball"]["threshold on eta h"] - 2 * (1 + beta)) == 0
    assert sp.simplify(rows["Nesterov"]["threshold on eta h"] - 2 * (1 + beta) / (1 + 2 * beta)) == 0
    assert eta not in rows["heavy ball"]["threshold on eta h"].free_symbols


def test_library_equals_the_chapter7_derivation(variants):
    errors = variants.library_errors(300, seed=1)
    assert len(errors) == 14
    dv.assert_library(errors)


def test_library_equals_the_chapter8_derivation(phase):
    errors = phase.library_errors(300, seed=1)
    assert set(errors) >= {"edge_ratio(alpha)", "alpha_of_ratio(R)", "regime_bounds(0.1)"}
    dv.assert_library(errors)


def test_library_differences_are_caught(variants):
    with pytest.raises(AssertionError, match="differs"):
        dv.assert_library({"usam_edge": 1e-6})


def test_sympy_stays_out_of_the_formulas():
    # rules, edges and updates are imported by the reading side: they must not pull in sympy
    import subprocess

    code = (
        "import sys; import samedge_lib.theory, samedge_lib.theory.edges, samedge_lib.theory.rules, "
        "samedge_lib.theory.updates; print('sympy' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
