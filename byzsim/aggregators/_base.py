"""The aggregator contract: the registry, input preparation (masks, batch axes,
mixing matrices) and the Byzantine-count helpers shared by every rule.
"""

from __future__ import annotations

import contextlib
import numbers
import re
import textwrap
from typing import Any, Callable

import numpy as np

from ..registry import REPLICA_PARAMS, STATEFUL, Meta, Registry, keyword_parameters, optional_callable

__all__ = ["AGGREGATORS", "get_aggregator"]


def _per_call_check(v: Any) -> str | None:
    ok = isinstance(v, tuple) and all(isinstance(k, str) for k in v)
    return None if ok else "a tuple of parameter names"


#: The aggregators.  Declared at registration: ``max_f`` (``n -> int``, the largest
#: ``f`` the rule tolerates with ``n`` rows; required for rules with an ``f``
#: parameter) and ``per_call`` (keyword parameters the library supplies on each call,
#: e.g. the ``mix`` of the geometric median; not configurable).
AGGREGATORS: Registry = Registry("aggregator", schema={
    "max_f": Meta("n -> the largest f the rule tolerates with n rows", default=None,
                  check=optional_callable, required_if=lambda fn: "f" in keyword_parameters(fn)),
    "per_call": Meta("keyword parameters supplied per call, not configurable", default=(),
                     check=_per_call_check),
    "stateful": STATEFUL,
    "replica_params": REPLICA_PARAMS,
})


def get_aggregator(name: str, **params: Any) -> Callable:
    """The aggregator registered as ``name`` with keyword parameters bound.

    Parameters
    ----------
    name : str
        A name in ``AGGREGATORS`` (see ``AGGREGATORS.names()``).
    **params
        Keyword-only parameters of that aggregator (e.g. ``f=2`` for Krum).

    Returns
    -------
    callable ``agg(z, mask=None) -> (..., d)``

    Raises
    ------
    UnknownNameError
        (a ``ValueError`` and ``KeyError``) if ``name`` is not registered; the message
        lists the valid names.
    ValueError
        If a parameter is unknown (the message lists the valid ones), a required one is
        missing, or ``f``/``m`` is not a non-negative integer.
    """
    bound = AGGREGATORS.bind(name, params)
    for key in ("f", "m"):
        if params.get(key) is not None:
            _check_int(key, params[key], name)
    return bound


# --------------------------------------------------------------------------------------
# numpydoc entries shared by the rules

#: Entries of the rules' numpydoc docstrings that are the same for every rule (the
#: contract of the module docstring): a line ``{name}`` in a docstring decorated with
#: :func:`_shared_doc` becomes the entry, indented like that line.
_DOC_ENTRIES = {
    "z_mask": (
        "z : array_like, shape ``(..., n, d)``\n"
        "mask : None or bool array ``(n,)`` / ``(..., n)``\n"
        "    Participating rows; elements with none return zeros."
    ),
    "returns": "Returns\n-------\nndarray, shape ``(..., d)``",
}


def _shared_doc(fn: Callable) -> Callable:
    """Decorator: the lines ``{name}`` of ``fn``'s docstring replaced by the shared
    entries :data:`_DOC_ENTRIES` (an unknown name fails at import)."""

    def entry(match: re.Match) -> str:
        name = match.group(2)
        if name not in _DOC_ENTRIES:
            raise ValueError(f"{fn.__name__}: no shared docstring entry {name!r}; known: {sorted(_DOC_ENTRIES)}")
        return textwrap.indent(_DOC_ENTRIES[name], match.group(1))

    fn.__doc__ = re.sub(r"^( *)\{(\w+)\}$", entry, fn.__doc__ or "", flags=re.M)
    return fn


# --------------------------------------------------------------------------------------
# helpers


