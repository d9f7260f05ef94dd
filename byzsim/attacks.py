"""Byzantine attacks on the message array.

Contract: an attack is a pure function

    attack(v, byzantine, rng, **params) -> (..., q, d)

- ``v``: ``(..., n, d)`` the *honest* messages of all n clients (gradients for the
  gradient family, models for the penalty family).  A Byzantine client's row holds the
  message it would have sent if it were honest (Byzantine clients hold data too), so an
  attack may look at every honest message (omniscient attacker).  ``v`` is not modified.
- ``byzantine``: ``(n,)`` bool mask, ``q = byzantine.sum() ≥ 1``.
- ``rng``: the run's ``np.random.Generator`` (only random attacks draw from it).

It returns the q Byzantine messages; the caller writes them into the Byzantine rows
(:func:`apply_attack`).  Add an attack with ``@ATTACKS.register("name")``.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from .registry import Registry, bind_parameters

ATTACKS: Registry = Registry("attack")


@ATTACKS.register("none")
def no_attack(v, byzantine, rng):
    """Byzantine clients send their honest messages (a control run)."""
    return v[..., byzantine, :]


@ATTACKS.register("same_value", "same-value")
def same_value(v, byzantine, rng, *, c: float = 10000.0):
    """Every Byzantine message is ``c · 1`` (paper A, c = 10000)."""
    q = int(byzantine.sum())
    return np.full(v.shape[:-2] + (q, v.shape[-1]), float(c))


@ATTACKS.register("gaussian")
def gaussian(v, byzantine, rng, *, std: float, mean: float = 0.0):
    """Every Byzantine message is drawn i.i.d. ``N(mean, std²)`` per coordinate.

    ``std`` is the standard deviation (explicit: paper A prints ``N(0, 100²)``, i.e.
    std 100; paper B prints ``N(0, 10000)``, ambiguous between variance and std).
    """
    if not std >= 0:
        raise ValueError(f"gaussian attack: std must be >= 0, got {std!r}")
    q = int(byzantine.sum())
    return rng.normal(mean, std, size=v.shape[:-2] + (q, v.shape[-1]))


@ATTACKS.register("sign_flipping", "sign-flipping")
def sign_flipping(v, byzantine, rng, *, c: float = -5.0):
    """Each Byzantine client sends ``c ×`` its own honest message (paper B, c = −5)."""
    return c * v[..., byzantine, :]


@ATTACKS.register("sample_duplicating", "sample-duplicating")
def sample_duplicating(v, byzantine, rng, *, target: int | None = None):
    """Every Byzantine client sends a copy of regular client ``target``'s message.

    ``target`` defaults to the first regular client (the authors' group's code).
    """
    regular = np.flatnonzero(~byzantine)
    if target is None:
        target = int(regular[0])
    if not (0 <= target < byzantine.shape[0]) or byzantine[target]:
        raise ValueError(
            f"sample_duplicating: target must be a regular client index, got {target!r}; "
            f"regular clients: {regular.tolist()}"
        )
    q = int(byzantine.sum())
    row = v[..., target : target + 1, :]
    return np.broadcast_to(row, v.shape[:-2] + (q, v.shape[-1])).copy()


@ATTACKS.register("zero_gradient", "zero-gradient")
def zero_gradient(v, byzantine, rng):
    """Each Byzantine client sends ``−(Σ_{regular} v_w) / q`` so that the sum of all
    messages, hence their mean, is zero."""
    q = int(byzantine.sum())
    s = -v[..., ~byzantine, :].sum(axis=-2, keepdims=True) / q
    return np.broadcast_to(s, v.shape[:-2] + (q, v.shape[-1])).copy()


def get_attack(name: str, **params) -> Callable:
    """The registered attack ``name`` with its parameters bound (validated)."""
    return bind_parameters("attack", name, ATTACKS[name], params)


def apply_attack(attack: Callable, v: np.ndarray, byzantine: np.ndarray, rng) -> np.ndarray:
    """Write the attack's messages into the Byzantine rows of ``v`` (in place) and return ``v``.

    A no-op when there is no Byzantine client.
    """
    if byzantine.any():
        v[..., byzantine, :] = attack(v, byzantine, rng)
    return v
