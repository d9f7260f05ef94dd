"""Registry-wide conformance of the aggregators.

Every rule in ``AGGREGATORS`` is checked (once per function: aliases such as
``geomed``/``median``/``cc`` share their rule's tests), so a newly registered rule gets
the suite for free.  Rules that take the number of Byzantine inputs ``f`` get it
(detected with :func:`byzsim.registry.keyword_parameters`), clipped to the range the
rule accepts for the number of rows (probed: :func:`max_valid_f`, so Bulyan's
``n >= 4f + 3`` needs no entry); a rule with another *required* parameter fails
:func:`build` with a message asking for an entry in ``TEST_PARAMS``.

Properties
----------
* output shape ``(..., d)``, permutation invariance, translation equivariance,
  equivariance under ``c·z`` for ``c > 0``, identical rows return that row, the batched
  call equals the loop over the leading axes (also with a different mask per element);
* the symmetries a rule *should* have, from the table ``SYMMETRIES`` keyed by registered
  name: rotation equivariance, coordinate-wise (coordinate permutations and
  per-coordinate affine maps), monotone (per-coordinate increasing maps, odd n), odd
  (``agg(−z) = −agg(z)``).  Default for unlisted rules: rotation + odd (distance-based
  rules).  The table is checked in both directions: a rule must have every listed
  symmetry and must *lack* every unlisted one (a wrong entry cannot hide a weaker test);
* bounded output: moving at most the number of rows a rule tolerates (``BREAKDOWN``;
  default ``f`` for rules taking ``f``, else fewer than half) arbitrarily far
  (hypothesis picks the rows, one point or several directions, and the distance up to
  1e12 honest spreads) keeps the output within a rule-specific radius of the honest
  mean (``RADIUS``; default 10·√(nd)·diam(honest)) that does not depend on how far the
  rows went; for rules in ``TIGHT_BREAKDOWN`` one more row must escape;
* geometric median: first-order optimality (also with heavy points and masks), an
  independent scipy minimisation (cancellation-free objective) with honest rows ~1e-3
  around offsets up to 1e4 next to Byzantine rows ~1e4, and the scipy objective with
  outliers.

Each property is a plain ``check_*`` function (raises ``AssertionError``; the
reusable ones live in :mod:`byzsim.testing`, which users run on their own rules through
``check_aggregator``) so the same code is applied to the deliberately broken variants in ``broken_variants.py``: the
``test_*_catches_*`` tests assert that the check fails on them.

Library bugs found here are kept visible as ``xfail(strict=True)`` reproductions at
the end of the module until fixed; fixed ones stay there as regression tests (the
non-finite cases in full: ``test_nonfinite.py``).
"""

from __future__ import annotations

import functools
import inspect

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.optimize import minimize

import broken_variants as bv
from byzsim.aggregators import (
    AGGREGATORS,
    coordinate_median,
    geometric_median,
    get_aggregator,
    mean,
    multi_krum,
    trimmed_mean,
)
import byzsim.testing as _testing
from byzsim.registry import keyword_parameters
from byzsim.testing import (
    check_batched_equals_loop,
    check_coordinatewise_affine,
    check_identical_rows,
    check_monotone_maps,
    check_permutation_invariance,
    check_rotation_equivariance,
    check_shape,
    check_translation_equivariance,
    close,
    orthogonal,
    rows,
)
from byzsim.theory import c_alpha


def _one_name_per_rule() -> list[str]:
    """Every registered rule once: aliases (``geomed``, ``median``, ``cc``…) name the
    same function, so the first registered name of each function stands for all."""
    seen, names = set(), []
    for name in AGGREGATORS.names():
        fn = AGGREGATORS[name]
        if AGGREGATORS.entry(name).meta["stateful"]:  # factories of Stateful rules: tests/test_stateful.py
            continue
        if id(fn) not in seen:
            seen.add(id(fn))
            names.append(fn.__name__ if fn.__name__ in AGGREGATORS and AGGREGATORS[fn.__name__] is fn else name)
    return names


