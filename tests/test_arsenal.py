"""The field's standard set: Bulyan, centered clipping, MDA, MoNNA, Meamed, CAF,
SMEA, median of means, DnC; the pre-aggregators; ALIE, IPM, their optimized variants,
mimic, inf and label flipping.

1. Conformance of every new rule (default parameters, and via an explicit ``f``):
   permutation invariance, translation equivariance, identical rows, batched == looped,
   masked rows have no influence whatever they hold (``agg(z, mask) == agg(z[mask])``).
2. Each rule against a direct (slow, obviously correct) implementation of its formula,
   MDA and SMEA against brute-force subset enumeration.
3. Robustness sanity (far outliers and inf rows), parameter errors.
4. Pre-aggregators, composition and the ``f`` propagation of :func:`build_aggregate`.
5. Attacks.
"""

import itertools
import math

import numpy as np
from numerics import random_mask
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from byzsim.aggregators import AGGREGATORS, coordinate_median, get_aggregator
from byzsim.attacks import ATTACKS, alie_z, apply_attack, apply_data_attack, flip_labels, get_attack
from byzsim.preaggregators import (
    PREAGGREGATORS,
    build_aggregate,
    compose,
    get_preaggregator,
    normalize_preaggregators,
)
from byzsim.resampling import resampled
from byzsim.testing import check_attack

QUICK = settings(deadline=None, max_examples=20)

#: name -> (registry name, params); every rule at its defaults, plus variants
RULES = {
    "bulyan": ("bulyan", {}),
    "centered_clipping": ("centered_clipping", {}),
    "cc_mean_tau": ("centered_clipping", {"init": "mean", "tau": 0.7, "iterations": 5}),
    "mda": ("mda", {}),
    "meamed": ("meamed", {}),
    "monna": ("monna", {}),
    "caf": ("caf", {}),
    "smea": ("smea", {}),
    "median_of_means": ("median_of_means", {"groups": 3}),
    "mom_geometric": ("median_of_means", {"groups": 3, "median": "geometric"}),
    "mom_default": ("median_of_means", {}),
    "dnc": ("dnc", {}),
    "dnc_subspaces": ("dnc", {"sub_dim": 2, "niters": 3, "seed": 5}),
}
NEW_NAMES = ["bulyan", "centered_clipping", "mda", "meamed", "monna", "caf", "smea", "median_of_means", "dnc"]
F_RULES = ["bulyan", "mda", "meamed", "monna", "caf", "smea", "median_of_means", "dnc"]


def make(key, **extra):
    name, params = RULES[key]
    return get_aggregator(name, **{**params, **extra})


def close(a, b, scale=1.0, rtol=1e-9):
    np.testing.assert_allclose(a, b, rtol=rtol, atol=rtol * scale)


def data(seed, n, d, lead=()):
    return np.random.default_rng(seed).normal(size=lead + (n, d))


seeds = st.integers(0, 2**32 - 1)




# ======================================================================================
# 1. conformance


def test_every_new_rule_is_registered_with_numpydoc():
    for name in NEW_NAMES:
        fn = AGGREGATORS[name]
        doc = fn.__doc__
        assert "Parameters" in doc and "Returns" in doc and "References" in doc, name
        assert ".. math::" in doc, name
    for name in F_RULES:
        assert callable(AGGREGATORS.entry(name).meta["max_f"]), name
    for name in ("krum", "multi_krum", "trimmed_mean"):
        assert callable(AGGREGATORS.entry(name).meta["max_f"])


@pytest.mark.parametrize("key", list(RULES))
def test_shapes_dtypes_purity(key):
    agg = make(key)
    z = data(0, 7, 4)
    z0 = z.copy()
    out = agg(z)
    assert out.shape == (4,) and out.dtype == np.float64
    assert np.array_equal(z, z0) and not np.shares_memory(out, z)
    assert agg(data(1, 7, 4, lead=(2, 3))).shape == (2, 3, 4)
    assert agg(data(1, 7, 4).astype(np.float32)).dtype == np.float32
    assert agg(np.arange(35).reshape(7, 5)).dtype == np.float64


@pytest.mark.parametrize("key", list(RULES))
@QUICK
@given(seed=seeds, n=st.integers(5, 9), d=st.integers(1, 6))
def test_permutation_invariance(key, seed, n, d):
    z = data(seed, n, d)
    perm = np.random.default_rng(seed + 1).permutation(n)
    agg = make(key)
    close(agg(z[perm]), agg(z))


@pytest.mark.parametrize("key", list(RULES))
@QUICK
@given(seed=seeds, n=st.integers(5, 9), d=st.integers(1, 6), shift=st.sampled_from([1.0, 30.0, 1e3]))
def test_translation_equivariance(key, seed, n, d, shift):
    z = data(seed, n, d)
    t = shift * np.random.default_rng(seed + 2).normal(size=d)
    agg = make(key)
    close(agg(z + t), agg(z) + t, scale=shift)


