"""Resampling with s-replacement (paper B, Algorithm 1, Lemmas 1–3).

The central check is *exact enumeration*: every distinct arrangement of the multiset
{0 (s times), …, W−1 (s times)} is fed through :func:`resample_indices` (via a stub
Generator that stands in for its single ``permutation``/``permuted`` call — every
distinct arrangement is equally likely under a uniform permutation, since each has the
same (s!)^W orderings of the slots) and :func:`resample`, and the moments of every
output are compared with Lemma 3.  Two plausible mis-readings of Algorithm 1 are
enumerated too (with their exact path probabilities) and must fail the same check.
"""

from __future__ import annotations

import functools
import itertools
import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from byzsim.resampling import averaging_matrix, resample, resample_indices, resampled
from byzsim.theory import c_alpha, variance_factor


# --------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=None)
def all_arrangements(W: int, s: int) -> np.ndarray:
    """Every distinct arrangement of {0×s, 1×s, …, (W−1)×s}: ``(P, sW)``,
    P = (sW)! / (s!)^W, built label by label (choose s of the free positions)."""
    n = W * s
    arr = np.full((1, n), -1, dtype=np.int64)
    for label in range(W):
        m = n - s * label
        combos = np.array(list(itertools.combinations(range(m), s)), dtype=np.int64)  # (C, s)
        free = np.nonzero(arr == -1)[1].reshape(arr.shape[0], m)  # (R, m)
        new = np.repeat(arr, len(combos), axis=0)  # (R*C, n)
        pos = free[:, combos].reshape(-1, s)  # (R*C, s)
        np.put_along_axis(new, pos, label, axis=1)
        arr = new
    arr.flags.writeable = False  # cached: shared between tests
    return arr


def slot_permutations(arrangements: np.ndarray, W: int, s: int) -> np.ndarray:
    """For each arrangement a, the permutation ``perm`` of ``range(sW)`` with
    ``repeat(arange(W), s)[perm] == a`` (k-th occurrence of label l -> slot l·s + k)."""
    P, n = arrangements.shape
    occ = np.zeros_like(arrangements)
    seen = np.zeros((P, W), dtype=np.int64)
    rows = np.arange(P)
    for j in range(n):
        a = arrangements[:, j]
        occ[:, j] = seen[rows, a]
        seen[rows, a] += 1
    return arrangements * s + occ


class EnumeratingRng:
    """Duck-typed stand-in for ``np.random.Generator``: ``permuted`` returns every given
    permutation of the input's last axis at once; ``permutation`` returns them one by
    one.  Works whether the code permutes the slot array or ``range(sW)``."""

    def __init__(self, perms: np.ndarray):
        self.perms = perms
        self._next = 0

    def _apply(self, x, perm):
        if np.ndim(x) == 0:
            return perm.copy()
        return np.take_along_axis(np.asarray(x), np.broadcast_to(perm, np.shape(x)), axis=-1)

    def permuted(self, x, axis=-1):
        assert axis in (-1, np.ndim(x) - 1) and np.shape(x) == self.perms.shape
        return self._apply(x, self.perms)

    def permutation(self, x):
        perm = self.perms[self._next]
        self._next += 1
        return self._apply(x, perm)


def enumerate_sequential(W: int, s: int, weight) -> tuple[np.ndarray, np.ndarray]:
    """Exact distribution of a sequential Algorithm-1-style scheme.

    ``weight(counts (P, W), group (P, k)) -> (P, W)`` un-normalised probabilities of the
    next index.  Returns index matrices ``(P, W, s)`` and their probabilities ``(P,)``.
    """
    seq = np.zeros((1, 0), dtype=np.int64)
    counts = np.zeros((1, W), dtype=np.int64)
    prob = np.ones(1)
    for t in range(W * s):
        k = t % s
        group = seq[:, seq.shape[1] - k:] if k else seq[:, :0]
        w = weight(counts, group).astype(float)
        w /= w.sum(axis=1, keepdims=True)
        r, i = np.nonzero(w > 0)
        seq = np.concatenate([seq[r], i[:, None]], axis=1)
        counts = counts[r].copy()
        counts[np.arange(len(r)), i] += 1
        prob = prob[r] * w[r, i]
    return seq.reshape(-1, W, s), prob


