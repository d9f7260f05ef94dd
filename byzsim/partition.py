"""Partitions: split a training set over ``n`` clients as stacked arrays.

Every partition returns ``Xc`` of shape ``(n, J, p)`` (float64, C-contiguous) and ``yc``
of shape ``(n, J)`` (int64): **every client holds the same number J of samples**, as
both papers assume. Client ``k`` is row ``k``; the Byzantine mask ``(n,) bool`` is chosen
by the caller (:func:`draw_byzantine`) and passed in.

==========  ==================================================================  =========
name        who holds what                                                      default J
==========  ==================================================================  =========
iid         a uniform shuffle split over all n clients (Byzantine ones too)     N // n
by_class    paper B: client k holds only class ``k // (n/C)``                   min_c n_c // (n/C)
unbalanced  paper A: each class spread over the *regular* clients in Dirichlet  N // r
            shares; Byzantine rows are filler drawn with replacement
==========  ==================================================================  =========

Within the regular clients no training sample is used twice (all three partitions draw
without replacement). Everything random comes from the ``rng`` passed in, so the same
seed gives the same partition.

>>> rng = np.random.default_rng(0)
>>> X, y = np.arange(40.0).reshape(20, 2), np.arange(20) % 2
>>> byz = draw_byzantine(4, 1, rng)
>>> Xc, yc = partition("by_class", X, y, 4, byz, rng)
>>> Xc.shape, yc[:, 0].tolist()
((4, 5, 2), [0, 0, 1, 1])
"""

from __future__ import annotations

import numbers
from typing import Callable

import numpy as np

from .registry import Registry, bind_parameters

__all__ = ["PARTITIONS", "partition", "iid", "by_class", "unbalanced", "draw_byzantine"]

PARTITIONS: Registry = Registry("partition")


# --------------------------------------------------------------------------- validation


def _is_int(v) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _check_inputs(X, y, n_clients, byzantine, rng) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    X = np.asarray(X)
    y = np.asarray(y)
    if X.ndim != 2:
        raise ValueError(f"X must be 2-D (N, p), got shape {X.shape}")
    if y.shape != (X.shape[0],):
        raise ValueError(f"y must have shape (N,) = ({X.shape[0]},) to match X, got {y.shape}")
    if X.shape[0] == 0:
        raise ValueError("X is empty (N = 0)")
    if not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"y must hold integer class labels, got dtype {y.dtype}")
    if y.min() < 0:
        raise ValueError(f"y must hold labels >= 0, got {y.min()}")
    if not _is_int(n_clients) or n_clients < 1:
        raise ValueError(f"n_clients must be an integer >= 1, got {n_clients!r}")
    byzantine = np.asarray(byzantine)
    if byzantine.shape != (n_clients,) or byzantine.dtype != np.bool_:
        raise ValueError(
            f"byzantine must be a bool mask of shape (n_clients,) = ({n_clients},), got "
            f"shape {byzantine.shape} dtype {byzantine.dtype} (see draw_byzantine)"
        )
    if not isinstance(rng, np.random.Generator):
        raise ValueError(
            f"rng must be a numpy.random.Generator (np.random.default_rng(seed)), got "
            f"{type(rng).__name__}"
        )
    return X, y, byzantine


def _check_J(samples_per_client, J_max: int, what: str) -> int:
    """The samples per client: ``J_max`` by default, else the given value if feasible."""
    if samples_per_client is None:
        J = J_max
    elif not _is_int(samples_per_client) or samples_per_client < 1:
        raise ValueError(f"samples_per_client must be an integer >= 1, got {samples_per_client!r}")
    elif samples_per_client > J_max:
        raise ValueError(
            f"samples_per_client={samples_per_client} is too large: at most {J_max} ({what})"
        )
    else:
        J = int(samples_per_client)
    if J < 1:
        raise ValueError(f"not enough samples to give every client one: {what}")
    return J


