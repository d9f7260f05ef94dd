"""Non-finite and huge messages.

Contract (module notes of :mod:`byzsim.aggregators`): a robust rule returns a finite
value, within its usual radius of the honest mean, while at most its tolerated number of
participating rows (``BREAKDOWN`` of the conformance suite) hold inf/NaN — such rows are
*infinitely far* from every other row.  Finite rows too large for a Gram matrix
(norm ``>~ 1e154``) are handled exactly.  The mean is not robust: one non-finite row
makes it non-finite, and a run using it is recorded as diverged.

Every registered rule is checked (once per function, as in the conformance suite, whose
helpers are reused), then the geometric median (weight 0 for non-finite rows, NaN at the
breakdown point, huge rows, the robust start of the Weiszfeld iteration) and Krum
(non-finite rows score +inf and are never selected), then the ``inf`` attack end to end.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from byzsim import make_config, run
from byzsim.aggregators import (
    AGGREGATORS,
    geometric_median,
    krum,
    mean,
    multi_krum,
)
from byzsim.aggregators._geomed import _weiszfeld_start
from byzsim.aggregators._gram import _gram
from test_aggregator_conformance import (
    NAMES,
    ONE_POINT_ADVERSARY,
    base,
    breakdown,
    build,
    check_scale_equivariance,
    close,
    lookup,
    max_valid_f,
    radius,
    takes_f,
)

ROBUST = [k for k in NAMES if AGGREGATORS[k] is not mean]
KINDS = ("inf", "-inf", "nan", "mixed")
GM_TIGHT = dict(tol=1e-12, max_iter=5000)


def effective_f(name, n):
    """The ``f`` the rule is built with for ``n`` rows: Krum's robust regime
    ``n >= 2f + 3``, clipped to the rule's valid range (Bulyan: ``n >= 4f + 3``)."""
    f = (n - 3) // 2
    return min(f, max_valid_f(base(name), n)) if takes_f(name) else f


def spoil(z, rows, kind, rng):
    """Make ``rows`` of ``z`` non-finite: whole rows of inf / -inf / NaN, or ("mixed")
    each row a random mix — some only partly non-finite (one coordinate)."""
    z = z.copy()
    if kind == "inf":
        z[rows] = np.inf
    elif kind == "-inf":
        z[rows] = -np.inf
    elif kind == "nan":
        z[rows] = np.nan
    else:
        for i in rows:
            vals = rng.choice([np.inf, -np.inf, np.nan], size=z.shape[-1])
            if rng.random() < 0.5:  # partly non-finite: one coordinate only
                z[i, rng.integers(z.shape[-1])] = vals[0]
            else:
                z[i] = vals
    return z


def case(name, n, d, kind, seed, q=None):
    """``(agg, z, honest, f, q)``: ``q`` (default: the most the rule tolerates) random
    rows of ``n`` made non-finite."""
    rng = np.random.default_rng(seed)
    f = effective_f(name, n)
    q = breakdown(name, n, f) if q is None else q
    z = rng.normal(size=(n, d))
    bad = rng.permutation(n)[:q]
    honest = np.ones(n, bool)
    honest[bad] = False
    return build(name, f, n), spoil(z, bad, kind, rng), honest, f, q


def assert_bounded(name, out, z, honest, f, q):
    n, d = z.shape
    H = z[honest]
    assert np.isfinite(out).all(), f"{name}: non-finite output {out}"
    err = np.linalg.norm(out - H.mean(0))
    rad = radius(name, H, n, f, q, d)
    assert err <= rad * (1 + 1e-7) + 1e-12, f"{name}: {err:.3g} from the honest mean, allowed {rad:.3g}"


# --------------------------------------------------------------------------------------
# every registered rule
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("n", [7, 11])
@pytest.mark.parametrize("name", ROBUST)
def test_robust_rules_finite_below_breakdown(name, n, kind):
    """As many non-finite rows as the rule tolerates: a finite output within the rule's
    radius of the honest mean, and no RuntimeWarning (inf/NaN are handled, not
    silenced by accident)."""
    for seed in range(3):
        agg, z, honest, f, q = case(name, n, 3, kind, seed)
        with warnings.catch_warnings():
            warnings.simplefilter("error", RuntimeWarning)
            out = agg(z)
        assert_bounded(name, out, z, honest, f, q)


@pytest.mark.parametrize("kind", KINDS)
def test_mean_is_not_robust(kind):
    """Documented: one non-finite row makes the mean non-finite (in every coordinate the
    row spoils)."""
    rng = np.random.default_rng(0)
    z = spoil(rng.normal(size=(7, 3)), [2], kind, rng)
    with np.errstate(invalid="ignore"):
        out = mean(z)
    assert not np.isfinite(out).all()
    assert np.array_equal(np.isfinite(out), np.isfinite(z[2]))