def urn_weight(s):
    """The implemented scheme, sequentially: Algorithm 1 line 4 weighted by the
    remaining uses s − c (an urn with s balls per message)."""
    return lambda counts, group: s - counts


def literal_weight(s):
    """Broken: Algorithm 1 read literally — uniform over indices with c < s."""
    return lambda counts, group: (counts < s).astype(int)


def distinct_weight(s):
    """Broken: uniform over available indices not yet in the current group (falling
    back to any available index when none is left)."""

    def w(counts, group):
        avail = counts < s
        W = counts.shape[1]
        in_group = (group[:, :, None] == np.arange(W)).any(axis=1) if group.shape[1] else np.zeros_like(avail)
        ok = avail & ~in_group
        none = ~ok.any(axis=1)
        ok[none] = avail[none]
        return ok.astype(int)

    return w


def sum0(x):
    """Sum over axis 0 with numpy's pairwise summation (contiguous last axis), so that
    ~10⁵ equal-weight terms keep ~1e-15 relative accuracy."""
    return np.ascontiguousarray(np.moveaxis(x, 0, -1)).sum(axis=-1)


def output_moments(z, idx_all, prob, byz=None):
    """Exact per-output moments of ṽ = resample(z, idx) over a distribution of index
    matrices.  Without ``byz``: E ṽ_w and E‖ṽ_w − z̄‖²; with a Byzantine mask: the same
    *conditioned on output w containing no Byzantine index*, relative to z̄_R."""
    vt = resample(z, idx_all)  # (P, W, d) via the batched path
    regular = np.ones(len(z), bool) if byz is None else ~byz
    zbar = z[regular].mean(axis=0)
    clean = ~(byz[idx_all].any(axis=-1)) if byz is not None else np.ones(idx_all.shape[:2], bool)
    pw = prob[:, None] * clean  # (P, W)
    pclean = sum0(pw)
    vt0 = np.where(clean[..., None], vt, 0.0)  # Byzantine values never enter the moments
    mean = sum0(pw[..., None] * vt0) / pclean[:, None]
    sq = ((vt0 - zbar) ** 2).sum(axis=-1)
    var = sum0(pw * sq) / pclean
    return mean, var, pclean


def lemma3_holds(z, W, s, idx_all, prob) -> bool:
    zbar = z.mean(axis=0)
    sigma2 = ((z - zbar) ** 2).sum(axis=1).mean()
    mean, var, _ = output_moments(z, idx_all, prob)
    return np.allclose(mean, zbar, rtol=1e-12, atol=1e-12) and np.allclose(
        var, variance_factor(W, s) * sigma2, rtol=1e-12, atol=0
    )


def integer_messages(W, d=2, seed=0):
    return np.random.default_rng(seed).integers(-9, 10, size=(W, d)).astype(float)


def exact_variance(z, idx_all):
    """Fractions: E‖ṽ_w − z̄‖² for every w, uniform over ``idx_all`` (integer z)."""
    W, s = idx_all.shape[1:]
    zi = z.astype(np.int64)
    S = zi[idx_all].sum(axis=2)  # (P, W, d) exact integer group sums
    dev = W * S - s * zi.sum(axis=0)  # = sW (ṽ − z̄), exact
    tot = (dev**2).sum(axis=(0, 2))  # (W,)
    return [Fraction(int(t), len(idx_all) * (s * W) ** 2) for t in tot]


ENUM_CASES = [(3, 2), (4, 2), (5, 2), (3, 3), (4, 3)]


