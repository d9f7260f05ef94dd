"""Partitions: split a training set over ``n`` clients as stacked arrays.

Layout
------
A partition decides which training samples each client holds. The data of all clients
is one stacked, padded array triple, :class:`ClientData`:

=========  ======================  ====================================================
field      shape, dtype            meaning
=========  ======================  ====================================================
``X``      ``(n, J_max, p)`` f8    client ``w``'s samples are rows ``0 .. J_w - 1`` of
                                   ``X[w]``; rows ``J_w .. J_max - 1`` are padding,
                                   filled with ``pad`` (0.0 unless asked otherwise)
``y``      ``(n, J_max)`` int64    labels of those rows; padding holds
                                   :data:`PAD_LABEL` (-1, never a class)
``counts`` ``(n,)`` int64          ``J_w``, with ``1 <= J_w <= J_max``
=========  ======================  ====================================================

Padding sits at the end of each client's block, so ``mask = arange(J_max) < counts[:,
None]`` marks the real rows, and drawing a sample of client ``w`` is ``X[w, j]`` with
``j`` uniform in ``[0, J_w)``: one gather for all clients, no loop over clients. The
price is memory: the padded array is ``n J_max / N`` times the size of the data it
holds. That ratio is 1 for the equal-size partitions; on MNIST over 30 clients
(seed 0) it is 1.12 for ``by_class`` with ``truncate=False``, 1.77 for ``dirichlet``
with ``beta=0.5`` (J_w from 765 to 3547) and 3.63 for ``quantity_skew`` with
``beta=0.5`` (J_w from 15 to 7262). Client ``k`` is row ``k``; the Byzantine mask
``(n,) bool`` is chosen by the caller (:func:`draw_byzantine`) and passed in.

Two front doors:

- :func:`partition_clients` returns a :class:`ClientData` for every partition;
- :func:`partition` returns the plain ``(Xc (n, J, p), yc (n, J))`` pair of the
  equal-size partitions (every client holds J samples, as both papers assume) and
  refuses the ones that give clients unequal sizes before drawing anything.

Partitions
----------
Every partition is a function ``(y, n_clients, byzantine, rng, **params) -> Assignment``
in :data:`PARTITIONS`: it reads only the labels and says which sample each client holds.

=============  ==========================================================  ============
name           who holds what                                              sizes
=============  ==========================================================  ============
iid            a uniform shuffle split over all n clients                  equal N // n
by_class       paper B: client k holds only class ``k // (n/C)``;          equal or
               ``truncate=True`` cuts every client to the smallest share,  ragged
               ``truncate=False`` (the paper's text) uses every sample
unbalanced     paper A: each class spread over the *regular* clients in    equal N // r
               Dirichlet shares, rescaled to equal sizes; Byzantine rows
               are filler drawn with replacement
dirichlet      label skew: each class split over all n clients by          ragged
               Dirichlet(beta) proportions
quantity_skew  client sizes by Dirichlet(beta) proportions, labels iid     ragged
               within a client
=============  ==========================================================  ============

Except for ``unbalanced``, Byzantine clients hold real data like the others (the
sign-flipping attack sends a multiple of the Byzantine client's own honest message).
Within the regular clients no training sample is used twice (every partition draws
without replacement). Everything random comes from the ``rng`` passed in, so the same
seed gives the same partition.

>>> rng = np.random.default_rng(0)
>>> X, y = np.arange(40.0).reshape(20, 2), np.arange(20) % 2
>>> byz = draw_byzantine(4, 1, rng)
>>> Xc, yc = partition("by_class", X, y, 4, byz, rng)
>>> Xc.shape, yc[:, 0].tolist()
((4, 5, 2), [0, 0, 1, 1])
>>> X, y = np.arange(12.0)[:, None], np.array([0] * 7 + [1] * 5)
>>> cd = partition_clients("by_class", X, y, 4, byz, rng, truncate=False)
>>> cd.counts.tolist(), cd.X.shape, cd.y[3].tolist()
([4, 3, 3, 2], (4, 4, 1), [1, 1, -1, -1])
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass
from typing import Callable, NamedTuple

import numpy as np

from .registry import Meta, ParameterValueError, Range, Registry, bind_parameters, optional_callable

__all__ = [
    "PARTITIONS", "PAD_LABEL", "Assignment", "ClientData", "partition", "partition_clients",
    "class_counts", "iid", "by_class", "unbalanced", "dirichlet", "quantity_skew",
    "draw_byzantine",
]

PARTITIONS: Registry = Registry("partition", schema={
    "smallest_client": Meta("(params, N, n_clients, n_byzantine) -> the fewest samples a client holds, "
                            "or None when that depends on the labels (checked before a run)",
                            default=None, check=optional_callable),
})


def _equal_share(per: str):
    """``smallest_client`` of a partition of ``N // m`` samples per client (or the
    ``samples_per_client`` set, which must not exceed it); ``m`` is every client
    (``per="all"``) or the regular ones (``per="regular"``)."""
    def smallest(params, N: int, n_clients: int, n_byzantine: int) -> int:
        m = n_clients - (n_byzantine if per == "regular" else 0)
        share = N // max(m, 1)
        spc = params.get("samples_per_client")
        if spc is not None and spc > share:
            raise ParameterValueError("samples_per_client", spc,
                                      f"expected at most N // clients = {N} // {m} = {share}")
        return share if spc is None else spc
    return smallest


def _min_size(params, N: int, n_clients: int, n_byzantine: int) -> None:
    """Checks ``min_size`` against the data; the smallest client itself depends on the
    draw (it holds at least ``min_size``), so the batch size is checked when the
    partition is drawn, against the actual smallest client."""
    m = params.get("min_size", 10)
    if n_clients * m > N:
        raise ParameterValueError("min_size", m, f"expected at most N // n_clients = {N} // {n_clients}")
    return None

PAD_LABEL = -1
"""The label of a padding row: never a class, so a padding row that reaches a loss or a
count fails loudly instead of counting as class 0."""


# --------------------------------------------------------------------------- layout


class Assignment(NamedTuple):
    """Which training sample each client holds.

    ``idx (n, J_max)`` intp: client ``w``'s sample indices into the training set in
    ``idx[w, :counts[w]]``, then ``-1`` padding; ``counts (n,)`` int64.
    """

    idx: np.ndarray
    counts: np.ndarray

    @classmethod
    def equal(cls, idx: np.ndarray) -> "Assignment":
        """An ``(n, J)`` index matrix without padding (every client holds J samples)."""
        return cls(idx, np.full(idx.shape[0], idx.shape[1], dtype=np.int64))


@dataclass(frozen=True, eq=False)  # arrays: compare them with numpy, not ==
class ClientData:
    """Ragged client data, stacked and padded (the module docstring states the contract).

    Parameters
    ----------
    X : ndarray, shape (n, J_max, p)
    y : ndarray, shape (n, J_max), int64; padding rows hold :data:`PAD_LABEL`
    counts : ndarray, shape (n,), int64; ``J_w`` in ``[1, J_max]``
    pad : float
        The value of ``X``'s padding rows (NaN allowed).

    Construction checks shapes and dtypes; :meth:`validate` checks the values.
    """

    X: np.ndarray
    y: np.ndarray
    counts: np.ndarray
    pad: float = 0.0

    def __post_init__(self):
        X, y, counts = self.X, self.y, self.counts
        if not isinstance(X, np.ndarray) or X.ndim != 3:
            raise ValueError(f"ClientData.X must be a 3-D array (n, J_max, p), got shape {np.shape(X)}")
        if not isinstance(y, np.ndarray) or y.shape != X.shape[:2]:
            raise ValueError(
                f"ClientData.y must have shape (n, J_max) = {X.shape[:2]} to match X, got {np.shape(y)}"
            )
        if not np.issubdtype(y.dtype, np.integer):
            raise ValueError(f"ClientData.y must hold integer labels, got dtype {y.dtype}")
        if not isinstance(counts, np.ndarray) or counts.shape != (X.shape[0],):
            raise ValueError(
                f"ClientData.counts must have shape (n,) = ({X.shape[0]},) to match X, got {np.shape(counts)}"
            )
        if not np.issubdtype(counts.dtype, np.integer):
            raise ValueError(f"ClientData.counts must be integers, got dtype {counts.dtype}")

    @classmethod
    def equal(cls, X: np.ndarray, y: np.ndarray) -> "ClientData":
        """Equal-size client data ``X (n, J, p)``, ``y (n, J)``: counts all J, no padding."""
        return cls(X, y, np.full(np.shape(X)[0], np.shape(X)[1], dtype=np.int64))

    @property
    def n(self) -> int:
        """The number of clients."""
        return self.X.shape[0]

    @property
    def J_max(self) -> int:
        """The padded number of rows per client (>= every ``J_w``)."""
        return self.X.shape[1]

    @property
    def equal_sizes(self) -> bool:
        """True when every client holds ``J_max`` samples (no padding at all)."""
        return bool((self.counts == self.J_max).all())

    @property
    def mask(self) -> np.ndarray:
        """``(n, J_max)`` bool: True on the real rows, False on the padding."""
        return np.arange(self.J_max) < self.counts[:, None]

    def validate(self, n_classes: int | None = None) -> "ClientData":
        """Check the counts against the data; return ``self``.

        Raises ``ValueError`` naming the first mismatch: a count outside ``[1, J_max]``, a
        padding row of ``X`` that is not ``pad``, a padding label that is not
        :data:`PAD_LABEL`, a real label outside ``[0, n_classes)`` (``>= 0`` when
        ``n_classes`` is None).
        """
        c = self.counts
        bad = np.flatnonzero((c < 1) | (c > self.J_max))
        if bad.size:
            w = int(bad[0])
            raise ValueError(
                f"ClientData.counts[{w}] = {int(c[w])} is out of range: every client holds "
                f"between 1 and J_max = {self.J_max} samples"
            )
        mask = self.mask
        padX = self.X[~mask]  # (number of padding rows, p)
        ok = np.isnan(padX) if np.isnan(self.pad) else padX == self.pad
        row_ok = ok.all(axis=1) if padX.ndim == 2 else ok
        if not row_ok.all():
            w = int(np.flatnonzero(~mask)[np.argmin(row_ok)] // self.J_max)
            raise ValueError(
                f"ClientData.X: padding rows of client {w} (rows {int(c[w])}..{self.J_max - 1}) "
                f"hold values other than pad = {self.pad}; counts[{w}] = {int(c[w])} does not "
                f"match the data"
            )
        pad_y = self.y[~mask]
        if (pad_y != PAD_LABEL).any():
            w = int(np.flatnonzero(~mask)[np.argmax(pad_y != PAD_LABEL)] // self.J_max)
            raise ValueError(
                f"ClientData.y: padding labels of client {w} (rows {int(c[w])}..{self.J_max - 1}) "
                f"must be {PAD_LABEL}; counts[{w}] = {int(c[w])} does not match the labels"
            )
        real_y = self.y[mask]
        hi = np.inf if n_classes is None else n_classes
        out = (real_y < 0) | (real_y >= hi)
        if out.any():
            flat = np.flatnonzero(mask)[np.argmax(out)]
            w, j = divmod(int(flat), self.J_max)
            rng_txt = "labels >= 0" if n_classes is None else f"labels in [0, {n_classes})"
            raise ValueError(
                f"ClientData.y[{w}, {j}] = {int(self.y[w, j])} is not a valid label ({rng_txt}); "
                f"counts[{w}] = {int(c[w])}"
            )
        return self


def class_counts(client_data: ClientData, n_classes: int) -> np.ndarray:
    """Samples of each class per client, shape ``(n, n_classes)`` int64 (padding excluded).

    Row sums are the ``counts``; column sums the class totals held by the clients.
    """
    if not isinstance(n_classes, numbers.Integral) or n_classes < 1:
        raise ValueError(f"n_classes must be an integer >= 1, got {n_classes!r}")
    mask = client_data.mask
    labels = client_data.y[mask]
    if labels.size and (labels.min() < 0 or labels.max() >= n_classes):
        bad = labels[(labels < 0) | (labels >= n_classes)][0]
        raise ValueError(f"label {int(bad)} is outside [0, n_classes) = [0, {n_classes})")
    owner = np.broadcast_to(np.arange(client_data.n)[:, None], mask.shape)[mask]
    flat = np.bincount(owner * n_classes + labels, minlength=client_data.n * n_classes)
    return flat.reshape(client_data.n, n_classes).astype(np.int64, copy=False)


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
    _check_labels(y, n_clients, byzantine, rng)
    return X, y, np.asarray(byzantine)


def _check_labels(y, n_clients, byzantine, rng) -> None:
    if y.ndim != 1:
        raise ValueError(f"y must be 1-D (N,), got shape {y.shape}")
    if y.shape[0] == 0:
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


def _check_positive(name: str, value, meaning: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not (0 < value < np.inf):
        raise ValueError(f"{name} must be a finite number > 0 ({meaning}), got {value!r}")
    return float(value)


def _check_count(name: str, value, lo: int, hi: int | None, why: str = "") -> int:
    if not _is_int(value) or value < lo or (hi is not None and value > hi):
        valid = f">= {lo}" if hi is None else f"in [{lo}, {hi}]"
        raise ValueError(f"{name} must be an integer {valid}{why}, got {value!r}")
    return int(value)


# --------------------------------------------------------------------------- gathering


def _gather(X: np.ndarray, y: np.ndarray, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``X[idx]``, ``y[idx]`` for an ``(n, J)`` index matrix, as float64 / int64."""
    Xc = np.take(X, idx, axis=0)  # (n, J, p), C-contiguous
    if Xc.dtype != np.float64:
        Xc = Xc.astype(np.float64)
    return Xc, np.take(y, idx).astype(np.int64, copy=False)


