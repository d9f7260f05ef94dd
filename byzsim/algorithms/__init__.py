"""The two algorithm families as vectorized rounds.

Shapes: n clients, J samples each, b = batch size, d = model dimension.

**Gradient family** (SGD, Byrd-SGD/Gm, Med, Krum, Byrd-SAGA, FedSGD…), round t::

    v_w   = estimator of ∇f_w at the server model x          (n, d)
    v_w   ← Σ_{e=1}^{E} g_e  (E local SGD steps, see below)   E = local_steps > 1 only
    m_w   ← β m_w + (1 − β) v_w,  v_w ← m_w                   client momentum, β > 0 only
    v_B   ← attack(v)                                        Byzantine rows replaced
    x     ← x − lr_t · (Agg(v, mask = participating) + server_l2 · x)

with ``lr_t = lr · factor(t)`` (:data:`LR_SCHEDULES`; both families).  Momentum is the
form of El-Mhamdi, Guerraoui & Rouault (ICLR 2021) and Karimireddy, He & Jaggi (ICML
2021), ``m ← β m + (1 − β) g`` from ``m_0 = 0``; every client keeps one (the Byzantine
clients' honest momenta are what attacks such as sign flipping act on), a client that
sits out keeps its momentum.  Local steps: ``x_1 = x``, ``x_{e+1} = x_e − lr_t g_e`` on
fresh minibatches (``g_1`` from the configured estimator, later steps plain SGD), and
the message is the model delta in gradient units ``(x − x_{E+1}) / lr_t``, formed as
the sum of the local gradients (so ``E = 1`` is today's message bit for bit).
Stateful components (:class:`byzsim.protocols.Stateful`) have their state carried in
:class:`State` from round to round.

**Penalty family** (RSA, AsynRSA-VR), round k with participation set S::

    x_i   ← x_i − lr (g_i + λ ∂‖x_i − x0‖_p)                  regular i ∈ S
    x0    ← x0 − lr (server_l2 x0 + λ Σ_{i∈R∩S} ∂‖x0 − x_i‖_p + λ Σ_{v∈B∩S} ∂‖x0 − z_v‖_p)

with every right-hand side at the round-k values.  Byzantine clients hold no model;
their honest message is taken to be the server model ``x0`` (so the ``none`` attack
is harmless), and the attack replaces it by ``z_v``.

**Replicas.**  Runs that share their structure (method, sizes, model, …) advance
together: every array gets a leading replica axis S (server models ``(S, d)``, client
models ``(S, n, d)``, SAGA tables ``(S, n, J, k)``, participation ``(S, n)``, sample
indices ``(S, n, b)``), and the numeric settings ``lr``, ``penalty``,
``participation``, ``server_l2`` may be ``(S,)`` arrays.  Each replica draws from its
own generator (``step(state, [rng_1, …, rng_S])``) in the order of a run made alone,
and every operation acts on each replica's slice alone, so a replica's trajectory is
the one it has alone, whatever shares its array.  Components that draw random numbers
(a random attack, bucketing) are called replica by replica with that replica's
generator (:func:`replica_map`).  One run is the batch of one (``x (d,)``: views of
``(1, d)``): there is one round implementation.

One round is one call of ``step(state, rng)``: no Python loop over clients.  For speed
``step`` updates the state's arrays in place (they are work buffers) and returns the
same state; copy it to keep a snapshot.  All randomness comes from the ``rng`` passed
in, drawn in a fixed order (participation, sample indices, attack), so a run is
reproducible from its seed.

SAGA (``estimator="saga"``): each client keeps one stored per-sample gradient per local
sample, logically an ``(n, J, d)`` table (kept for the Byzantine clients too: in the
gradient family they hold data and compute honest messages for attacks such as
sign-flipping; a penalty round computes and updates only the rows of the regular
clients that take part).  It is stored
either *dense* or, when the model provides per-sample gradient factors, *factored*
(:class:`SagaTable`); both give the same trajectory up to round-off.  The table is
initialised with every sample's gradient at the initial model (paper A, Algorithm 1,
line 3).  With a minibatch of b distinct indices the corrected gradient is
``(1/b) Σ_{j∈batch} (∇f_{w,j}(x) − φ_{w,j}) + (1/J) Σ_j φ_{w,j}`` and every drawn
entry is then replaced.  Clients that do not take part leave their table untouched.

**Ragged clients** (:attr:`Problem.counts`): client w holds ``J_w ≤ J_max`` samples,
the first ``J_w`` rows of its padded block ``X[w] (J_max, p')``.  This layout (one
padded array, not a flat list of samples with offsets) keeps every gather a single
fancy index over ``(n, b)`` indices, so a round is the same vectorized code as with
equal sizes; the price is memory (``n J_max / N`` times the data, see
:mod:`byzsim.partition`) and a SAGA table of ``n · J_max`` entries.  Minibatches are
uniform within each client's own rows (:func:`sample_batch_ragged`; ``b ≤ min_w J_w``
is required), SAGA's mean is ``(1/J_w) Σ_{j<J_w} φ_{w,j}`` and the correction
``diff (1/b − 1/J_w) + mean``; the table is initialised over the real rows only, so a
padding row never enters a gradient or a mean.  Equal sizes (every ``J_w = J``) run
exactly the equal-size code and draw the same random numbers.

Layout
------
The module is split where the code has seams that the two rounds share or that are a
concept of their own, and re-exported here (every name below is importable from
``byzsim.algorithms``):

- ``_problem``: :class:`Problem` (the data every run computes on) and
  :func:`stack_problems` (several data sets in one replica batch);
- ``_rows``: which (replica, client) pairs a round computes and their minibatch
  gathers, used by the estimators and the penalty round;
- ``_sampling``: participation masks and minibatch indices (equal and ragged clients),
  the draws every round makes before the attack;
- ``_estimators``: the estimator registry, minibatch SGD, SAGA and its table;
- ``_replicas``: one random stream per replica and the calls of components (attack,
  aggregator, stateful ones with their state) over the replicas, also of components
  whose numeric parameters differ between replicas (:class:`PerReplica`);
- ``_settings``: per-replica numeric settings, step-size schedules and their checks;
- ``_state``: :class:`State`, what a round carries to the next (both families);
- ``_kernels``: the fused ``y += a · x`` updates of the hot path;
- ``_subgradients``: l_p subgradients and their exact row sums (the penalty operator);
- ``_gradient`` and ``_penalty``: the two families' rounds, each a consumer of the
  modules above (neither imports the other).
"""

