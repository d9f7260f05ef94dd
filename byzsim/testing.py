"""Conformance checks for components: run them on your own aggregator or attack.

:func:`check_aggregator` and :func:`check_attack` run the properties every registered
component satisfies (the test suite applies the same ``check_*`` functions to every
entry of the registries) and raise ``AssertionError`` naming the property that fails.

>>> import numpy as np
>>> def my_median(z, mask=None):       # coordinate median, all rows (no mask support)
...     return np.median(np.asarray(z, float), axis=-2)
>>> check_aggregator(my_median)  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
AssertionError: aggregator 'my_median': masks: absent rows must have no influence ...
>>> from byzsim.aggregators import coordinate_median
>>> check_aggregator(coordinate_median, tolerates=3)

The single ``check_*`` functions take a callable ``agg(z, mask=None)`` with its
parameters bound and raise ``AssertionError`` with the measured discrepancy.
"""

from __future__ import annotations

import contextlib
import functools
from typing import Any, Callable, Iterator, Sequence

import numpy as np

__all__ = [
    "check_aggregator",
    "check_attack",
    "check_batched_equals_loop",
    "check_bounded",
    "check_coordinatewise_affine",
    "check_identical_rows",
    "check_masks",
    "check_monotone_maps",
    "check_permutation_invariance",
    "check_purity",
    "check_replica_params",
    "check_rotation_equivariance",
    "check_scale_equivariance",
    "check_shape",
    "check_translation_equivariance",
    "close",
    "default_radius",
    "orthogonal",
    "rows",
]


# --------------------------------------------------------------------------------------
# helpers


def close(a: Any, b: Any, scale: float = 1.0, rtol: float = 1e-9, atol: float = 0.0) -> None:
    """Assert ``|a − b| <= rtol (|b| + scale) + atol`` elementwise (and equal shapes)."""
    a, b = np.asarray(a), np.asarray(b)
    assert a.shape == b.shape, f"shape {a.shape} != {b.shape}"
    assert np.all(np.abs(a - b) <= rtol * (np.abs(b) + scale) + atol), (
        f"max abs difference {np.max(np.abs(a - b)):.3g} (scale {scale:.3g})"
    )


def rows(seed: int, n: int, d: int, lead: tuple = (), scale: float = 1.0, offset: float = 0.0) -> np.ndarray:
    """Continuous random rows (no ties), ``offset·u + scale·N(0, I)``, shape ``lead + (n, d)``."""
    rng = np.random.default_rng(seed)
    return offset * rng.normal(size=d) + scale * rng.normal(size=lead + (n, d))


def orthogonal(rng: np.random.Generator, d: int) -> np.ndarray:
    """A random orthogonal ``(d, d)`` matrix (Haar)."""
    q, r = np.linalg.qr(rng.normal(size=(d, d)))
    return q * np.sign(np.diag(r))


def default_radius(H: np.ndarray, n: int, d: int) -> float:
    """``10·√(n d)·diam(H)`` for the honest rows ``H (h, d)``: the default bound of a
    robust output's distance to the honest mean (independent of the moved rows)."""
    diam = float(np.max(np.linalg.norm(H[:, None] - H[None], axis=-1))) if len(H) > 1 else 0.0
    return 10.0 * np.sqrt(n * d) * diam


# --------------------------------------------------------------------------------------
# aggregator properties: agg(z, mask=None) -> (..., d), parameters bound


def check_shape(agg: Callable, z: np.ndarray) -> None:
    """Output shape ``(..., d)`` for input ``(..., n, d)``, finite for finite input."""
    out = agg(z)
    assert out.shape == z.shape[:-2] + z.shape[-1:], f"shape {out.shape} for input {z.shape}"
    assert np.isfinite(out).all(), "non-finite output for finite input"


def check_purity(agg: Callable, z: np.ndarray) -> None:
    """``z`` is not modified and the output does not alias it."""
    before = z.copy()
    out = agg(z)
    assert np.array_equal(z, before), "the input was modified"
    assert not np.shares_memory(out, z), "the output aliases the input"


def check_permutation_invariance(agg: Callable, z: np.ndarray, perm: np.ndarray) -> None:
    """``agg(z[perm]) = agg(z)``."""
    close(agg(z[..., perm, :]), agg(z), scale=np.abs(z).max())


def check_translation_equivariance(agg: Callable, z: np.ndarray, t: np.ndarray) -> None:
    """``agg(z + t) = agg(z) + t``."""
    s = np.abs(z).max() + np.abs(t).max()
    close(agg(z + t), agg(z) + t, scale=s)


def check_scale_equivariance(agg: Callable, z: np.ndarray, c: float, atol: float = 0.0) -> None:
    """``agg(c z) = c agg(z)`` (``atol`` scaled by ``1 + |c|``: iterative rules)."""
    close(agg(c * z), c * agg(z), scale=abs(c) * np.abs(z).max(), atol=atol * (1 + abs(c)))