def _gather_clients(X: np.ndarray, y: np.ndarray, a: Assignment, pad: float) -> ClientData:
    """The :class:`ClientData` of assignment ``a``: gather, then fill the padding."""
    mask = a.idx >= 0
    if mask.all():
        return ClientData(*_gather(X, y, a.idx), a.counts, pad)
    Xc, yc = _gather(X, y, np.where(mask, a.idx, 0))
    Xc[~mask] = pad
    yc[~mask] = PAD_LABEL
    return ClientData(Xc, yc, a.counts, pad)


def _from_owners(samples: np.ndarray, owners: np.ndarray, n_clients: int,
                 rng: np.random.Generator | None = None) -> Assignment:
    """The :class:`Assignment` in which client ``owners[i]`` holds sample ``samples[i]``.

    Each client keeps its samples in the given order, or in a random order when ``rng``
    is given (so the order carries no class information).
    """
    keys = (owners,) if rng is None else (rng.random(owners.size), owners)
    order = np.lexsort(keys)  # by owner, ties by the random key (or stable)
    counts = np.bincount(owners, minlength=n_clients).astype(np.int64)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    who = owners[order]
    idx = np.full((n_clients, int(counts.max())), -1, dtype=np.intp)
    idx[who, np.arange(order.size) - starts[who]] = samples[order]
    return Assignment(idx, counts)


