"""The state a round carries to the next: models, SAGA table, round count, and the
carried state of the stateful components (aggregator pipeline, attack, client momenta)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ._estimators import SagaTable


@dataclass
class State:
    """``x`` server model; ``models`` client models (penalty family, else None);
    ``table`` SAGA memory (or None); ``round`` rounds done; the carried state of the
    stateful components (``None`` when the component is pure): ``aggregate_state`` (the
    gradient family's pipeline, a tuple, one state per part), ``attack_state``, and
    ``momentum`` the clients' momentum messages (gradient family with β > 0).

    One run: ``x (d,)``, ``models (n, d)``, table ``(n, …)``.  A replica batch:
    ``x (S, d)``, ``models (S, n, d)``, table ``(S, n, …)``.  The component states and
    ``momentum (S, n, d)`` always have the leading replica axis (S = 1 for one run).
    """

    x: np.ndarray
    models: np.ndarray | None
    table: SagaTable | None
    round: int = 0
    aggregate_state: object = None
    attack_state: object = None
    momentum: np.ndarray | None = None

    @property
    def replicas(self) -> int:
        return self.x.shape[0] if self.x.ndim == 2 else 1

    def as_replicas(self) -> tuple[np.ndarray, np.ndarray | None, SagaTable | None]:
        """``(x (S, d), models (S, n, d), table)`` views (one run: S = 1)."""
        if self.x.ndim == 2:
            return self.x, self.models, self.table
        return (self.x[None], None if self.models is None else self.models[None],
                None if self.table is None else self.table.replica(None))


def _init_state(method, x0: np.ndarray, per_client: bool) -> State:
    """The shared ``init``: ``x0 (d,)`` one run (views of a batch of one), ``(S, d)`` replicas."""
    x0 = np.asarray(x0)
    single = x0.ndim == 1
    P = method.problem
    x = np.array(np.atleast_2d(x0), dtype=P.X.dtype)
    S = x.shape[0]
    models = np.repeat(x[:, None], P.n, axis=1) if per_client else None
    w = models if per_client else x
    table = None
    for s in range(S):  # one replica at a time into the stacked table (no second copy)
        t = method.estimator.init(w[s]) if not P.stacked else method.estimator.init(w[s], slot=s)
        if t is None:
            break
        if table is None:
            table = SagaTable(tuple(np.empty((S,) + e.shape, e.dtype) for e in t.entries),
                              np.empty((S,) + t.mean.shape, t.mean.dtype))
        for e, te in zip(table.entries, t.entries):
            e[s] = te
        table.mean[s] = t.mean
    if single:
        return State(x=x[0], models=None if models is None else models[0],
                     table=None if table is None else table.replica(0))
    return State(x=x, models=models, table=table)
