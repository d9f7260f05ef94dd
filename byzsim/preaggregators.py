"""Pre-aggregators: transforms of the message array applied before a robust aggregator.

Contract
--------
A pre-aggregator is a pure function (given its ``rng``)

    pre(z, mask, rng, **params) -> (z', mask')

``z`` : array_like, shape ``(..., n, d)``
    Messages (any leading batch axes), never modified.
``mask`` : None or bool array ``(n,)`` / ``(..., n)``
    Participating rows, as for :mod:`byzsim.aggregators` (``None``: all).
``rng`` : ``np.random.Generator``
    The run's generator; only the random pre-aggregators (``bucketing``, ``resample``,
    ``signguard``) draw from it.  One draw is shared by all leading batch axes (so the
    candidates an optimizing attack evaluates in one batched call see the same draw).
returns ``(z', mask')``
    ``z'`` of shape ``(..., n', d)`` (``n' = n`` except for ``bucketing``: ``⌈n/s⌉``),
    ``mask'`` ``None`` (all rows of ``z'`` count) or bool ``(..., n')``.

:func:`compose` chains pre-aggregators with an aggregator into the gradient family's
``aggregate(v, mask, rng) -> (..., d)``, a :class:`byzsim.pipeline.Pipeline` (the type
:func:`byzsim.resampling.resampled` returns too), and :func:`build_aggregate` does it from
config-style specs, choosing every ``f`` that is not given: the number of Byzantine
clients, propagated through the chain (``resample`` with ``s`` makes it ``s·f``;
``bucketing`` with ``s`` gives ``⌈n/s⌉`` rows of which at most ``f`` are contaminated)
and capped by each rule's ``max_f(n)``.

Registered: ``nnm``, ``bucketing``, ``clipping`` (static), ``arc``, ``resample``
(paper B's s-replacement resampling), ``signguard``.  Rows holding inf/NaN are never
mixed into other rows: a row or bucket that averages a non-finite row is itself
non-finite (clipping turns such a row into NaN), so the aggregator sees it as an outlier.

Bucketing vs. s-replacement resampling (:mod:`byzsim.resampling`): ``bucketing``
(Karimireddy, He & Jaggi, 2022) permutes the ``n`` messages once and averages
consecutive groups of ``s`` — every message is used **once**, there are ``⌈n/s⌉``
outputs and at most ``q`` of them (one per Byzantine message) are contaminated.
``resample`` (paper B) uses every message exactly ``s`` times over ``n`` outputs of ``s``,
at most ``s·q`` of which are contaminated (the same contaminated fraction ``s·q/n``),
with the exact variance of Lemma 3.

Adding a pre-aggregator::

    @PREAGGREGATORS.register("my_pre", chain=lambda n, f, params: (n, f))
    def my_pre(z, mask, rng, *, p=1.0): ...

``chain`` maps the rows and contaminated rows at the input to those after the step
(required); a step with an ``f`` parameter also declares ``max_f``.  The contract is
:class:`byzsim.protocols.PreAggregator`.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

from .aggregators import AGGREGATORS, get_aggregator
from .aggregators._base import _check_int, _flatten, _majority_max_f, _per_element, _prepare, _resolve_f, _vecdot
from .aggregators._gram import _dists, _robust_gram
from .aggregators._order import _masked_median_1d
from .registry import REPLICA_PARAMS, STATEFUL, Meta, Range, Registry, keyword_parameters, optional_callable
from .pipeline import Pipeline
from .resampling import resample as _resample
from .resampling import resample_indices, resampled

__all__ = [
    "PREAGGREGATORS",
    "arc",
    "bucketing",
    "build_aggregate",
    "clipping",
    "compose",
    "get_preaggregator",
    "nnm",
    "normalize_preaggregators",
    "resample",
    "signguard",
]

def _check_chain(v: Any) -> str | None:
    return None if callable(v) else "a callable (n, f, params) -> (n', f')"


#: The pre-aggregators.  Declared at registration: ``chain`` (required), the map
#: ``(n, f, params) -> (n', f')`` from the rows and contaminated rows at the input to
#: those at the output; ``max_f`` (``n -> int``; required when there is an ``f``
#: parameter), the largest ``f`` tolerated with ``n`` rows.
PREAGGREGATORS: Registry = Registry("pre-aggregator", schema={
    "chain": Meta("(n, f, params) -> (n', f'): rows and contaminated rows after the step",
                  check=_check_chain),
    "max_f": Meta("n -> the largest f the step tolerates with n rows", default=None,
                  check=optional_callable, required_if=lambda fn: "f" in keyword_parameters(fn)),
    "stateful": STATEFUL,
    "replica_params": REPLICA_PARAMS,
})


def get_preaggregator(name: str, **params: Any) -> Callable:
    """The pre-aggregator ``name`` with its keyword parameters bound (validated):
    a callable ``pre(z, mask, rng) -> (z', mask')``."""
    bound = PREAGGREGATORS.bind(name, params)
    if params.get("f") is not None:
        _check_int("f", params["f"], name)
    return bound


def _identity_chain(n: int, f: int, params: Mapping) -> tuple[int, int]:
    return n, f


def _out(z2: np.ndarray, lead: tuple, mask_out: np.ndarray | None, dtype) -> tuple:
    z2 = z2.astype(dtype, copy=False)
    zo = z2.reshape(lead + z2.shape[-2:])
    if mask_out is not None:
        mask_out = mask_out.reshape(lead + mask_out.shape[-1:])
    return zo, mask_out


def _mix(W: np.ndarray, z2: np.ndarray) -> np.ndarray:
    """``W @ z`` (``W (B, n', n)``, ``z (B, n, d)``) where an output row that gives weight
    to a non-finite input row is that (non-finite) weighted mean, and zero weights never
    turn inf into NaN elsewhere."""
    finite = np.isfinite(z2).all(-1)
    if finite.all():
        return W @ z2
    out = W @ np.where(finite[:, :, None], z2, 0.0)
    dirty = ((W != 0) & ~finite[:, None, :]).any(-1)  # (B, n')
    if dirty.any():
        b, r = np.nonzero(dirty)
        with np.errstate(invalid="ignore", over="ignore"):
            w = W[b, r]  # (k, n)
            exact = np.where((w != 0)[:, :, None], w[:, :, None] * z2[b], 0.0).sum(1)
        out[b, r] = exact
    return out


# --------------------------------------------------------------------------------------
# NNM


@PREAGGREGATORS.register("nnm", chain=_identity_chain, max_f=_majority_max_f)
def nnm(z: Any, mask: Any, rng: Any, *, f: int | None = None) -> tuple:
    """Nearest-neighbour mixing (Allouah et al., 2023): replace every row by the mean of
    its ``m_p − f`` nearest participating rows (itself included).

    .. math:: z'_i = \\frac{1}{m_p - f} \\sum_{j \\in N_i} z_j

    with :math:`N_i` the ``m_p − f`` participating rows nearest to :math:`z_i` (ties to
    the lowest index).  Distances come from one anchor-centered Gram matrix; the mixing
    is one ``(n × n) @ (n × d)`` product.  Absent rows stay absent (``mask' = mask``,
    their rows are 0).

    Parameters
    ----------
    z, mask, rng
        See the module contract (``rng`` unused).
    f : int or None, default None
        ``0 <= f <= (n − 1) // 2``; ``None``: ``(m_p − 1) // 2``.

    Returns
    -------
    (z', mask') : ``(..., n, d)``, the input mask

    References
    ----------
    Y. Allouah, S. Farhadkhani, R. Guerraoui, N. Gupta, R. Pinot, J. Stephan, "Fixing by
    Mixing: A Recipe for Optimal Byzantine ML under Heterogeneity", AISTATS 2023.
    """
    z, wts, m = _prepare(z, mask)
    n = z.shape[-2]
    fe = _resolve_f(f, m, n, "nnm", _majority_max_f, "2f < n").reshape(-1)
    z2, present, m2, lead = _flatten(z, wts, m)
    zc, g, ok = _robust_gram(z2, present)
    d2 = _dists(g, ok)
    big = np.finfo(d2.dtype).max
    key = np.where(present[:, None, :], np.where(np.isfinite(d2), d2, big), np.inf)
    idx = np.arange(n)
    key[:, idx, idx] = -1.0  # every row is its own first neighbour
    order = np.argsort(key, axis=-1, kind="stable")
    rank = np.empty_like(order)
    np.put_along_axis(rank, order, np.broadcast_to(idx, order.shape), axis=-1)
    k = np.maximum(m2 - fe, 1)
    W = ((rank < k[:, None, None]) & present[:, :, None] & present[:, None, :]).astype(z2.dtype)
    W /= k.astype(z2.dtype)[:, None, None]
    return _out(_mix(W, z2), lead, None, z.dtype)[0], mask




# --------------------------------------------------------------------------------------
# bucketing


def _bucketing_chain(n: int, f: int, params: Mapping) -> tuple[int, int]:
    nb = math.ceil(n / int(params.get("s", 2)))
    return nb, min(f, nb)


@PREAGGREGATORS.register("bucketing", chain=_bucketing_chain, ranges={"s": Range(lo=1, integer=True)})
def bucketing(z: Any, mask: Any, rng: np.random.Generator, *, s: int = 2) -> tuple:
    """Bucketing (Karimireddy, He & Jaggi, 2022): shuffle the participating rows and
    average consecutive groups of ``s``.

    .. math:: z'_b = \\frac{1}{|B_b|} \\sum_{i \\in B_b} z_{\\pi(i)},\\qquad
        B_b = \\{bs, \\dots, \\min((b+1)s, m_p) - 1\\}

    for a uniformly random order ``π`` of the participants (one ``rng.random(n)`` draw,
    shared by the leading batch axes).  The last bucket may hold fewer than ``s`` rows.
    Output shape is fixed: ``n' = ⌈n/s⌉`` rows; with a mask, the ``⌈m_p/s⌉`` non-empty
    buckets come first and ``mask'`` marks them.  Unlike paper B's s-replacement
    resampling (``resample``), every message is used once (see the module notes).

    Parameters
    ----------
    z, mask, rng
        See the module contract.
    s : int, default 2
        Bucket size, ``s >= 1`` (``s = 1`` only shuffles).

    Returns
    -------
    (z', mask') : ``(..., ⌈n/s⌉, d)``; ``mask'`` is ``None`` when ``mask`` is ``None``

    References
    ----------
    S. P. Karimireddy, L. He, M. Jaggi, "Byzantine-Robust Learning on Heterogeneous
    Datasets via Bucketing", ICLR 2022.
    """
    s = _check_int("s", s, "bucketing")
    if s < 1:
        raise ValueError(f"bucketing needs a bucket size s >= 1, got s = {s}")
    z, wts, m = _prepare(z, mask)
    n = z.shape[-2]
    z2, present, m2, lead = _flatten(z, wts, m)
    keys = rng.random(n)
    order_key = np.where(present, keys[None, :], np.inf)
    order = np.argsort(order_key, axis=-1, kind="stable")  # participants first, shuffled
    nb = math.ceil(n / s)
    out, cnt = _bucket_sums(z2, order, m2, nb, s)
    out /= np.maximum(cnt, 1).astype(z2.dtype)[:, :, None]
    mask_out = None if mask is None else cnt > 0
    zo, mo = _out(out, lead, mask_out, z.dtype)
    return zo, mo


def _bucket_sums(z2: np.ndarray, order: np.ndarray, m2: np.ndarray, nb: int, s: int):
    """Sums of the buckets of :func:`bucketing`: bucket ``b`` holds the rows
    ``order[:, b s : (b + 1) s]`` that are among the first ``m2`` of ``order``.

    Returns ``(sums (B, nb, d), counts (B, nb))``.  Rows are gathered and added (no
    ``(nb × n)`` mixing product): long rows one at a time into the output (no
    temporaries), short ones ``s`` vectorized gathers.  A bucket holding an inf/NaN row
    gets that non-finite sum; empty slots add nothing."""
    B, n, d = z2.shape
    pos = np.arange(nb * s).reshape(nb, s)  # position in `order` of bucket b, slot j
    filled = pos[None, :, :] < m2[:, None, None]  # (B, nb, s)
    idx = order[:, np.minimum(pos, n - 1)]  # (B, nb, s) row indices
    cnt = filled.sum(axis=-1)
    with np.errstate(invalid="ignore", over="ignore"):
        if d >= _ROW_LOOP_MIN_D:
            out = np.empty((B, nb, d), dtype=z2.dtype)
            for b in range(B):
                for i in range(nb):
                    r = idx[b, i, : cnt[b, i]]
                    if r.size == 0:
                        out[b, i] = 0.0
                    elif r.size == 1:
                        out[b, i] = z2[b, r[0]]
                    else:
                        np.add(z2[b, r[0]], z2[b, r[1]], out=out[b, i])
                        for j in r[2:]:
                            out[b, i] += z2[b, j]
            return out, cnt
        bix = np.arange(B)[:, None]
        out = None
        for j in range(s):
            rows = z2[bix, idx[:, :, j]]  # (B, nb, d): a row gather
            if not filled[:, :, j].all():
                rows = np.where(filled[:, :, j, None], rows, 0.0)
            if out is None:
                out = rows
            else:
                out += rows
    return out, cnt


#: Row length from which :func:`_bucket_sums` adds rows one at a time (the Python
#: loop's overhead is then below the work per row, and no ``(nb, d)`` temporary is made).
_ROW_LOOP_MIN_D = 2048



# --------------------------------------------------------------------------------------
# clipping


def _row_norms(z2: np.ndarray) -> np.ndarray:
    """Euclidean norms of the rows of ``z2 (B, n, d)``, ``(B, n)``: one pass, no
    ``(n, d)`` temporary; finite rows whose squared norm overflows (``>~ 1e154``) get
    their exact norm from the row scaled by a power of two; rows holding inf/NaN get
    a non-finite norm."""
    with np.errstate(invalid="ignore", over="ignore"):
        nrm = np.sqrt(_vecdot(z2, z2))
    big = ~np.isfinite(nrm)
    if big.any():
        b, r = np.nonzero(big)
        rows = z2[b, r]  # (k, d): the few rows concerned
        fin = np.isfinite(rows).all(axis=-1)
        amax = np.where(fin, np.abs(np.where(np.isfinite(rows), rows, 0.0)).max(axis=-1), 1.0)
        e = np.frexp(amax)[1]
        scaled = np.ldexp(rows, -e[:, None])
        with np.errstate(over="ignore"):
            exact = np.ldexp(np.sqrt(_vecdot(scaled, scaled)), e)
        nrm[b, r] = np.where(fin, exact, np.nan)
    return nrm


def _clip_rows(z2: np.ndarray, thr: np.ndarray, nrm: np.ndarray | None = None) -> np.ndarray:
    """Scale every row of ``z2 (B, n, d)`` to norm at most ``thr (B, n)``; rows with a
    non-finite norm become NaN.  ``nrm``: the row norms if already known
    (:func:`_row_norms`).  When no row changes, ``z2`` itself is returned (no copy; the
    caller never writes to it)."""
    if nrm is None:
        nrm = _row_norms(z2)
    with np.errstate(invalid="ignore"):
        if (nrm <= thr).all():  # also False for NaN norms
            return z2
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        scale = np.where(nrm > thr, thr / nrm, 1.0)
        scale = np.where(np.isfinite(nrm), scale, np.nan)
        return z2 * scale[:, :, None]


@PREAGGREGATORS.register("clipping", "static_clipping", chain=_identity_chain,
                         ranges={"c": Range(lo=0, lo_open=True)}, replica_params=("c",))
def clipping(z: Any, mask: Any, rng: Any, *, c: float = 2.0) -> tuple:
    """Static clipping: scale every row to Euclidean norm at most ``c``.

    .. math:: z'_i = \\min\\Big(1, \\frac{c}{\\lVert z_i \\rVert}\\Big)\\, z_i

    A row holding inf/NaN becomes NaN (its direction is undefined).  Not translation
    equivariant (clipping is towards the origin).  Row norms take one pass over ``z``
    and the scaling another; when no row is clipped the input array itself is returned.

    Parameters
    ----------
    z, mask, rng
        See the module contract (``rng`` unused).
    c : float or array, default 2.0
        Clipping threshold, ``c >= 0`` (ByzFL's default); per replica (declared
        ``replica_params``), an array broadcasting against ``z.shape[:-2] + (1, 1)``.

    Returns
    -------
    (z', mask') : ``(..., n, d)``, the input mask
    """
    if not np.all(np.isfinite(c) & (np.asarray(c) >= 0)):
        raise ValueError(f"clipping: c must be a finite number >= 0, got c = {c!r}")
    z, wts, m = _prepare(z, mask)
    z2, present, m2, lead = _flatten(z, wts, m)
    thr = np.broadcast_to(_per_element(c, lead, z2.dtype)[:, None], present.shape)
    out = _clip_rows(z2, thr)
    return _out(out, lead, None, z.dtype)[0], mask




@PREAGGREGATORS.register("arc", chain=_identity_chain, max_f=_majority_max_f)
def arc(z: Any, mask: Any, rng: Any, *, f: int | None = None) -> tuple:
    """Adaptive robust clipping (ARC; Allouah et al., 2025): clip the ``k`` rows of
    largest norm to the norm of the largest remaining one.

    .. math:: k = \\Big\\lfloor 2 \\frac{f}{m_p} (m_p - f) \\Big\\rfloor,\\qquad
        C = \\lVert z_{\\pi(m_p - k)} \\rVert,\\qquad
        z'_i = \\min\\Big(1, \\frac{C}{\\lVert z_i \\rVert}\\Big) z_i,

    with ``π`` sorting the participating rows by increasing norm (``k = 0``: identity).
    A row holding inf/NaN has the largest norm and becomes NaN.  The norms are computed
    once (one pass over ``z``) for both the threshold and the scaling; when no row is
    clipped the input array itself is returned.

    Parameters
    ----------
    z, mask, rng
        See the module contract (``rng`` unused).
    f : int or None, default None
        ``0 <= f <= (n − 1) // 2``; ``None``: ``(m_p − 1) // 2``.

    Returns
    -------
    (z', mask') : ``(..., n, d)``, the input mask

    References
    ----------
    Y. Allouah, R. Guerraoui, N. Gupta, A. Jellouli, G. Rizk, J. Stephan, "Adaptive
    Gradient Clipping for Robust Federated Learning", ICLR 2025 (arXiv:2405.14432).
    """
    z, wts, m = _prepare(z, mask)
    n = z.shape[-2]
    fe = _resolve_f(f, m, n, "arc", _majority_max_f, "2f < n").reshape(-1)
    z2, present, m2, lead = _flatten(z, wts, m)
    nrm = _row_norms(z2)
    key = np.where(np.isnan(nrm), np.inf, nrm)
    mf = np.maximum(m2, 1)
    k = np.floor(2.0 * fe / mf * (m2 - fe) + 1e-9).astype(np.int64)
    k = np.clip(k, 0, np.maximum(m2 - 1, 0))
    srt = np.sort(np.where(present, key, np.inf), axis=-1)
    thr = np.take_along_axis(srt, np.maximum(m2 - k - 1, 0)[:, None], -1)  # (B, 1)
    thr = np.where((k > 0)[:, None], thr, np.inf)
    out = _clip_rows(z2, np.broadcast_to(thr, present.shape), nrm)
    return _out(out, lead, None, z.dtype)[0], mask




# --------------------------------------------------------------------------------------
# s-replacement resampling (paper B) as a pre-aggregator


def _resample_chain(n: int, f: int, params: Mapping) -> tuple[int, int]:
    return n, int(params.get("s", 2)) * f


@PREAGGREGATORS.register("resample", "resampling", chain=_resample_chain,
                         ranges={"s": Range(lo=1, integer=True)})
def resample(z: Any, mask: Any, rng: np.random.Generator, *, s: int = 2) -> tuple:
    """Paper B's s-replacement resampling (:mod:`byzsim.resampling`) as a pre-aggregator.

    ``ṽ_w = (1/s) Σ_k v[idx[w, k]]`` with every message used exactly ``s`` times over
    ``n`` outputs; identical to :func:`byzsim.resampling.resampled` (same draw from
    ``rng``; ``s = 1`` returns the input unchanged and draws nothing).

    Parameters
    ----------
    z, mask, rng
        See the module contract.  ``mask`` must be ``None`` for ``s >= 2``.
    s : int, default 2
        Resampling size, ``1 <= s <= n``.

    Returns
    -------
    (z', None) for ``s >= 2``; ``(z, mask)`` for ``s = 1``

    Raises
    ------
    ValueError
        If ``s >= 2`` and a participation mask is given (as :func:`resampled`).
    """
    s = _check_int("s", s, "resample")
    if s < 1:
        raise ValueError(f"invalid resampling size s = {s}: must be at least 1")
    if s == 1:
        return z, mask
    if mask is not None:
        raise ValueError(
            "resampling with partial participation is not supported "
            f"(got a participation mask with s = {s}); use participation = 1 or s = 1"
        )
    W = np.shape(z)[-2]
    return _resample(np.asarray(z), resample_indices(rng, W, s)), None




# --------------------------------------------------------------------------------------
# SignGuard


def _mean_shift_labels(F: np.ndarray, present: np.ndarray, bandwidth: float | None, iters: int):
    """Flat-kernel mean shift on features ``F (B, n, p)`` of the present rows; returns
    integer labels ``(B, n)`` (the lowest index of a row whose mode lies within
    ``h/2``) and the bandwidth used ``(B,)``."""
    B, n, _ = F.shape
    D = np.linalg.norm(F[:, :, None, :] - F[:, None, :, :], axis=-1)
    pp = present[:, :, None] & present[:, None, :]
    if bandwidth is None:  # sklearn's estimate_bandwidth(quantile=0.3)
        Ds = np.sort(np.where(pp, D, np.inf), axis=-1)
        kq = np.clip(np.ceil(0.3 * present.sum(-1)).astype(int) - 1, 0, n - 1)
        kth = np.take_along_axis(Ds, np.broadcast_to(kq[:, None, None], (B, n, 1)), -1)[..., 0]
        h = np.where(present, kth, 0.0).sum(-1) / np.maximum(present.sum(-1), 1)
    else:
        h = np.full(B, float(bandwidth))
    h = np.where(h > 0, h, 1e-12)
    X = F.copy()
    for _ in range(iters):
        near = (np.linalg.norm(X[:, :, None, :] - F[:, None, :, :], axis=-1) <= h[:, None, None])
        near &= present[:, None, :]
        cnt = near.sum(-1, keepdims=True)
        Xn = np.where(cnt > 0, (near.astype(F.dtype) @ F) / np.maximum(cnt, 1), X)
        done = np.allclose(Xn, X)
        X = Xn
        if done:
            break
    M = np.linalg.norm(X[:, :, None, :] - X[:, None, :, :], axis=-1) < 0.5 * h[:, None, None]
    M &= present[:, None, :]
    labels = np.argmax(M, axis=-1)  # lowest index with a close mode
    return labels, h


@PREAGGREGATORS.register("signguard", chain=_identity_chain)
def signguard(
    z: Any,
    mask: Any,
    rng: np.random.Generator,
    *,
    lower: float = 0.1,
    upper: float = 3.0,
    coord_fraction: float = 0.1,
    bandwidth: float | None = None,
    iters: int = 50,
) -> tuple:
    """SignGuard-style filtering (Xu et al., 2022); compose with ``mean`` for SignGuard.

    1. **Norm filter.** With ``M`` the median norm of the participating rows, keep rows
       with ``lower <= ‖z_i‖ / M <= upper``.
    2. **Sign clustering.** On a random subset of ``⌈coord_fraction · d⌉`` coordinates
       (one ``rng.choice`` draw), every row gets the features (fraction of positive,
       zero, negative entries); a flat-kernel mean shift (bandwidth ``h``, default as
       scikit-learn's ``estimate_bandwidth(quantile=0.3)``) clusters them and the largest
       cluster is kept.
    3. Rows kept by both are clipped to norm ``M``; ``mask'`` marks them.

    The paper clusters with scikit-learn's MeanShift; this is a vectorized flat-kernel
    version (modes closer than ``h/2`` are merged).  Not translation equivariant, hence
    a pre-aggregator rather than a registered aggregator.

    Parameters
    ----------
    z, mask, rng
        See the module contract.
    lower, upper : float, default 0.1, 3.0
        Norm-ratio bounds of step 1.
    coord_fraction : float, default 0.1
        Fraction of coordinates used for the sign statistics, in ``(0, 1]``.
    bandwidth : float or None, default None
        Mean-shift bandwidth in feature space; ``None``: estimated per call.
    iters : int, default 50
        Maximum mean-shift iterations.

    Returns
    -------
    (z', mask') : ``(..., n, d)`` clipped rows, bool ``(..., n)`` kept rows

    References
    ----------
    J. Xu, S.-L. Huang, L. Song, T. Lan, "Byzantine-robust Federated Learning through
    Collaborative Malicious Gradient Filtering", ICDCS 2022.
    """
    if not (0 < coord_fraction <= 1):
        raise ValueError(f"signguard: coord_fraction must be in (0, 1], got {coord_fraction!r}")
    if not (0 <= lower <= upper):
        raise ValueError(f"signguard: need 0 <= lower <= upper, got lower = {lower!r}, upper = {upper!r}")
    iters = _check_int("iters", iters, "signguard")
    z, wts, m = _prepare(z, mask)
    n, d = z.shape[-2:]
    z2, present, m2, lead = _flatten(z, wts, m)
    with np.errstate(invalid="ignore", over="ignore"):
        nrm = np.linalg.norm(z2, axis=-1)
    finite = np.isfinite(nrm)
    M = _masked_median_1d(np.where(finite, nrm, np.inf), present, m2)
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = nrm / M[:, None]
    keep = present & finite & (ratio >= lower) & (ratio <= upper)
    cols = np.sort(rng.choice(d, size=max(1, math.ceil(coord_fraction * d)), replace=False))
    sg = np.sign(z2[:, :, cols])
    F = np.stack([(sg > 0).mean(-1), (sg == 0).mean(-1), (sg < 0).mean(-1)], axis=-1)
    ok = present & finite
    labels, _ = _mean_shift_labels(F, ok, bandwidth, iters)
    counts = ((labels[:, :, None] == np.arange(n)[None, None, :]) & ok[:, :, None]).sum(1)
    top = np.argmax(counts, axis=-1)
    keep &= labels == top[:, None]
    out = _clip_rows(z2, np.broadcast_to(M[:, None], present.shape))
    out = np.where(keep[:, :, None], out, 0.0)
    zo, mo = _out(out, lead, keep, z.dtype)
    return zo, mo




# --------------------------------------------------------------------------------------
# composition


def compose(pre: Iterable[Callable], agg: Callable) -> Pipeline:
    """Chain pre-aggregators and an aggregator into ``aggregate(v, mask, rng)``.

    Parameters
    ----------
    pre : iterable of callables ``pre(z, mask, rng) -> (z', mask')``
        Applied in order (e.g. from :func:`get_preaggregator`).
    agg : callable ``agg(z, mask) -> (..., d)``
        A bound aggregator (:func:`byzsim.aggregators.get_aggregator`).

    Returns
    -------
    aggregate : :class:`byzsim.pipeline.Pipeline` ``aggregate(v, mask, rng) -> (..., d)``
        ``agg(*pre_k(...pre_1(v, mask, rng)...))``; attributes ``steps`` (alias
        ``preaggregators``) and ``aggregate_fn``.
    """
    return Pipeline(tuple(pre), agg)


def normalize_preaggregators(specs: Any) -> tuple[dict, ...]:
    """Config-style specs -> a tuple of dicts ``{"name": ..., **params}``, validated.

    Accepts a sequence whose items are a name (``"nnm"``) or a mapping with a ``"name"``
    key and the parameters (TOML: ``preaggregators = [{name = "bucketing", s = 2}]``).
    Raises ``ValueError`` naming the item, the bad name or parameter and the valid ones.
    """
    if specs is None:
        return ()
    if isinstance(specs, (str, Mapping)) or not isinstance(specs, Sequence):
        raise ValueError(
            f"preaggregators must be a list of names or tables with a 'name' key, got {specs!r}"
        )
    out = []
    for i, item in enumerate(specs):
        if isinstance(item, str):
            item = {"name": item}
        if not isinstance(item, Mapping) or "name" not in item:
            raise ValueError(f"preaggregators[{i}] must be a name or a table with a 'name' key, got {item!r}")
        item = dict(item)
        params = {k: v for k, v in item.items() if k != "name"}
        try:
            item["name"] = PREAGGREGATORS.canonical(item["name"])
            get_preaggregator(item["name"], **params)
        except ValueError as e:
            raise ValueError(f"preaggregators[{i}]: {e}") from None
        out.append(item)
    return tuple(out)


def _cap_f(f: int, cap: Callable | None, n: int) -> int:
    if cap is not None:
        f = min(f, cap(n))
    return max(0, int(f))


def build_aggregate(
    aggregator: str,
    aggregator_params: Mapping[str, Any] | None = None,
    preaggregators: Any = (),
    *,
    n: int,
    n_byzantine: int = 0,
    resample: int = 1,
) -> Callable:
    """The gradient family's ``aggregate(v, mask, rng)`` from config-style specs.

    Chain: [s-replacement resampling if ``resample > 1``] -> pre-aggregators in order ->
    aggregator.  Every rule (pre-aggregator or aggregator) with an ``f`` parameter that
    is not given gets the number of possibly contaminated rows at its input — ``n_byzantine``
    propagated through the chain by each pre-aggregator's ``chain(n, f, params)``
    (``resample``: ``s·f``; ``bucketing``: ``min(f, ⌈n/s⌉)`` of ``⌈n/s⌉`` rows) — capped to
    the rule's ``max_f(n)`` (e.g. ``n − 3`` for Krum, ``(n − 1)//2`` for trimmed mean,
    ``(n − 3)//4`` for Bulyan).  Without pre-aggregators this is exactly
    ``resampled(get_aggregator(aggregator, f=...), resample)``, the foundation's path.

    Parameters
    ----------
    aggregator : str
        A name in ``AGGREGATORS``.
    aggregator_params : mapping, optional
        Its keyword parameters.
    preaggregators : sequence of names or mappings
        See :func:`normalize_preaggregators`.
    n : int
        Number of clients (rows of ``v``).
    n_byzantine : int
        Number of Byzantine clients.
    resample : int
        Paper B's resampling size ``s`` (1 = none).

    Returns
    -------
    callable ``aggregate(v, mask, rng) -> (..., d)``
    """
    specs = list(normalize_preaggregators(preaggregators))
    if resample and resample > 1 and specs:
        specs.insert(0, {"name": "resample", "s": int(resample)})
    n_cur, f_cur = int(n), int(n_byzantine) * (int(resample) if not specs else 1)
    bound = []
    for spec in specs:
        name = spec["name"]
        params = {k: v for k, v in spec.items() if k != "name"}
        entry = PREAGGREGATORS.entry(name)
        if "f" in PREAGGREGATORS.parameters(name) and params.get("f") is None:
            params["f"] = _cap_f(f_cur, entry.meta["max_f"], n_cur)
        step = get_preaggregator(name, **params)
        bound.append(step() if entry.meta["stateful"] else step)  # a factory -> Stateful
        n_cur, f_cur = entry.meta["chain"](n_cur, f_cur, params)
    params = dict(aggregator_params or {})
    if "f" in AGGREGATORS.parameters(aggregator) and "f" not in params:
        params["f"] = _cap_f(f_cur, AGGREGATORS.entry(aggregator).meta["max_f"], n_cur)
    agg = get_aggregator(aggregator, **params)
    if AGGREGATORS.entry(aggregator).meta["stateful"]:
        agg = agg()  # the factory's Stateful; resampling, if any, becomes a pipeline step
        if resample and resample > 1 and not specs:
            bound.append(get_preaggregator("resample", s=int(resample)))
        return compose(bound, agg)
    if not specs:
        return resampled(agg, int(resample or 1))
    return compose(bound, agg)