NAMES = _one_name_per_rule()
seeds = st.integers(0, 2**32 - 1)
#: Per-rule hypothesis tests run this share of the profile's examples (the suite
#: multiplies them by the number of rules); ``HYPOTHESIS_PROFILE=thorough`` scales it.
PER_RULE = settings(max_examples=max(10, settings().max_examples * 2 // 3))

# --------------------------------------------------------------------------------------
# per-rule tables, keyed by registered name (aliases resolve to the same function; a name
# that is not registered in this checkout is ignored)
# --------------------------------------------------------------------------------------
#: Parameters used for the invariance checks.  The geometric median is run to a tight
#: tolerance so that invariances hold to ~1e-9 (its defaults stop at tol 1e-5).
TEST_PARAMS = {"geometric_median": dict(tol=1e-11, max_iter=1000)}

#: Absolute tolerance of the equivariance checks in the output's units: the smoothing
#: max(‖z_i − y‖, eps) (eps = 1e-8 absolute) leaves the geometric median up to ~eps
#: from an optimal row, so scaling the input by c moves that gap relative to the data.
ABS_TOL = {"geometric_median": 10 * 1e-8}

ROTATION = "rotation"  # agg(z Q) = agg(z) Q for every orthogonal Q
COORDINATEWISE = "coordinatewise"  # commutes with coordinate permutations and per-coordinate
#                                    affine maps x_j -> a_j x_j + b_j (a_j != 0, any sign)
MONOTONE = "monotone"  # ... and per-coordinate strictly increasing maps (odd number of rows)
ODD = "odd"  # agg(−z) = −agg(z) (implied by both ROTATION and COORDINATEWISE)
ALL_SYMMETRIES = (ROTATION, COORDINATEWISE, MONOTONE, ODD)

#: Which symmetries each rule has (every rule must also be permutation invariant,
#: translation equivariant and equivariant under c·z for c > 0).  DEFAULT for unlisted
#: rules: rotation equivariance (distance-based rules).  A coordinate-wise rule, or one
#: with fewer symmetries, must be listed.
SYMMETRIES = {
    "mean": {ROTATION, COORDINATEWISE, ODD},
    "geometric_median": {ROTATION, ODD},
    "krum": {ROTATION, ODD},
    "multi_krum": {ROTATION, ODD},
    "coordinate_median": {COORDINATEWISE, MONOTONE, ODD},
    "trimmed_mean": {COORDINATEWISE, ODD},
    "meamed": {COORDINATEWISE, ODD},  # mean of the values nearest the coordinate median
    "bulyan": {ODD},  # Euclidean (Krum) selection, then coordinate-wise trimming
    "median_of_means": {ODD},  # coordinate median of group means (groups: outlyingness ranks)
    "mda": {ROTATION, ODD},
    "monna": {ROTATION, ODD},
    "caf": {ROTATION, ODD},
    "smea": {ROTATION, ODD},
    "dnc": {ROTATION, ODD},  # spectral; all coordinates used while d <= sub_dim
}
DEFAULT_SYMMETRIES = {ROTATION, ODD}


def _f_rule(n, f):
    return f


def _half(n, f):
    return (n - 1) // 2


#: Largest number of rows that may be moved arbitrarily far (n rows, parameter f).
#: DEFAULT for unlisted rules: f if the rule takes f, else fewer than half of the rows.
BREAKDOWN = {
    "mean": lambda n, f: 0,
    "geometric_median": _half,
    "coordinate_median": _half,
    "trimmed_mean": _f_rule,
    "krum": _f_rule,  # needs n >= 2f + 3, which the tests respect
    "multi_krum": _f_rule,
}


#: Rules whose guarantee is only checked against moved rows gathered at one point.
#: DnC removes the f rows that score highest along the *top* singular direction (one
#: coordinate subset by default): rows moved far in several directions can be nearly
#: orthogonal to it and survive (e.g. 3 of 13 rows at ~1e4 in 3 random directions,
#: d = 3: output 1e3 away) — a known limit of the heuristic, not a worst-case bound.
ONE_POINT_ADVERSARY = {"dnc"}


def _radius_geomed(H, n, f, B, d):
    """Property 1's deterministic core: C_α · mean_h ‖h − h̄‖, α = B/n (beyond the
    breakdown point: the radius at the largest tolerated B)."""
    hbar = H.mean(0)
    return c_alpha(min(B, (n - 1) // 2) / n) * np.linalg.norm(H - hbar, axis=1).mean()


def _diam(H):
    return np.sqrt(((H[:, None, :] - H[None, :, :]) ** 2).sum(-1).max())


def _radius_krum(H, n, f, B, d):
    """The winner's score is at most an honest row's, ≤ k·diam²; it has ≥ 1 honest
    neighbour among its k = n − f − 2 nearest, so it lies within √k·diam of an honest
    row, hence within (1 + √k)·diam of the honest mean (multi-Krum: every selected row)."""
    return (1 + np.sqrt(n - f - 2)) * _diam(H)


def _radius_box(H, n, f, B, d):
    """Coordinate-wise rules stay in the honest bounding box: within its diagonal of the
    honest mean."""
    return np.linalg.norm(H.max(0) - H.min(0))


def _radius_default(H, n, f, B, d):
    return _testing.default_radius(H, n, d)


#: Radius around the honest mean that the output must stay in (independent of how far
#: the moved rows went).  DEFAULT for unlisted rules: 10 √(n d) · diam(honest rows).
RADIUS = {
    "geometric_median": _radius_geomed,
    "krum": _radius_krum,
    "multi_krum": _radius_krum,
    "coordinate_median": _radius_box,
    "trimmed_mean": _radius_box,
    "median_of_means": _radius_box,  # coordinate median of group means, ≤ f bad groups
}


def base(agg):
    """The registered (or broken) function behind a name, partial or function."""
    if isinstance(agg, str):
        return AGGREGATORS[agg]
    while isinstance(agg, functools.partial):
        agg = agg.func
    return agg


def lookup(table, agg, default):
    """``table[name]`` for the registered name of ``agg``'s function (any alias)."""
    fn = base(agg)
    for key, value in table.items():
        if key in AGGREGATORS and AGGREGATORS[key] is fn:
            return value
    return default


def takes_f(fn) -> bool:
    return "f" in keyword_parameters(base(fn))


@functools.lru_cache(maxsize=None)
def max_valid_f(fn, n: int) -> int:
    """The largest ``f`` the rule accepts for ``n`` rows (probed: a ``ValueError`` means
    invalid), so rules with their own range (Bulyan: n ≥ 4f + 3) need no entry."""
    params = lookup(TEST_PARAMS, fn, {})
    z = np.arange(n, dtype=float)[:, None] * np.array([1.0, 0.5])
    for f in range(n, -1, -1):
        try:
            fn(z, f=f, **params)
            return f
        except ValueError:
            continue
    raise AssertionError(f"{fn.__name__} accepts no f for n = {n}")


def build(agg, f: int = 1, n: int | None = None):
    """A callable ``agg(z, mask=None)`` for a registry name or a raw function, with ``f``
    passed when the rule takes it (clipped to the rule's valid range for ``n`` rows) and
    the test parameters of ``TEST_PARAMS``."""
    fn = base(agg)
    params = dict(lookup(TEST_PARAMS, fn, {}))
    if takes_f(fn):
        params["f"] = f if n is None else min(f, max_valid_f(fn, n))
    missing = [k for k, v in keyword_parameters(fn).items() if v is inspect.Parameter.empty and k not in params]
    assert not missing, (
        f"aggregator {agg!r} needs parameter(s) {missing}: add defaults for the conformance "
        "suite to TEST_PARAMS in tests/test_aggregator_conformance.py"
    )
    if isinstance(agg, str):
        return get_aggregator(agg, **params)
    return functools.partial(fn, **params)


def symmetries(agg):
    return lookup(SYMMETRIES, agg, DEFAULT_SYMMETRIES)


def breakdown(agg, n, f):
    rule = lookup(BREAKDOWN, agg, None)
    if rule is not None:
        return rule(n, f)
    return f if takes_f(agg) else (n - 1) // 2


def radius(agg, H, n, f, B, d):
    return lookup(RADIUS, agg, _radius_default)(H, n, f, B, d)


def abs_tol(agg) -> float:
    return lookup(ABS_TOL, agg, 0.0)


# The reusable property checks live in byzsim.testing (users run them through
# check_aggregator); the suite adds the per-rule tolerances and radii.


def check_scale_equivariance(agg, z, c):
    _testing.check_scale_equivariance(agg, z, c, atol=abs_tol(agg))


def check_bounded(agg, z, honest, n, f, B):
    H = z[honest]
    _testing.check_bounded(agg, z, honest, radius(agg, H, n, f, B, z.shape[-1]))


def geomed_kkt_residual(z, y, tol_on):
    """``‖Σ_{z_i ≠ y} (y − z_i)/‖y − z_i‖‖ − #{z_i = y}``: ≤ 0 at the geometric median."""
    dist = np.linalg.norm(z - y, axis=1)
    on = dist <= tol_on
    u = (y - z[~on]) / dist[~on, None]
    return np.linalg.norm(u.sum(0)) - on.sum()


def check_geomed_optimality(agg, z, tol_on=1e-7, slack=1e-5):
    y = agg(z)
    assert np.isfinite(y).all(), "non-finite geometric median"
    r = geomed_kkt_residual(z, y, tol_on)
    assert r <= slack, f"first-order optimality violated by {r:.3g}"


def reference_geomed(z, start, scale):
    """Independent reference: scipy BFGS on ``F(c + scale·u) − F(c)``, each term
    ``‖a‖ − ‖b‖`` in the cancellation-free form ``(a − b)·(a + b)/(‖a‖ + ‖b‖)``, so
    rows ~1e4 do not swamp the ~1e-3 honest scale."""
    zc = z - start  # exact enough: start is one of the scales of the honest rows

    def fun(u):
        y = scale * u
        a, b = zc - y, zc
        na, nb = np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1)
        diff = ((-y) * (a + b)).sum(1) / np.maximum(na + nb, 1e-300)
        grad = -(a / np.maximum(na, 1e-300)[:, None]).sum(0) * scale
        return diff.sum() / scale, grad / scale

    res = minimize(fun, np.zeros(z.shape[1]), jac=True, method="BFGS",
                   options=dict(gtol=1e-13, maxiter=10000))
    return start + scale * res.x


def mixed_scale(seed, h, b, d, offset):
    """Honest rows ~1e-3 around an offset, Byzantine rows ~1e4 (scale ratio 1e7)."""
    rng = np.random.default_rng(seed)
    center = offset * rng.normal(size=d)
    honest = center + 1e-3 * rng.normal(size=(h, d))
    z = np.concatenate([honest, 1e4 * rng.normal(size=(b, d))])
    perm = rng.permutation(h + b)
    return z[perm], honest, np.argsort(perm) < h


def check_geomed_mixed_scale(agg, z, honest_rows, rel=1e-6, atol=10 * 1e-8):
    """Within ``rel`` of the honest spread (~1e-3) of the scipy reference, plus ``atol``
    = 10 × the smoothing eps (a median on a row is only reached to ~eps)."""
    spread = np.median(np.linalg.norm(honest_rows - honest_rows.mean(0), axis=1))
    start = np.median(honest_rows, axis=0)
    ref = reference_geomed(z, start, spread)
    y = agg(z)
    err = np.linalg.norm(y - ref)
    assert err <= rel * spread + atol, f"{err / spread:.3g} of the honest spread from the reference"


# --------------------------------------------------------------------------------------
# 1. invariants of every registered aggregator
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", NAMES)
@PER_RULE
@given(seed=seeds, n=st.integers(5, 11), d=st.integers(1, 6),
       lead=st.lists(st.integers(1, 3), max_size=2).map(tuple))
def test_output_shape(name, seed, n, d, lead):
    check_shape(build(name, n=n), rows(seed, n, d, lead))


@pytest.mark.parametrize("name", NAMES)
@PER_RULE
@given(seed=seeds, n=st.integers(5, 11), d=st.integers(1, 6), data=st.data())
def test_permutation_invariance(name, seed, n, d, data):
    perm = np.array(data.draw(st.permutations(range(n))))
    scale = data.draw(st.sampled_from([1e-3, 1.0, 1e4]))
    check_permutation_invariance(build(name, n=n), rows(seed, n, d, scale=scale), perm)


@pytest.mark.parametrize("name", NAMES)
@PER_RULE
@given(seed=seeds, n=st.integers(5, 11), d=st.integers(1, 6),
       shift=st.sampled_from([1e-3, 1.0, 1e3]), scale=st.sampled_from([1e-2, 1.0, 1e2]))
def test_translation_equivariance(name, seed, n, d, shift, scale):
    t = shift * np.random.default_rng(seed ^ 1).normal(size=d)
    check_translation_equivariance(build(name, n=n), rows(seed, n, d, scale=scale), t)


@pytest.mark.parametrize("name", NAMES)
@PER_RULE
@given(seed=seeds, n=st.integers(5, 11), d=st.integers(1, 6),
       c=st.sampled_from([1e-3, 0.37, 2.5, 1e3]))
def test_positive_scale_equivariance(name, seed, n, d, c):
    """c·z for c > 0 (negative c: the ODD symmetry, per rule)."""
    check_scale_equivariance(build(name, n=n), rows(seed, n, d), c)


@pytest.mark.parametrize("name", NAMES)
@PER_RULE
@given(seed=seeds, n=st.integers(1, 11), d=st.integers(1, 6),
       scale=st.sampled_from([0.0, 1e-3, 1.0, 1e6]))
def test_identical_rows_return_that_row(name, seed, n, d, scale):
    if takes_f(name) and n < 3:  # Krum needs n ≥ f + 3 even for f = 0
        n = 3
    check_identical_rows(build(name, 1, n), scale * rows(seed, 1, d)[0], n)


@pytest.mark.parametrize("name", NAMES)
@settings(max_examples=max(8, settings().max_examples // 2))
@given(seed=seeds, n=st.integers(5, 9), d=st.integers(1, 5),
       lead=st.lists(st.integers(1, 3), min_size=1, max_size=2).map(tuple), masked=st.booleans())
def test_batched_equals_loop(name, seed, n, d, lead, masked):
    """Elements of very different scale and difficulty in one batch; with ``masked``, a
    different mask per element (at least 4 participants; rules clip f per element)."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=lead + (n, d)) * 10.0 ** rng.integers(-3, 4, size=lead + (1, 1))
    z += 10.0 ** rng.integers(0, 4, size=lead + (1, 1)) * rng.normal(size=lead + (1, d))
    mask = None
    if masked:
        keys = rng.random(lead + (n,))
        k = rng.integers(4, n + 1, size=lead)
        mask = np.argsort(np.argsort(keys, axis=-1), axis=-1) < k[..., None]
    check_batched_equals_loop(build(name, n=n), z, mask)


# --------------------------------------------------------------------------------------
# symmetries per rule (table SYMMETRIES), in both directions
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", NAMES)
@PER_RULE
@given(seed=seeds, n=st.integers(5, 11), d=st.integers(1, 6))
def test_claimed_symmetries(name, seed, n, d):
    agg, sym = build(name, n=n), symmetries(name)
    rng = np.random.default_rng(seed ^ 7)
    z = rows(seed, n, d)
    if ODD in sym:
        check_scale_equivariance(agg, z, -rng.uniform(0.1, 10.0))
    if ROTATION in sym:
        check_rotation_equivariance(agg, z, orthogonal(rng, d))
    if COORDINATEWISE in sym:
        a = rng.choice([-1.0, 1.0], size=d) * 10.0 ** rng.uniform(-2, 2, size=d)
        check_coordinatewise_affine(agg, z, rng.permutation(d), a, 10 * rng.normal(size=d))
    if MONOTONE in sym:
        check_monotone_maps(agg, z if n % 2 else z[:-1])


def _fails_somewhere(check, trials=20):
    for seed in range(trials):
        try:
            check(seed)
        except AssertionError:
            return True
    return False


@pytest.mark.parametrize(
    "name,symmetry",
    [(k, s) for k in NAMES for s in ALL_SYMMETRIES if s not in symmetries(k)],
)
def test_unclaimed_symmetries_really_fail(name, symmetry):
    """The table is exact: a symmetry a rule is not listed with fails on some input
    (so an entry cannot silently weaken the test), found among 20 fixed seeds."""
    agg = build(name, n=7)

    def check(seed):
        rng = np.random.default_rng(seed)
        d = 3
        z = rng.normal(size=(7, d)) * np.array([1.0, 5.0, 0.2])
        if symmetry == ROTATION:
            check_rotation_equivariance(agg, z, orthogonal(rng, d))
        elif symmetry == COORDINATEWISE:
            check_coordinatewise_affine(agg, z, np.arange(d), np.array([10.0, 0.1, 1.0]), np.zeros(d))
        elif symmetry == ODD:
            check_scale_equivariance(agg, z, -1.0)
        else:
            check_monotone_maps(agg, z)

    assert _fails_somewhere(check), f"{name} has {symmetry}: add it to SYMMETRIES"


# --------------------------------------------------------------------------------------
# bounded output below the breakdown point
# --------------------------------------------------------------------------------------
@st.composite
def attacked_rows(draw):
    """``(seed, n, d, f, moved (B,), far, shared)``: which rows, how far, one point or many."""
    n = draw(st.integers(5, 13))
    d = draw(st.integers(1, 6))
    f = draw(st.integers(1, (n - 3) // 2))  # Krum's robust regime n ≥ 2f + 3
    seed = draw(seeds)
    perm = draw(st.permutations(range(n)))
    far = draw(st.floats(0.0, 12.0))  # log10 of the distance in honest-spread units
    shared = draw(st.booleans())  # all moved rows at one point (worst case) or spread
    return seed, n, d, f, perm, far, shared


@pytest.mark.parametrize("name", NAMES)
@given(case=attacked_rows(), data=st.data())
def test_bounded_output_below_breakdown(name, case, data):
    seed, n, d, f, perm, far, shared = case
    if lookup({k: True for k in ONE_POINT_ADVERSARY}, name, False):
        shared = True
    if takes_f(name):
        f = min(f, max_valid_f(base(name), n))
    Bmax = breakdown(name, n, f)
    B = data.draw(st.integers(0, max(Bmax, 0)), label="B")
    if Bmax < 0:
        pytest.skip("no robust regime")
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, d))
    moved = np.array(perm[:B], dtype=int)
    honest = np.ones(n, bool)
    honest[moved] = False
    direction = rng.normal(size=(1 if shared else B, d))
    direction /= np.linalg.norm(direction, axis=1, keepdims=True)
    z[moved] = z[honest].mean(0) + 10.0**far * direction * (1 + rng.random((B, 1)) * (not shared))
    check_bounded(build(name, f, n), z, honest, n, f, B)


#: Rules whose BREAKDOWN entry is tight: one more row at a far point drags them away.
#: (Krum is not: its guarantee is for B ≤ f, but a far cluster smaller than its
#: n − f − 2 neighbourhood still scores worse than the honest rows.)
TIGHT_BREAKDOWN = {mean, geometric_median, coordinate_median, trimmed_mean, multi_krum}


@pytest.mark.parametrize("name", [k for k in NAMES if AGGREGATORS[k] in TIGHT_BREAKDOWN])
def test_one_row_beyond_breakdown_escapes(name):
    """The breakdown table is not too low: one more moved row than the rule tolerates
    (all moved rows at one far point) drags the output out of the radius."""
    n, f = 9, 2
    B = breakdown(name, n, f) + 1
    z = np.random.default_rng(0).normal(size=(n, 3))
    honest = np.ones(n, bool)
    honest[:B] = False
    z[:B] = 1e9
    with pytest.raises(AssertionError):
        check_bounded(build(name, f), z, honest, n, f, B)


# --------------------------------------------------------------------------------------
# 2. geometric median: optimality, scipy, mixed scale
# --------------------------------------------------------------------------------------
GM_TIGHT = functools.partial(geometric_median, tol=1e-12, max_iter=5000)


@settings(max_examples=max(10, settings().max_examples * 2 // 3))
@given(seed=seeds, h=st.integers(3, 7), b=st.integers(0, 6), d=st.integers(1, 5),
       offset=st.sampled_from([0.0, 1.0, 100.0, 1e4]), masked=st.booleans())
def test_geomed_optimality_and_scipy_reference_mixed_scale(seed, h, b, d, offset, masked):
    """Honest rows ~1e-3 around an offset up to 1e4, Byzantine rows ~1e4 (b < h):
    the output satisfies the first-order condition and (d ≥ 2, where the median is
    unique) is within 1e-6 of the honest spread of an independent scipy minimisation.
    With ``masked``, extra absent rows hold garbage and only the participating rows
    count."""
    b = min(b, h - 1)
    z, honest, _ = mixed_scale(seed, h, b, d, offset)
    if masked:
        junk = np.full((3, d), -1e12)
        mask = np.r_[np.ones(len(z), bool), np.zeros(3, bool)]
        agg = lambda x: GM_TIGHT(np.concatenate([x, junk]), mask)  # noqa: E731
    else:
        agg = GM_TIGHT
    spread = np.median(np.linalg.norm(honest - honest.mean(0), axis=1))
    check_geomed_optimality(agg, z, tol_on=1e-9 * spread + 1e-7)
    if d >= 2:  # in 1-D with an even count the median is an interval
        check_geomed_mixed_scale(agg, z, honest)


@settings(max_examples=max(10, settings().max_examples * 2 // 3))
@given(seed=seeds, n=st.integers(3, 9), d=st.integers(1, 5), heavy=st.integers(0, 4))
def test_geomed_optimality_with_heavy_points(seed, n, d, heavy):
    """``heavy`` copies of one row (at or above n/2 copies the median sits on it)."""
    z = rows(seed, n, d)
    z[:heavy] = z[0]
    check_geomed_optimality(GM_TIGHT, z)


def test_geomed_scipy_objective_with_outliers():
    """Objective within 1e-9 (relative) of a scipy Nelder–Mead minimum started at the
    honest median, with a few rows 1e3 away."""
    for seed in range(5):
        rng = np.random.default_rng(seed)
        z = rng.normal(size=(9, 3))
        z[:3] += 1e3 * rng.normal(size=(3, 3))
        F = lambda y: np.linalg.norm(z - y, axis=1).sum()  # noqa: E731
        ref = minimize(F, np.median(z, 0), method="Nelder-Mead",
                       options=dict(xatol=1e-11, fatol=1e-13, maxiter=40000, maxfev=80000))
        best = min(ref.fun, min(F(r) for r in z))
        assert F(geometric_median(z, tol=1e-11, max_iter=2000)) <= best * (1 + 1e-11)
        assert F(geometric_median(z)) <= best * (1 + 1e-6)  # the defaults


# --------------------------------------------------------------------------------------
# the checks catch the broken variants
# --------------------------------------------------------------------------------------
def test_bounded_output_catches_a_median_that_averages():
    z = np.random.default_rng(0).normal(size=(9, 3))
    honest = np.ones(9, bool)
    honest[:2] = False
    z[:2] = 1e6
    check_bounded(build("coordinate_median"), z, honest, 9, 2, 2)
    with pytest.raises(AssertionError):
        check_bounded(build(bv.mean_called_median), z, honest, 9, 2, 2)


def test_permutation_and_bound_catch_a_trimmed_mean_that_forgets_to_sort():
    z = np.random.default_rng(1).normal(size=(9, 3))
    broken = build(bv.trimmed_mean_unsorted, 2)
    with pytest.raises(AssertionError):
        check_permutation_invariance(broken, z, np.random.default_rng(2).permutation(9))
    honest = np.ones(9, bool)
    honest[4] = False
    z[4] = 1e6  # a middle row: the unsorted trim keeps it
    check_bounded(build("trimmed_mean", 2), z, honest, 9, 2, 1)
    with pytest.raises(AssertionError):
        check_bounded(broken, z, honest, 9, 2, 1)


def test_batched_check_catches_axis_and_global_stop_bugs():
    z = rows(3, 7, 4, lead=(2, 3))
    z[0, 1] *= 1e3
    check_batched_equals_loop(build(bv.median_axis0), z[0, 0])  # 2-D: no batch, no bug
    with pytest.raises(AssertionError):
        check_batched_equals_loop(build(bv.median_axis0), z)
    with pytest.raises(AssertionError):
        check_batched_equals_loop(build(bv.weiszfeld_global_stop), z)
    check_batched_equals_loop(build("geometric_median"), z)
    check_batched_equals_loop(geometric_median, z)  # also with the defaults


def test_translation_check_catches_clipping_at_the_origin():
    z = rows(4, 7, 3, scale=0.1)
    t = np.array([5.0, -2.0, 1.0])
    with pytest.raises(AssertionError):
        check_translation_equivariance(build(bv.clipped_mean_at_origin), z, t)


def test_rotation_check_catches_an_l1_weiszfeld():
    rng = np.random.default_rng(5)
    z = rng.normal(size=(7, 3))
    with pytest.raises(AssertionError):
        check_rotation_equivariance(build(bv.coordinatewise_geomed), z, orthogonal(rng, 3))


def test_identity_and_optimality_catch_weiszfeld_without_smoothing():
    row = np.array([1.0, -2.0, 3.0])
    with np.errstate(all="ignore"):
        with pytest.raises(AssertionError):
            check_identical_rows(build(bv.weiszfeld_unsmoothed), row, 5)
        z = np.array([[-1.0, 0.0], [0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, -1.0]])  # mean = a row
        with pytest.raises(AssertionError):
            check_geomed_optimality(bv.weiszfeld_unsmoothed, z)
    check_identical_rows(build("geometric_median"), row, 5)
    check_geomed_optimality(GM_TIGHT, z)


def test_optimality_catches_three_weiszfeld_iterations():
    z = rows(6, 9, 3)
    z[:3] += 1e3
    check_geomed_optimality(GM_TIGHT, z)
    with pytest.raises(AssertionError):
        check_geomed_optimality(bv.weiszfeld_three_iters, z)


def test_mixed_scale_check_catches_an_uncentered_gram_matrix():
    z, honest, _ = mixed_scale(0, 5, 2, 4, 1e4)
    check_geomed_mixed_scale(GM_TIGHT, z, honest)
    with pytest.raises(AssertionError):
        check_geomed_mixed_scale(bv.weiszfeld_uncentered_gram, z, honest)


# --------------------------------------------------------------------------------------
# library bugs, kept visible (strict xfail while open); fixed ones stay as regressions
# --------------------------------------------------------------------------------------
def test_geomed_finite_with_huge_byzantine_rows():
    """Fixed bug: the Gram matrix overflowed for rows of norm >~1e154 (or inf): 2 of 9
    rows at 1e200 made the output NaN (huge rows are now scaled before the Gram matrix)."""
    z = np.random.default_rng(0).normal(size=(9, 3))
    z[:2] = 1e200
    honest = np.ones(9, bool)
    honest[:2] = False
    with np.errstate(all="ignore"):
        check_bounded(build("geometric_median"), z, honest, 9, 2, 2)


@pytest.mark.parametrize("name", ["krum", "multi_krum"])
def test_krum_finite_with_an_infinite_byzantine_row(name):
    """Fixed bug: with an infinite row the Gram distances were NaN and argmin selected
    the NaN-scored (Byzantine) row; non-finite rows now score +inf and are never picked."""
    z = np.random.default_rng(0).normal(size=(9, 3))
    z[:2] = np.inf
    with np.errstate(all="ignore"):
        out = build(name, 2)(z)
    assert np.isfinite(out).all()


def test_geomed_defaults_bounded_for_far_byzantine_rows():
    """Fixed limitation: from the mean (the old start, ``init="mean"``) Weiszfeld sheds far
    outliers only at rate B/R per update, so with the defaults (max_iter=80) rows ~1e12
    away with B/R = 3/4 left it ~9x outside Property 1's radius; the default start (the
    medoid step) is bounded from the first update."""
    rng = np.random.default_rng(0)
    n, B = 7, 3
    z = rng.normal(size=(n, 3))
    z[:B] = 1e12 * np.array([1.0, 0.5, 0.2])
    honest = np.ones(n, bool)
    honest[:B] = False
    check_bounded(geometric_median, z, honest, n, 0, B)