@pytest.mark.parametrize("key", list(RULES))
@QUICK
@given(seed=seeds, n=st.integers(1, 9), d=st.integers(1, 6))
def test_identical_rows_return_that_row(key, seed, n, d):
    row = 100 * data(seed, 1, d)[0]
    close(make(key)(np.tile(row, (n, 1))), row, scale=100)


@pytest.mark.parametrize("key", list(RULES))
def test_batched_equals_loop(key):
    agg = make(key)
    z = data(3, 7, 5, lead=(2, 3))
    z[1, 2, :2] *= 1e3
    z[0, 1] = 100.0 + 1e-3 * z[0, 1]
    z[0, 1, 4] = 1e4
    out = agg(z)
    for i in range(2):
        for j in range(3):
            close(out[i, j], agg(z[i, j]), scale=1e3 if (i, j) == (1, 2) else 1e-3)


@pytest.mark.parametrize("key", list(RULES))
@QUICK
@given(seed=seeds, n=st.integers(5, 9), d=st.integers(1, 5))
def test_mask_equals_dropping_rows_and_absent_rows_have_no_influence(key, seed, n, d):
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(3, n, d))
    mask = random_mask(rng, (3, n), min_true=1)
    agg = make(key)
    out = agg(z, mask)
    for b in range(3):
        close(out[b], agg(z[b][mask[b]]))
    junk = z.copy()
    junk[~mask] = rng.choice([1e6, -1e9, np.inf, -np.inf, np.nan], size=(int((~mask).sum()), 1))
    close(agg(junk, mask), out)


@pytest.mark.parametrize("key", list(RULES))
def test_all_true_mask_and_empty_elements(key):
    agg = make(key)
    z = data(6, 6, 3, lead=(2,))
    close(agg(z, np.ones(6, bool)), agg(z))
    out = agg(z, np.array([[False] * 6, [True] * 6]))
    assert np.array_equal(out[0], np.zeros(3))
    close(out[1], agg(z[1]))
    with pytest.raises(ValueError, match="broadcast"):
        agg(z, np.ones(5, bool))


@pytest.mark.parametrize("name", F_RULES)
@QUICK
@given(seed=seeds, n=st.integers(7, 9), d=st.integers(1, 4))
def test_conformance_with_explicit_f(name, seed, n, d):
    """The simulate layer binds ``f`` = number of Byzantine clients: the invariances hold
    for an explicit f too, and a mask clips it per element."""
    f = min(1, AGGREGATORS.entry(name).meta["max_f"](n - 2))  # valid after dropping 2 rows (Bulyan: 4f + 3)
    agg = get_aggregator(name, f=f)
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, d))
    perm = rng.permutation(n)
    close(agg(z[perm]), agg(z))
    t = 50 * rng.normal(size=d)
    close(agg(z + t), agg(z) + t, scale=50)
    mask = np.ones(n, bool)
    mask[rng.choice(n, 2, replace=False)] = False
    zj = z.copy()
    zj[~mask] = np.inf
    close(agg(zj, mask), agg(z[mask]))


# ======================================================================================
# 2. against direct implementations


def sq_dist(z):
    return ((z[:, None, :] - z[None, :, :]) ** 2).sum(-1)


def mda_brute(z, f):
    """Every removal set of size f; minimum diameter; ties: the removal set with the
    lexicographically largest sorted outlyingness (the documented rule)."""
    n = len(z)
    D = sq_dist(z)
    o = D.sum(1)
    cands = []
    for R in itertools.combinations(range(n), f):
        S = [i for i in range(n) if i not in R]
        dia = D[np.ix_(S, S)].max() if len(S) > 1 else 0.0
        cands.append((dia, sorted(o[list(R)], reverse=True), S))
    best = min(c[0] for c in cands)
    tied = [c for c in cands if c[0] <= best * (1 + 1e-12)]
    return z[max(tied, key=lambda c: c[1])[2]].mean(0)


