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
(:func:`apply_attack`).  Add an attack with ``@ATTACKS.register("name")`` (the contract
is :class:`byzsim.protocols.Attack`; check it with :func:`byzsim.testing.check_attack`).

Declared at registration:

``replica_params`` (tuple of names)
    The numeric parameters that may differ between the replicas of one batch (the
    scales ``c``, ``std``, ``mean``, ``z``, ``eps``, ``value``): the attack accepts each
    as an array broadcasting against ``v.shape[:-2] + (1, 1)`` (``(S, 1, 1)`` for
    ``v (S, n, d)``) and gives replica ``s`` what the number ``p[s]`` gives alone.

``needs_aggregate`` (bool)
    The attack needs the server's aggregation (``alie_opt``, ``ipm_opt``): it takes a
    keyword ``aggregator`` and the simulate layer binds the run's
    ``aggregate(v, mask, rng)`` when the config leaves it unset.  An attack with an
    ``aggregator`` keyword must declare it (True or False).
``data_attack`` (callable ``(y, byzantine, n_classes) -> y'`` or None)
    A data attack (``label_flipping``): the simulate layer applies it to the client
    labels when it builds the problem (:func:`apply_data_attack`).
"""

from __future__ import annotations

import math
from typing import NamedTuple, Callable

import numpy as np

from .protocols import Stateful
from .registry import REPLICA_PARAMS, STATEFUL, Meta, Range, Registry, bool_, keyword_parameters, optional_callable

__all__ = [
    "ATTACKS",
    "SCALES",
    "alie",
    "alie_opt",
    "alie_z",
    "apply_attack",
    "apply_data_attack",
    "data_attack_of",
    "flip_labels",
    "gaussian",
    "get_attack",
    "inf_attack",
    "ipm",
    "ipm_opt",
    "label_flipping",
    "mimic",
    "mimic_online",
    "MimicState",
    "no_attack",
    "same_value",
    "sample_duplicating",
    "sign_flipping",
    "zero_gradient",
]


def _takes_aggregator(fn) -> bool:
    return "aggregator" in keyword_parameters(fn)


#: The attacks, with their declared ``needs_aggregate`` and ``data_attack``.
ATTACKS: Registry = Registry("attack", schema={
    "needs_aggregate": Meta("True if it takes the server's aggregate as keyword `aggregator`",
                            default=False, check=bool_, required_if=_takes_aggregator),
    "data_attack": Meta("(y, byzantine, n_classes) -> y', the label transform of a data attack",
                        default=None, check=optional_callable),
    "stateful": STATEFUL,
    "replica_params": REPLICA_PARAMS,
})


def _scale(p, like: np.ndarray) -> np.ndarray:
    """A numeric parameter (a number, or per replica an array broadcasting against
    ``like.shape[:-2] + (1, 1)``) in the floating dtype of ``like``: multiplying by it
    rounds exactly as multiplying by the Python number does (NumPy casts a Python
    number to the array's dtype first)."""
    dt = like.dtype if np.issubdtype(like.dtype, np.floating) else np.float64
    return np.asarray(p, dtype=dt)


def _filled(shape: tuple, value) -> np.ndarray:
    """``np.full(shape, float(value))`` for a number, or per replica an array
    broadcasting against ``shape[:-2] + (1, 1)`` (float64, as the number)."""
    return np.full(shape, np.asarray(value, dtype=np.float64))


@ATTACKS.register("none")
def no_attack(v, byzantine, rng):
    """Byzantine clients send their honest messages (a control run)."""
    return v[..., byzantine, :]


@ATTACKS.register("same_value", "same-value", ranges={"c": Range()}, replica_params=("c",))
def same_value(v, byzantine, rng, *, c: float = 10000.0):
    """Every Byzantine message is ``c · 1`` (paper A, c = 10000)."""
    q = int(byzantine.sum())
    return _filled(v.shape[:-2] + (q, v.shape[-1]), c)


@ATTACKS.register("gaussian", ranges={"std": Range(lo=0), "mean": Range()}, replica_params=("std", "mean"))
def gaussian(v, byzantine, rng, *, std: float, mean: float = 0.0):
    """Every Byzantine message is drawn i.i.d. ``N(mean, std²)`` per coordinate.

    ``std`` is the standard deviation (explicit: paper A prints ``N(0, 100²)``, i.e.
    std 100; paper B prints ``N(0, 10000)``, ambiguous between variance and std).
    """
    if not np.all(np.asarray(std) >= 0):
        raise ValueError(f"gaussian attack: std must be >= 0, got {std!r}")
    q = int(byzantine.sum())
    return rng.normal(mean, std, size=v.shape[:-2] + (q, v.shape[-1]))


@ATTACKS.register("sign_flipping", "sign-flipping", ranges={"c": Range()}, replica_params=("c",))
def sign_flipping(v, byzantine, rng, *, c: float = -5.0):
    """Each Byzantine client sends ``c ×`` its own honest message (paper B, c = −5)."""
    own = v[..., byzantine, :]
    return _scale(c, own) * own


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


def _honest_stats(v, byzantine):
    """Mean and (population) standard deviation of the regular clients' messages over the
    client axis: ``(..., 1, d)`` each."""
    reg = v[..., ~byzantine, :]
    mu = reg.mean(axis=-2, keepdims=True)
    sd = reg.std(axis=-2, keepdims=True)
    return mu, sd


def _rows(row, v, byzantine):
    """``q`` copies of ``row (..., 1, d)`` as a new array ``(..., q, d)``."""
    q = int(byzantine.sum())
    return np.broadcast_to(row, v.shape[:-2] + (q, v.shape[-1])).copy()


def alie_z(n: int, q: int) -> float:
    """Default ALIE scale of Baruch et al. (2019): ``s = ⌊n/2 + 1⌋ − q`` supporters
    needed, ``z = Φ⁻¹((n − q − s)/(n − q))`` (the probability clipped to ``[0.5, 0.9999]``;
    as in Karimireddy et al.'s reference implementation)."""
    from scipy.stats import norm

    s = math.floor(n / 2 + 1) - q
    p = (n - q - s) / max(n - q, 1)
    return float(norm.ppf(min(max(p, 0.5), 0.9999)))


@ATTACKS.register("alie", "a_little_is_enough", ranges={"z": Range(optional=True)}, replica_params=("z",))
def alie(v, byzantine, rng, *, z: float | None = None):
    """A little is enough (ALIE; Baruch, Baruch & Goldberg, 2019).

    Every Byzantine client sends :math:`\\mu - z\\,\\sigma`, with ``μ`` and ``σ`` the
    coordinate-wise mean and standard deviation of the *regular* clients' messages
    (omniscient attacker) and ``z`` by default :func:`alie_z` ``(n, q)``: just enough to
    stay within the spread that the ``s`` supporters an attacker needs can hide in.

    Parameters
    ----------
    z : float or None, default None
        Scale; ``None``: :func:`alie_z` of the client counts.

    References
    ----------
    G. Baruch, M. Baruch, Y. Goldberg, "A Little Is Enough: Circumventing Defenses For
    Distributed Learning", NeurIPS 2019.
    """
    mu, sd = _honest_stats(v, byzantine)
    if z is None:
        z = alie_z(byzantine.shape[0], int(byzantine.sum()))
    return _rows(mu - _scale(z, sd) * sd, v, byzantine)


@ATTACKS.register("ipm", "inner_product_manipulation", ranges={"eps": Range()}, replica_params=("eps",))
def ipm(v, byzantine, rng, *, eps: float = 0.1):
    """Inner-product manipulation (IPM; Xie, Koyejo & Gupta, 2019).

    Every Byzantine client sends :math:`-\\varepsilon\\, \\bar v_R`, the mean of the
    regular clients' messages scaled by ``−eps`` (small ``eps`` hides among the honest
    messages yet makes the inner product of the aggregate with the true gradient
    negative for median- and Krum-type rules).

    Parameters
    ----------
    eps : float, default 0.1

    References
    ----------
    C. Xie, O. Koyejo, I. Gupta, "Fall of Empires: Breaking Byzantine-tolerant SGD by
    Inner Product Manipulation", UAI 2019.
    """
    mu, _ = _honest_stats(v, byzantine)
    return _rows(-_scale(eps, mu) * mu, v, byzantine)


#: Default grid of attack scales searched by the optimized attacks.
SCALES = (0.0, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0)


def _server_aggregate(aggregator, aggregator_params):
    """The callable ``(v, mask, rng) -> (..., d)`` an optimized attack evaluates."""
    if aggregator is None:
        aggregator = "mean"
    if isinstance(aggregator, str):
        from .aggregators import get_aggregator

        agg = get_aggregator(aggregator, **dict(aggregator_params or {}))
        return lambda v, mask, rng: agg(v, mask)
    if aggregator_params:
        raise ValueError("aggregator_params only apply when aggregator is a registry name")
    if not callable(aggregator):
        raise ValueError(f"aggregator must be None, a registry name or a callable (v, mask, rng), got {aggregator!r}")
    return aggregator


def _optimize_scale(v, byzantine, rng, make_rows, scales, aggregator, aggregator_params):
    """Pick, per leading batch element, the scale whose Byzantine rows move the server's
    aggregate farthest from the mean of the regular messages.

    All candidates are evaluated in **one** batched call of the aggregate on
    ``(G,) + v.shape`` (one random draw shared by the candidates, e.g. bucketing)."""
    scales = np.asarray(scales, dtype=float)
    if scales.ndim != 1 or scales.size == 0 or not np.isfinite(scales).all():
        raise ValueError(f"scales must be a non-empty 1-D sequence of finite numbers, got {scales!r}")
    agg = _server_aggregate(aggregator, aggregator_params)
    mu, _ = _honest_stats(v, byzantine)
    cand = np.stack([make_rows(s) for s in scales])  # (G, ..., q, d)
    V = np.broadcast_to(v, (scales.size,) + v.shape).copy()
    V[..., byzantine, :] = cand
    with np.errstate(invalid="ignore", over="ignore"):
        out = np.asarray(agg(V, None, rng))  # (G, ..., d)
        dev = np.linalg.norm(out - mu[..., 0, :], axis=-1)  # (G, ...)
    dev = np.where(np.isnan(dev), -np.inf, dev)
    best = np.argmax(dev, axis=0)  # first maximum: the smallest such scale
    return np.take_along_axis(cand, best[None, ..., None, None], axis=0)[0]


@ATTACKS.register("alie_opt", "alie-opt", needs_aggregate=True)
def alie_opt(v, byzantine, rng, *, aggregator=None, aggregator_params=None, scales=SCALES):
    """ALIE with its scale optimized against the server's aggregation every round.

    Byzantine rows :math:`\\mu - \\tau\\sigma` (see :func:`alie`) with

    .. math:: \\tau = \\arg\\max_{\\tau \\in \\text{scales}}
        \\big\\lVert \\mathrm{Agg}(v_\\tau) - \\bar v_R \\big\\rVert,

    searched on the grid ``scales`` (one batched call of the aggregate on all
    candidates; the objective is ByzFL's ``LineMaximize`` one, which explores the scale
    sequentially instead).

    **Which aggregation.**  ``aggregator`` is the server's ``aggregate(v, mask, rng)``
    callable; :func:`byzsim.simulate.make_method` binds the run's own (pre-aggregators,
    resampling and rule included) when the config leaves it unset.  A registry name
    (with ``aggregator_params``) also works, e.g. in TOML ``attack_params = {aggregator =
    "krum", aggregator_params = {f = 4}}``.  ``None`` (standalone default): the mean.
    The evaluation draws from ``rng`` like the server would (bucketing, resampling).

    Parameters
    ----------
    aggregator : None, str or callable ``(v, mask, rng) -> (..., d)``
    aggregator_params : dict or None
        Parameters of a named aggregator.
    scales : sequence of float, default :data:`SCALES`
        Candidate ``τ`` (ties go to the first, i.e. the smallest).
    """
    mu, sd = _honest_stats(v, byzantine)
    return _optimize_scale(
        v, byzantine, rng, lambda t: _rows(mu - t * sd, v, byzantine), scales, aggregator, aggregator_params
    )


@ATTACKS.register("ipm_opt", "ipm-opt", needs_aggregate=True)
def ipm_opt(v, byzantine, rng, *, aggregator=None, aggregator_params=None, scales=SCALES):
    """IPM with ``eps`` optimized against the server's aggregation every round.

    Byzantine rows :math:`-\\varepsilon \\bar v_R` (see :func:`ipm`) with
    ``ε = argmax_{ε ∈ scales} ‖Agg(v_ε) − v̄_R‖``; the aggregator is chosen as in
    :func:`alie_opt`.

    Parameters
    ----------
    aggregator : None, str or callable ``(v, mask, rng) -> (..., d)``
    aggregator_params : dict or None
    scales : sequence of float, default :data:`SCALES`
        Candidate ``ε``.
    """
    mu, _ = _honest_stats(v, byzantine)
    return _optimize_scale(
        v, byzantine, rng, lambda e: _rows(-e * mu, v, byzantine), scales, aggregator, aggregator_params
    )


@ATTACKS.register("mimic")
def mimic(v, byzantine, rng, *, target: int | None = None):
    """Mimic (Karimireddy, He & Jaggi, 2022): every Byzantine client copies one regular
    client, chosen to over-represent the direction of largest heterogeneity.

    ``target=None`` picks, every round, the regular client ``i`` maximizing
    :math:`|\\langle v_i - \\bar v_R, u\\rangle|` with ``u`` the top principal direction
    of the regular messages (computed exactly from their ``r × r`` centered Gram
    matrix): ``u`` is the current round's.  The paper's attacker learns ``u`` online
    across rounds: :func:`mimic_online`.  An integer ``target``
    copies that regular client (like ``sample_duplicating``).

    Parameters
    ----------
    target : int or None, default None

    References
    ----------
    S. P. Karimireddy, L. He, M. Jaggi, "Byzantine-Robust Learning on Heterogeneous
    Datasets via Bucketing", ICLR 2022.
    """
    regular = np.flatnonzero(~byzantine)
    if target is not None:
        if not (0 <= target < byzantine.shape[0]) or byzantine[target]:
            raise ValueError(
                f"mimic: target must be a regular client index, got {target!r}; "
                f"regular clients: {regular.tolist()}"
            )
        return _rows(v[..., target : target + 1, :], v, byzantine)
    reg = v[..., regular, :]
    rc = reg - reg.mean(axis=-2, keepdims=True)
    G = rc @ np.swapaxes(rc, -1, -2)
    lam, U = np.linalg.eigh(0.5 * (G + np.swapaxes(G, -1, -2)))
    # projection of client i on the top direction: (G u)_i / sqrt(λ) = sqrt(λ) u_i
    pick = np.argmax(np.abs(U[..., :, -1]), axis=-1)  # (...,)
    row = np.take_along_axis(reg, pick[..., None, None], axis=-2)
    return _rows(row, v, byzantine)


@ATTACKS.register("inf", ranges={"value": Range(finite=False)}, replica_params=("value",))
def inf_attack(v, byzantine, rng, *, value: float = math.inf):
    """Every Byzantine message is ``value`` in every coordinate (default ``+inf``): tests
    that an aggregator does not let non-finite messages through."""
    q = int(byzantine.sum())
    return _filled(v.shape[:-2] + (q, v.shape[-1]), value)


def flip_labels(y: np.ndarray, byzantine: np.ndarray, n_classes: int) -> np.ndarray:
    """Label flipping ``y → C − 1 − y`` on the Byzantine clients' rows of ``y (n, J)``
    (a copy; the regular clients' labels are unchanged)."""
    y = np.array(y, copy=True)
    y[byzantine] = n_classes - 1 - y[byzantine]
    return y


@ATTACKS.register("label_flipping", "label-flipping", data_attack=flip_labels)
def label_flipping(v, byzantine, rng):
    """Label flipping (a *data* attack): the Byzantine clients train on flipped labels
    ``y → C − 1 − y`` and send their honest messages computed on them.

    The flip happens when the problem is built (:func:`apply_data_attack`, called by
    :mod:`byzsim.simulate` for attacks with a ``data_attack``); as a message attack it
    returns the Byzantine rows unchanged.  In the penalty family the Byzantine clients'
    honest message is the server model, so the attack has no effect there.

    References
    ----------
    The standard data-poisoning baseline, e.g. in Karimireddy, He & Jaggi (ICLR 2022) and
    Allouah et al. (AISTATS 2023).
    """
    return v[..., byzantine, :].copy()



def data_attack_of(name: str) -> Callable | None:
    """The data transform ``(y, byzantine, n_classes) -> y'`` of attack ``name``, or
    ``None`` for a pure message attack."""
    return ATTACKS.entry(name).meta["data_attack"]


def apply_data_attack(name: str, y: np.ndarray, byzantine: np.ndarray, n_classes: int) -> np.ndarray:
    """Apply attack ``name``'s data transform to the client labels ``y (n, J)`` (``y``
    itself when the attack has none)."""
    fn = data_attack_of(name)
    if fn is None or not np.any(byzantine):
        return y
    return fn(y, byzantine, n_classes)


class MimicState(NamedTuple):
    """State of :func:`mimic_online`: ``direction (S, d)`` the running estimate ``z_t``
    (unit norm), ``t (S,)`` rounds seen, ``target (S,)`` the copied client (an index
    into the regular clients, in client order)."""

    direction: np.ndarray
    t: np.ndarray
    target: np.ndarray


@ATTACKS.register("mimic_online", stateful=True)
def mimic_online(*, warmup: int = 100) -> Stateful:
    """Mimic with its direction learned online (Karimireddy, He & Jaggi, 2022): every
    Byzantine client copies the regular client most aligned with a running estimate of
    the top principal direction of the regular messages.

    With ``R`` the regular clients, ``μ_t`` their mean and ``c_i = v_i − μ_t``, round ``t``
    (0-based) of the first ``warmup`` rounds updates the direction by one power step on
    the round's covariance and a running average:

    .. math:: u_t = \\sum_{i \\in R} c_i \\langle c_i, z_t \\rangle, \\qquad
        z_{t+1} = \\frac{t z_t + u_t / \\lVert u_t \\rVert}
        {\\lVert t z_t + u_t / \\lVert u_t \\rVert \\rVert},

    starting at ``z_0 = 1/√d`` (``u_t = 0``: ``z`` unchanged), and picks
    ``i*_t = argmax_{i∈R} |⟨c_i, z_{t+1}⟩|``; afterwards ``z`` and ``i*`` stay fixed.
    The Byzantine messages are ``q`` copies of ``v_{i*}``.  (The running average of
    unit power steps is this implementation's reading of the paper's "online"
    estimate; each step is one pass over the ``r × d`` messages.)

    Parameters
    ----------
    warmup : int, default 100
        Rounds during which the direction is learned (>= 1).

    Returns
    -------
    :class:`byzsim.protocols.Stateful`
        ``init((S, n, d), dtype) -> MimicState`` and
        ``apply(state, v (..., n, d), byzantine (n,), rng) -> ((..., q, d), state')``.

    References
    ----------
    S. P. Karimireddy, L. He, M. Jaggi, "Byzantine-Robust Learning on Heterogeneous
    Datasets via Bucketing", ICLR 2022.
    """
    if not (isinstance(warmup, int) and not isinstance(warmup, bool) and warmup >= 1):
        raise ValueError(f"mimic_online: warmup must be an integer >= 1, got {warmup!r}")

    def init(shape, dtype=np.float64) -> MimicState:
        S, d = shape[0], shape[-1]
        return MimicState(np.full((S, d), 1.0 / math.sqrt(d), dtype), np.zeros(S, np.int64),
                          np.zeros(S, np.int64))

    def apply(state: MimicState, v, byzantine, rng=None):
        regular = np.flatnonzero(~byzantine)
        reg = v[..., regular, :]
        c = reg - reg.mean(axis=-2, keepdims=True)  # (..., r, d)
        z, t = state.direction, state.t
        learn = t < warmup  # (...,)
        u = np.einsum("...rd,...r->...d", c, np.einsum("...rd,...d->...r", c, z))
        nu = np.linalg.norm(u, axis=-1, keepdims=True)
        step = np.divide(u, nu, out=np.zeros_like(u), where=nu > 0)
        zn = t[..., None] * z + step
        nz = np.linalg.norm(zn, axis=-1, keepdims=True)
        zn = np.where(nz > 0, zn / np.where(nz > 0, nz, 1), z)
        z = np.where(learn[..., None], zn, z).astype(state.direction.dtype, copy=False)
        pick = np.argmax(np.abs(np.einsum("...rd,...d->...r", c, z)), axis=-1)
        target = np.where(learn, pick, state.target)
        row = np.take_along_axis(reg, target[..., None, None], axis=-2)
        return _rows(row, v, byzantine), MimicState(z, t + 1, target)

    return Stateful(init, apply, "attack")


def get_attack(name: str, **params) -> Callable:
    """The registered attack ``name`` with its parameters bound (validated); for an
    attack registered ``stateful=True``, the :class:`byzsim.protocols.Stateful` its
    factory builds."""
    bound = ATTACKS.bind(name, params)
    return bound() if ATTACKS.entry(name).meta["stateful"] else bound


def apply_attack(attack: Callable, v: np.ndarray, byzantine: np.ndarray, rng) -> np.ndarray:
    """Write the attack's messages into the Byzantine rows of ``v`` (in place) and return ``v``.

    A no-op when there is no Byzantine client.
    """
    if byzantine.any():
        v[..., byzantine, :] = attack(v, byzantine, rng)
    return v
