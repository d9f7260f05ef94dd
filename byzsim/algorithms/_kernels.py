"""Fused in-place updates ``y += a · x`` (BLAS ``axpy``), the memory-bound hot path of
both families' rounds, and their per-replica form :func:`axpy_rows`."""

from __future__ import annotations

import numpy as np
from scipy.linalg.blas import daxpy, saxpy


_AXPY = {np.dtype(np.float64): daxpy, np.dtype(np.float32): saxpy}


def axpy(a: float, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """``y += a · x`` in place, in one fused pass (BLAS ``daxpy``/``saxpy``) when both are
    C-contiguous float64/float32 arrays of the same shape and dtype; otherwise with NumPy.
    Returns ``y``.

    The hot path of a round is memory-bound: a fused ``y += a x`` reads two arrays and
    writes one, where ``y += a * x`` also writes and re-reads a temporary.  Non-contiguous
    arrays (views of some rows of every replica) go block by block along the first axis,
    so every element is rounded by the same fused kernel wherever it is stored.
    """
    blas = _AXPY.get(y.dtype)
    if blas is None or x.shape != y.shape or x.dtype != y.dtype or not y.flags.writeable or not y.size:
        y += a * x
    elif x.flags.c_contiguous and y.flags.c_contiguous:
        blas(x.reshape(-1), y.reshape(-1), a=a)
    elif y.ndim > 1:  # e.g. the same rows of every replica: contiguous blocks per replica
        for xi, yi in zip(x, y):
            axpy(a, xi, yi)
    else:
        y += a * x
    return y


def axpy_rows(a: np.ndarray, x: np.ndarray, y: np.ndarray, owner: np.ndarray | None = None) -> np.ndarray:
    """``y[r] += a[owner[r]] · x[r]`` for every leading row ``r`` of ``x, y`` (``(L, ...)``);
    ``owner (L,)`` maps a row to its replica (default: row r is replica r).  One BLAS call
    when all coefficients are equal, else one per run of equal coefficients (BLAS
    ``axpy`` rounds each element alike wherever it sits in the array, so both give the
    same bits)."""
    a = np.asarray(a, dtype=np.float64)
    if a.size == 0 or (a == a[0]).all():
        return axpy(float(a[0]) if a.size else 0.0, x, y)
    coef = a if owner is None else a[owner]
    cuts = np.flatnonzero(coef[1:] != coef[:-1]) + 1
    for lo, hi in zip(np.r_[0, cuts], np.r_[cuts, len(coef)]):
        axpy(float(coef[lo]), x[lo:hi], y[lo:hi])
    return y
