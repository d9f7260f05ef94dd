"""Minimum-diameter averaging (exact, bounded search tree).
"""

from __future__ import annotations

import math as _math
from typing import Any

import numpy as np

from ._base import (
    AGGREGATORS,
    _check_int,
    _majority_max_f,
    _rows_and_f,
    _shared_doc,
    _subset_mean,
)
from ._gram import _dists, _robust_gram

__all__ = ["mda"]


# --------------------------------------------------------------------------------------
# minimum-diameter averaging (exact, bounded search tree)


def _mda_removed(d2: np.ndarray, present: np.ndarray, fe: np.ndarray, o: np.ndarray, max_branches: int):
    """Removal sets ``(B, n)`` of exact minimum-diameter averaging (see :func:`mda`)."""
    B, n = present.shape
    iu, ju = np.triu_indices(n, 1)
    P = iu.size
    key = d2[:, iu, ju]
    key = np.where(present[:, iu] & present[:, ju], key, -np.inf)
    order = np.argsort(-key, axis=-1, kind="stable")  # descending distance
    Ds = np.concatenate([np.take_along_axis(key, order, -1), np.zeros((B, 1), key.dtype)], -1)
    pa = np.concatenate([iu[order], np.zeros((B, 1), np.intp)], -1)
    pb = np.concatenate([ju[order], np.zeros((B, 1), np.intp)], -1)
    # node arrays (B, N, ...)
    R = np.zeros((B, 1, n), bool)
    K = np.zeros((B, 1, n), bool)
    bud = fe.astype(np.int64)[:, None].copy()
    val = np.ones((B, 1), bool)
    absent = ~present[:, None, :]
    T_D, T_V, T_R, T_K, T_b = [], [], [], [], []
    eye = np.eye(n, dtype=bool)
    for _level in range(int(fe.max()) + 1 if B else 0):
        N = R.shape[1]
        rem = R | absent
        hit = (np.take_along_axis(rem, np.broadcast_to(pa[:, None, :P], (B, N, P)), -1)
               | np.take_along_axis(rem, np.broadcast_to(pb[:, None, :P], (B, N, P)), -1))
        first = np.argmin(np.concatenate([hit, np.zeros((B, N, 1), bool)], -1), axis=-1)
        sent = first == P
        D = np.take_along_axis(Ds, first, -1)
        A = np.take_along_axis(pa, first, -1)
        Bb = np.take_along_axis(pb, first, -1)
        onA = eye[A] & ~sent[..., None]
        onB = eye[Bb] & ~sent[..., None]
        Kt = K | onA | onB
        free = (present[:, None, :] & ~R & ~Kt).sum(-1)
        T_D.append(D)
        T_V.append(val & (free >= bud))
        T_R.append(R)
        T_K.append(Kt)
        T_b.append(bud)
        can = val & (bud > 0) & ~sent
        a_k = (K & onA).any(-1)
        b_k = (K & onB).any(-1)
        c1 = can & ~a_k
        c2 = can & ~b_k
        if not (c1 | c2).any():
            break
        if 2 * N > max_branches:  # pragma: no cover - guarded by the caller
            raise ValueError("mda: search tree exceeds max_branches")
        R = np.concatenate([R | onA, R | onB], axis=1)
        K = np.concatenate([K, K | onA], axis=1)
        bud = np.concatenate([bud - 1, bud - 1], axis=1)
        val = np.concatenate([c1, c2], axis=1)
    TD = np.concatenate(T_D, 1)
    TV = np.concatenate(T_V, 1)
    TR = np.concatenate(T_R, 1)
    TK = np.concatenate(T_K, 1)
    Tb = np.concatenate(T_b, 1)
    best = np.where(TV, TD, np.inf).min(axis=1)
    cand = TV & (TD == best[:, None])  # D may be +inf (more non-finite rows than f)
    # spend the free budget on the most outlying undecided rows
    U = present[:, None, :] & ~TR & ~TK
    ou = np.where(U, o[:, None, :], -np.inf)
    rank = np.argsort(np.argsort(-ou, axis=-1, kind="stable"), axis=-1, kind="stable")
    REM = TR | (U & (rank < Tb[..., None]))
    # tie-break: the removal set whose outlyingness, sorted decreasingly, is largest
    kcols = int(fe.max()) if B else 0
    if kcols:
        keyv = -np.sort(-np.where(REM, o[:, None, :], -np.inf), axis=-1)[..., :kcols]
        for c in range(kcols):
            col = np.where(cand, keyv[..., c], -np.inf)
            top = col.max(axis=1, keepdims=True)
            cand &= col == top
    pick = np.argmax(cand, axis=1)
    return REM[np.arange(B), pick]


