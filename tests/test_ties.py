"""Ties and duplicated rows: the inputs a sample-duplicating attack produces.

Strategies (:func:`tied_rows`): ``k`` exact copies of one row (as the sample-duplicating
attack sends), columns whose values repeat (a small grid of quarters), and all-equal
columns, on top of at least one continuous column (so that distinct rows never tie
in distance: the only exact ties are the ones the strategy makes).

1. Meamed and Bulyan against a brute force of their definition: per coordinate, every
   subset of ``k`` values is enumerated; the subsets of ``k`` nearest values (sorted
   distances equal to the ``k`` smallest) are averaged (see
   :func:`byzsim.aggregators._order._mean_around_center` for why ties at the edge
   average); a hand example (n = 10, f = 3) pins the value.  The old first-window rule
   (``broken_variants.meamed_first_window``) fails both.
2. The geometric median (default parameters) has an objective ``Σ‖z_i − y‖`` within
   1e-6 (relative) of a careful reference (Weiszfeld/Vardi–Zhang with multiplicities,
   and the rows themselves), or it reports the call as stopped early
   (:func:`byzsim.aggregators._geomed.geometric_median_convergence`).  A Weiszfeld
   started on a duplicated row (``broken_variants.weiszfeld_from_medoid``) fails it.
3. Every registered rule keeps the conformance suite's properties on these inputs:
   permutation invariance, translation and scale equivariance (by exact grid shifts
   and powers of two, so the ties survive the transformation), oddness where claimed,
   batched == loop.
4. CAF against its reference loop; centered clipping scale equivariant at 1e-160 and
   1e150; bucketing's row-by-row path against the dense mixing formula.
"""

from __future__ import annotations

import itertools
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import broken_variants as bv
from byzsim.aggregators import AGGREGATORS, bulyan, caf, centered_clipping, geometric_median, meamed
from byzsim.aggregators._geomed import geometric_median_convergence
from byzsim.preaggregators import get_preaggregator
from test_aggregator_conformance import (
    NAMES,
    ODD,
    build,
    check_batched_equals_loop,
    check_permutation_invariance,
    check_scale_equivariance,
    check_translation_equivariance,
    symmetries,
)

PER_RULE = settings(max_examples=max(10, settings().max_examples * 2 // 3))

#: The worked example: one coordinate, n = 10, f = 3 (values sorted).
HAND = np.array([-2.636, -2.636, -2.636, -0.226, 0.203, 1.017, 1.414, 3.491, 3.633, 5.860])
#: The mean of the 7 values nearest the median 0.61: one copy of −2.636 and the six
#: values from −0.226 to 3.633.
HAND_MEAN = (-2.636 - 0.226 + 0.203 + 1.017 + 1.414 + 3.491 + 3.633) / 7


# --------------------------------------------------------------------------------------
# strategies
# --------------------------------------------------------------------------------------
@st.composite
def tied_rows(draw, n_min=5, n_max=11, d_max=4):
    """``(n, d)`` rows with exact ties: column 0 continuous, the others each continuous,
    on a grid of quarters in [−1, 1] (repeated values) or constant; then ``k`` rows
    replaced by copies of one row (``k = 0``: no duplicates)."""
    n = draw(st.integers(n_min, n_max), label="n")
    d = draw(st.integers(1, d_max), label="d")
    seed = draw(st.integers(0, 2**32 - 1), label="seed")
    kinds = draw(st.lists(st.sampled_from(["cont", "grid", "const"]), min_size=d - 1, max_size=d - 1),
                 label="columns")
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, d))
    for j, kind in enumerate(kinds, start=1):
        if kind == "grid":
            z[:, j] = rng.integers(-4, 5, size=n) / 4
        elif kind == "const":
            z[:, j] = 0.75
    k = draw(st.integers(0, n - 1), label="copies")
    if k:
        src = draw(st.integers(0, n - 1), label="source row")
        others = [i for i in rng.permutation(n) if i != src][:k]
        z[others] = z[src]
    return z