# --------------------------------------------------------------------------------------
# index matrix
# --------------------------------------------------------------------------------------
@given(W=st.integers(1, 40), data=st.data(), seed=st.integers(0, 2**32 - 1))
def test_every_index_used_exactly_s_times(W, data, seed):
    s = data.draw(st.integers(1, W))
    idx = resample_indices(np.random.default_rng(seed), W, s)
    assert idx.shape == (W, s) and np.issubdtype(idx.dtype, np.integer)
    np.testing.assert_array_equal(np.bincount(idx.ravel(), minlength=W), np.full(W, s))
    batched = resample_indices(np.random.default_rng(seed), W, s, batch_shape=(3, 2))
    assert batched.shape == (3, 2, W, s)
    counts = (batched.reshape(6, W * s)[:, :, None] == np.arange(W)).sum(axis=1)
    np.testing.assert_array_equal(counts, s)


def test_indices_use_one_rng_call_and_are_reproducible():
    a = resample_indices(np.random.default_rng(7), 30, 2)
    b = resample_indices(np.random.default_rng(7), 30, 2)
    np.testing.assert_array_equal(a, b)
    ref = np.random.default_rng(7).permutation(np.repeat(np.arange(30), 2)).reshape(30, 2)
    np.testing.assert_array_equal(a, ref)


@pytest.mark.parametrize("W,s", [(5, 0), (5, 6), (5, -1), (1, 2)])
def test_bad_s_raises_with_range(W, s):
    with pytest.raises(ValueError, match=rf"s = {s}.*\[1, W\] = \[1, {W}\]"):
        resample_indices(np.random.default_rng(0), W, s)


@pytest.mark.parametrize("s", [0, -3, 1.5, True])
def test_resampled_bad_s_raises_at_construction(s):
    with pytest.raises(ValueError, match="resampling size s"):
        resampled(lambda z, mask: z.mean(-2), s)


def test_resampled_s_larger_than_W_raises_with_range():
    agg = resampled(lambda z, mask: z.mean(-2), 7)
    with pytest.raises(ValueError, match=r"s = 7.*\[1, 5\]"):
        agg(np.zeros((5, 3)), None, np.random.default_rng(0))


# --------------------------------------------------------------------------------------
# resample
# --------------------------------------------------------------------------------------
@given(W=st.integers(1, 12), d=st.integers(1, 5), data=st.data(), seed=st.integers(0, 2**32 - 1))
def test_resample_matches_definition_and_averaging_matrix(W, d, data, seed):
    s = data.draw(st.integers(1, W))
    rng = np.random.default_rng(seed)
    v = rng.standard_normal((W, d))
    idx = resample_indices(rng, W, s)
    direct = np.stack([v[idx[w]].mean(axis=0) for w in range(W)])
    out = resample(v, idx)  # sparse path
    assert out.shape == (W, d)
    np.testing.assert_allclose(out, direct, rtol=1e-12, atol=1e-14)
    A = averaging_matrix(idx)
    np.testing.assert_allclose(A.sum(axis=0), 1.0, rtol=1e-12)  # doubly stochastic
    np.testing.assert_allclose(A.sum(axis=1), 1.0, rtol=1e-12)
    np.testing.assert_allclose(A @ v, direct, rtol=1e-12, atol=1e-14)
    # batched path: leading axes share idx, or carry their own
    vb = rng.standard_normal((2, 3, W, d))
    outb = resample(vb, idx)
    assert outb.shape == (2, 3, W, d)
    np.testing.assert_allclose(outb[1, 2], resample(vb[1, 2], idx), rtol=1e-12, atol=1e-14)
    idxb = resample_indices(rng, W, s, batch_shape=(3,))
    outb2 = resample(vb, idxb)
    np.testing.assert_allclose(outb2[0, 1], resample(vb[0, 1], idxb[1]), rtol=1e-12, atol=1e-14)