def check_identical_rows(agg: Callable, row: np.ndarray, n: int) -> None:
    """``n`` copies of ``row (d,)`` aggregate to ``row``."""
    out = agg(np.tile(row, (n, 1)))
    close(out, row, scale=np.abs(row).max() + 1e-300, rtol=1e-12)


def check_batched_equals_loop(agg: Callable, z: np.ndarray, mask: np.ndarray | None = None) -> None:
    """The call on ``z (..., n, d)`` (and ``mask (..., n)``) equals the loop over the
    leading axes."""
    out = agg(z) if mask is None else agg(z, mask)
    assert out.shape == z.shape[:-2] + z.shape[-1:], f"batched shape {out.shape} for {z.shape}"
    for ix in np.ndindex(*z.shape[:-2]):
        ref = agg(z[ix]) if mask is None else agg(z[ix], mask[ix])
        close(out[ix], ref, scale=np.abs(z[ix]).max())


def check_masks(agg: Callable, z: np.ndarray, mask: np.ndarray) -> None:
    """Absent rows (``mask`` False) have no influence whatever they hold (finite, huge or
    inf/NaN), and an element with no participating row returns zeros."""
    ref = agg(z, mask)
    for fill in (1e6, np.inf, np.nan):
        w = np.where(mask[..., None], z, fill)
        close(agg(w, mask), ref, scale=np.abs(z).max())
    none = agg(z, np.zeros(z.shape[:-1], bool))
    assert np.array_equal(none, np.zeros(z.shape[:-2] + z.shape[-1:])), (
        f"an element without participating rows gives {none!r}, not zeros"
    )


def check_rotation_equivariance(agg: Callable, z: np.ndarray, Q: np.ndarray) -> None:
    """``agg(z Q) = agg(z) Q`` for an orthogonal ``Q``."""
    close(agg(z @ Q), agg(z) @ Q, scale=np.abs(z).max())


def check_coordinatewise_affine(agg: Callable, z: np.ndarray, perm: np.ndarray, a: np.ndarray,
                                b: np.ndarray) -> None:
    """agg(σ(z)) = σ(agg(z)) for σ(x) = (a ⊙ x + b)[perm] (a_j ≠ 0, any sign)."""
    s = np.abs(z).max() * np.abs(a).max() + np.abs(b).max()
    close(agg((a * z + b)[..., perm]), (a * agg(z) + b)[..., perm], scale=s)


def _monotone_map(x: np.ndarray, k: np.ndarray) -> np.ndarray:
    """Strictly increasing, clearly nonlinear maps, different per coordinate."""
    return np.where(k % 3 == 0, x**3 + x, np.where(k % 3 == 1, np.sinh(x), np.arctan(x)))


def check_monotone_maps(agg: Callable, z: np.ndarray) -> None:
    """Commutes with per-coordinate strictly increasing maps (order statistics, odd n)."""
    k = np.arange(z.shape[-1])
    m = _monotone_map(z, k)
    close(agg(m), _monotone_map(agg(z), k), scale=np.abs(m).max())


def check_bounded(agg: Callable, z: np.ndarray, honest: np.ndarray, radius: float) -> None:
    """The output of ``z (n, d)`` lies within ``radius`` of the mean of the ``honest``
    rows, however far the other rows are."""
    out = agg(z)
    err = np.linalg.norm(out - z[honest].mean(0))
    B = int((~honest).sum())
    assert np.isfinite(err) and err <= radius * (1 + 1e-7) + 1e-12, (
        f"output {err:.3g} from the honest mean, allowed {radius:.3g} "
        f"({B} of {len(z)} rows moved, farthest at {np.abs(z).max():.3g})"
    )


def check_replica_params(call: Callable, names: Sequence[str], v: np.ndarray,
                         values: Sequence[float] = (0.3, 2.5, 1.7)) -> None:
    """Per-replica parameters: ``call(v, params, rng)`` on messages ``v (S, n, d)`` with
    the parameters ``names`` given as ``(S, 1, 1)`` arrays gives, for every replica ``s``,
    bit for bit what ``call(v[s], {numbers of s}, rng)`` gives alone (one ``rng`` seeded
    alike, consumed replica after replica: the same draws in the same order).

    ``values`` (length ``S``) are the first parameter's numbers; the ``i``-th parameter
    gets ``values · (1 + i)``.
    """
    S = v.shape[0]
    base = np.asarray(values, dtype=np.float64)
    assert base.shape == (S,), f"need {S} values, one per replica, got {base.shape}"
    arrays = {k: (base * (1 + i)).reshape(S, 1, 1) for i, k in enumerate(names)}
    both = np.asarray(call(v, arrays, np.random.default_rng(5)))
    rng = np.random.default_rng(5)
    for s in range(S):
        alone = np.asarray(call(v[s], {k: float(a[s, 0, 0]) for k, a in arrays.items()}, rng))
        assert both[s].dtype == alone.dtype, f"replica {s}: dtype {both[s].dtype} != {alone.dtype} alone"
        assert np.array_equal(both[s], alone, equal_nan=True), (
            f"replica {s} ({', '.join(f'{k}={float(a[s, 0, 0]):g}' for k, a in arrays.items())}) "
            f"differs from the call alone by up to {np.nanmax(np.abs(both[s] - alone)):.3g}")


