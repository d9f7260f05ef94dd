"""Rows of a round: which (replica, client) pairs it computes, and their minibatches.

``rows`` index the leading ``(S, n)`` axes of the round's arrays:

- ``None``: every client of every replica, lead shape ``(S, n)``;
- ``(slice(None), r)``: the clients ``r`` (a slice: views; an index array) of every
  replica, lead shape ``(S, k)``;
- ``(s_idx, i_idx)``: the pairs ``(s_idx[j], i_idx[j])``, replica-major, lead ``(K,)``.
"""

from __future__ import annotations

import numpy as np

from ._problem import Problem


def _lead_ids(rows, S: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Index arrays ``(ia, ib)`` (shapes ``lead + (1,)``) of the replicas and clients of
    ``rows``, for fancy indexing together with a ``lead + (b,)`` index matrix."""
    if rows is None:
        return np.arange(S)[:, None, None], np.arange(n)[None, :, None]
    a, b = rows
    if isinstance(a, slice):
        return np.arange(S)[a][:, None, None], np.arange(n)[b][None, :, None]
    return a[:, None], b[:, None]


def _row_ids(rows, n: int) -> np.ndarray:
    """``(k, 1)`` client indices of one run's ``rows`` (``None`` = all n, a slice, or an
    index array)."""
    return np.arange(n)[slice(None) if rows is None else rows][:, None]


def row_set(mask: np.ndarray) -> slice | np.ndarray:
    """The rows where ``mask (n,)`` holds: a slice when they are contiguous (then
    ``A[rows]`` is a view and needs no write-back), else an index array."""
    ids = np.flatnonzero(mask)
    if ids.size and ids[-1] - ids[0] + 1 == ids.size:
        return slice(int(ids[0]), int(ids[-1]) + 1)
    return ids


def _flat_pairs(A: np.ndarray, rows):
    """``(A2, flat)``: for rows given as (replica, client) index pairs of a C-contiguous
    ``A (S, n, …)``, the view ``A (S·n, …)`` and the pairs as one row index (one-index
    gathers and scatters are several times faster than two-index ones); else ``None``."""
    if isinstance(rows, tuple) and not isinstance(rows[0], slice) and A.flags.c_contiguous:
        return A.reshape((-1,) + A.shape[2:]), rows[0] * A.shape[1] + rows[1]
    return None


def _take_rows(A: np.ndarray, rows) -> np.ndarray:
    if rows is None:
        return A
    fp = _flat_pairs(A, rows)
    return A[rows] if fp is None else fp[0][fp[1]]


def _put_rows(A: np.ndarray, rows, values: np.ndarray) -> None:
    """Write back rows taken by :func:`_take_rows` (nothing to do for views)."""
    if rows is None or all(isinstance(r, slice) for r in (rows if isinstance(rows, tuple) else (rows,))):
        return
    fp = _flat_pairs(A, rows)
    if fp is None:
        A[rows] = values
    else:
        fp[0][fp[1]] = values


def gather_batch(problem: Problem, idx: np.ndarray, rows=None):
    """The minibatches of ``rows``: returns ``ids`` (the index arrays), their indices
    ``idx[rows] (…, b)``, ``Xb (…, b, p')`` and ``yb (…, b)``.

    ``idx``: ``(S, n, b)`` (replicas; ``rows`` as above) or one run's ``(n, b)`` (``rows``
    ``None`` = all n, a slice or an index array; then ``ids (k, 1)``)."""
    if idx.ndim == 2:
        ids = _row_ids(rows, problem.n)
        idx = _take_rows(idx, rows)
        Xb, yb = problem.gather(None, ids, idx)
        return ids, idx, Xb, yb
    ids = _lead_ids(rows, idx.shape[0], problem.n)
    idx = _take_rows(idx, rows)
    Xb, yb = problem.gather(ids[0], ids[1], idx)
    return ids, idx, Xb, yb


def _byzantine_rows(byz: np.ndarray, S: int) -> tuple:
    """Index of the Byzantine rows of ``(S, n, …)`` arrays: ``(slice(None), byz)`` when
    shared, else the pairs of ``byz (S, n)`` (replica-major)."""
    return (slice(None), byz) if byz.ndim == 1 else np.nonzero(byz)
