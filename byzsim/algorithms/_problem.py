"""The problem: data stacked over clients (and over the data sets of a replica batch)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Problem:
    """Everything a run computes on.

    ``X (n, J, p')`` prepared client features, ``y (n, J)``, ``byzantine (n,)`` bool,
    ``X_test (M, p')``, ``y_test (M,)``, the model, and ``X_eval (E, p')``, ``y_eval (E,)``
    the regular clients' training samples the training loss is evaluated on (default:
    all of them).

    Ragged clients: ``counts (n,)`` int, client w holds ``J_w = counts[w]`` samples,
    rows ``0 .. J_w − 1`` of ``X[w]``; the rows after them are padding (any values, NaN
    included: no gradient, SAGA table mean or evaluation reads them) and ``J`` is then
    ``J_max``.  Default: every count is J (equal sizes, both papers' setting; ``ragged``
    is False and every computation is exactly the equal-size one).

    A replica batch whose runs have different data (different seeds: another Byzantine
    draw or partition) uses a *stacked* problem (:func:`stack_problems`): ``X (P, n, J,
    p')``, ``y (P, n, J)``, ``counts (P, n)``, ``byzantine (n,)`` when equal for all,
    else ``(P, n)``, and ``slot (S,)`` the data set of each replica.
    """

    model: object
    X: np.ndarray
    y: np.ndarray
    byzantine: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray
    X_eval: np.ndarray | None = None
    y_eval: np.ndarray | None = None
    slot: np.ndarray | None = None
    counts: np.ndarray | None = None

    def __post_init__(self):
        lead = self.X.shape[:-2]
        if self.counts is None:
            object.__setattr__(self, "counts", np.full(lead, self.X.shape[-2], dtype=np.int64))
        c = np.asarray(self.counts)
        if c.shape != lead or not np.issubdtype(c.dtype, np.integer):
            raise ValueError(f"Problem.counts must be integers of shape {lead} (the clients of X), "
                             f"got {c.dtype} {c.shape}")
        if c.size and (c.min() < 1 or c.max() > self.X.shape[-2]):
            raise ValueError(f"Problem.counts must lie in [1, J_max] = [1, {self.X.shape[-2]}] "
                             f"(samples a client holds), got [{int(c.min())}, {int(c.max())}]")
        object.__setattr__(self, "_ragged", bool((c != self.X.shape[-2]).any()))
        if self.X_eval is None and self.X.ndim == 3:
            reg = ~self.byzantine
            if self.ragged:  # the real rows of the regular clients
                i, j = np.nonzero(self.mask & reg[:, None])
                object.__setattr__(self, "X_eval", self.X[i, j])
                object.__setattr__(self, "y_eval", self.y[i, j])
            else:
                object.__setattr__(self, "X_eval", self.X[reg].reshape(-1, self.X.shape[-1]))
                object.__setattr__(self, "y_eval", self.y[reg].ravel())

    @property
    def n(self) -> int:
        return self.X.shape[-3]

    @property
    def J(self) -> int:
        """Samples per client (equal sizes); ``J_max`` for ragged clients (see ``counts``)."""
        return self.X.shape[-2]

    @property
    def ragged(self) -> bool:
        """True when some client holds fewer than ``J`` samples."""
        return self._ragged

    @property
    def mask(self) -> np.ndarray:
        """``([P,] n, J)`` bool: True on the real rows, False on the padding."""
        return np.arange(self.J) < self.counts[..., None]

    @property
    def regular(self) -> np.ndarray:
        return ~self.byzantine

    @property
    def stacked(self) -> bool:
        return self.X.ndim == 4

    def replica_byzantine(self, S: int) -> np.ndarray:
        """``(n,)`` when all replicas share the Byzantine clients, else ``(S, n)``."""
        if self.byzantine.ndim == 1:
            return self.byzantine
        return self.byzantine[self.slot]

    def replica_counts(self, S: int) -> np.ndarray | None:
        """The counts the round samples from: ``None`` for equal sizes, else ``(n,)``
        (one data set) or ``(S, n)`` (stacked: each replica's)."""
        if not self.ragged:
            return None
        return self.counts[self.slot] if self.stacked else self.counts

    def data(self, s: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``(X, y)`` of replica ``s`` (``(n, J, p')``, ``(n, J)``)."""
        if not self.stacked:
            return self.X, self.y
        return self.X[self.slot[s]], self.y[self.slot[s]]

    def data_counts(self, s: int | None = None) -> np.ndarray:
        """``counts (n,)`` of replica ``s`` (see :meth:`data`)."""
        return self.counts[self.slot[s]] if self.stacked else self.counts

    def gather(self, ia: np.ndarray, ib: np.ndarray, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Samples ``idx`` of the clients ``ib`` of the replicas ``ia`` (broadcasting index
        arrays): ``(…, b, p')`` features and ``(…, b)`` labels."""
        if not self.stacked:
            return self.X[ib, idx], self.y[ib, idx]
        sl = self.slot[ia]
        return self.X[sl, ib, idx], self.y[sl, ib, idx]

    def counts_at(self, ia: np.ndarray, ib: np.ndarray) -> np.ndarray:
        """``J_w`` of the clients ``ib`` of the replicas ``ia`` (broadcasting index arrays,
        as :meth:`gather`)."""
        if not self.stacked:
            return self.counts[ib]
        return self.counts[self.slot[ia], ib]


def stack_problems(problems: list[Problem], slot: np.ndarray) -> Problem:
    """One :class:`Problem` for a replica batch: ``problems[slot[s]]`` is replica s's data.
    A single data set is returned as it is (no copy); several are stacked (one copy),
    ragged ones padded to the largest ``J_max`` (zero features, label -1)."""
    if len(problems) == 1:
        return problems[0]
    p0 = problems[0]
    byz = np.stack([p.byzantine for p in problems])
    J = max(p.J for p in problems)
    X = np.stack([_pad_rows(p.X, J, 0.0) for p in problems])
    y = np.stack([_pad_rows(p.y, J, -1) for p in problems])
    for a in (X, y):
        a.flags.writeable = False
    return Problem(
        model=p0.model, X=X, y=y, byzantine=byz[0] if (byz == byz[0]).all() else byz,
        X_test=p0.X_test, y_test=p0.y_test, X_eval=p0.X_eval, y_eval=p0.y_eval,
        slot=np.asarray(slot, dtype=np.intp), counts=np.stack([p.counts for p in problems]),
    )


def _pad_rows(a: np.ndarray, J: int, fill) -> np.ndarray:
    """``a (n, J_a, …)`` with rows ``J_a .. J − 1`` of every client added, holding ``fill``."""
    if a.shape[1] == J:
        return a
    out = np.full((a.shape[0], J) + a.shape[2:], fill, dtype=a.dtype)
    out[:, :a.shape[1]] = a
    return out