@pytest.mark.parametrize("seed", range(40))
def test_mda_equals_brute_force(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(3, 10))
    f = int(rng.integers(0, (n - 1) // 2 + 1))
    d = int(rng.integers(1, 5))
    z = rng.normal(size=(n, d))
    if seed % 2:
        z[:f] += 10 * rng.normal(size=(f, d))
    close(get_aggregator("mda", f=f)(z), mda_brute(z, f), rtol=1e-10)


def test_mda_handles_duplicates_and_ties():
    z = np.array([[0.0], [1.0], [2.0], [3.0], [100.0], [100.0], [100.0]])
    # f = 3: remove the three copies at 100 -> mean 1.5
    close(get_aggregator("mda", f=3)(z), [1.5])
    # on a line of equally spaced points every window ties: drop the most outlying ends
    line = np.arange(7.0)[:, None]
    close(get_aggregator("mda", f=2)(line), mda_brute(line, 2))


def smea_brute(z, f):
    n = len(z)
    best = (np.inf, None)
    for S in itertools.combinations(range(n), n - f):
        S = list(S)
        lam = np.linalg.eigvalsh(np.atleast_2d(np.cov(z[S].T, bias=True)))[-1]
        if lam < best[0] - 1e-12:
            best = (lam, S)
    return z[best[1]].mean(0)


@pytest.mark.parametrize("seed", range(20))
def test_smea_equals_brute_force(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(4, 10))
    f = int(rng.integers(1, (n - 1) // 2 + 1))
    d = int(rng.integers(1, 12))
    z = rng.normal(size=(n, d)) * rng.uniform(0.5, 2, size=d)
    if seed % 2:
        z[:f] += 3 * rng.normal(size=(f, d))
    close(get_aggregator("smea", f=f)(z), smea_brute(z, f), rtol=1e-8)


def meamed_direct(z, f):
    med = np.median(z, axis=0)
    idx = np.argsort(np.abs(z - med), axis=0, kind="stable")[: len(z) - f]
    return np.take_along_axis(z, idx, axis=0).mean(0)


@pytest.mark.parametrize("seed", range(10))
def test_meamed_equals_direct(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(3, 12))
    z = rng.standard_t(2, size=(n, 6))
    for f in range(0, (n - 1) // 2 + 1):
        close(get_aggregator("meamed", f=f)(z), meamed_direct(z, f))
    # batched with per-element masks (general path) equals the uniform path per element
    zb = rng.normal(size=(4, n, 3))
    mask = random_mask(rng, (4, n), 1)
    out = get_aggregator("meamed")(zb, mask)
    for b in range(4):
        sub = zb[b][mask[b]]
        close(out[b], meamed_direct(sub, (len(sub) - 1) // 2))


def krum_pick(D, alive, f):
    idx = np.flatnonzero(alive)
    r = len(idx)
    k = min(max(r - f - 2, 1), r - 1)
    sub = D[np.ix_(idx, idx)]
    sc = np.array([np.sort(np.delete(sub[i], i))[:k].sum() for i in range(r)]) if r > 1 else np.zeros(1)
    tied = np.flatnonzero(sc == sc.min())
    total = sub[tied].sum(1)
    return idx[tied[np.argmin(total)]]


def bulyan_direct(z, f):
    n = len(z)
    D = sq_dist(z)
    theta = n - 2 * f
    beta = theta - 2 * f if theta - 2 * f >= 1 else 2 - theta % 2  # else: median of S
    alive = np.ones(n, bool)
    chosen = []
    for _ in range(theta):
        w = krum_pick(D, alive, f)
        chosen.append(w)
        alive[w] = False
    return meamed_direct(z[chosen], theta - beta)


@pytest.mark.parametrize("seed", range(10))
def test_bulyan_equals_direct(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(3, 16))
    f = (n - 3) // 4
    z = rng.normal(size=(n, 4))
    z[:f] += 20
    close(get_aggregator("bulyan", f=f)(z), bulyan_direct(z, f))
    close(get_aggregator("bulyan")(z), bulyan_direct(z, f))
    # beyond the guarantee (4f + 3 > n) it still answers (median of S when θ − 2f < 1)
    for f2 in range(f + 1, (n - 1) // 2 + 1):
        close(get_aggregator("bulyan", f=f2)(z), bulyan_direct(z, f2))


def caf_direct(z, f):
    n = len(z)
    c = np.ones(n)
    best = (np.inf, z.mean(0))
    while c.sum() > n - 2 * f:  # the final state (sum <= n - 2f) is not a candidate
        mu = c @ z / c.sum()
        zc = z - mu
        cov = (zc.T * c) @ zc / c.sum()
        lam, V = np.linalg.eigh(cov)
        if lam[-1] < best[0]:
            best = (lam[-1], mu)
        tau = (zc @ V[:, -1]) ** 2
        tmax = tau[c > 0].max()
        if tmax <= 0:
            break
        c = np.maximum(c * (1 - tau / tmax), 0)
    return best[1]


@pytest.mark.parametrize("seed", range(10))
def test_caf_equals_direct(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(3, 12))
    z = rng.normal(size=(n, 5))
    z[: n // 4] += 5
    for f in range(0, (n - 1) // 2 + 1):
        close(get_aggregator("caf", f=f)(z), caf_direct(z, f), rtol=1e-8)


def dnc_direct(z, f, c=1.0):
    mu = z.mean(0)
    _, _, Vt = np.linalg.svd(z - mu, full_matrices=False)
    s = ((z - mu) @ Vt[0]) ** 2
    keep = np.argsort(-s, kind="stable")[int(math.floor(c * f)):]
    return z[keep].mean(0)


@pytest.mark.parametrize("seed", range(10))
def test_dnc_equals_direct(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(3, 12))
    z = rng.normal(size=(n, 6))
    z[: n // 3] += 4 * rng.normal(size=6)
    for f in range(0, (n - 1) // 2 + 1):
        close(get_aggregator("dnc", f=f)(z), dnc_direct(z, f))
        close(get_aggregator("dnc", f=f, c=0.5)(z), dnc_direct(z, f, 0.5))


def test_dnc_coordinate_subsets_are_seeded():
    z = data(1, 9, 40)
    z[:2] += 3
    a = get_aggregator("dnc", f=2, sub_dim=5, niters=4, seed=1)
    close(a(z), a(z))
    outs = {tuple(np.round(get_aggregator("dnc", f=3, sub_dim=2, niters=1, seed=s)(z), 12)) for s in range(8)}
    assert len(outs) > 1  # different seeds, different subsets


def monna_direct(z, f, idx=None):
    n = len(z)
    D = sq_dist(z)
    size = n - f
    if idx is None:
        sc = [np.sort(np.delete(D[i], i))[: size - 1].sum() for i in range(n)]
        idx = int(np.argmin(sc))
    return z[np.argsort(D[idx], kind="stable")[:size]].mean(0)


@pytest.mark.parametrize("seed", range(8))
def test_monna_equals_direct(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(3, 12))
    z = rng.normal(size=(n, 4))
    z[:2] += 9
    for f in range(0, (n - 1) // 2 + 1):
        close(get_aggregator("monna", f=f)(z), monna_direct(z, f))
        close(get_aggregator("monna", f=f, idx=n - 1)(z), monna_direct(z, f, n - 1))


def medoid_direct(z):
    D = sq_dist(z)
    k = max(len(z) // 2, 1) if len(z) > 1 else 0
    sc = np.array([np.sort(np.delete(D[i], i))[:k].sum() for i in range(len(z))])
    tied = np.flatnonzero(sc == sc.min())
    return z[tied[np.argmin(D[tied].sum(1))]]


def cc_direct(z, tau, iterations, init="medoid"):
    v = {"median": lambda: np.median(z, 0), "mean": lambda: z.mean(0), "medoid": lambda: medoid_direct(z)}[init]()
    if tau is None:
        tau = np.median(np.linalg.norm(z - v, axis=1))
    for _ in range(iterations):
        diff = z - v
        nrm = np.linalg.norm(diff, axis=1)
        s = np.where(nrm > tau, tau / np.where(nrm > 0, nrm, 1), 1.0)
        v = v + (s[:, None] * diff).mean(0)
    return v


@pytest.mark.parametrize("seed", range(6))
def test_centered_clipping_equals_direct(seed):
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(9, 5))
    z[:2] += 50
    for tau, it, init in [(None, 3, "medoid"), (None, 3, "median"), (0.5, 10, "mean"),
                          (100.0, 1, "median"), (None, 0, "mean"), (2.0, 4, "medoid")]:
        got = get_aggregator("centered_clipping", tau=tau, iterations=it, init=init)(z)
        close(got, cc_direct(z, tau, it, init), rtol=1e-10)


def test_median_of_means_special_cases():
    z = data(2, 9, 4)
    # one group: the mean; m_p groups (default f): the coordinate median
    close(get_aggregator("median_of_means", groups=1)(z), z.mean(0))
    close(get_aggregator("median_of_means")(z), coordinate_median(z))
    # 3 groups of 3: the coordinate median of the means of some partition into 3 triples
    out = get_aggregator("median_of_means", groups=3, median="coordinate")(z)
    found = False
    for A in itertools.combinations(range(1, 9), 2):
        A = (0,) + A
        rest = [i for i in range(9) if i not in A]
        for B in itertools.combinations(rest[1:], 2):
            B = (rest[0],) + B
            Cg = [i for i in rest if i not in B]
            means = np.stack([z[list(g)].mean(0) for g in (A, B, Cg)])
            found |= np.allclose(out, np.median(means, axis=0), rtol=0, atol=1e-12)
    assert found
    # f = 2 -> 5 groups; 2 far outliers contaminate at most 2 of them
    zo = z.copy()
    zo[:2] = 1e6
    assert np.abs(get_aggregator("median_of_means", f=2)(zo)).max() < 5


# ======================================================================================
# 3. robustness sanity, non-finite rows, errors


# robust configurations: not the mean-started CC with a small radius (5 steps of 0.7 cannot
# leave a start dragged by 1e6 outliers) nor median of means with a fixed 3 groups
ROBUST = [k for k in RULES if k not in ("cc_mean_tau", "median_of_means", "mom_geometric")]


def _robust(key, f):
    name = RULES[key][0]
    return make(key, f=min(f, AGGREGATORS.entry(name).meta["max_f"](19))) if name in F_RULES else make(key)


@pytest.mark.parametrize("key", ROBUST)
def test_far_outliers_are_rejected(key):
    rng = np.random.default_rng(0)
    z = rng.normal(size=(19, 6))
    z[:4] = 1e6 * rng.normal(size=(4, 6))
    assert np.abs(_robust(key, 4)(z)).max() < 5, key


@pytest.mark.parametrize("key", ROBUST)
def test_participating_inf_rows_do_not_leak(key):
    rng = np.random.default_rng(1)
    z = rng.normal(size=(19, 6))
    z[:4] = np.inf
    z[4, 0] = np.nan
    out = _robust(key, 5)(z)
    assert np.isfinite(out).all() and np.abs(out).max() < 5, key


def test_more_non_finite_rows_than_f_give_a_non_finite_answer():
    z = data(0, 9, 3)
    z[:3] = np.inf
    for name in ("mda", "smea", "monna"):
        assert not np.isfinite(get_aggregator(name, f=1)(z)).all(), name


def test_parameter_errors_are_named():
    z = data(0, 30, 2)
    with pytest.raises(ValueError, match=r"mda.*n = 30, f = 14.*2\^f = 16384.*C\(n, f\) = 145422675.*max_branches = 1000"):
        get_aggregator("mda", max_branches=1000)(z)
    with pytest.raises(ValueError, match=r"smea: C\(m_p, f\) = C\(30, 14\) = 145422675 subsets.*max_subsets"):
        get_aggregator("smea")(z)
    with pytest.raises(ValueError, match=r"bulyan needs 0 <= f <= 3 \(2f < n\) for n = 7"):
        get_aggregator("bulyan", f=4)(data(0, 7, 2))
    with pytest.raises(ValueError, match="meamed needs 0 <= f <= 3"):
        get_aggregator("meamed", f=4)(data(0, 7, 2))
    with pytest.raises(ValueError, match="non-negative integer"):
        get_aggregator("caf", f=-1)
    with pytest.raises(ValueError, match="idx"):
        get_aggregator("monna", idx=9)(data(0, 7, 2))
    with pytest.raises(ValueError, match="median"):
        get_aggregator("median_of_means", median="mean")(z)
    with pytest.raises(ValueError, match="init"):
        get_aggregator("centered_clipping", init="zero")(z)
    with pytest.raises(ValueError, match="valid parameters"):
        get_aggregator("dnc", subdim=3)


# ======================================================================================
# 4. pre-aggregators


def test_preaggregator_registry_and_docs():
    assert set(PREAGGREGATORS.names()) >= {"nnm", "bucketing", "clipping", "arc", "resample", "signguard"}
    for name in ("nnm", "bucketing", "clipping", "arc", "resample", "signguard"):
        assert "Parameters" in PREAGGREGATORS[name].__doc__
        assert callable(PREAGGREGATORS.entry(name).meta["chain"])
    with pytest.raises(ValueError, match="valid choices"):
        get_preaggregator("nmm")


def nnm_direct(z, f):
    D = sq_dist(z)
    k = len(z) - f
    return np.stack([z[np.argsort(D[i], kind="stable")[:k]].mean(0) for i in range(len(z))])


@pytest.mark.parametrize("seed", range(5))
def test_nnm_equals_direct_and_masks(seed):
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(9, 4))
    z[:2] += 10
    for f in (0, 2, 4):
        zo, mo = get_preaggregator("nnm", f=f)(z, None, rng)
        assert mo is None
        close(zo, nnm_direct(z, f))
    mask = np.ones(9, bool)
    mask[[3, 7]] = False
    zj = z.copy()
    zj[~mask] = np.nan
    zo, mo = get_preaggregator("nnm", f=2)(zj, mask, rng)
    assert mo is mask
    close(zo[mask], nnm_direct(z[mask], 2))
    assert np.array_equal(zo[~mask], np.zeros((2, 4)))


def test_bucketing_uses_every_participant_once():
    rng = np.random.default_rng(0)
    z = rng.normal(size=(7, 3))
    zo, mo = get_preaggregator("bucketing", s=2)(z, None, rng)
    assert zo.shape == (4, 3) and mo is None
    # sizes 2, 2, 2, 1: the size-weighted mean of the buckets is the mean of the rows
    close((zo[:3].sum(0) * 2 + zo[3]) / 7, z.mean(0))
    mask = np.array([1, 1, 0, 1, 1, 0, 1], bool)
    zj = z.copy()
    zj[~mask] = np.inf
    zo, mo = get_preaggregator("bucketing", s=2)(zj, mask, np.random.default_rng(1))
    assert zo.shape == (4, 3) and mo.tolist() == [True, True, True, False]
    close((zo[:2].sum(0) * 2 + zo[2]) / 5, z[mask].mean(0))
    # batched: one shared draw
    zb = np.stack([z, z + 1])
    zo, _ = get_preaggregator("bucketing", s=3)(zb, None, np.random.default_rng(2))
    close(zo[1], zo[0] + 1)


def test_bucketing_keeps_non_finite_rows_in_their_bucket():
    z = data(0, 6, 2)
    z[0] = np.inf
    zo, _ = get_preaggregator("bucketing", s=2)(z, None, np.random.default_rng(0))
    assert (~np.isfinite(zo).all(-1)).sum() == 1


def test_clipping_and_arc():
    z = np.array([[3.0, 4.0], [0.3, 0.4], [6.0, 8.0], [0.0, 1.0], [np.inf, 0.0]])
    zo, _ = get_preaggregator("clipping", c=1.0)(z, None, None)
    close(np.linalg.norm(zo[:4], axis=1), [1.0, 0.5, 1.0, 1.0])
    assert np.isnan(zo[4]).all()
    # ARC (ByzFL): k = floor(2 f/n (n - f)) largest norms clipped to the next largest
    x = np.array([[1.0, 2, 3], [4, 5, 6], [7, 8, 9]])
    zo, _ = get_preaggregator("arc", f=1)(x, None, None)
    close(zo, [[1, 2, 3], [4, 5, 6], [4.41004009, 5.04004582, 5.67005155]], rtol=1e-8)
    zo, _ = get_preaggregator("arc", f=0)(x, None, None)
    close(zo, x)
    rng = np.random.default_rng(0)
    y = rng.normal(size=(10, 4)) * rng.uniform(1, 10, size=(10, 1))
    zo, _ = get_preaggregator("arc", f=3)(y, None, None)  # k = floor(2*3/10*7) = 4
    nrm = np.linalg.norm(y, axis=1)
    thr = np.sort(nrm)[10 - 4 - 1]
    close(np.linalg.norm(zo, axis=1), np.minimum(nrm, thr))


def test_resample_preaggregator_equals_resampled():
    z = data(0, 8, 3)
    agg = get_aggregator("geometric_median")
    a = resampled(agg, 2)(z, None, np.random.default_rng(5))
    b = compose([get_preaggregator("resample", s=2)], agg)(z, None, np.random.default_rng(5))
    close(a, b)
    z1, m1 = get_preaggregator("resample", s=1)(z, None, None)  # s = 1 draws nothing
    assert z1 is z and m1 is None
    with pytest.raises(ValueError, match="partial participation"):
        get_preaggregator("resample", s=2)(z, np.ones(8, bool), np.random.default_rng(0))


def test_signguard_drops_scaled_and_flipped_rows():
    rng = np.random.default_rng(0)
    z = 0.5 + 0.1 * rng.normal(size=(20, 200))
    z[:3] *= 20  # norm filter
    z[3:6] = -z[3:6]  # sign clustering
    zo, mo = get_preaggregator("signguard")(z, None, rng)
    assert mo.tolist() == [False] * 6 + [True] * 14
    med = np.median(np.linalg.norm(z, axis=1))
    assert np.all(np.linalg.norm(zo[mo], axis=1) <= med * (1 + 1e-12))
    sg = build_aggregate("mean", {}, ["signguard"], n=20, n_byzantine=6)
    assert np.abs(sg(z, None, rng) - 0.5).max() < 0.1


def test_compose_and_build_aggregate_f_propagation():
    rng = np.random.default_rng(0)
    z = rng.normal(size=(30, 5))
    z[:6] = 1e3
    # no pre-aggregator: exactly the foundation's resampled(agg(f = s·B capped), s)
    a = build_aggregate("krum", {}, [], n=30, n_byzantine=6, resample=2)
    assert a.s == 2 and a.aggregate_fn.keywords == {"f": 12}
    assert build_aggregate("trimmed_mean", {}, (), n=10, n_byzantine=4, resample=2).aggregate_fn.keywords == {"f": 4}
    assert build_aggregate("mean", {}, (), n=10, n_byzantine=4).aggregate_fn.keywords == {}
    # bucketing s = 2: 15 buckets, at most 6 contaminated; Bulyan caps f at (15 - 3)//4 = 3
    b = build_aggregate("bulyan", {}, [{"name": "bucketing", "s": 2}], n=30, n_byzantine=6)
    assert b.aggregate_fn.keywords == {"f": 3}
    # resampling first, then NNM and Krum both see s·B = 12
    c = build_aggregate("krum", None, ["nnm"], n=30, n_byzantine=6, resample=2)
    assert [p.keywords for p in c.preaggregators] == [{"s": 2}, {"f": 12}]
    assert c.aggregate_fn.keywords == {"f": 12}
    # explicit parameters win
    d = build_aggregate("mda", {"f": 2}, [{"name": "nnm", "f": 1}], n=30, n_byzantine=6)
    assert d.preaggregators[0].keywords == {"f": 1} and d.aggregate_fn.keywords == {"f": 2}
    out = build_aggregate("geometric_median", {}, ["nnm"], n=30, n_byzantine=6)(z, None, rng)
    assert np.abs(out).max() < 1.0


def test_normalize_preaggregators_errors():
    assert normalize_preaggregators(["nnm", {"name": "bucketing", "s": 3}]) == (
        {"name": "nnm"}, {"name": "bucketing", "s": 3})
    assert normalize_preaggregators(None) == ()
    with pytest.raises(ValueError, match=r"preaggregators\[1\].*valid choices"):
        normalize_preaggregators(["nnm", "buckets"])
    with pytest.raises(ValueError, match=r"preaggregators\[0\].*valid parameters"):
        normalize_preaggregators([{"name": "bucketing", "size": 2}])
    with pytest.raises(ValueError, match="'name' key"):
        normalize_preaggregators([{"s": 2}])
    with pytest.raises(ValueError, match="list"):
        normalize_preaggregators("nnm")


@pytest.mark.parametrize("name", ["nnm", "bucketing", "clipping", "arc", "signguard"])
def test_preaggregators_keep_shape_and_batch(name):
    rng = np.random.default_rng(0)
    z = rng.normal(size=(2, 3, 8, 5))
    z0 = z.copy()
    pre = get_preaggregator(name)
    zo, mo = pre(z, None, rng)
    assert zo.shape[:2] == (2, 3) and zo.shape[-1] == 5 and np.array_equal(z, z0)
    assert zo.dtype == np.float64
    assert pre(z.astype(np.float32), None, rng)[0].dtype == np.float32
    if mo is not None:
        assert mo.shape == zo.shape[:-1]


# ======================================================================================
# 5. attacks

BYZ = np.array([False, True, False, True, False, False, False])


def test_alie_and_ipm_values():
    rng = np.random.default_rng(0)
    v = rng.normal(size=(7, 4))
    reg = v[~BYZ]
    out = get_attack("alie", z=1.5)(v, BYZ, rng)
    close(out, np.tile(reg.mean(0) - 1.5 * reg.std(0), (2, 1)))
    z = alie_z(7, 2)  # s = 4 - 2 = 2; p = (5 - 2)/5 = 0.6
    assert abs(z - 0.2533471031357997) < 1e-12
    close(get_attack("alie")(v, BYZ, rng), np.tile(reg.mean(0) - z * reg.std(0), (2, 1)))
    close(get_attack("ipm", eps=0.5)(v, BYZ, rng), np.tile(-0.5 * reg.mean(0), (2, 1)))
    assert alie_z(30, 6) > 0 and np.isfinite(alie_z(10, 6))


def test_optimized_attacks_pick_the_most_damaging_scale():
    rng = np.random.default_rng(1)
    v = rng.normal(size=(7, 4)) + 1.0
    reg_mean = v[~BYZ].mean(0)
    for name, base in (("alie_opt", "alie"), ("ipm_opt", "ipm")):
        for aggname in ("mean", "coordinate_median", "krum"):
            params = {"f": 2} if aggname == "krum" else {}
            agg = get_aggregator(aggname, **params)
            out = get_attack(name, aggregator=aggname, aggregator_params=params)(v, BYZ, rng)
            key = "z" if base == "alie" else "eps"
            devs = []
            for s in (0.0, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0):
                w = apply_attack(get_attack(base, **{key: s}), v.copy(), BYZ, rng)
                devs.append((np.linalg.norm(agg(w) - reg_mean), s))
            best = max(devs, key=lambda t: t[0])[1]
            close(out, get_attack(base, **{key: best})(v, BYZ, rng))
    # against the mean the largest scale always wins; a callable aggregate works too
    out = get_attack("ipm_opt", scales=(0.5, 3.0))(v, BYZ, rng)
    close(out, get_attack("ipm", eps=3.0)(v, BYZ, rng))
    agg = build_aggregate("geometric_median", {}, ["bucketing"], n=7, n_byzantine=2)
    assert get_attack("alie_opt", aggregator=agg)(v, BYZ, np.random.default_rng(0)).shape == (2, 4)
    with pytest.raises(ValueError, match="aggregator_params"):
        get_attack("alie_opt", aggregator=agg, aggregator_params={"f": 1})(v, BYZ, rng)


def test_optimized_attack_batched_choice_is_per_element():
    rng = np.random.default_rng(2)
    v = rng.normal(size=(3, 7, 4))
    out = get_attack("alie_opt", aggregator="coordinate_median")(v, BYZ, rng)
    for b in range(3):
        close(out[b], get_attack("alie_opt", aggregator="coordinate_median")(v[b], BYZ, rng))


def test_mimic_inf_and_label_flipping():
    rng = np.random.default_rng(3)
    v = rng.normal(size=(7, 5))
    v[4] += 10  # the most extreme regular client along the top direction
    out = get_attack("mimic")(v, BYZ, rng)
    close(out, np.tile(v[4], (2, 1)))
    close(get_attack("mimic", target=2)(v, BYZ, rng), np.tile(v[2], (2, 1)))
    with pytest.raises(ValueError, match="regular client"):
        get_attack("mimic", target=1)(v, BYZ, rng)
    assert np.isposinf(get_attack("inf")(v, BYZ, rng)).all()
    assert np.isneginf(get_attack("inf", value=-np.inf)(v, BYZ, rng)).all()
    close(get_attack("label_flipping")(v, BYZ, rng), v[BYZ])
    y = np.array([[0, 1, 2], [3, 4, 5], [9, 9, 0], [1, 1, 1], [2, 2, 2], [0, 0, 0], [5, 5, 5]])
    yb = flip_labels(y, BYZ, 10)
    assert yb[1].tolist() == [6, 5, 4] and yb[3].tolist() == [8, 8, 8]
    assert np.array_equal(yb[~BYZ], y[~BYZ]) and y[1].tolist() == [3, 4, 5]
    assert np.array_equal(apply_data_attack("label_flipping", y, BYZ, 10), yb)
    assert apply_data_attack("alie", y, BYZ, 10) is y


@pytest.mark.parametrize("name", ["alie", "ipm", "alie_opt", "ipm_opt", "mimic", "inf", "label_flipping"])
def test_new_attacks_shapes_and_purity(name):
    check_attack(ATTACKS[name], n=7, q=2, finite=name != "inf")


# ======================================================================================
# 6. integration with the config and simulate layers


def _simulate_has(name):
    import inspect

    import byzsim.simulate as sim

    return name in inspect.getsource(sim)


needs_config = pytest.mark.skipif(
    "preaggregators" not in __import__("byzsim.config", fromlist=["FIELDS"]).FIELDS,
    reason="the config has no 'preaggregators' field",
)
needs_data_attacks = pytest.mark.skipif(
    not _simulate_has("apply_data_attack"),
    reason="the simulate layer does not apply data attacks",
)
TINY = dict(dataset="digits", partition="iid", model="softmax", n_clients=10, n_byzantine=2,
            family="gradient", estimator="sgd", rounds=3, eval_every=3, batch_size=4, lr=0.1)


@needs_config
def test_config_preaggregators_and_attack_binding():
    from byzsim.config import make_config
    from byzsim.simulate import build_problem, make_method, run

    cfg = make_config(**TINY, aggregator="krum", attack="alie_opt",
                      preaggregators=["nnm", {"name": "bucketing", "s": 2}])
    assert cfg.preaggregators == ({"name": "nnm"}, {"name": "bucketing", "s": 2})
    assert make_config(**cfg.to_dict()) == cfg  # TOML/dict round trip
    method = make_method(cfg, build_problem(cfg, np.random.default_rng(0)))
    assert method.attack.keywords["aggregator"] is method.aggregate
    assert [p.keywords for p in method.aggregate.preaggregators] == [{"f": 2}, {"s": 2}]
    assert method.aggregate.aggregate_fn.keywords == {"f": 2}  # 5 buckets: Krum's cap n − 3 = 2
    assert np.isfinite(run(cfg).final_accuracy)
    # without pre-aggregators: the foundation's f = s·B capped (Krum: n − 3)
    from byzsim.config import TheoryWarning

    with pytest.warns(TheoryWarning):  # s·B/n = 0.8: outside paper B's bound, still valid
        cfg2 = make_config(**TINY, aggregator="krum", resample=4)
    agg = make_method(cfg2, build_problem(cfg2, np.random.default_rng(0))).aggregate
    assert agg.s == 4 and agg.aggregate_fn.keywords == {"f": 7}
    with pytest.raises(ValueError, match=r"preaggregators.*valid choices"):
        make_config(**TINY, aggregator="mean", preaggregators=["nmm"])
    with pytest.raises(ValueError, match="gradient family"):
        make_config(**{**TINY, "family": "penalty"}, preaggregators=["nnm"])


@needs_data_attacks
def test_label_flipping_flips_the_byzantine_clients_labels_only():
    from byzsim.config import make_config
    from byzsim.simulate import _data_key, build_problem

    cfg0 = make_config(**TINY, aggregator="mean")
    cfg1 = cfg0.replace(attack="label_flipping")
    p0 = build_problem(cfg0, np.random.default_rng(0))
    p1 = build_problem(cfg1, np.random.default_rng(0))
    byz = p0.byzantine
    assert np.array_equal(p1.byzantine, byz)
    assert np.array_equal(p1.y[byz], 9 - p0.y[byz])
    assert np.array_equal(p1.y[~byz], p0.y[~byz]) and np.array_equal(p1.X, p0.X)
    assert np.array_equal(p1.y_eval, p0.y_eval)  # evaluated on the regular clients only
    assert _data_key(cfg0) != _data_key(cfg1)
    assert _data_key(cfg0) == _data_key(cfg0.replace(attack="sign_flipping"))