def test_resample_keeps_float32_and_validates():
    v = np.ones((4, 3), np.float32)
    idx = resample_indices(np.random.default_rng(0), 4, 2)
    assert resample(v, idx).dtype == np.float32
    assert resample(v[None], idx).dtype == np.float32
    with pytest.raises(ValueError, match=r"\[0, 4\)"):
        resample(v, idx + 1)
    with pytest.raises(ValueError, match="integer"):
        resample(v, idx.astype(float))


def test_s1_is_a_permutation_of_the_messages():
    """s = 1: the outputs are exactly the inputs in a random order."""
    rng = np.random.default_rng(3)
    v = rng.standard_normal((9, 4))
    idx = resample_indices(rng, 9, 1)
    out = resample(v, idx)
    np.testing.assert_array_equal(out, v[idx[:, 0]])
    assert sorted(idx[:, 0]) == list(range(9))


def test_clean_outputs_never_touch_byzantine_values():
    """NaN/inf Byzantine rows leave uncontaminated outputs finite (a dense A @ v would
    spread 0·NaN = NaN to every output)."""
    rng = np.random.default_rng(1)
    W, s = 12, 2
    v = rng.standard_normal((W, 5))
    byz = np.zeros(W, bool)
    byz[[2, 7]] = True
    v[2], v[7] = np.nan, np.inf
    for _ in range(20):
        idx = resample_indices(rng, W, s)
        dirty = byz[idx].any(axis=1)
        for out in (resample(v, idx), resample(v[None], idx)[0]):
            assert np.isfinite(out[~dirty]).all()
            assert not np.isfinite(out[dirty]).all(axis=1).any()


@given(W=st.integers(1, 40), data=st.data(), seed=st.integers(0, 2**32 - 1))
def test_at_most_sB_outputs_contaminated(W, data, seed):
    s = data.draw(st.integers(1, W))
    B = data.draw(st.integers(0, W))
    rng = np.random.default_rng(seed)
    byz = np.zeros(W, bool)
    byz[rng.choice(W, B, replace=False)] = True
    idx = resample_indices(rng, W, s)
    n_dirty = byz[idx].any(axis=1).sum()
    assert n_dirty <= min(s * B, W)
    assert n_dirty >= B  # the sB Byzantine slots fill at least B groups of s
    if s * B < W:
        assert W - n_dirty >= W - s * B >= 1


# --------------------------------------------------------------------------------------
# Lemma 3 by exact enumeration
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("W,s", ENUM_CASES)
def test_lemma3_exact_enumeration_B0(W, s):
    """Every output: E ṽ_w = z̄ and E‖ṽ_w − z̄‖² = d · (1/W) Σ‖z_w − z̄‖², exactly."""
    arr = all_arrangements(W, s)
    P = len(arr)
    assert P == math.factorial(s * W) // math.factorial(s) ** W
    idx_all = resample_indices(EnumeratingRng(slot_permutations(arr, W, s)), W, s, batch_shape=(P,))
    assert idx_all.shape == (P, W, s)
    codes = idx_all.reshape(P, -1) @ (W ** np.arange(W * s, dtype=np.int64))
    assert len(np.unique(codes)) == P  # all distinct
    z = integer_messages(W)
    assert lemma3_holds(z, W, s, idx_all, np.full(P, 1.0 / P))
    # the same in exact rational arithmetic: σ² = Σ_w ‖W z_w − Σ z‖² / W³
    zi = z.astype(np.int64)
    sigma2 = Fraction(int(((W * zi - zi.sum(axis=0)) ** 2).sum()), W**3)
    assert exact_variance(z, idx_all) == [Fraction(W - 1, s * W - 1) * sigma2] * W


