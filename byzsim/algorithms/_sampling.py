"""The random draws of a round other than the attack's: participation masks and
minibatch sample indices, for one run (``(n, …)``) and for replicas (``(S, n, …)``, each
replica from its own generator, the same draws in the same order as alone)."""

from __future__ import annotations

import numpy as np


def sample_batch(rng: np.random.Generator, n: int, J: int, b: int,
                 counts: np.ndarray | None = None) -> np.ndarray:
    """``(n, b)`` sample indices: per client, b distinct indices uniform over ``range(J)``
    (uniform over b-subsets), each row sorted.

    Vectorized rejection of rows with repeats when ``b² ≤ J`` (accepts with probability
    ≳ 0.6), otherwise one random permutation per client.

    ``counts (n,)``: ragged clients, client w holding ``J_w = counts[w] ≤ J`` samples
    (rows ``0 .. J_w − 1``): its b indices are uniform over the b-subsets of
    ``range(J_w)`` (:func:`sample_batch_ragged`, which refuses ``b > min_w J_w``).
    Counts all equal to some ``J' ≤ J`` draw exactly as ``sample_batch(rng, n, J', b)``.
    """
    if counts is not None:
        counts = np.asarray(counts)
        if (counts != counts[0]).any():
            return sample_batch_ragged(rng, counts, b)
        J = int(counts[0])  # equal sizes (padded to a larger J in a stacked batch)
    if not 1 <= b <= J:
        raise ValueError(f"batch size must be in [1, J] = [1, {J}], got {b}")
    if b == 1:
        return rng.integers(J, size=(n, 1))
    if b * b > J:
        return np.sort(np.argsort(rng.random((n, J)), axis=1)[:, :b], axis=1)
    idx = np.sort(rng.integers(J, size=(n, b)), axis=1)
    bad = (idx[:, 1:] == idx[:, :-1]).any(axis=1)
    while bad.any():
        k = int(bad.sum())
        idx[bad] = np.sort(rng.integers(J, size=(k, b)), axis=1)
        bad = (idx[:, 1:] == idx[:, :-1]).any(axis=1)
    return idx


def sample_batch_ragged(rng: np.random.Generator, counts: np.ndarray, b: int) -> np.ndarray:
    """``(n, b)`` sorted sample indices of ragged clients: client w's b indices are
    distinct and uniform over the b-subsets of ``range(J_w)``, ``J_w = counts[w]``
    (``counts (n,)``); the padding rows from ``J_w`` on are never drawn.

    The rule for ``b > J_w`` is to refuse: ``1 ≤ b ≤ min_w J_w`` is required
    (``ValueError`` otherwise; the simulator checks the config's ``batch_size`` before
    any work).  Draws, in this order: ``b = 1``, one ``integers(J_w)`` per client; else
    the clients with ``b² ≤ J_w`` draw b ``integers(J_w)`` each, rows with a repeat
    redrawn (vectorized rejection, as :func:`sample_batch`), then the others take the b
    smallest of ``K`` uniform keys (``K`` the largest ``J_w`` among them), the keys past
    ``J_w`` set above every real one (a uniform b-subset of the real rows;
    ``argpartition``, O(K) per client).  The draws depend on ``counts`` and ``b`` only
    (not on ``J_max``), so a replica stacked with larger data sets draws as alone.
    """
    counts = np.asarray(counts)
    n, lo = counts.shape[0], int(counts.min())
    if not 1 <= b <= lo:
        w = int(np.argmin(counts))
        raise ValueError(
            f"batch size must be in [1, min_w J_w] = [1, {lo}] (client {w} holds {lo} samples; "
            f"a batch is b distinct samples of one client), got {b}"
        )
    if b == 1:
        return rng.integers(counts[:, None], size=(n, 1))
    idx = np.empty((n, b), dtype=np.int64)
    small = b * b <= counts
    if small.any():
        c = counts[small][:, None]
        rows = np.sort(rng.integers(c, size=(c.shape[0], b)), axis=1)
        bad = (rows[:, 1:] == rows[:, :-1]).any(axis=1)
        while bad.any():
            rows[bad] = np.sort(rng.integers(c[bad], size=(int(bad.sum()), b)), axis=1)
            bad = (rows[:, 1:] == rows[:, :-1]).any(axis=1)
        idx[small] = rows
    if not small.all():
        c = counts[~small]
        width = int(c.max())  # the draws depend on the counts only, not on J_max
        keys = rng.random((c.shape[0], width))
        keys[np.arange(width) >= c[:, None]] = 2.0  # padding: after every real row
        idx[~small] = np.sort(np.argpartition(keys, b - 1, axis=1)[:, :b], axis=1)
    return idx


def participation_mask(rng: np.random.Generator, n: int, gamma: float) -> np.ndarray | None:
    """Bernoulli(γ) participation ``(n,)`` bool; ``None`` (everybody) when γ = 1."""
    if gamma >= 1.0:
        return None
    return rng.random(n) < gamma


def participation_masks(gens: list, n: int, gammas: np.ndarray) -> np.ndarray | None:
    """``(S, n)`` participation of every replica (:func:`participation_mask` from each
    replica's own generator; a replica with γ = 1 draws nothing and takes part fully);
    ``None`` when every γ = 1."""
    if (gammas >= 1.0).all():
        return None
    out = np.ones((len(gens), n), bool)
    for s, (g, gam) in enumerate(zip(gens, gammas)):
        m = participation_mask(g, n, float(gam))
        if m is not None:
            out[s] = m
    return out


def sample_batches(gens: list, n: int, J: int, b: int, counts: np.ndarray | None = None) -> np.ndarray:
    """``(S, n, b)`` sample indices: :func:`sample_batch` from each replica's generator
    (the same draws in the same order), with the sorting and the repeat check done
    once for all replicas; only replicas with a repeat redraw, one by one.

    ``counts``: ragged clients, ``(n,)`` shared or ``(S, n)`` one row per replica
    (:meth:`Problem.replica_counts`), drawn replica by replica by
    :func:`sample_batch_ragged`; ``None`` for equal sizes."""
    if counts is not None:
        c = np.broadcast_to(counts, (len(gens), n))
        return np.stack([sample_batch(g, n, J, b, cs) for g, cs in zip(gens, c)])
    if len(gens) == 1 or not 1 < b <= J:
        return np.stack([sample_batch(g, n, J, b) for g in gens])
    if b * b > J:
        keys = np.stack([g.random((n, J)) for g in gens])
        return np.sort(np.argsort(keys, axis=-1)[..., :b], axis=-1)
    idx = np.sort(np.stack([g.integers(J, size=(n, b)) for g in gens]), axis=-1)
    bad = (idx[..., 1:] == idx[..., :-1]).any(axis=-1)  # (S, n)
    for s in np.flatnonzero(bad.any(axis=1)):
        g, rows, bs = gens[s], idx[s], bad[s]
        while bs.any():  # the rejection loop of sample_batch
            k = int(bs.sum())
            rows[bs] = np.sort(g.integers(J, size=(k, b)), axis=1)
            bs = (rows[:, 1:] == rows[:, :-1]).any(axis=1)
    return idx