def _class_groups(y: np.ndarray) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    """Sorted distinct labels ``(C,)``, their counts ``(C,)``, and each class's sample
    indices (ascending)."""
    classes, counts = np.unique(y, return_counts=True)
    order = np.argsort(y, kind="stable")
    return classes, counts, np.split(order, np.cumsum(counts)[:-1])


# --------------------------------------------------------------------------- front doors


def partition(
    name: str,
    X: np.ndarray,
    y: np.ndarray,
    n_clients: int,
    byzantine: np.ndarray,
    rng: np.random.Generator,
    **params,
) -> tuple[np.ndarray, np.ndarray]:
    """Split ``(X, y)`` over ``n_clients`` clients with the equal-size partition ``name``.

    Parameters
    ----------
    name : str
        One of :data:`PARTITIONS` that gives every client the same number of samples
        (``"iid"``, ``"by_class"`` with ``truncate=True``, ``"unbalanced"``); the others
        raise ``ValueError`` pointing to :func:`partition_clients`, before any work.
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
    bound = bind_parameters("partition", name, fn, params)
    if not fn.equal_sizes(params):
        shown = ", ".join(f"{k}={v!r}" for k, v in params.items())
        raise ValueError(
            f"partition {name!r}{f' ({shown})' if shown else ''} gives clients unequal numbers "
            f"of samples; partition() returns equal-size (n, J, p) arrays, use "
            f"partition_clients() (a ClientData with per-client counts) instead"
        )
    X, y, byzantine = _check_inputs(X, y, n_clients, byzantine, rng)
    return _gather(X, y, bound(y, n_clients, byzantine, rng).idx)


def partition_clients(
    name: str,
    X: np.ndarray,
    y: np.ndarray,
    n_clients: int,
    byzantine: np.ndarray,
    rng: np.random.Generator,
    *,
    pad: float = 0.0,
    **params,
) -> ClientData:
    """Split ``(X, y)`` over ``n_clients`` clients with any registered partition ``name``.

    Same parameters as :func:`partition`, plus ``pad``: the value written into the
    padding rows of ``X`` (e.g. NaN, to show that padding never enters a result). An
    equal-size partition gives the same arrays as :func:`partition` for the same ``rng``
    state, with ``counts`` all equal to J.

    Returns
    -------
    ClientData
        ``X (n_clients, J_max, p)`` float64, ``y (n_clients, J_max)`` int64,
        ``counts (n_clients,)`` int64.
    """
    fn = PARTITIONS[name]
    bound = bind_parameters("partition", name, fn, params)
    if not isinstance(pad, numbers.Real):
        raise ValueError(f"pad must be a real number (e.g. 0.0 or nan), got {pad!r}")
    X, y, byzantine = _check_inputs(X, y, n_clients, byzantine, rng)
    return _gather_clients(X, y, bound(y, n_clients, byzantine, rng), float(pad))


def _sizes(rule: Callable[[dict], bool]) -> Callable:
    """Attach ``equal_sizes(params) -> bool`` to a partition: whether, with these
    parameters, it always gives every client the same number of samples."""
    def deco(fn):
        fn.equal_sizes = rule
        return fn
    return deco


_ALWAYS_EQUAL = _sizes(lambda params: True)
_RAGGED = _sizes(lambda params: False)


# --------------------------------------------------------------------------- partitions


_SPC = {"samples_per_client": Range(lo=1, integer=True, optional=True)}


@PARTITIONS.register("iid", smallest_client=_equal_share("all"), ranges=_SPC)
@_ALWAYS_EQUAL
def iid(y, n_clients, byzantine, rng, *, samples_per_client: int | None = None) -> Assignment:
    """Uniform iid split over **all** ``n`` clients (Byzantine clients hold data too).

    One permutation of the N samples; client ``k`` gets positions ``k*J .. (k+1)*J - 1``.
    ``J = N // n`` unless ``samples_per_client`` (<= N // n) is given; the remaining
    samples are unused.
    """
    _check_labels(y, n_clients, byzantine, rng)
    N = y.shape[0]
    J = _check_J(samples_per_client, N // n_clients, f"N // n_clients = {N} // {n_clients}")
    return Assignment.equal(rng.permutation(N)[: n_clients * J].reshape(n_clients, J))


def _check_multiple_of_C(n_clients: int, classes: np.ndarray) -> int:
    C = len(classes)
    if n_clients % C:
        raise ValueError(
            f"by_class needs n_clients to be a multiple of the number of classes: "
            f"n_clients={n_clients}, C={C} (classes {classes.tolist()}); valid n_clients: "
            f"{C}, {2 * C}, {3 * C}, ..."
        )
    return n_clients // C


@PARTITIONS.register("by_class", ranges=_SPC)
@_sizes(lambda params: bool(params.get("truncate", True)))
def by_class(y, n_clients, byzantine, rng, *, samples_per_client: int | None = None,
             truncate: bool = True) -> Assignment:
    """Paper B's non-iid split: every ``m = n/C`` consecutive clients share one class.

    With ``C`` the number of distinct labels present in ``y`` (sorted), ``n`` must be a
    multiple of ``C``; client ``k`` holds only the ``(k // m)``-th class. Within a class
    the samples are shuffled and split into ``m`` disjoint blocks:

    - ``truncate=True`` (the default; equal sizes): blocks of ``J = min_c (n_c // m)``
      samples, or ``samples_per_client`` (at most that). The rest of every class is
      unused (on MNIST with ``m = 3``: J = 1807, 9.7 % of the 60,000 samples dropped, and
      every class weighs the same).
    - ``truncate=False`` (the paper's "every three workers evenly share the data from one
      class"; ragged): class ``c`` is split into ``m`` blocks of ``n_c // m`` or
      ``n_c // m + 1`` samples, the first ``n_c % m`` clients of the class getting one
      more. No sample is dropped. ``samples_per_client`` must then be left unset.

    Paper B makes the clients holding whole classes Byzantine (e.g. ``n = 50``, ``C = 10``,
    Byzantine clients 0-9 hold classes 0 and 1, which then vanish from the honest data):
    pass ``draw_byzantine(n, b, rng, indices=range(b))`` for that layout.
    """
    _check_labels(y, n_clients, byzantine, rng)
    if not isinstance(truncate, (bool, np.bool_)):
        raise ValueError(f"truncate must be true or false, got {truncate!r}")
    classes, counts, members = _class_groups(y)
    m = _check_multiple_of_C(n_clients, classes)
    if not truncate:
        if samples_per_client is not None:
            raise ValueError(
                f"samples_per_client={samples_per_client!r} sets the equal size of "
                f"truncate=True; with truncate=False every sample is used: leave it unset"
            )
        if counts.min() < m:
            c = int(counts.argmin())
            raise ValueError(
                f"by_class would leave a client with no sample: class {classes[c]} has "
                f"{counts[c]} samples for n_clients/C = {m} clients"
            )
        owners = [c * m + np.repeat(np.arange(m), counts[c] // m + (np.arange(m) < counts[c] % m))
                  for c in range(len(classes))]
        samples = [rng.permutation(members[c]) for c in range(len(classes))]
        return _from_owners(np.concatenate(samples), np.concatenate(owners), n_clients)
    J = _check_J(
        samples_per_client, int(counts.min()) // m,
        f"the smallest class ({classes[counts.argmin()]}) has {counts.min()} samples for "
        f"n_clients/C = {m} clients",
    )
    idx = np.empty((n_clients, J), dtype=np.intp)
    for c in range(len(classes)):  # setup loop over classes, vectorized within
        idx[c * m: (c + 1) * m] = rng.permutation(members[c])[: m * J].reshape(m, J)
    return Assignment.equal(idx)


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



@PARTITIONS.register("unbalanced", smallest_client=_equal_share("regular"),
                     ranges={"concentration": Range(lo=0, lo_open=True), **_SPC})
@_ALWAYS_EQUAL
def unbalanced(y, n_clients, byzantine, rng, *, concentration: float = 1.0,
               samples_per_client: int | None = None) -> Assignment:
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
    _check_labels(y, n_clients, byzantine, rng)
    if not isinstance(concentration, numbers.Real) or not concentration > 0:
        raise ValueError(f"concentration must be a number > 0, got {concentration!r}")
    regular = np.flatnonzero(~byzantine)
    r = regular.size
    if r == 0:
        raise ValueError(f"unbalanced needs at least one regular client; all {n_clients} are Byzantine")
    N = y.shape[0]
    J = _check_J(samples_per_client, N // r, f"N // (regular clients) = {N} // {r}")
    classes, counts, members = _class_groups(y)
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
    owners, samples = [], []
    for c in range(C):
        k = K[:, c]
        owners.append(np.repeat(np.arange(r), k))
        samples.append(rng.permutation(members[c])[: k.sum()])
    owners_a, samples_a = np.concatenate(owners), np.concatenate(samples)
    reg_idx = samples_a[np.argsort(owners_a, kind="stable")].reshape(r, J)
    reg_idx = rng.permuted(reg_idx, axis=1)

    idx = np.empty((n_clients, J), dtype=np.intp)
    idx[regular] = reg_idx
    idx[byzantine] = rng.integers(0, N, size=(n_clients - r, J))
    return Assignment.equal(idx)


def _split_by_proportions(P: np.ndarray, totals: np.ndarray) -> np.ndarray:
    """Integer split of ``totals[c]`` items by the proportions ``P[c]`` (rows sum to 1).

    ``K[c] = diff(floor(totals[c] * [0, cumsum(P[c])]))`` with the last cut set to
    ``totals[c]`` exactly, as the reference Dirichlet splitters do: rows of ``K`` sum to
    ``totals``, and ``|K - totals P| < 1`` entrywise. Shapes ``(C, n), (C,) -> (C, n)``.
    """
    cuts = np.floor(np.cumsum(P, axis=1) * totals[:, None]).astype(np.int64)
    cuts[:, -1] = totals
    cuts = np.minimum(cuts, totals[:, None])
    return np.diff(cuts, axis=1, prepend=0)


def _draw_dirichlet_counts(rng: np.random.Generator, totals: np.ndarray, n_clients: int,
                           beta: float, min_size: int, max_redraws: int, name: str) -> np.ndarray:
    """``(C, n)`` counts: each ``totals[c]`` split by ``Dirichlet(beta 1_n)`` proportions,
    the whole matrix redrawn until every client (column) holds ``>= min_size`` items, at
    most ``max_redraws`` times."""
    N = int(totals.sum())
    if n_clients * min_size > N:
        raise ValueError(
            f"{name}: min_size={min_size} cannot hold: n_clients * min_size = "
            f"{n_clients} * {min_size} = {n_clients * min_size} > N = {N} samples"
        )
    alpha = np.full(n_clients, beta)
    smallest = 0
    for _ in range(max_redraws):
        K = _split_by_proportions(rng.dirichlet(alpha, size=totals.size), totals)
        smallest = int(K.sum(axis=0).min())
        if smallest >= min_size:
            return K
    raise ValueError(
        f"{name}: none of max_redraws={max_redraws} draws with beta={beta} gave every one of "
        f"the {n_clients} clients at least min_size={min_size} samples (the last draw's "
        f"smallest client held {smallest}); raise beta or max_redraws, or lower min_size "
        f"or n_clients"
    )


def _check_dirichlet_params(name, y, n_clients, byzantine, rng, beta, min_size, max_redraws):
    _check_labels(y, n_clients, byzantine, rng)
    beta = _check_positive(f"{name}: beta", beta, "the Dirichlet concentration: 0.1 = strong "
                                                  "skew, 100 = close to iid")
    min_size = _check_count(f"{name}: min_size", min_size, 1, None, " (a client needs a sample)")
    max_redraws = _check_count(f"{name}: max_redraws", max_redraws, 1, None)
    return beta, min_size, max_redraws


_DIRICHLET = {"beta": Range(lo=0, lo_open=True), "min_size": Range(lo=1, integer=True),
              "max_redraws": Range(lo=1, integer=True)}


@PARTITIONS.register("dirichlet", smallest_client=_min_size,
                     ranges=_DIRICHLET)
@_RAGGED
def dirichlet(y, n_clients, byzantine, rng, *, beta: float = 0.5, min_size: int = 10,
              max_redraws: int = 1000) -> Assignment:
    """Label skew: each class split over **all** ``n`` clients by Dirichlet proportions.

    For every class ``c`` (over the ``C`` distinct labels in ``y``) draw proportions
    ``p_c ~ Dirichlet(beta * 1_n)`` over the clients and give client ``w``
    ``K[c, w] = floor(n_c * P_{c,w}) - floor(n_c * P_{c,w-1})`` of the class's shuffled
    samples, with ``P`` the cumulative sum of ``p_c`` (so the class's ``n_c`` samples
    are all used). Client sizes ``J_w = sum_c K[c, w]`` are unequal; small ``beta``
    (0.1) puts each class on few clients, large ``beta`` approaches an iid split.

    This is the per-class Dirichlet split of Yurochkin et al. 2019 ("Bayesian
    nonparametric federated learning of neural networks") that the federated-learning
    benchmarks use with ``beta`` in {0.1, 0.5, 1} and usually cite as Hsu, Qi & Brown
    2019 ("Measuring the effects of non-identical data distribution for federated
    visual classification"); Hsu et al. themselves draw a class distribution per client
    with equal client sizes.

    **Minimum size.** The whole ``(C, n)`` matrix is redrawn until every client holds at
    least ``min_size`` samples (default 10, as in the reference implementations), at
    most ``max_redraws`` times; then ``ValueError``. ``n * min_size > N`` is refused
    before any draw.

    Byzantine clients hold data like the others (the ``byzantine`` mask is not read):
    attacks such as sign-flipping send a multiple of their honest message. No sample is
    dropped or used twice. Each client's samples are in random order.
    """
    beta, min_size, max_redraws = _check_dirichlet_params(
        "dirichlet", y, n_clients, byzantine, rng, beta, min_size, max_redraws)
    classes, counts, members = _class_groups(y)
    K = _draw_dirichlet_counts(rng, counts, n_clients, beta, min_size, max_redraws, "dirichlet")
    owners = np.concatenate([np.repeat(np.arange(n_clients), K[c]) for c in range(len(classes))])
    samples = np.concatenate([rng.permutation(members[c]) for c in range(len(classes))])
    return _from_owners(samples, owners, n_clients, rng)


@PARTITIONS.register("quantity_skew", smallest_client=_min_size,
                     ranges=_DIRICHLET)
@_RAGGED
def quantity_skew(y, n_clients, byzantine, rng, *, beta: float = 0.5, min_size: int = 10,
                  max_redraws: int = 1000) -> Assignment:
    """Quantity skew: client sizes by Dirichlet proportions, labels iid within a client.

    Draw proportions ``q ~ Dirichlet(beta * 1_n)`` and give client ``w``
    ``J_w = floor(N Q_w) - floor(N Q_{w-1})`` samples (``Q`` the cumulative sum of
    ``q``; the sizes sum to ``N``), taken in turn from one uniform permutation of the
    training set: each client holds a uniform random subset, so its labels are iid from
    the class frequencies. This is the "quantity-based label imbalance"-free quantity
    skew of Li et al. 2022 ("Federated learning on non-IID data silos: an experimental
    study"). Small ``beta`` gives very unequal sizes; large ``beta`` nearly equal ones.

    **Minimum size**, Byzantine clients and samples: as :func:`dirichlet` (redraw ``q``
    until every ``J_w >= min_size``, at most ``max_redraws`` times; everyone holds data;
    no sample dropped or used twice).
    """
    beta, min_size, max_redraws = _check_dirichlet_params(
        "quantity_skew", y, n_clients, byzantine, rng, beta, min_size, max_redraws)
    N = y.shape[0]
    sizes = _draw_dirichlet_counts(rng, np.array([N]), n_clients, beta, min_size, max_redraws,
                                   "quantity_skew")[0]
    owners = np.repeat(np.arange(n_clients), sizes)
    return _from_owners(rng.permutation(N), owners, n_clients)


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