@pytest.mark.parametrize("W,s", [(3, 2), (4, 2)])
def test_lemma3_enumeration_unbatched_path(W, s):
    """The single-draw path (rng.permutation + the sparse product) enumerated too."""
    arr = all_arrangements(W, s)
    rng = EnumeratingRng(slot_permutations(arr, W, s))
    idx_all = np.stack([resample_indices(rng, W, s) for _ in range(len(arr))])
    z = integer_messages(W, seed=5)
    vt = np.stack([resample(z, i) for i in idx_all])
    zbar = z.mean(axis=0)
    np.testing.assert_allclose(vt.mean(axis=0), np.broadcast_to(zbar, (W, 2)), rtol=1e-12, atol=1e-12)
    sigma2 = ((z - zbar) ** 2).sum(axis=1).mean()
    var = ((vt - zbar) ** 2).sum(axis=-1).mean(axis=0)
    np.testing.assert_allclose(var, variance_factor(W, s) * sigma2, rtol=1e-12)


@pytest.mark.parametrize("W,s", [(3, 2), (4, 2), (3, 3)])
def test_urn_form_of_algorithm1_equals_uniform_arrangement(W, s):
    """Algorithm 1 with line 4 weighted by the remaining uses s − c gives every
    arrangement the same probability: it *is* the implemented scheme."""
    idx_all, prob = enumerate_sequential(W, s, urn_weight(s))
    P = len(all_arrangements(W, s))
    assert len(idx_all) == P
    np.testing.assert_allclose(prob, 1.0 / P, rtol=1e-12)
    assert lemma3_holds(integer_messages(W), W, s, idx_all, prob)


@pytest.mark.parametrize("scheme", [literal_weight, distinct_weight], ids=["literal", "distinct"])
@pytest.mark.parametrize("W,s", [(3, 2), (4, 2), (3, 3)])
def test_broken_variants_fail_the_exact_check(scheme, W, s):
    """Plausible mis-readings keep E ṽ_w = z̄ (by symmetry) but get the variance wrong,
    so the same check that the implementation passes rejects them."""
    idx_all, prob = enumerate_sequential(W, s, scheme(s))
    np.testing.assert_allclose(prob.sum(), 1.0, rtol=1e-12)
    np.testing.assert_array_equal((idx_all[..., None] == np.arange(W)).sum(axis=(1, 2)), s)
    z = integer_messages(W)
    assert not lemma3_holds(z, W, s, idx_all, prob)
    mean, var, _ = output_moments(z, idx_all, prob)
    np.testing.assert_allclose(mean, np.broadcast_to(z.mean(0), mean.shape), rtol=1e-12, atol=1e-12)
    sigma2 = ((z - z.mean(0)) ** 2).sum(axis=1).mean()
    if scheme is literal_weight:  # the first group is s i.i.d. uniform draws
        np.testing.assert_allclose(var[0], sigma2 / s, rtol=1e-12)
    else:  # the first group is s distinct draws from the W messages
        np.testing.assert_allclose(var[0], sigma2 / s * (W - s) / (W - 1), rtol=1e-12)