from ._estimators import ESTIMATORS, SagaEstimator, SagaTable, SGDEstimator, make_estimator
from ._gradient import Aggregate, GradientMethod
from ._kernels import axpy, axpy_rows
from ._penalty import PenaltyMethod
from ._problem import Problem, stack_problems
from ._replicas import (
    PerReplica,
    attack_replicas,
    attack_step,
    component_at,
    replica_apply,
    replica_generators,
    replica_map,
)
from ._rows import gather_batch, row_set
from ._sampling import (
    participation_mask,
    participation_masks,
    sample_batch,
    sample_batch_ragged,
    sample_batches,
)
from ._settings import (
    LR_SCHEDULES,
    check_momentum_local_steps,
    check_schedule_params,
    constant_schedule,
    inv_sqrt_schedule,
    per_replica,
    scheduled_lr,
    step_schedule,
)
from ._state import State
from ._subgradients import (
    column_sum,
    lp_subgradient,
    segment_sums,
    sign_of_difference,
    subgradients_of_difference,
)

__all__ = [
    "Aggregate",
    "ESTIMATORS",
    "GradientMethod",
    "LR_SCHEDULES",
    "PenaltyMethod",
    "PerReplica",
    "Problem",
    "SGDEstimator",
    "SagaEstimator",
    "SagaTable",
    "State",
    "attack_replicas",
    "attack_step",
    "axpy",
    "axpy_rows",
    "check_momentum_local_steps",
    "check_schedule_params",
    "column_sum",
    "component_at",
    "constant_schedule",
    "gather_batch",
    "inv_sqrt_schedule",
    "lp_subgradient",
    "make_estimator",
    "participation_mask",
    "participation_masks",
    "per_replica",
    "replica_apply",
    "replica_generators",
    "replica_map",
    "row_set",
    "sample_batch",
    "sample_batch_ragged",
    "sample_batches",
    "scheduled_lr",
    "segment_sums",
    "sign_of_difference",
    "stack_problems",
    "step_schedule",
    "subgradients_of_difference",
]