@AGGREGATORS.register("mda", max_f=_majority_max_f)
@_shared_doc
def mda(z: Any, mask: Any = None, *, f: int | None = None, max_branches: int = 2**16) -> np.ndarray:
    """Minimum-diameter averaging (El Mhamdi, Guerraoui & Rouault, 2018), exact.

    .. math:: S^* = \\arg\\min_{S \\subseteq P,\\ |S| = m_p - f}\\ \\max_{i,j \\in S}
        \\lVert z_i - z_j \\rVert, \\qquad \\mathrm{MDA}(z) = \\frac{1}{|S^*|}
        \\sum_{i\\in S^*} z_i .

    **Exact search without enumerating the** ``C(m_p, f)`` **subsets.**  Sort the pairs by
    decreasing distance.  The diameter of ``P \\ R`` is the distance of the first pair not
    hit by the removal set ``R``.  A bounded search tree branches on that pair
    ``(a, b)``: remove ``a``; or keep ``a`` and remove ``b``; or keep both — which fixes
    the diameter at ``‖z_a − z_b‖`` for every completion (a leaf).  Each removal costs one
    unit of the budget ``f``, so the tree has at most ``2^{f+1}`` nodes and every removal
    set belongs to exactly one leaf: the minimum over leaves is the exact minimum
    diameter.  Each tree level is one vectorized step over all nodes and batch elements.

    **Ties** (several subsets of minimum diameter, e.g. a leaf with budget left, or
    duplicated rows): the removal set is the one whose *outlyingness*
    ``o_i = Σ_{j∈P} ‖z_i − z_j‖²`` values, sorted decreasingly, are lexicographically
    largest — the most outlying rows are discarded.  This keeps the rule permutation
    invariant (the original formulation takes the first subset in index order).

    Parameters
    ----------
    {z_mask}
    f : int or None, default None
        Rows discarded, ``0 <= f <= (n − 1) // 2``; ``None``: ``(m_p − 1) // 2``.
    max_branches : int, default 65536
        Refuse (``ValueError`` naming n, f, the subset count and the tree size) when
        ``2^f`` exceeds this.

    {returns}

    References
    ----------
    E. M. El Mhamdi, R. Guerraoui, S. Rouault, "The Hidden Vulnerability of Distributed
    Learning in Byzantium", ICML 2018 (MDA); P. J. Rousseeuw, "Multivariate estimation
    with high breakdown point", 1985 (minimum-volume ideas).
    """
    max_branches = _check_int("max_branches", max_branches, "mda")
    z2, present, m2, fe, finish = _rows_and_f(z, mask, f, "mda")
    n = z2.shape[-2]
    fmax = int(np.max(fe)) if fe.size else 0
    if 2**fmax > max_branches:
        raise ValueError(
            f"mda: exact minimum-diameter search for n = {n}, f = {fmax} would explore up "
            f"to 2^f = {2**fmax} branches (the naive search has C(n, f) = "
            f"{_math.comb(n, fmax)} subsets), more than max_branches = {max_branches}; "
            "lower f or raise max_branches"
        )
    zc, g, ok = _robust_gram(z2, present)
    d2 = _dists(g, ok)
    d2 = np.where(present[:, :, None] & present[:, None, :], d2, 0.0)  # absent: no pairs
    finite_d = np.where(np.isfinite(d2), d2, 0.0)
    o = np.where(ok, finite_d.sum(-1), np.inf)
    removed = _mda_removed(d2, present, fe, o, max_branches)
    return finish(_subset_mean(present & ~removed, z2))