def _check_declared(who: str, call: Callable, replica_params: Sequence[str], n: int, d: int) -> None:
    """:func:`check_replica_params` in float64 and float32 on ``(3, n, d)`` messages of
    three scales (so that radii bite differently)."""
    if not replica_params:
        return
    for dtype in (np.float64, np.float32):
        v = rows(1, n, d, lead=(3,)) * np.array([1.0, 30.0, 0.1]).reshape(3, 1, 1)
        with _property(who, f"per-replica parameters {tuple(replica_params)} ({np.dtype(dtype).name})",
                       " ((S, 1, 1) arrays must give each replica what its numbers give alone;"
                       " cast them to the messages' dtype, as a Python number is in float32)"):
            check_replica_params(call, replica_params, v.astype(dtype))


# --------------------------------------------------------------------------------------
# the suites


@contextlib.contextmanager
def _property(who: str, prop: str, hint: str = "") -> Iterator[None]:
    try:
        yield
    except AssertionError as e:
        raise AssertionError(f"{who}: {prop}{hint}: {e}") from None
    except Exception as e:  # a crash on valid input fails the property too
        raise AssertionError(f"{who}: {prop}{hint}: raised {type(e).__name__}: {e}") from e


def _name(fn: Callable) -> str:
    inner = fn.func if isinstance(fn, functools.partial) else fn
    return getattr(inner, "__name__", type(inner).__name__)


def check_aggregator(fn: Callable, *, n: int = 9, d: int = 3, tolerates: int | None = None,
                     translation: bool = True, scale: bool = True, atol: float = 0.0,
                     seeds: int = 5, replica_params: Sequence[str] = (), **params: Any) -> None:
    """Run the conformance properties of an aggregator ``fn(z, mask=None, **params)``.

    Properties (each failure names it): output shape ``(..., d)`` and finite; purity
    (input untouched, output not aliasing it); permutation invariance; batch axes
    (batched call = loop, also with a mask per element); masks (absent rows have no
    influence whatever they hold, no participant gives zeros); identical rows return
    that row; translation equivariance (``translation``); positive-scale equivariance
    (``scale``); bounded output when ``tolerates`` rows are moved arbitrarily far;
    per-replica parameters (``replica_params``, :func:`check_replica_params`).

    Parameters
    ----------
    fn : callable ``fn(z (..., n, d), mask=None, **params) -> (..., d)``
        The aggregator (see :class:`byzsim.protocols.Aggregator`).
    n, d : int
        Rows and dimension of the test inputs.
    tolerates : int, optional
        Rows the rule must withstand at any distance (output within
        :func:`default_radius` of the honest mean).  Default: ``params["f"]`` if given,
        else no robustness check (e.g. the mean).
    translation, scale : bool
        Whether the rule is translation / positive-scale equivariant (most are; e.g.
        clipping at a fixed radius is not).
    atol : float
        Absolute slack of iterative rules (scaled with the data).
    seeds : int
        Random examples per property.
    replica_params : sequence of str
        The parameters the aggregator declares per-replica (registered with
        ``replica_params=...``): given as ``(S, 1, 1)`` arrays they must give each
        replica of ``(S, n, d)`` messages what its numbers give alone.
    **params
        Bound to ``fn``.

    Raises
    ------
    AssertionError
        Naming the aggregator and the property, with the measured discrepancy.
    """
    agg = functools.partial(fn, **params) if params else fn
    who = f"aggregator {_name(fn)!r}"
    if tolerates is None:
        tolerates = int(params["f"]) if params.get("f") is not None else 0
    for seed in range(seeds):
        rng = np.random.default_rng(seed)
        z = rows(seed, n, d, scale=10.0 ** rng.integers(-2, 3))
        with _property(who, "purity"):
            check_purity(agg, z)
        with _property(who, "shape", " (input (..., n, d) must give (..., d), finite)"):
            check_shape(agg, z)
            check_shape(agg, rows(seed, n, d, lead=(2, 3)))
        with _property(who, "permutation invariance", " (agg(z[perm]) must equal agg(z))"):
            check_permutation_invariance(agg, z, rng.permutation(n))
        with _property(who, "batch axes", " (a call on (B, n, d) must equal the loop over B)"):
            zb = rows(seed, n, d, lead=(3,)) * 10.0 ** rng.integers(-2, 3, size=(3, 1, 1))
            check_batched_equals_loop(agg, zb)
            mask = rng.random((3, n)) < 0.8
            mask[:, : max(n - 2, 1)] |= ~mask.any(-1, keepdims=True)  # keep participants
            check_batched_equals_loop(agg, zb, mask)
        with _property(who, "masks", ": absent rows must have no influence and no participant gives zeros"):
            mask = np.ones(n, bool)
            mask[rng.choice(n, size=min(2, n - 1), replace=False)] = False
            check_masks(agg, z, mask)
        with _property(who, "identical rows", " (n copies of a row must give that row)"):
            check_identical_rows(agg, z[0], n)
        if translation:
            with _property(who, "translation equivariance", " (agg(z + t) must equal agg(z) + t;"
                           " pass translation=False if the rule is not meant to be)"):
                shift = 10.0 ** (-3, 6, 0, 3, -1)[seed % 5]
                check_translation_equivariance(agg, z, shift * rng.normal(size=d))
        if scale:
            with _property(who, "scale equivariance", " (agg(c z) must equal c agg(z) for c > 0;"
                           " pass scale=False if the rule is not meant to be)"):
                check_scale_equivariance(agg, z, float(rng.choice([1e-3, 0.37, 2.5, 1e3])), atol)
        if tolerates:
            with _property(who, f"f-tolerance ({tolerates} far rows)",
                           " (the output must stay near the honest rows)"):
                zt = rng.normal(size=(n, d))
                honest = np.ones(n, bool)
                moved = rng.choice(n, size=tolerates, replace=False)
                honest[moved] = False
                direction = rng.normal(size=d)
                zt[moved] = 10.0 ** rng.integers(3, 13) * direction / np.linalg.norm(direction)
                check_bounded(agg, zt, honest, default_radius(zt[honest], n, d))
    _check_declared(who, lambda x, p, rng: fn(x, None, **{**params, **p}), replica_params, n, d)