@pytest.mark.parametrize("name", ROBUST)
def test_nonfinite_rows_with_a_mask(name):
    """Participating non-finite rows next to absent rows (holding junk): the mask still
    equals dropping the absent rows, and the output is finite."""
    n, d = 11, 3
    rng = np.random.default_rng(1)
    f = effective_f(name, n)
    z = rng.normal(size=(n, d))
    mask = np.ones(n, bool)
    mask[[1, 6]] = False
    z[[1, 6]] = [[np.nan] * d, [1e300] * d]
    q = max(min(breakdown(name, n - 2, f), 2), 0)  # within the tolerance of the 9 left
    z = spoil(z, [0, 4][:q], "mixed", rng)
    agg = build(name, f, n)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        out = agg(z, mask)
    assert np.isfinite(out).all()
    close(out, agg(z[mask]), scale=1.0)


@pytest.mark.parametrize("name", ROBUST)
def test_batched_elements_with_different_nonfinite_rows(name):
    """One batch: clean, one non-finite row, the most tolerated, huge finite rows, and a
    masked variant: each element as if alone (the slow paths are per element)."""
    n, d = 11, 4
    f = effective_f(name, n)
    q = breakdown(name, n, f)
    rng = np.random.default_rng(2)
    z = rng.normal(size=(5, n, d))
    z[1] = spoil(z[1], [3], "inf", rng)
    z[2] = spoil(z[2], list(range(q)), "mixed", rng)
    z[3, :q] = 1e250 * rng.normal(size=(q, d))
    z[4, :q] = 2.0**900 * z[4, :q]  # an element scaled differently from the others
    agg = build(name, f, n)
    mask = rng.random((5, n)) < 0.85
    mask[:, :2] = True
    for m in (None, mask):
        with np.errstate(all="ignore"):
            out = agg(z) if m is None else agg(z, m)
        for i in range(5):
            with np.errstate(all="ignore"):
                ref = agg(z[i]) if m is None else agg(z[i], m[i])
            finite = z[i][np.isfinite(z[i])]
            close(out[i], ref, scale=np.abs(finite).max())


@pytest.mark.parametrize("log10", [160, 200, 300])
@pytest.mark.parametrize("name", ROBUST)
def test_huge_finite_rows(name, log10):
    """Rows of norm ~1e160–1e300 (squared norms overflow): finite and bounded (the
    distances of distance-based rules come from a Gram matrix of rows scaled by 2^-k)."""
    n, d = 11, 3
    rng = np.random.default_rng(3)
    f = effective_f(name, n)
    q = breakdown(name, n, f)
    z = rng.normal(size=(n, d))
    honest = np.ones(n, bool)
    honest[:q] = False
    # several directions, except for the rules only robust to one far point (DnC)
    shared = lookup({k: True for k in ONE_POINT_ADVERSARY}, name, False)
    z[:q] = 10.0**log10 * rng.normal(size=(1 if shared else q, d)) / np.sqrt(d)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        out = build(name, f, n)(z)
    assert_bounded(name, out, z, honest, f, q)


@pytest.mark.parametrize("name", NAMES)
def test_scale_equivariance_at_huge_magnitudes(name):
    """agg(c z) = c agg(z) with c = 2^900 (every row ~1e271: the Gram matrix of the raw
    rows overflows) and, in float32, c = 2^100."""
    rng = np.random.default_rng(4)
    n = 9
    agg = build(name, effective_f(name, n), n)
    z = rng.normal(size=(n, 3))
    check_scale_equivariance(agg, z, 2.0**900)
    z32 = z.astype(np.float32)
    c = np.float32(2.0**100)
    out = agg(c * z32)
    assert out.dtype == np.float32 and np.isfinite(out).all()
    np.testing.assert_allclose(out / c, agg(z32), rtol=1e-4, atol=1e-4)


# --------------------------------------------------------------------------------------
# geometric median
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", KINDS)
def test_geomed_gives_nonfinite_rows_weight_zero(kind):
    rng = np.random.default_rng(5)
    z = spoil(rng.normal(size=(9, 3)), [0, 5, 7], kind, rng)
    ok = np.isfinite(z).all(-1)
    close(geometric_median(z, **GM_TIGHT), geometric_median(z[ok], **GM_TIGHT), scale=1.0, rtol=1e-9)
    close(geometric_median(z), geometric_median(z[ok]), scale=1.0, rtol=1e-6)


