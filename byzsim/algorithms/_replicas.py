"""Replicas: one random stream per run, and the components (attack, aggregator) called
over the replicas of a batch, all at once when they draw no random numbers, else
replica by replica with each replica's own generator.  A component whose numeric
parameters differ between the replicas is a :class:`PerReplica`: its batched form takes
them as ``(S, 1, 1)`` arrays, and each replica's own form is the run's component."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from ..protocols import Stateful, state_slice, state_stack


def replica_generators(rng, S: int | None = None) -> list[np.random.Generator]:
    """The per-replica generators: ``rng`` is one ``np.random.Generator`` (one run) or a
    sequence of them (one per replica, in replica order)."""
    gens = [rng] if isinstance(rng, np.random.Generator) else list(rng)
    if S is not None and len(gens) != S:
        raise ValueError(f"{S} replicas need {S} generators, got {len(gens)}")
    return gens


class _DrawRequested(Exception):
    """A component asked the stand-in generator for random numbers."""


class _NoDraws:
    """Stand-in for the generators of a batched component call: any use raises
    :class:`_DrawRequested` (the call is then made replica by replica)."""

    def __getattr__(self, name):
        raise _DrawRequested(name)


def replica_map(call: Callable, gens: list, memo: dict, key: str, batched: bool = True) -> np.ndarray:
    """``(S, ...)`` results of a component over the replicas.

    ``call(s, rng)`` evaluates the component on replica ``s``'s own arrays (``s`` an int:
    shapes ``(n, d)``, exactly as a run made alone) or, for ``s = None``, on all
    replicas at once (``(S, n, d)``).  The batched call is tried when ``batched`` and
    ``S > 1`` with a stand-in generator; a component that draws random numbers is
    remembered in ``memo[key]`` and called replica by replica with each replica's own
    generator, so its draws come from that replica's stream exactly as alone.
    """
    S = len(gens)
    if batched and S > 1 and not memo.get(key):
        try:
            return call(None, _NoDraws())
        except _DrawRequested:
            memo[key] = True
    out = [call(s, g) for s, g in enumerate(gens)]
    return np.stack(out) if S > 1 else np.asarray(out[0])[None]


def replica_apply(call: Callable, state, gens: list, memo: dict, key: str, batched: bool = True):
    """``((S, ...) results, new state)`` of a stateful component over the replicas:
    :func:`replica_map` for ``call(s, state, rng) -> (out, state')``, where ``state``
    is the whole state (``s = None``, one batched call) or replica ``s``'s slice
    (:func:`byzsim.protocols.state_slice`; the new slices are stacked back)."""
    S = len(gens)
    if batched and S > 1 and not memo.get(key):
        try:
            return call(None, state, _NoDraws())
        except _DrawRequested:
            memo[key] = True
    res = [call(s, state_slice(state, s), g) for s, g in enumerate(gens)]
    return np.stack([r[0] for r in res]), state_stack([r[1] for r in res])


@dataclass(frozen=True)
class PerReplica:
    """A component (attack, aggregate) whose numeric parameters differ between the
    replicas of a batch (those its registry entry declares ``replica_params``).

    ``batched``: the component with those parameters as ``(S, 1, 1)`` arrays, called
    on every replica at once (arrays ``(S, n, d)``); ``replicas[s]``: replica ``s``'s
    own component, exactly the one of the run made alone, called when the component
    goes replica by replica (it draws random numbers, or the Byzantine clients differ
    between replicas).  A batch whose replicas share the parameters holds the plain
    component instead."""

    batched: Any
    replicas: tuple

    def __post_init__(self):
        if isinstance(self.batched, Stateful) != all(isinstance(r, Stateful) for r in self.replicas):
            raise ValueError("PerReplica: the batched component and the replicas' must all be "
                             "Stateful or all pure")


def component_at(component, s: int | None):
    """The form of ``component`` to call on replica ``s`` (``None``: on all replicas at
    once): a :class:`PerReplica`'s ``batched`` or ``replicas[s]``, else the component."""
    if isinstance(component, PerReplica):
        return component.batched if s is None else component.replicas[s]
    return component


def attack_step(attack, attack_state, v: np.ndarray, byz: np.ndarray, gens: list, memo: dict):
    """``((S, q, d) Byzantine messages, new attack state)``: a pure attack through
    :func:`attack_replicas` (state ``None`` passed through), a :class:`Stateful` one
    with its state threaded (:func:`replica_apply`); ``attack`` may be a
    :class:`PerReplica`."""
    if not isinstance(component_at(attack, None), Stateful):
        return attack_replicas(attack, v, byz, gens, memo), attack_state
    shared = byz.ndim == 1

    def call(s, st, rng):
        if s is None:
            return component_at(attack, None).apply(st, v, byz, rng=rng)
        return component_at(attack, s).apply(st, v[s], byz if shared else byz[s], rng=rng)

    return replica_apply(call, attack_state, gens, memo, "attack", batched=shared)


def attack_replicas(attack: Callable, v: np.ndarray, byz: np.ndarray, gens: list, memo: dict) -> np.ndarray:
    """``(S, q, d)`` Byzantine messages of every replica from the honest ``v (S, n, d)``
    and the Byzantine masks ``byz (n,)`` (shared) or ``(S, n)``; ``attack`` may be a
    :class:`PerReplica`."""
    shared = byz.ndim == 1

    def call(s, rng):
        if s is None:
            return component_at(attack, None)(v, byz, rng)
        return component_at(attack, s)(v[s], byz if shared else byz[s], rng)

    return replica_map(call, gens, memo, "attack", batched=shared)