@st.composite
def grid_columns(draw, n_min=3, n_max=11, d_max=4):
    """``(n, d)`` values on a grid of quarters in [−1, 1]: many repeated values per
    coordinate, ties at equal distance on both sides of the median, all exact."""
    n = draw(st.integers(n_min, n_max), label="n")
    d = draw(st.integers(1, d_max), label="d")
    seed = draw(st.integers(0, 2**32 - 1), label="seed")
    rng = np.random.default_rng(seed)
    return rng.integers(-4, 5, size=(n, d)) / 4


# --------------------------------------------------------------------------------------
# references
# --------------------------------------------------------------------------------------
def median_of(v):
    """The coordinate median ½ (z_(⌊(m−1)/2⌋) + z_(⌊m/2⌋)), exactly (a Fraction)."""
    s = sorted(Fraction(x) for x in v)
    return (s[(len(s) - 1) // 2] + s[len(s) // 2]) / 2


def nearest_mean(v, k, c):
    """Mean of the ``k`` values of ``v`` nearest ``c``, averaged over every subset that is
    a set of ``k`` nearest values (its sorted distances equal the ``k`` smallest ones):
    brute force over all ``C(m, k)`` subsets, in exact rational arithmetic."""
    v = [Fraction(x) for x in v]
    dist = [abs(x - Fraction(c)) for x in v]
    target = sorted(dist)[:k]
    means = [sum(v[i] for i in S) / k for S in itertools.combinations(range(len(v)), k)
             if sorted(dist[i] for i in S) == target]
    assert means, "no subset of nearest values (the brute force is wrong)"
    return float(sum(means) / len(means))


def meamed_reference(z, f):
    n = z.shape[0]
    return np.array([nearest_mean(z[:, j], n - f, median_of(z[:, j])) for j in range(z.shape[1])])


def bulyan_reference(z, f):
    """Iterated Krum with exact distances (ties: smaller total squared distance to the
    remaining rows, then lower index), then the β values nearest the median of the
    selection per coordinate (brute force)."""
    n = len(z)
    D = ((z[:, None, :] - z[None, :, :]) ** 2).sum(-1)
    theta = n - 2 * f
    beta = theta - 2 * f if theta - 2 * f >= 1 else 2 - theta % 2
    alive = list(range(n))
    chosen = []
    for _ in range(theta):
        r = len(alive)
        k = min(max(r - f - 2, 1), r - 1)
        sub = D[np.ix_(alive, alive)]
        score = [np.sort(np.delete(sub[i], i))[:k].sum() if r > 1 else 0.0 for i in range(r)]
        best = min(range(r), key=lambda i: (score[i], sub[i].sum(), alive[i]))
        chosen.append(alive.pop(best))
    S = z[chosen]
    return np.array([nearest_mean(S[:, j], beta, median_of(S[:, j])) for j in range(z.shape[1])])


def objective(z, y):
    return float(np.linalg.norm(z - y, axis=1).sum())


def geomed_reference_objective(z, iters=5000):
    """The smallest objective found by Weiszfeld/Vardi–Zhang on the distinct rows with
    their multiplicities (started at the mean; at a row ``x`` of multiplicity ``η`` the
    step is ``(1 − η/r)⁺ (T − x)``, ``r`` the pull of the other rows), and by the rows
    themselves (the median may be a row)."""
    pts, eta = np.unique(z, axis=0, return_counts=True)
    y = z.mean(0)
    for _ in range(iters):
        dist = np.linalg.norm(pts - y, axis=1)
        on = dist <= 1e-13 * (1.0 + np.abs(pts).max())
        w = np.where(on, 0.0, eta / np.where(on, 1.0, dist))
        if w.sum() == 0:
            break
        T = w @ pts / w.sum()
        h = eta[on].sum()
        r = np.linalg.norm(w @ (pts - y))
        y_new = y + (max(0.0, 1.0 - h / r) if r > 0 else 0.0) * (T - y)
        if np.array_equal(y_new, y):
            break
        y = y_new
    return min(objective(z, y), min(objective(z, p) for p in pts))


def check_geomed_objective(agg, z, rel=1e-6):
    """``F(agg(z)) <= F* (1 + rel)`` (F* of :func:`geomed_reference_objective`), unless
    the call reported that it stopped early."""
    with geometric_median_convergence() as counts:
        y = agg(z)
    if counts["unconverged"]:
        return
    best = geomed_reference_objective(z)
    got = objective(z, y)
    # the smoothing max(‖z_i − y‖, eps) (eps = 1e-8) may leave y ~eps from an optimal row
    assert got <= best * (1 + rel) + len(z) * 1e-8, f"objective {got!r} is {got / best - 1:.3g} above the minimum {best!r}"


# --------------------------------------------------------------------------------------
# 1. Meamed and Bulyan
# --------------------------------------------------------------------------------------
def test_meamed_hand_example():
    """n = 10, f = 3, −2.636 three times: the 7 values nearest the median 0.61 are one
    copy of −2.636 and −0.226 … 3.633, mean 0.98514…; the first-window rule kept the
    three copies (−0.786)."""
    z = HAND[:, None]
    assert nearest_mean(HAND, 7, median_of(HAND)) == pytest.approx(HAND_MEAN, rel=1e-15)
    assert meamed(z, f=3)[0] == pytest.approx(HAND_MEAN, rel=1e-14)
    assert meamed(z[::-1], f=3)[0] == pytest.approx(HAND_MEAN, rel=1e-14)
    assert bv.meamed_first_window(z, f=3)[0] == pytest.approx(-0.785714285714, rel=1e-9)


def test_meamed_ties_on_both_sides_average():
    """Values 0, 0, 1, 1 (median 0.5), 3 nearest: every value is at 0.5; the three kept
    are 0, 0, 1 or 0, 1, 1, equally: the mean 0.5 (the first window gives 1/3, and
    −z would give −1/3: not odd)."""
    z = np.array([[0.0], [0.0], [1.0], [1.0]])
    assert meamed(z, f=1)[0] == 0.5
    assert meamed(-z, f=1)[0] == -0.5
    assert bv.meamed_first_window(z, f=1)[0] == pytest.approx(1 / 3)


def check_meamed(agg, z):
    n = z.shape[0]
    for f in range((n - 1) // 2 + 1):
        out = agg(z, f=f)
        ref = meamed_reference(z, f)
        np.testing.assert_allclose(out, ref, rtol=1e-12, atol=1e-12 * (1 + np.abs(z).max()),
                                   err_msg=f"meamed, n = {n}, f = {f}")


@settings(max_examples=max(20, settings().max_examples))
@given(z=st.one_of(tied_rows(), grid_columns()))
def test_meamed_equals_nearest_subset_brute_force(z):
    check_meamed(meamed, z)


@settings(max_examples=max(20, settings().max_examples))
@given(z=tied_rows(n_min=7, n_max=11, d_max=3), data=st.data())
def test_bulyan_equals_brute_force(z, data):
    n = len(z)
    f = data.draw(st.integers(0, (n - 1) // 2), label="f")
    out = bulyan(z, f=f)
    np.testing.assert_allclose(out, bulyan_reference(z, f), rtol=1e-10, atol=1e-10 * (1 + np.abs(z).max()))


def test_brute_force_catches_the_first_window_rule():
    """The old helper fails on the hand example and on a found tie input."""
    with pytest.raises(AssertionError):
        check_meamed(bv.meamed_first_window, HAND[:, None])
    rng = np.random.default_rng(0)
    caught = 0
    for _ in range(30):
        z = rng.integers(-4, 5, size=(int(rng.integers(4, 10)), 2)) / 4
        try:
            check_meamed(bv.meamed_first_window, z)
        except AssertionError:
            caught += 1
        check_meamed(meamed, z)
    assert caught > 0


def test_meamed_duplicating_attack_matches_brute_force():
    """The attack's shape, reduced: n = 12, f = 3, 3 copies of one honest row, d = 40."""
    rng = np.random.default_rng(1)
    z = rng.normal(size=(12, 40))
    z[:3] = z[5]
    np.testing.assert_allclose(meamed(z, f=3), meamed_reference(z, 3), rtol=1e-12, atol=1e-12)


# --------------------------------------------------------------------------------------
# 2. geometric median
# --------------------------------------------------------------------------------------
@settings(max_examples=max(20, settings().max_examples))
@given(z=st.one_of(tied_rows(n_min=3), grid_columns(n_min=3)))
def test_geomed_defaults_reach_the_minimum_on_ties(z):
    check_geomed_objective(geometric_median, z)
    check_geomed_objective(lambda x: geometric_median(x, tol=1e-11, max_iter=2000), z, rel=1e-9)


def duplicated_row_case(n=30, d=7850, copies=10, seed=0):
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, d))
    z[:copies] = z[copies]
    return z


def test_geomed_leaves_a_duplicated_row():
    """n = 30, d = 7850, 10 copies of one honest row: the default reaches the minimum
    (the Vardi–Zhang start without multiplicity stayed 0.57 from the row, 1.8 % above
    the minimum objective after 80 updates)."""
    z = duplicated_row_case()
    with geometric_median_convergence() as counts:
        y = geometric_median(z)
    ref = geometric_median(z, init="mean", tol=1e-12, max_iter=3000)
    assert (counts["elements"], counts["unconverged"]) == (1, 0)
    assert objective(z, y) <= objective(z, ref) * (1 + 1e-8)
    assert np.linalg.norm(y - z[0]) > 10.0


def test_objective_check_catches_a_start_on_a_duplicated_row():
    z = duplicated_row_case(n=30, d=200)
    check_geomed_objective(geometric_median, z)
    with pytest.raises(AssertionError):
        check_geomed_objective(bv.weiszfeld_from_medoid, z)


def test_convergence_report_counts_elements_stopped_by_max_iter():
    rng = np.random.default_rng(2)
    z = rng.normal(size=(3, 9, 4))
    z[:, :3] += 50.0
    with geometric_median_convergence() as counts:
        geometric_median(z)
        assert (counts["elements"], counts["unconverged"]) == (3, 0)
        geometric_median(z, max_iter=1)
        with geometric_median_convergence() as inner:  # nested blocks count separately
            geometric_median(z[0], max_iter=1)
        assert (inner["elements"], inner["unconverged"]) == (1, 1)
    assert (counts["elements"], counts["unconverged"]) == (6, 3)
    geometric_median(z, max_iter=1)  # outside a block: nothing recorded
    assert (counts["elements"], counts["unconverged"]) == (6, 3)


# --------------------------------------------------------------------------------------
# 3. the conformance properties on tie inputs, every rule
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", NAMES)
@PER_RULE
@given(z=tied_rows(), data=st.data())
def test_conformance_on_ties(name, z, data):
    """Permutation invariance, translation by a grid vector, scaling by powers of two
    (and −1 where the rule is odd): exact transformations, so the ties survive."""
    n, d = z.shape
    agg = build(name, n=n)
    perm = np.array(data.draw(st.permutations(range(n)), label="perm"))
    check_permutation_invariance(agg, z, perm)
    t = np.array(data.draw(st.lists(st.integers(-8, 8), min_size=d, max_size=d), label="t")) / 4
    check_translation_equivariance(agg, z, t)
    check_scale_equivariance(agg, z, data.draw(st.sampled_from([0.25, 4.0, 2.0**-20]), label="c"))
    if ODD in symmetries(name):
        check_scale_equivariance(agg, z, -1.0)


@pytest.mark.parametrize("name", NAMES)
@settings(max_examples=max(8, settings().max_examples // 3))
@given(zs=st.lists(tied_rows(n_min=7, n_max=7, d_max=3).filter(lambda a: a.shape[1] == 3),
                   min_size=2, max_size=4))
def test_batched_equals_loop_on_ties(name, zs):
    check_batched_equals_loop(build(name, n=7), np.stack(zs))


# --------------------------------------------------------------------------------------
# 4. CAF, centered clipping, bucketing
# --------------------------------------------------------------------------------------
def caf_reference(z, f, final_state=False):
    """CAF's reference loop: while Σc > n − 2f, record μ_c if its top covariance
    eigenvalue is the smallest so far, then downweight along the top eigenvector.
    ``final_state``: also consider the state after the last update (a deviation)."""
    n = len(z)
    c = np.ones(n)
    best_lam, best_mu = np.inf, z.mean(0)

    def consider(c):
        mu = c @ z / c.sum()
        zc = z - mu
        lam, V = np.linalg.eigh((zc.T * c) @ zc / c.sum())
        return mu, zc, lam[-1], V[:, -1]

    while c.sum() > n - 2 * f:
        mu, zc, lam, v = consider(c)
        if lam < best_lam:
            best_lam, best_mu = lam, mu
        tau = (zc @ v) ** 2
        tmax = tau[c > 0].max()
        if tmax <= 0:
            break
        c = np.maximum(c * (1 - tau / tmax), 0)
    if final_state and c.sum() > 0:
        mu, _, lam, _ = consider(c)
        if lam < best_lam:
            best_mu = mu
    return best_mu


def test_caf_follows_the_reference_loop():
    """Equal to the reference loop on 120 random cases; the variant that also evaluates
    the final state (Σc <= n − 2f) differs on some of them, so the test can tell."""
    differ = 0
    for seed in range(120):
        rng = np.random.default_rng(seed)
        n = int(rng.integers(4, 12))
        f = int(rng.integers(1, (n - 1) // 2 + 1))
        z = rng.normal(size=(n, 4))
        z[:f] += 3 * rng.normal(size=4)
        ref = caf_reference(z, f)
        np.testing.assert_allclose(caf(z, f=f), ref, rtol=1e-8, atol=1e-8)
        differ += not np.allclose(caf_reference(z, f, final_state=True), ref, rtol=1e-8, atol=1e-8)
    assert differ > 0


@pytest.mark.parametrize("scale", [1e-300, 1e-160, 1e150, 1e300])
@pytest.mark.parametrize("tau", [None, 0.7])
def test_centered_clipping_scale_equivariant_at_extreme_scales(scale, tau):
    """cc(s·z) = s·cc(z) (tau scaled too): rows ~1e-160 lost digits to underflow (7e-6 of
    the spread off); scaling by a power of two inside makes it exact."""
    rng = np.random.default_rng(3)
    z = rng.normal(size=(9, 5))
    z[:2] += 20 * rng.normal(size=(2, 5))
    ref = centered_clipping(z, tau=tau)
    with np.errstate(under="ignore"):
        out = centered_clipping(z * scale, tau=None if tau is None else tau * scale)
    np.testing.assert_allclose(out / scale, ref, rtol=0, atol=1e-12 * np.ptp(z))


@pytest.mark.parametrize("d", [3, 2048])  # vectorized gathers / one row at a time
@pytest.mark.parametrize("s", [2, 3])
def test_bucketing_equals_the_mixing_formula(d, s):
    n = 11
    rng = np.random.default_rng(4)
    z = rng.normal(size=(2, n, d))
    z[0, 3] = z[0, 5]  # a duplicated row
    mask = np.ones((2, n), bool)
    mask[1, [0, 4, 7]] = False
    for m in (None, mask):
        zo, mo = get_preaggregator("bucketing", s=s)(z, m, np.random.default_rng(9))
        keys = np.random.default_rng(9).random(n)
        for b in range(2):
            present = np.ones(n, bool) if m is None else m[b]
            order = np.argsort(np.where(present, keys, np.inf), kind="stable")[: present.sum()]
            buckets = [order[i : i + s] for i in range(0, len(order), s)]
            ref = np.array([z[b, bk].mean(0) for bk in buckets])
            np.testing.assert_allclose(zo[b, : len(buckets)], ref, rtol=1e-13, atol=1e-13)
            if m is not None:
                assert mo[b].sum() == len(buckets) and mo[b, : len(buckets)].all()