def test_geomed_nan_at_and_beyond_the_breakdown_point():
    """Half or more of the participating rows non-finite: no finite median, NaN."""
    rng = np.random.default_rng(6)
    for n, q in [(8, 4), (9, 5), (9, 9), (2, 1)]:
        z = spoil(rng.normal(size=(n, 2)), list(range(q)), "inf", rng)
        assert np.isnan(geometric_median(z)).all(), (n, q)
        z[0] = rng.normal(size=2)  # one fewer: finite below half
        assert np.isfinite(geometric_median(z)).all() == (2 * (q - 1) < n), (n, q)
    # counted among the participating rows, per batch element
    z = rng.normal(size=(2, 6, 2))
    z[:, :2] = np.nan
    mask = np.array([[True] * 6, [True, True, True, True, False, False]])
    out = geometric_median(z, mask)
    assert np.isfinite(out[0]).all() and np.isnan(out[1]).all()
    # no participating row at all: zeros, as for every rule
    assert np.array_equal(geometric_median(z, np.zeros((2, 6), bool)), np.zeros((2, 2)))


def test_geomed_huge_rows_are_exact():
    """Rows at 1e250 pull like rows at 1e15 in the same directions (both are so far that
    only their direction matters): the Gram matrix is scaled, not truncated."""
    rng = np.random.default_rng(7)
    z = rng.normal(size=(9, 4))
    u = rng.normal(size=(3, 4))
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    near, far = z.copy(), z.copy()
    near[:3] = 1e15 * u
    far[:3] = 1e250 * u
    close(geometric_median(far, **GM_TIGHT), geometric_median(near, **GM_TIGHT), scale=1.0, rtol=1e-9)
    inf = z.copy()
    inf[:3] = np.inf  # no direction: weight 0, a different (but bounded) answer
    assert np.linalg.norm(geometric_median(inf) - geometric_median(far)) > 1e-3


@pytest.mark.parametrize("n", [7, 11, 31])
@pytest.mark.parametrize("log10", [3, 6, 12, 100, 300])
def test_geomed_defaults_bounded_for_far_rows(n, log10):
    """The robust start: with the defaults (max_iter = 80), (n − 1)/2 rows moved to one
    far point, or spread in several directions, leave the output within Property 1's
    radius, however far they are — and close to the tightly converged median."""
    rng = np.random.default_rng(n + log10)
    B = (n - 1) // 2
    for shared in (True, False):
        z = rng.normal(size=(n, 5))
        honest = np.ones(n, bool)
        honest[:B] = False
        dirs = rng.normal(size=(1 if shared else B, 5))
        z[:B] = 10.0**log10 * dirs / np.linalg.norm(dirs, axis=1, keepdims=True)
        out = geometric_median(z)
        assert_bounded("geometric_median", out, z, honest, 0, B)
        spread = np.linalg.norm(z[honest] - z[honest].mean(0), axis=1).mean()
        assert np.linalg.norm(out - geometric_median(z, **GM_TIGHT)) <= 0.05 * spread


def test_geomed_start_is_the_mean_without_outliers():
    """High-dimensional rows without outliers: no row is within 0.1 % of the mean's
    objective, so the start is the mean and the result is bit-identical to init="mean"."""
    z = np.random.default_rng(8).normal(size=(3, 30, 50))
    assert np.array_equal(geometric_median(z), geometric_median(z, init="mean"))
    with pytest.raises(ValueError, match="init"):
        geometric_median(z, init="medoid")


def test_geomed_start_is_a_robust_convex_combination():
    rng = np.random.default_rng(9)
    z = rng.normal(size=(11, 4))
    z[:5] = 1e12 * rng.normal(size=(5, 4))
    wts = np.ones(11)
    w0 = _weiszfeld_start(_gram(z, None), wts, wts.sum(), 1e-8)
    assert np.all(w0 >= 0) and abs(w0.sum() - 1) < 1e-12
    assert w0[:5].max() < 1e-10  # far rows: weight ~ 1/distance from the start
    y0 = w0 @ z
    assert np.linalg.norm(y0 - z[5:].mean(0)) < 5.0


def test_geomed_start_in_a_batch_with_identical_rows():
    """An element of identical rows (objective 0 everywhere) next to one that needs the
    medoid step: each as if alone."""
    rng = np.random.default_rng(11)
    z = rng.normal(size=(3, 7, 3))
    z[0] = z[0, 0]
    z[1, :3] = 1e9
    z[2, :2] = np.inf
    out = geometric_median(z)
    for i in range(3):
        close(out[i], geometric_median(z[i]), scale=1.0, rtol=1e-12)
    assert np.array_equal(out[0], z[0, 0])