def check_attack(fn: Callable, *, n: int = 7, d: int = 3, q: int = 2, finite: bool = True,
                 seeds: int = 3, replica_params: Sequence[str] = (), **params: Any) -> None:
    """Run the conformance properties of an attack ``fn(v, byzantine, rng, **params)``.

    Properties (each failure names it): output shape ``(..., q, d)`` for inputs with and
    without batch axes; ``v`` is not modified and the output does not alias it;
    determinism (the same ``rng`` seed gives the same messages: all randomness comes
    from ``rng``); finite messages for finite input (``finite``); per-replica parameters
    (``replica_params``, :func:`check_replica_params`).

    Parameters
    ----------
    fn : callable ``fn(v (..., n, d), byzantine (n,) bool, rng, **params) -> (..., q, d)``
        The attack (see :class:`byzsim.protocols.Attack`).
    n, d, q : int
        Clients, dimension and Byzantine clients of the test inputs.
    finite : bool
        Whether finite input must give finite messages (False for e.g. ``inf``).
    seeds : int
        Random examples per property.
    replica_params : sequence of str
        The parameters the attack declares per-replica (see :func:`check_aggregator`).
    **params
        Bound to ``fn``.

    Raises
    ------
    AssertionError
        Naming the attack and the property.
    """
    att = functools.partial(fn, **params) if params else fn
    who = f"attack {_name(fn)!r}"
    for seed in range(seeds):
        rng = np.random.default_rng(seed)
        byz = np.zeros(n, bool)
        byz[rng.choice(n, size=q, replace=False)] = True
        for lead in ((), (2, 3)):
            v = rows(seed, n, d, lead=lead)
            before = v.copy()
            out = np.asarray(att(v, byz, np.random.default_rng(seed)))
            with _property(who, "shape", f" (input {v.shape} must give {lead + (q, d)})"):
                assert out.shape == lead + (q, d), f"got {out.shape}"
            with _property(who, "purity"):
                assert np.array_equal(v, before), "the honest messages v were modified"
                assert not np.shares_memory(out, v), "the output aliases v"
            with _property(who, "determinism", " (all randomness must come from rng)"):
                again = np.asarray(att(v, byz, np.random.default_rng(seed)))
                assert np.array_equal(out, again, equal_nan=True), "two calls with the same rng seed differ"
            if finite:
                with _property(who, "finite messages", " (pass finite=False if intended)"):
                    assert np.isfinite(out).all(), "non-finite messages for finite input"
    byz = np.zeros(n, bool)
    byz[:q] = True
    _check_declared(who, lambda x, p, rng: fn(x, byz, rng, **{**params, **p}), replica_params, n, d)