def _gather(X: np.ndarray, y: np.ndarray, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``X[idx]``, ``y[idx]`` for an ``(n, J)`` index matrix, as float64 / int64."""
    Xc = np.take(X, idx, axis=0)  # (n, J, p), C-contiguous
    if Xc.dtype != np.float64:
        Xc = Xc.astype(np.float64)
    return Xc, np.take(y, idx).astype(np.int64, copy=False)


# --------------------------------------------------------------------------- front door


def partition(
    name: str,
    X: np.ndarray,
    y: np.ndarray,
    n_clients: int,
    byzantine: np.ndarray,
    rng: np.random.Generator,
    **params,
) -> tuple[np.ndarray, np.ndarray]:
    """Split ``(X, y)`` over ``n_clients`` clients with the registered partition ``name``.

    Parameters
    ----------
    name : str
        One of :data:`PARTITIONS` (``"iid"``, ``"by_class"``, ``"unbalanced"``).
    X : ndarray, shape (N, p)
    y : ndarray, shape (N,), integer labels >= 0
    n_clients : int, >= 1
    byzantine : ndarray, shape (n_clients,), bool
    rng : numpy.random.Generator
    **params
        Keyword parameters of the partition (e.g. ``samples_per_client``,
        ``concentration``); unknown ones raise ``ValueError`` listing the valid ones.

    Returns
    -------
    Xc : ndarray, shape (n_clients, J, p), float64, C-contiguous
    yc : ndarray, shape (n_clients, J), int64
    """
    fn = PARTITIONS[name]
    bound: Callable = bind_parameters("partition", name, fn, params)
    X, y, byzantine = _check_inputs(X, y, n_clients, byzantine, rng)
    return bound(X, y, n_clients, byzantine, rng)


# --------------------------------------------------------------------------- partitions


@PARTITIONS.register("iid")
def iid(X, y, n_clients, byzantine, rng, *, samples_per_client: int | None = None):
    """Uniform iid split over **all** ``n`` clients (Byzantine clients hold data too).

    One permutation of the N samples; client ``k`` gets positions ``k*J .. (k+1)*J - 1``.
    ``J = N // n`` unless ``samples_per_client`` (<= N // n) is given; the remaining
    samples are unused.
    """
    X, y, byzantine = _check_inputs(X, y, n_clients, byzantine, rng)
    N = X.shape[0]
    J = _check_J(samples_per_client, N // n_clients, f"N // n_clients = {N} // {n_clients}")
    idx = rng.permutation(N)[: n_clients * J].reshape(n_clients, J)
    return _gather(X, y, idx)


@PARTITIONS.register("by_class")
def by_class(X, y, n_clients, byzantine, rng, *, samples_per_client: int | None = None):
    """Paper B's non-iid split: every ``n/C`` consecutive clients share one class.

    With ``C`` the number of distinct labels present in ``y`` (sorted), ``n`` must be a
    multiple of ``C``; client ``k`` holds only the ``(k // (n/C))``-th class. Within a
    class the samples are shuffled and split into ``n/C`` disjoint blocks of ``J``.
    ``J = min_c (count_c // (n/C))`` unless ``samples_per_client`` (at most that) is
    given.

    Paper B makes the clients holding whole classes Byzantine (e.g. ``n = 50``, ``C = 10``,
    Byzantine clients 0-9 hold classes 0 and 1, which then vanish from the honest data):
    pass ``draw_byzantine(n, b, rng, indices=range(b))`` for that layout.
    """
    X, y, byzantine = _check_inputs(X, y, n_clients, byzantine, rng)
    classes, counts = np.unique(y, return_counts=True)
    C = len(classes)
    if n_clients % C:
        raise ValueError(
            f"by_class needs n_clients to be a multiple of the number of classes: "
            f"n_clients={n_clients}, C={C} (classes {classes.tolist()}); valid n_clients: "
            f"{C}, {2 * C}, {3 * C}, ..."
        )
    m = n_clients // C
    J = _check_J(
        samples_per_client, int(counts.min()) // m,
        f"the smallest class ({classes[counts.argmin()]}) has {counts.min()} samples for "
        f"n_clients/C = {m} clients",
    )
    order = np.argsort(y, kind="stable")  # samples grouped by class
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    idx = np.empty((n_clients, J), dtype=np.intp)
    for c in range(C):  # setup loop over classes, vectorized within
        members = order[starts[c]: starts[c] + counts[c]]
        idx[c * m: (c + 1) * m] = rng.permutation(members)[: m * J].reshape(m, J)
    return _gather(X, y, idx)


def _sinkhorn(M: np.ndarray, rows: np.ndarray, cols: np.ndarray,
              max_iter: int = 2000, tol: float = 1e-9) -> np.ndarray:
    """Iterative proportional fitting: scale rows and columns of positive ``M`` to the
    target sums ``rows`` and ``cols`` (same total). Ends with a row scaling, so the row
    sums are exact and the column sums approximate (within ``tol`` relative)."""
    def ratio(target: np.ndarray, current: np.ndarray) -> np.ndarray:
        return np.divide(target, current, out=np.zeros_like(target), where=current > 0)

    M = M * ratio(cols, M.sum(axis=0))
    for _ in range(max_iter):
        M *= ratio(rows, M.sum(axis=1))[:, None]
        colsum = M.sum(axis=0)
        if np.max(np.abs(colsum - cols)) <= tol * cols.max():
            break
        M *= ratio(cols, colsum)
    else:
        M *= ratio(rows, M.sum(axis=1))[:, None]
    return M


def _round_rows(M: np.ndarray, J: int) -> np.ndarray:
    """Largest-remainder rounding of each row of ``M`` (rows summing to ``J``) to
    integers summing exactly to ``J``."""
    K = np.floor(M).astype(np.int64)
    short = J - K.sum(axis=1)  # (r,), in [0, C)
    rank = np.argsort(np.argsort(-(M - K), axis=1, kind="stable"), axis=1, kind="stable")
    K += rank < short[:, None]
    return K


def _repair_columns(K: np.ndarray, M: np.ndarray, avail: np.ndarray) -> np.ndarray:
    """Move single units within rows (row sums unchanged) until every column sum is
    ``<= avail``. Takes from the entry most above its real target ``M`` and gives to the
    entry of that row most below its target among the columns with room. Terminates:
    each move lowers the total excess by one, and room exists since ``sum(avail) >=
    K.sum()``."""
    K = K.copy()
    col = K.sum(axis=0)
    while True:
        over = np.flatnonzero(col > avail)
        if over.size == 0:
            return K
        c = over[0]
        room = col < avail
        rows = np.flatnonzero(K[:, c] > 0)
        i = rows[np.argmax((K - M)[rows, c])]
        gain = np.where(room, M[i] - K[i], -np.inf)
        c2 = int(np.argmax(gain))
        K[i, c] -= 1
        K[i, c2] += 1
        col[c] -= 1
        col[c2] += 1


@PARTITIONS.register("unbalanced")
def unbalanced(X, y, n_clients, byzantine, rng, *, concentration: float = 1.0,
               samples_per_client: int | None = None):
    """Paper A's "unbalanced proportions": each class spread over the **regular** clients
    in unequal (Dirichlet) shares, every client still holding exactly ``J`` samples.

    Let ``r`` be the number of regular clients, ``n_c`` the count of class ``c`` (over
    the ``C`` distinct labels in ``y``) and ``J = N // r`` unless ``samples_per_client``
    (<= N // r) is given. The regular clients' ``(r, C)`` count matrix ``K`` is built so:

    1. **Dirichlet shares.** For every class ``c`` draw a column
       ``Q[:, c] ~ Dirichlet(concentration * 1_r)``: the share of class ``c`` each regular
       client would get (floored at 1e-12 so every entry is positive). Small
       ``concentration`` concentrates each class on few clients; large ones approach iid.
    2. **Integer class totals.** ``T_c`` = largest-remainder rounding of ``n_c * r J / N``
       (the class frequencies times ``r J``): ``sum T_c = r J`` and ``T_c <= n_c``.
    3. **Sinkhorn / IPF.** Scale ``Q``'s columns to ``T_c`` and rows to ``J`` alternately
       until the column sums match (<= 2000 sweeps); the last scaling is of the rows, so
       every row sums to ``J`` exactly. This keeps the Dirichlet pattern (the cross-ratios
       of ``Q``) while fixing the margins.
    4. **Rounding.** Round each row to integers summing exactly to ``J`` (largest
       remainder), then, if some class column exceeds its available count ``n_c``, move
       single units within a row to classes with room (most-overfull entry to most-
       underfull entry) until every column sum is ``<= n_c``. No reduction of ``J`` is
       ever needed: ``r J <= N`` guarantees room.
    5. **Drawing.** Each class's samples are shuffled and handed out without
       replacement in blocks of ``K[i, c]``; each client's ``J`` samples are then
       shuffled (so their order carries no class information).

    Byzantine clients' rows are **filler**: ``J`` samples drawn iid with replacement from
    the whole training set. Paper A's attacks replace the Byzantine clients' messages
    without reading their data, so the filler only keeps the array rectangular.

    Raises ``ValueError`` if ``concentration <= 0`` or no client is regular.
    """
    X, y, byzantine = _check_inputs(X, y, n_clients, byzantine, rng)
    if not isinstance(concentration, numbers.Real) or not concentration > 0:
        raise ValueError(f"concentration must be a number > 0, got {concentration!r}")
    regular = np.flatnonzero(~byzantine)
    r = regular.size
    if r == 0:
        raise ValueError(f"unbalanced needs at least one regular client; all {n_clients} are Byzantine")
    N = X.shape[0]
    J = _check_J(samples_per_client, N // r, f"N // (regular clients) = {N} // {r}")
    classes, counts = np.unique(y, return_counts=True)
    C = len(classes)

    # 1. Dirichlet shares, one column per class.
    Q = rng.dirichlet(np.full(r, float(concentration)), size=C).T  # (r, C)
    Q = np.maximum(Q, 1e-12)
    # 2. integer class totals proportional to the class counts
    target = counts * (r * J / N)
    T = np.floor(target).astype(np.int64)
    extra = r * J - T.sum()
    T[np.argsort(-(target - T), kind="stable")[:extra]] += 1
    # 3. Sinkhorn to rows J, columns T; 4. integer rounding within the available counts
    M = _sinkhorn(Q, np.full(r, float(J)), T.astype(np.float64))
    K = _repair_columns(_round_rows(M, J), M, counts)  # (r, C), rows sum to J

    # 5. draw without replacement: owner of each handed-out sample, grouped by client
    order = np.argsort(y, kind="stable")
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    owners, samples = [], []
    for c in range(C):
        members = rng.permutation(order[starts[c]: starts[c] + counts[c]])
        k = K[:, c]
        owners.append(np.repeat(np.arange(r), k))
        samples.append(members[: k.sum()])
    owners_a, samples_a = np.concatenate(owners), np.concatenate(samples)
    reg_idx = samples_a[np.argsort(owners_a, kind="stable")].reshape(r, J)
    reg_idx = rng.permuted(reg_idx, axis=1)

    idx = np.empty((n_clients, J), dtype=np.intp)
    idx[regular] = reg_idx
    idx[byzantine] = rng.integers(0, N, size=(n_clients - r, J))
    return _gather(X, y, idx)


# --------------------------------------------------------------------------- Byzantine mask


def draw_byzantine(
    n_clients: int,
    n_byzantine: int | None,
    rng: np.random.Generator | None = None,
    indices=None,
) -> np.ndarray:
    """The Byzantine mask, shape ``(n_clients,)`` bool.

    With ``indices`` (explicit client ids, e.g. ``range(10)`` for paper B's layout) they
    are validated — integers in ``[0, n_clients)``, unique, ``len == n_byzantine`` (which
    may then be ``None``) — and ``rng`` is not used. Otherwise ``n_byzantine`` distinct
    clients are drawn uniformly at random from ``rng``.

    Raises ``ValueError`` unless ``0 <= n_byzantine < n_clients`` (at least one client
    must be regular).
    """
    if not _is_int(n_clients) or n_clients < 1:
        raise ValueError(f"n_clients must be an integer >= 1, got {n_clients!r}")
    if indices is not None:
        idx = np.asarray(list(indices) if not isinstance(indices, np.ndarray) else indices)
        if idx.ndim != 1 or (idx.size and not np.issubdtype(idx.dtype, np.integer)):
            raise ValueError(f"indices must be a 1-D sequence of integer client ids, got {indices!r}")
        idx = idx.astype(np.intp)
        if n_byzantine is None:
            n_byzantine = int(idx.size)
    if not _is_int(n_byzantine) or not 0 <= n_byzantine < n_clients:
        raise ValueError(
            f"n_byzantine must be an integer with 0 <= n_byzantine < n_clients = {n_clients} "
            f"(at least one regular client), got {n_byzantine!r}"
        )
    mask = np.zeros(n_clients, dtype=bool)
    if indices is None:
        if not isinstance(rng, np.random.Generator):
            raise ValueError(
                "draw_byzantine needs rng (a numpy.random.Generator) when indices is not given"
            )
        mask[rng.choice(n_clients, size=n_byzantine, replace=False)] = True
        return mask
    bad = idx[(idx < 0) | (idx >= n_clients)]
    if bad.size:
        raise ValueError(
            f"Byzantine indices {bad.tolist()} are out of range; valid: 0..{n_clients - 1}"
        )
    uniq, cnt = np.unique(idx, return_counts=True)
    if (cnt > 1).any():
        raise ValueError(f"Byzantine indices must be unique; repeated: {uniq[cnt > 1].tolist()}")
    if idx.size != n_byzantine:
        raise ValueError(
            f"got {idx.size} Byzantine indices but n_byzantine={n_byzantine}; they must agree"
        )
    mask[idx] = True
    return mask