def _check_int(key: str, value: Any, who: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
        raise ValueError(f"{who}: {key} must be a non-negative integer, got {key} = {value!r}")
    return int(value)


def _prepare(z: Any, mask: Any, rows: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Validate ``z`` and ``mask``; return ``(z, wts, m_p)``.

    ``wts`` : float array ``(..., rows)`` of 0/1 participation weights (dtype of ``z``),
    ``m_p`` : int array ``(...,)`` of participating counts.  ``rows`` is the number of
    rows the mask refers to: ``n`` (default), or the ``m`` mixed rows of
    :func:`geometric_median`'s ``mix``.
    """
    z = np.asarray(z)
    if z.ndim < 2:
        raise ValueError(f"z must have shape (..., n, d); got shape {z.shape}")
    if z.shape[-2] == 0:
        raise ValueError(f"z has no rows (shape {z.shape})")
    if not np.issubdtype(z.dtype, np.floating):
        if np.issubdtype(z.dtype, np.complexfloating) or not (
            np.issubdtype(z.dtype, np.integer) or z.dtype == np.bool_
        ):
            raise ValueError(f"z must be a real numeric array; got dtype {z.dtype}")
        z = z.astype(np.float64)
    elif z.dtype.itemsize < 4:
        z = z.astype(np.float32)
    bshape = z.shape[:-1] if rows is None else z.shape[:-2] + (rows,)
    if mask is None:
        wts = np.ones(bshape, dtype=z.dtype)
        m = np.full(bshape[:-1], bshape[-1], dtype=np.int64)
        return z, wts, m
    mask = np.asarray(mask)
    if mask.dtype != np.bool_:
        raise ValueError(f"mask must be a bool array of shape (n,) or (..., n); got dtype {mask.dtype}")
    try:
        mb = np.broadcast_to(mask, bshape)
    except ValueError:
        raise ValueError(
            f"mask of shape {mask.shape} does not broadcast to "
            f"{'z.shape[:-1]' if rows is None else 'the mixed rows, z.shape[:-2] + (m,)'} = {bshape}"
        ) from None
    return z, mb.astype(z.dtype), mb.sum(axis=-1)


def _prepare_mixed(z: Any, mask: Any, mix: Any):
    """:func:`_prepare` for the mixed rows ``mix @ z`` (:func:`geometric_median`'s
    ``mix``); returns ``(z, mix, wts, m_p)``.

    ``mix`` : float array ``(..., m, n)`` in the dtype of ``z`` — nonnegative, finite,
    rows summing to 1 (up to ``√ε_mach`` of its dtype), leading axes broadcasting to those
    of ``z (..., n, d)`` without adding axes; ``wts (..., m)`` and ``m_p`` refer to the
    ``m`` mixed rows (so does ``mask``).
    """
    z = _prepare(z, None)[0]
    mix = np.asarray(mix)
    n = z.shape[-2]
    if not (np.issubdtype(mix.dtype, np.floating) or np.issubdtype(mix.dtype, np.integer)):
        raise ValueError(f"geometric_median: mix must be a real array; got dtype {mix.dtype}")
    if (mix.ndim < 2 or mix.shape[-1] != n or mix.shape[-2] == 0
            or np.broadcast_shapes(mix.shape[:-2], z.shape[:-2]) != z.shape[:-2]):
        raise ValueError(
            f"geometric_median: mix must have shape (m, n) or (..., m, n) with m >= 1, "
            f"n = {n} (the rows of z) and leading axes broadcasting to z's {z.shape[:-2]}; "
            f"got shape {mix.shape}"
        )
    rowsum = mix.sum(axis=-1, dtype=np.float64)
    tol = np.sqrt(np.finfo(mix.dtype if np.issubdtype(mix.dtype, np.floating) else np.float64).eps)
    if not (np.isfinite(mix).all() and (mix >= 0).all() and (np.abs(rowsum - 1.0) <= tol).all()):
        raise ValueError(
            "geometric_median: mix must be finite and nonnegative with rows summing to 1 "
            f"(each mixed row a convex combination of the rows of z); row sums lie in "
            f"[{rowsum.min()}, {rowsum.max()}], entries in [{mix.min()}, {mix.max()}]"
        )
    mix = mix.astype(z.dtype, copy=False)
    _, wts, m = _prepare(z, mask, mix.shape[-2])
    return z, mix, wts, m


if hasattr(np, "matvec"):  # numpy >= 2.2: batched gufuncs
    _matvec = np.matvec
    _vecdot = np.vecdot
else:  # pragma: no cover

    def _matvec(a: np.ndarray, x: np.ndarray) -> np.ndarray:
        """``(..., p, q) @ (..., q) -> (..., p)``."""
        return (a @ x[..., None])[..., 0]

    def _vecdot(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """``Σ_i x_i y_i`` over the last axis."""
        return np.einsum("...i,...i->...", x, y)


def _vecmat(x: np.ndarray, a: np.ndarray) -> np.ndarray:
    """``(..., p) @ (..., p, q) -> (..., q)``."""
    return (x[..., None, :] @ a)[..., 0, :]


def _quiet_if(masked: bool):
    """Silence inf/nan warnings of a first attempt that may be redone without absent rows."""
    return np.errstate(invalid="ignore", over="ignore") if masked else contextlib.nullcontext()


# ======================================================================================
# The field's standard set: Bulyan, centered clipping, MDA, MoNNA, Meamed, CAF, SMEA,
# median of means, DnC.  Shared conventions:
#
# * ``f`` (assumed number of Byzantine rows) defaults to ``None``: the largest value the
#   rule tolerates for the *participating* count ``m_p`` of each batch element
#   (``rule.max_f(m_p)``), so that ``agg(z, mask) == agg(z[mask])``.  An explicit ``f`` is
#   validated against ``n`` (``ValueError`` naming n, f and the valid range; Bulyan accepts
#   any ``2f < n`` although it is only robust for ``n >= 4f + 3``) and then clipped per
#   batch element to the range of ``m_p``.
# * Distances and covariances come from one Gram matrix centered at an *anchor* row (the
#   row with the smallest sum of squared distances to its ``m_p // 2`` nearest others, found
#   from a first ``Z Zᵀ`` pass; re-centering only happens when that row is far from the
#   origin relative to its neighbours), so they are accurate to ε_mach relative near the
#   honest cluster whatever the offset or the scale of outliers.
# * Rows holding inf/NaN that take part are treated as *infinitely far* from every other
#   row (distance rules never prefer them; covariance rules give them weight 0 / remove
#   them first).  If a rule must still keep such a row (more of them than it can
#   discard) the output is non-finite, as it should be.
# --------------------------------------------------------------------------------------


def _majority_max_f(n: int) -> int:
    return max((int(n) - 1) // 2, 0)


def _max_f_array(max_f: Callable, m: np.ndarray) -> np.ndarray:
    return np.vectorize(max_f, otypes=[np.int64])(m) if np.ndim(m) else np.int64(max_f(int(m)))


def _resolve_f(
    f: Any, m: np.ndarray, n: int, who: str, max_f: Callable, rule: str, default_f: Callable | None = None
) -> np.ndarray:
    """Per-element ``f`` (int array of the shape of ``m``): ``None`` -> ``default_f(m_p)``
    (default ``max_f``); an explicit ``f`` is checked against ``max_f(n)`` then clipped to
    ``max_f(m_p)``."""
    cap = _max_f_array(max_f, np.asarray(m))
    if f is None:
        return np.asarray(_max_f_array(default_f or max_f, np.asarray(m)), dtype=np.int64)
    f = _check_int("f", f, who)
    if f > max_f(n):
        raise ValueError(
            f"{who} needs 0 <= f <= {max_f(n)} ({rule}) for n = {n} rows; got f = {f}"
        )
    return np.minimum(f, cap).astype(np.int64)


def _rows_and_f(z: Any, mask: Any, f: Any, who: str, default_f: Callable | None = None):
    """The start of every rule with a Byzantine count ``f`` tolerating ``2f < n``:
    :func:`_prepare`, :func:`_resolve_f` (``None`` -> ``default_f(m_p)``, default
    ``(m_p − 1) // 2``) and :func:`_flatten`.

    Returns ``(z2 (B, n, d), present (B, n), m_p (B,), f (B,), finish)`` with
    ``finish(out (B, d)) -> (..., d)`` the rule's output (:func:`_finish`: zeros where no
    row participates, the input's leading axes and dtype)."""
    z, wts, m = _prepare(z, mask)
    fe = _resolve_f(f, m, z.shape[-2], who, _majority_max_f, "2f < n", default_f=default_f)
    z2, present, m2, lead = _flatten(z, wts, m)

    def finish(out: np.ndarray) -> np.ndarray:
        return _finish(out, m2, lead, z.dtype)

    return z2, present, m2, fe.reshape(-1), finish


def _flatten(z: np.ndarray, wts: np.ndarray, m: np.ndarray):
    """``(..., n, d)`` -> ``(B, n, d)``; returns ``z2, present (B, n), m (B,), lead``."""
    lead = z.shape[:-2]
    n, d = z.shape[-2:]
    return (
        z.reshape((-1, n, d)),
        (wts > 0).reshape((-1, n)),
        np.asarray(m).reshape(-1),
        lead,
    )


def _per_element(p: Any, lead: tuple, dtype=np.float64) -> np.ndarray:
    """A parameter declared ``replica_params`` (a number, or an array broadcasting
    against ``lead + (1, 1)``) as ``(B,)`` values of the flattened batch elements
    (:func:`_flatten`), in ``dtype``: element ``b`` holds the number a call on that
    element alone would use (cast like ``np.full(B, float(p), dtype)``)."""
    a = np.asarray(p, dtype=np.float64)
    if a.ndim == 0:
        return np.full(int(np.prod(lead, dtype=np.int64)), float(a), dtype=dtype)
    return np.broadcast_to(a, lead + (1, 1)).reshape(-1).astype(dtype)


def _average(w: np.ndarray, z: np.ndarray) -> np.ndarray:
    """``Σ_i w_i z_i`` over rows (``w (B, n)``, ``z (B, n, d)``) where rows of weight 0
    have no influence even if they hold inf/NaN."""
    with np.errstate(invalid="ignore", over="ignore"):
        out = _vecmat(w, z)
    if not np.isfinite(out).all():
        with np.errstate(invalid="ignore", over="ignore"):
            out = _vecmat(w, np.where(w[..., None] != 0, z, 0))
    return out


def _subset_mean(sel: np.ndarray, z: np.ndarray) -> np.ndarray:
    """Mean of the rows with ``sel`` True (``(B, n)``); zeros where none."""
    cnt = sel.sum(axis=-1)
    w = sel.astype(z.dtype) / np.maximum(cnt, 1).astype(z.dtype)[:, None]
    return _average(w, z)


def _finish(out: np.ndarray, m: np.ndarray, lead: tuple, dtype) -> np.ndarray:
    out = np.where((m > 0)[:, None], out, 0.0).astype(dtype, copy=False)
    return out.reshape(lead + out.shape[-1:])
