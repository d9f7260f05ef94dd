"""The papers' constants: paper B's Fig. 3 factors and paper A's Theorem 1 quantities."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from byzsim.theory import (
    asynrsa_delta1,
    asynrsa_rate,
    asynrsa_step_bound,
    asynrsa_step_bound_tight,
    asynrsa_step_terms,
    c_alpha,
    fig3_curves,
    learning_error_factor,
    lemma1_lambda_threshold,
    resampling_guarantee,
    variance_factor,
)


# --------------------------------------------------------------------------------------
# paper B
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "s,expected", [(1, 5.063), (2, 3.495), (3, 3.992), (4, 8.773)]
)
def test_fig3_reference_values(s, expected):
    """W = 30, α = 0.10: C_α² = 5.063 vs d·C_{sα}² = 3.495 / 3.992 / 8.773 (paper B, Fig. 3)."""
    # |x − ref| ≤ 5e-4: the references are rounded half-up (C_0.1² = 5.0625 exactly)
    assert abs(learning_error_factor(0.10, s, 30) - expected) <= 5e-4 + 1e-12


def test_reference_values_by_hand():
    assert c_alpha(0.1) == pytest.approx(1.8 / 0.8, rel=1e-15)
    assert variance_factor(30, 2) == pytest.approx(29 / 59, rel=1e-15)
    assert learning_error_factor(0.1, 2, 30) == pytest.approx(29 / 59 * (1.6 / 0.6) ** 2, rel=1e-14)
    assert variance_factor(30, 1) == 1.0
    assert variance_factor(7, 7) == pytest.approx(6 / 48)


@pytest.mark.parametrize("s", [1, 2, 3, 4])
def test_poles_at_one_over_2s(s):
    pole = 1 / (2 * s)
    assert math.isinf(learning_error_factor(pole, s))
    assert math.isinf(learning_error_factor(min(1.0, pole + 0.01), s))  # beyond: inf too
    below = learning_error_factor(pole - 1e-9, s)
    assert math.isfinite(below) and below > 1e15
    curves = fig3_curves(30, (s,), n_points=None) if s > 1 else fig3_curves(30, ())
    key = f"RS-Byrd-SAGA s={s}" if s > 1 else "Byrd-SAGA"
    a = curves["alpha"]
    np.testing.assert_array_equal(np.isinf(curves[key]), a >= pole - 1e-12)


def test_fig3_curves_shape_and_consistency():
    c = fig3_curves()
    assert set(c) == {"alpha", "Byrd-SAGA", "RS-Byrd-SAGA s=2", "RS-Byrd-SAGA s=3", "RS-Byrd-SAGA s=4"}
    np.testing.assert_allclose(c["alpha"], np.arange(31) / 30)
    assert c["Byrd-SAGA"][3] == pytest.approx(5.0625)  # B = 3, α = 0.1
    assert c["RS-Byrd-SAGA s=2"][3] == pytest.approx(learning_error_factor(0.1, 2))
    fine = fig3_curves(n_points=101)
    assert fine["alpha"].shape == (101,) and fine["alpha"][-1] == 0.5
    # resampling helps for small α, hurts near its pole (Fig. 3's message)
    assert fine["RS-Byrd-SAGA s=2"][20] < fine["Byrd-SAGA"][20]  # α = 0.1
    assert fine["RS-Byrd-SAGA s=2"][45] > fine["Byrd-SAGA"][45]  # α = 0.225
    assert learning_error_factor(0.0, 2) == pytest.approx(4 * 29 / 59)


@given(a=st.floats(0, 0.499), b=st.floats(0, 0.499))
def test_c_alpha_monotone_and_at_least_2(a, b):
    lo, hi = sorted((a, b))
    assert 2.0 <= c_alpha(lo) <= c_alpha(hi)


def test_c_alpha_vectorised():
    a = np.array([0.0, 0.1, 0.25, 0.4])
    np.testing.assert_allclose(c_alpha(a), (2 - 2 * a) / (1 - 2 * a))
    assert isinstance(c_alpha(0.1), float)


@pytest.mark.parametrize("bad", [0.5, 0.7, -0.1, np.nan, [0.1, 0.5]])
def test_c_alpha_invalid_raises(bad):
    with pytest.raises(ValueError, match="alpha"):
        c_alpha(bad)


@pytest.mark.parametrize("kw", [dict(alpha=-0.1), dict(alpha=1.2), dict(alpha=0.1, s=0), dict(alpha=0.1, s=31)])
def test_learning_error_factor_invalid_raises(kw):
    with pytest.raises(ValueError):
        learning_error_factor(**kw)


@given(W=st.integers(2, 200), data=st.data())
def test_variance_factor_range(W, data):
    s = data.draw(st.integers(1, W))
    d = variance_factor(W, s)
    # without-replacement draws: at most the i.i.d. value 1/s, at least 1/(W+1) (s = W)
    assert 1 / (W + 1) - 1e-15 <= d <= 1 / s + 1e-15
    if 2 <= s <= W - 1:  # increasing in W for s ≥ 2 (so d_R ≤ d for R < W)
        assert variance_factor(W - 1, s) < d


def test_resampling_guarantee():
    assert resampling_guarantee(30, 7, 2)  # 28 < 30
    assert not resampling_guarantee(30, 8, 2)  # 32 ≥ 30
    assert resampling_guarantee(30, 14, 1) and not resampling_guarantee(30, 15, 1)
    assert resampling_guarantee(30, 0, 4)


# --------------------------------------------------------------------------------------
# paper A
# --------------------------------------------------------------------------------------
def test_asynrsa_step_bound_by_hand():
    mu, L, J = 1.0, 3.0, 5
    assert asynrsa_step_bound(mu, L, J) == pytest.approx(1 / (12 * 5 * 4 * 3))  # 1/720
    t19, t38, t35 = asynrsa_step_terms(mu, L, J)
    assert (t19, t38, t35) == pytest.approx((1 / 8, 4 / 30, 1 / 144))
    assert asynrsa_step_bound_tight(mu, L, J) == pytest.approx(1 / 144)


@given(
    mu=st.floats(1e-3, 10), ratio=st.floats(1, 1e3), J=st.integers(1, 10_000)
)
def test_eq44_implies_eq43(mu, ratio, J):
    L = mu * ratio
    assert asynrsa_step_bound(mu, L, J) <= asynrsa_step_bound_tight(mu, L, J) * (1 + 1e-12)


def test_asynrsa_rate_by_hand():
    # 1 − γ μ L α / (μ + L) = 1 − 0.5 · 1 · 3 · 0.1 / 4
    assert asynrsa_rate(1.0, 3.0, 0.1, 0.5) == pytest.approx(1 - 0.0375)
    assert asynrsa_rate(1.0, 3.0, 0.1, 1.0) < asynrsa_rate(1.0, 3.0, 0.1, 0.5)


def test_asynrsa_delta1_by_hand():
    mu, L, alpha, gamma, lam, r, q, d = 1.0, 3.0, 0.01, 0.5, 2.0, 4, 1, 10
    # term 1: (4/1.5)·0.01·(0.5·16·4·4·10 + 16·4·16·10 + 2·4·1·10) = (8/3)·0.01·11600
    t1 = (8 / 3) * 0.01 * (0.5 * 16 * 4 * 4 * 10 + 16 * 4 * 16 * 10 + 2 * 4 * 1 * 10)
    # term 2: 16·4·1·10 / (0.5·1·9) ; term 3: 0.5·16·4·16·10 / (0.5·9)
    t2 = 16 * 4 * 1 * 10 / (0.5 * 9)
    t3 = 0.5 * 16 * 4 * 16 * 10 / (0.5 * 9)
    assert asynrsa_delta1(mu, L, alpha, gamma, lam, r, q, d) == pytest.approx(t1 + t2 + t3, rel=1e-14)
    # γ = 1, q = 0: only the step-size term is left
    assert asynrsa_delta1(mu, L, alpha, 1.0, lam, r, 0, d) == pytest.approx(
        (4 / 3) * alpha * (16 * 4 * 4 * 10 + 16 * 4 * 16 * 10), rel=1e-14
    )


@pytest.mark.parametrize("args", [(0.0, 1.0), (2.0, 1.0), (-1.0, 1.0)])
def test_asynrsa_invalid_mu_L(args):
    with pytest.raises(ValueError, match="mu"):
        asynrsa_step_bound(*args, 3)


def test_asynrsa_delta1_invalid_gamma():
    with pytest.raises(ValueError, match="gamma"):
        asynrsa_delta1(1, 2, 0.01, 0.0, 1, 3, 1, 5)


def test_lemma1_lambda_threshold():
    g = np.array([[1.0, -3.0, 2.0], [0.5, 0.5, -2.5]])
    assert lemma1_lambda_threshold(g, 1) == 3.0  # p = 1: max-abs (∞-norm)
    assert lemma1_lambda_threshold(g, 2) == pytest.approx(math.sqrt(14))
    assert lemma1_lambda_threshold(g, np.inf) == 6.0  # p = ∞: l1 norm
    b = 3 / 2  # p = 3 -> b = 3/2
    expected = max((np.abs(row) ** b).sum() ** (1 / b) for row in g)
    assert lemma1_lambda_threshold(g, 3) == pytest.approx(expected)
    with pytest.raises(ValueError):
        lemma1_lambda_threshold(g, 0.5)
    with pytest.raises(ValueError):
        lemma1_lambda_threshold(g[0], 1)


# --------------------------------------------------------------------------------------
# bounds on measured numbers
# --------------------------------------------------------------------------------------
def test_paper_b_bounds_by_hand():
    """W = 30, B = 3 (α = 0.1), σ² = 2, δ² = 1, μ = 0.5 (so 1/μ² = 4):
    C_0.1² = (1.8/0.8)² = 5.0625; s = 2: C_0.2² = (1.6/0.6)² = 64/9, d = 29/59, R = 27."""
    from byzsim.theory import paper_b_bounds

    b = paper_b_bounds(2.0, 1.0, 0.5, B=3, W=30, s=2)
    c1, c2, d = 5.0625, 64 / 9, 29 / 59
    assert b["Byrd-SGD"].value == pytest.approx(2 * 4 * c1 * (2 + 1))  # 121.5
    assert b["Byrd-SAGA"].value == pytest.approx(5 * c1 * 1 * 4)  # 101.25
    assert b["RS-Byrd-SAGA"].value == pytest.approx(5 * d * c2 * 4)
    assert b["RS-Byrd-SGD"].value == pytest.approx(2 * 4 * ((d + (1 - d) / 27) * c2 * 2 + d * c2))
    assert b["RS-Byrd-SAGA"].name == "RS-Byrd-SAGA s=2" and b["Byrd-SGD"].holds
    # no attack: C_0 = 2, the σ² term of Byrd-SGD is 2·4·σ²/μ²
    assert paper_b_bounds(1.0, 0.0, 1.0, B=0, W=10)["Byrd-SGD"].value == pytest.approx(8.0)


def test_paper_b_bounds_outside_range_warn_and_give_none():
    from byzsim.config import TheoryWarning
    from byzsim.theory import paper_b_bounds, rs_byrd_saga_error, rs_byrd_sgd_error

    with pytest.warns(TheoryWarning, match="1/2"):  # s·α = 2·8/30 ≥ 1/2
        b = paper_b_bounds(1.0, 1.0, 1.0, B=8, W=30, s=2)
    assert b["RS-Byrd-SAGA"].value is None and b["RS-Byrd-SAGA"].formula is None
    assert b["Byrd-SAGA"].value == pytest.approx(5 * (2 - 16 / 30) ** 2 / (1 - 16 / 30) ** 2)
    with pytest.warns(TheoryWarning, match="μ"):
        assert rs_byrd_saga_error(1.0, 0.0, 3, 30).value is None
    # step conditions: Theorem 3 needs γ ≤ μ/(2L²) = 1/8 at μ = 1, L = 2
    ok = rs_byrd_sgd_error(1.0, 1.0, 1.0, 3, 30, L=2.0, step=0.125)
    assert ok.holds
    with pytest.warns(TheoryWarning, match="step"):
        bad = rs_byrd_sgd_error(1.0, 1.0, 1.0, 3, 30, L=2.0, step=0.13)
    assert bad.value is None and bad.formula == ok.formula
    with pytest.raises(ValueError, match="B"):
        rs_byrd_sgd_error(1.0, 1.0, 1.0, 30, 30)


def test_step_bounds_by_hand():
    from byzsim.theory import saga_step_bound, sgd_step_bound

    assert sgd_step_bound(1.0, 2.0) == pytest.approx(1 / 8)
    # μ/(2√(10 J² L² C)) with J = 2, L = 1, B = 0 (C_0 = 2): 1/(2√80)
    assert saga_step_bound(1.0, 1.0, 2, 0, 10) == pytest.approx(1 / (2 * math.sqrt(80)))
    assert saga_step_bound(1.0, 1.0, 2, 5, 10) is None  # α = 1/2: no condition


def test_asynrsa_theorem1_by_hand():
    from byzsim.config import TheoryWarning
    from byzsim.theory import asynrsa_theorem1

    # μ = 1, L = 3, J = 5: step bound 1/720; α = 1e-3 is inside
    rate, d1 = asynrsa_theorem1(1.0, 3.0, 5, 1e-3, 1.0, 0.1, 4, 1, 10)
    assert rate.value == pytest.approx(1 - 3e-3 / 4)  # 1 − γμLα/(μ+L)
    assert d1.value == pytest.approx(asynrsa_delta1(1.0, 3.0, 1e-3, 1.0, 0.1, 4, 1, 10))
    with pytest.warns(TheoryWarning, match="12J"):  # α = 0.01 > 1/720
        rate, d1 = asynrsa_theorem1(1.0, 3.0, 5, 1e-2, 1.0, 0.1, 4, 1, 10)
    assert rate.value is None and d1.value is None and d1.formula > 0
    with pytest.warns(TheoryWarning, match="μ"):
        rate, d1 = asynrsa_theorem1(0.0, 3.0, 5, 1e-3, 1.0, 0.1, 4, 1, 10)
    assert rate.formula is None and d1.formula is None
