"""The numeric settings of a method: per-replica ``(S,)`` arrays, the step-size
schedules ``lr_t = lr · factor(t)`` of both families, and the checks of the settings
the config layer validates before any work."""

from __future__ import annotations

import math

import numpy as np

from ..registry import Registry


def per_replica(value, S: int, dtype=np.float64) -> np.ndarray:
    """A numeric setting as an ``(S,)`` array (a scalar is repeated)."""
    a = np.asarray(value, dtype=dtype)
    if a.ndim == 0:
        return np.full(S, a, dtype=dtype)
    if a.shape != (S,):
        raise ValueError(f"a per-replica setting must be a scalar or have shape ({S},), got {a.shape}")
    return a


class _Settings:
    """The per-replica numeric settings of a method as ``(S,)`` arrays (float64, and in
    the state's dtype for elementwise use), recomputed only when they change."""

    def __init__(self, names: tuple[str, ...]):
        self.names, self.key, self.values = names, None, None

    def __call__(self, method, S: int, dt) -> dict:
        raw = tuple(getattr(method, k) for k in self.names)
        key = (S, dt) + tuple(v if np.isscalar(v) else np.asarray(v).tobytes() for v in raw)
        if key != self.key:
            vals = {k: per_replica(v, S) for k, v in zip(self.names, raw)}
            vals.update({k + "_dt": v.astype(dt) for k, v in list(vals.items())})
            self.key, self.values = key, vals
        return self.values


#: Step-size schedules ``factor(t, **params)``: round ``t`` (0-based) uses
#: ``lr_t = lr · factor(t)`` in both families.
LR_SCHEDULES: Registry = Registry("lr schedule")


@LR_SCHEDULES.register("constant")
def constant_schedule(t: int) -> float:
    """``lr_t = lr``."""
    return 1.0


@LR_SCHEDULES.register("inv_sqrt")
def inv_sqrt_schedule(t: int) -> float:
    """``lr_t = lr / √(t + 1)``."""
    return 1.0 / math.sqrt(t + 1)


@LR_SCHEDULES.register("step")
def step_schedule(t: int, *, gamma: float = 0.1, every: int = 100) -> float:
    """Step decay ``lr_t = lr · γ^⌊t / T⌋`` (``gamma`` γ in (0, 1], ``every`` T >= 1 rounds)."""
    return float(gamma) ** (t // int(every))


def check_schedule_params(name: str, params) -> None:
    """Bad ``lr_schedule_params`` (unknown or out of range) -> ``ValueError``."""
    LR_SCHEDULES.check(name, params, field="lr_schedule_params")
    g, T = params.get("gamma", 0.1), params.get("every", 100)
    if not (isinstance(g, (int, float)) and not isinstance(g, bool) and 0 < g <= 1):
        raise ValueError(f"invalid config field 'lr_schedule_params': gamma = {g!r}, expected a number in (0, 1]")
    if not (isinstance(T, int) and not isinstance(T, bool) and T >= 1):
        raise ValueError(f"invalid config field 'lr_schedule_params': every = {T!r}, expected an integer >= 1")


def scheduled_lr(cfg: dict, method, t: int) -> tuple[np.ndarray, np.ndarray]:
    """``(lr_t (S,) float64, lr_t in the state's dtype)`` of round ``t``; the constant
    schedule returns the settings' own arrays (bit-identical to no schedule)."""
    sched = getattr(method, "lr_schedule", None)
    if sched is None:
        return cfg["lr"], cfg["lr_dt"]
    lr = cfg["lr"] * sched(t)
    return lr, lr.astype(cfg["lr_dt"].dtype)


def check_momentum_local_steps(momentum, local_steps) -> None:
    """β in [0, 1) and ``E`` an integer >= 1, else ``ValueError`` naming the field."""
    if not (isinstance(momentum, (int, float)) and not isinstance(momentum, bool) and 0 <= momentum < 1):
        raise ValueError(f"invalid config field 'momentum' = {momentum!r}: the client momentum β must be in [0, 1)")
    if not (isinstance(local_steps, int) and not isinstance(local_steps, bool) and local_steps >= 1):
        raise ValueError(f"invalid config field 'local_steps' = {local_steps!r}: expected an integer >= 1")