@pytest.mark.parametrize("W,s,B", [(4, 2, 1), (5, 2, 1), (5, 2, 2), (4, 3, 1), (3, 2, 1)])
def test_lemma3_with_byzantine_exact(W, s, B):
    """B > 0, exactly: conditioned on output w being uncontaminated, E ṽ_w = z̄_R and
    E‖ṽ_w − z̄_R‖² = d_R σ_R², d_R = (R−1)/(sR−1) — strictly below the paper's
    d = (W−1)/(sW−1) σ_R² (an upper bound, not an equality, for B > 0).  The average
    over the random set R' of clean outputs has the same value."""
    arr = all_arrangements(W, s)
    P = len(arr)
    idx_all = resample_indices(EnumeratingRng(slot_permutations(arr, W, s)), W, s, batch_shape=(P,))
    prob = np.full(P, 1.0 / P)
    z = integer_messages(W, seed=2)
    byz = np.zeros(W, bool)
    byz[np.random.default_rng(W + B).choice(W, B, replace=False)] = True
    z[byz] = 1e6  # never enters the conditional moments
    R = W - B
    zR = z[~byz]
    zbar = zR.mean(axis=0)
    sigma2 = ((zR - zbar) ** 2).sum(axis=1).mean()
    dR = (R - 1) / (s * R - 1)
    dirty = byz[idx_all].any(axis=-1)  # (P, W)
    assert dirty.sum(axis=1).max() <= s * B
    mean, var, pclean = output_moments(z, idx_all, prob, byz)
    assert (pclean > 0).all() and (pclean < 1).all()  # no output is always clean
    np.testing.assert_allclose(mean, np.broadcast_to(zbar, mean.shape), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(var, dR * sigma2, rtol=1e-12)
    assert (var < variance_factor(W, s) * sigma2 * (1 - 1e-6)).all()
    # average over the clean set R' (random, |R'| >= W − sB >= 1)
    vt = resample(z, idx_all)
    sq = ((vt - zbar) ** 2).sum(axis=-1)
    clean = ~dirty
    avg = (np.where(clean, sq, 0.0).sum(axis=1) / clean.sum(axis=1)) @ prob
    np.testing.assert_allclose(avg, dR * sigma2, rtol=1e-9)


def test_monte_carlo_variance_matches_d_with_the_real_generator():
    """The real Generator path (not the stub): per-output variance ≈ d σ², a few % off."""
    W, s, M = 6, 2, 40000
    z = integer_messages(W, d=1, seed=9)
    idx = resample_indices(np.random.default_rng(11), W, s, batch_shape=(M,))
    vt = resample(z, idx)[..., 0]  # (M, W)
    zbar = z.mean()
    sigma2 = ((z - zbar) ** 2).mean()
    var = ((vt - zbar) ** 2).mean(axis=0)
    np.testing.assert_allclose(var, variance_factor(W, s) * sigma2, rtol=0.05)
    single = np.stack([resample(z, resample_indices(np.random.default_rng(k), W, s)) for k in range(3000)])[..., 0]
    np.testing.assert_allclose(((single - zbar) ** 2).mean(axis=0), variance_factor(W, s) * sigma2, rtol=0.12)


# --------------------------------------------------------------------------------------
# Lemma 1 (geometric median after resampling), statistically
# --------------------------------------------------------------------------------------
def weiszfeld(z, iters=300, eps=1e-12):
    """Geometric median over axis −2 of ``z (..., n, d)``, started at the mean."""
    x = z.mean(axis=-2)
    for _ in range(iters):
        dist = np.maximum(np.linalg.norm(z - x[..., None, :], axis=-1), eps)
        w = 1.0 / dist
        x = (w[..., None] * z).sum(axis=-2) / w.sum(axis=-1)[..., None]
    return x


@pytest.mark.parametrize("s", [1, 2])
def test_lemma1_bound_monte_carlo(s):
    """E‖geomed(RS(z, s)) − z̄‖² ≤ (d + (1−d)/R) C_{sα}² · inner + d C_{sα}² · outer
    (paper B, eq. (17)), over the noise and the resampling; the non-robust mean of the
    same resampled messages violates it (the check can fail)."""
    rng = np.random.default_rng(2024)
    W, B, dim, M, tau = 20, 2, 4, 400, 0.5
    R = W - B
    mu = rng.normal(0, 3.0, size=(R, dim))  # heterogeneous (non-i.i.d.) means
    zbar = mu.mean(axis=0)
    inner = tau**2 * dim  # (1/R) Σ E‖z_w − E z_w‖²
    outer = ((mu - zbar) ** 2).sum(axis=1).mean()
    d = variance_factor(W, s)
    C = c_alpha(s * B / W)
    bound = (d + (1 - d) / R) * C**2 * inner + d * C**2 * outer
    z = np.empty((M, W, dim))
    z[:, :R] = mu + tau * rng.standard_normal((M, R, dim))
    z[:, R:] = 500.0  # Byzantine: a far-away point
    idx = resample_indices(rng, W, s, batch_shape=(M,))
    zt = resample(z, idx)
    err_gm = ((weiszfeld(zt) - zbar) ** 2).sum(axis=-1).mean()
    err_mean = ((zt.mean(axis=-2) - zbar) ** 2).sum(axis=-1).mean()
    assert err_gm <= bound
    assert err_mean > bound


# --------------------------------------------------------------------------------------
# the wrapper
# --------------------------------------------------------------------------------------
def mean_agg(z, mask=None):
    if mask is None:
        return z.mean(axis=-2)
    w = mask.astype(float)
    return (w[:, None] * z).sum(axis=-2) / w.sum()


@given(W=st.integers(2, 30), data=st.data(), seed=st.integers(0, 2**32 - 1))
def test_resampled_mean_equals_mean(W, data, seed):
    """Every message is used s times, so the mean of the resampled messages is the
    mean of the inputs."""
    s = data.draw(st.integers(1, W))
    rng = np.random.default_rng(seed)
    v = rng.standard_normal((W, 7))
    out = resampled(mean_agg, s)(v, None, rng)
    assert out.shape == (7,)
    np.testing.assert_allclose(out, v.mean(axis=0), rtol=1e-12, atol=1e-13)


def test_resampled_draws_then_aggregates():
    seen = {}

    def spy(z, mask):
        seen["z"], seen["mask"] = z, mask
        return z[..., 0, :]

    v = np.random.default_rng(0).standard_normal((10, 3))
    agg = resampled(spy, 3)
    assert agg.s == 3 and agg.aggregate_fn is spy
    agg(v, None, np.random.default_rng(5))
    idx = resample_indices(np.random.default_rng(5), 10, 3)
    np.testing.assert_allclose(seen["z"], resample(v, idx), rtol=1e-15)
    assert seen["mask"] is None


def test_resampled_s1_is_exactly_the_plain_aggregator():
    v = np.random.default_rng(0).standard_normal((8, 3))
    mask = np.array([1, 1, 0, 1, 1, 1, 0, 1], bool)
    rng = np.random.default_rng(1)
    state = rng.bit_generator.state
    agg = resampled(mean_agg, 1)
    np.testing.assert_array_equal(agg(v, None, rng), mean_agg(v, None))
    np.testing.assert_array_equal(agg(v, mask, rng), mean_agg(v, mask))
    assert rng.bit_generator.state == state  # no rng consumed


def test_resampled_rejects_partial_participation():
    agg = resampled(mean_agg, 2)
    with pytest.raises(ValueError, match="partial participation is not supported"):
        agg(np.zeros((6, 2)), np.ones(6, bool), np.random.default_rng(0))


def test_resampled_library_geometric_median():
    """Integration with byzsim.aggregators: resample-then-geomed (RS-Byrd-SAGA's rule)
    equals the library geomed of the same resampled messages, and agrees with the
    local Weiszfeld."""
    from byzsim.aggregators import geometric_median

    rng = np.random.default_rng(4)
    v = rng.standard_normal((30, 50))
    v[:3] = 1e4  # Byzantine rows
    out = resampled(geometric_median, 2)(v, None, np.random.default_rng(9))
    vt = resample(v, resample_indices(np.random.default_rng(9), 30, 2))
    # resampled passes mix=A (Gram-space path): equal up to roundoff, not bit for bit
    np.testing.assert_allclose(out, geometric_median(vt, None), rtol=1e-10, atol=1e-12)
    ref = weiszfeld(vt, iters=2000)
    assert np.linalg.norm(out - ref) <= 1e-3 * max(1.0, np.linalg.norm(ref))
    assert np.linalg.norm(out) < 5.0  # not dragged to the Byzantine point