def direct_weiszfeld_from(z, y, max_iter, eps=1e-8):
    """The smoothed Weiszfeld iteration in coordinates from a given start."""
    for _ in range(max_iter):
        inv = 1.0 / np.maximum(np.linalg.norm(z - y, axis=1), eps)
        y = inv @ z / inv.sum()
    return y


@pytest.mark.parametrize("seed", range(12))
def test_geomed_gram_iterates_equal_direct_form_from_the_robust_start(seed):
    """From the default start, the Gram-based iteration still follows the coordinate
    form to 1e-8 of the honest spread (~1e-3), next to rows ~1e4, around an offset."""
    rng = np.random.default_rng(seed)
    h, b, d = rng.integers(3, 8), rng.integers(0, 5), rng.integers(1, 6)
    b = min(b, h - 1)
    offset = [0.0, 1.0, 100.0][seed % 3]
    honest = offset * rng.normal(size=d) + 1e-3 * rng.normal(size=(h, d))
    z = np.concatenate([honest, 1e4 * rng.normal(size=(b, d))])[rng.permutation(h + b)]
    spread = np.median(np.linalg.norm(honest - honest.mean(0), axis=1))
    wts = np.ones(h + b)
    y0 = _weiszfeld_start(_gram(z, None), wts, wts.sum(), 1e-8) @ z
    y = geometric_median(z, tol=0.0, max_iter=60)
    assert np.linalg.norm(y - direct_weiszfeld_from(z, y0, 60)) <= 1e-8 * spread


# --------------------------------------------------------------------------------------
# Krum
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("q", [1, 2, 3])
def test_krum_never_selects_nonfinite_rows(kind, q):
    """With q <= f non-finite rows (score +inf, distance +inf to every other row), Krum
    and Multi-Krum equal the same rule on the finite rows with f − q (same neighbour
    count k = n − f − 2, same number m = n − f of rows averaged)."""
    n, f = 11, 3
    for seed in range(4):
        rng = np.random.default_rng(seed)
        z = spoil(rng.normal(size=(n, 3)), rng.permutation(n)[:q], kind, rng)
        ok = np.isfinite(z).all(-1)
        with warnings.catch_warnings():
            warnings.simplefilter("error", RuntimeWarning)
            assert np.array_equal(krum(z, f=f), krum(z[ok], f=f - q))
            close(multi_krum(z, f=f), multi_krum(z[ok], f=f - q))
            close(multi_krum(z, f=f, m=4), multi_krum(z[ok], f=f - q, m=4))


def test_krum_when_nonfinite_rows_must_be_kept():
    """Multi-Krum averaging more rows than are finite returns a non-finite value; Krum
    still picks a finite row while there is one; all rows non-finite: non-finite."""
    rng = np.random.default_rng(10)
    z = rng.normal(size=(7, 2))
    z[:4] = np.inf
    with np.errstate(invalid="ignore"):
        assert not np.isfinite(multi_krum(z, f=2)).all()  # m = 5 > 3 finite rows
        assert np.isfinite(krum(z, f=2)).all()
        assert any(np.array_equal(krum(z, f=2), r) for r in z[4:])
        z[4:] = np.nan
        assert not np.isfinite(krum(z, f=2)).all()
        # absent rows are never picked, even when every participating row is non-finite
        mask = np.array([True, False, False, False, False, False, False])
        assert np.array_equal(krum(z, mask, f=2), z[0])


# --------------------------------------------------------------------------------------
# the ``inf`` attack end to end
# --------------------------------------------------------------------------------------
def inf_run(method):
    return run(make_config(method=method, dataset="digits", n_clients=10, n_byzantine=2,
                           attack="inf", rounds=50, eval_every=10, lr=0.05))


def test_inf_attack_robust_method_stays_finite():
    res = inf_run("byrd-saga")  # geometric median
    assert not res.diverged and res.diverged_round is None
    assert res.columns["round"].tolist() == [0, 10, 20, 30, 40, 50]
    assert np.isfinite(res.columns["test_accuracy"]).all()
    assert np.isfinite(res.columns["train_loss"]).all()
    assert res.final_accuracy > 0.5


def test_inf_attack_mean_diverges_and_keeps_metrics():
    res = inf_run("sgd")  # mean
    assert res.config.aggregator == "mean"
    assert res.diverged and res.diverged_round is not None
    assert 0 < res.diverged_round <= 50
    rounds = res.columns["round"]
    assert len(rounds) >= 1 and rounds[0] == 0 and np.all(rounds < res.diverged_round)
    assert all(len(v) == len(rounds) for v in res.columns.values())
    assert np.isfinite(res.columns["test_accuracy"]).all()
    assert np.isfinite(res.columns["train_loss"]).all()
