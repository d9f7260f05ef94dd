"""The yardstick: the benchmark workloads as a plain per-client Python loop.

This is how a typical research script writes one federated round: a ``for`` loop over
the clients, the per-sample gradient of softmax regression as ``np.outer(r, x)``, a SAGA
table per client (a ``(J, C)`` array of stored residuals indexed per sample: the
per-sample gradient is ``r_j ⊗ x_j``, so storing ``r_j`` is exact; a dense ``(J, d)``
table per client would need 4.7 GB for workload A), the l1 penalty via ``np.sign``, the
s-replacement resampling as a loop over groups, and the geometric median as a plain
Weiszfeld loop on coordinates started at the mean.

Only softmax regression (the papers' model) is supported.  Any batch size ``1 ≤ b ≤ J``:
a client's minibatch gradient is the mean of its b per-sample gradients, SAGA's is
``(1/b) Σ_{j∈batch} (∇f_j − φ_j) + (1/J) Σ_j φ_j``.  Ragged clients (``problem.counts``:
client i holds ``J_i`` samples, the first rows of its padded block): client i's batch is
drawn from its own ``J_i`` samples, its SAGA table has ``J_i`` rows and its mean is over
``J_i``; the mean aggregator with ``aggregator_params.weighted`` weights client i by
``J_i``.  In the gradient family a SAGA
client that sits out a round (γ < 1) computes no new sample gradient and leaves its
table untouched; the message an attack may read from it is its table mean (as in
byzsim).

Random numbers are consumed in **the same order** as byzsim's vectorized
``method.step``: participation mask (:func:`byzsim.algorithms.participation_mask`),
sample indices (:func:`byzsim.algorithms.sample_batch`), attack draws, then (gradient
family) the resampling permutation.  The two draw functions are byzsim's own (the draws
are a few microseconds; the point is that the same seed gives the same samples).
So from the same ``Problem`` (``byzsim.simulate.problem_for(cfg)``), the same initial
model and the same ``rng`` seed, :class:`NaivePenalty` / :class:`NaiveGradient` follow
the trajectory of ``make_method(cfg, problem).step`` up to floating-point round-off —
except that the naive geometric median is iterated to a tight tolerance while byzsim's
stops at its ``tol`` (default 1e-5, relative), so workload B agrees to about that
tolerance (exactly, up to round-off, when byzsim's aggregator is given a tight ``tol``).

Usage::

    cfg = make_config(...); problem = problem_for(cfg)
    naive = make_naive(cfg, problem)
    naive.init(x0)
    for _ in range(rounds):
        naive.step(rng)
    naive.x  # server model
"""

from __future__ import annotations

import numpy as np

from byzsim.algorithms import participation_mask, sample_batch

__all__ = ["NaivePenalty", "NaiveGradient", "make_naive", "weiszfeld"]


# ------------------------------------------------------------------------------------
# building blocks, one sample / one client at a time
# ------------------------------------------------------------------------------------
def softmax_residual(W, x, label):
    """``softmax(W x) − onehot(label)`` for one sample ``x (p',)``, ``W (C, p')``."""
    z = W @ x
    z = z - z.max()
    e = np.exp(z)
    r = e / e.sum()
    r[label] -= 1.0
    return r


def attack_messages(name, params, honest, byzantine, rng):
    """The Byzantine messages, one client at a time: ``honest (n, d)`` → list of q rows."""
    regular = [i for i in range(len(byzantine)) if not byzantine[i]]
    out = []
    for i in range(len(byzantine)):
        if not byzantine[i]:
            continue
        if name in ("same_value", "same-value"):
            out.append(np.full(honest.shape[1], float(params.get("c", 10000.0))))
        elif name == "gaussian":
            out.append(rng.normal(params.get("mean", 0.0), params["std"], size=honest.shape[1]))
        elif name in ("sample_duplicating", "sample-duplicating"):
            t = params.get("target")
            out.append(honest[regular[0] if t is None else t].copy())
        elif name in ("sign_flipping", "sign-flipping"):
            out.append(params.get("c", -5.0) * honest[i])
        elif name == "none":
            out.append(honest[i].copy())
        else:
            raise ValueError(f"naive loop: attack {name!r} not implemented")
    return out


def weiszfeld(points, tol=1e-12, max_iter=5000, eps=1e-8):
    """Geometric median of a list of vectors: plain Weiszfeld iteration started at the
    mean, ``y ← Σ z_i/d_i / Σ 1/d_i`` with ``d_i = max(‖z_i − y‖, eps)``, until
    ``‖y_new − y‖ ≤ tol · (m / Σ 1/d_i)`` (the same relative scale as byzsim's rule)."""
    y = sum(points) / len(points)
    for _ in range(max_iter):
        num = np.zeros_like(y)
        den = 0.0
        for z in points:
            w = 1.0 / max(np.linalg.norm(z - y), eps)
            num += w * z
            den += w
        y_new = num / den
        done = np.linalg.norm(y_new - y) <= tol * len(points) / den
        y = y_new
        if done:
            break
    return y


# ------------------------------------------------------------------------------------
# SAGA for one client: table of residuals (J, C) and the running mean of the table
# ------------------------------------------------------------------------------------
def saga_gradient(Wi, Xi, yi, batch, table_i, mean_i, J):
    """SAGA-corrected gradient of one client at its model ``Wi (C, p')`` for the
    ``b = len(batch)`` distinct sample indices ``batch``:
    ``(1/b) Σ_{j∈batch} (∇f_j(Wi) − φ_j) + (1/J) Σ_j φ_j`` with the stored gradients φ
    *before* the update; then replaces the drawn entries of ``table_i`` and adds
    ``(1/J) Σ_{j∈batch} (∇f_j(Wi) − φ_j)`` to ``mean_i`` (both in place)."""
    diff = np.zeros(mean_i.shape)
    for j in batch:
        x = Xi[j]
        r = softmax_residual(Wi, x, yi[j])
        diff += np.outer(r, x).ravel() - np.outer(table_i[j], x).ravel()
        table_i[j] = r
    g = diff / len(batch) + mean_i
    mean_i += diff / J
    return g


def sgd_gradient(Wi, Xi, yi, batch):
    """Minibatch gradient of one client: the mean of the per-sample gradients over the
    sample indices ``batch``."""
    g = np.zeros(Wi.size)
    for j in batch:
        g += np.outer(softmax_residual(Wi, Xi[j], yi[j]), Xi[j]).ravel()
    return g / len(batch)


def init_saga(model, W0, Xi, yi):
    """Table of residuals at the initial model and its mean gradient (one client, its
    real samples ``Xi (J_w, p')``; the samples of a client at once: this is set-up, not
    the timed round)."""
    J = Xi.shape[0]
    Z = Xi @ W0.T
    Z -= Z.max(axis=1, keepdims=True)
    E = np.exp(Z)
    table = E / E.sum(axis=1, keepdims=True)
    table[np.arange(J), yi] -= 1.0
    mean = (table.T @ Xi).ravel() / J
    return table, mean


def init_tables(model, x, P, holders):
    """Lists of per-client SAGA tables and means at the model ``x``; ``None`` for the
    clients where ``holders`` is False."""
    W0 = x.reshape(model.n_classes, model.n_inputs)
    table, mean = [], []
    for i in range(P.n):
        c = P.counts[i]  # the client's real rows (ragged clients: padding after them)
        t, mu = init_saga(model, W0, P.X[i, :c], P.y[i, :c]) if holders[i] else (None, None)
        table.append(t)
        mean.append(mu)
    return table, mean


def _check_model(model):
    if type(model).__name__ != "SoftmaxRegression":
        raise ValueError(f"the naive loop supports softmax regression only, got {type(model).__name__}")


# ------------------------------------------------------------------------------------
# workload A: the penalty family (RSA / AsynRSA-VR) with l1 penalty
# ------------------------------------------------------------------------------------
class NaivePenalty:
    """AsynRSA-VR (``estimator="saga"``) or RSA (``"sgd"``), l1 penalty, per-client loop."""

    def __init__(self, cfg, problem):
        _check_model(problem.model)
        if cfg.p != 1:
            raise ValueError("naive loop: l1 penalty (p = 1) only")
        self.cfg, self.P = cfg, problem
        self.model = problem.model

    def init(self, x0):
        P, m = self.P, self.model
        self.x = np.array(x0, dtype=np.float64)
        self.models = [self.x.copy() for _ in range(P.n)]
        self.table, self.mean = [], []
        if self.cfg.estimator == "saga":  # Byzantine clients hold no model and no table here
            self.table, self.mean = init_tables(m, self.x, P, holders=~P.byzantine)
        return self

    def step(self, rng):
        cfg, P, m = self.cfg, self.P, self.model
        n, J = P.n, P.J
        lr, lam = cfg.lr, cfg.penalty
        active = participation_mask(rng, n, cfg.participation)
        idx = sample_batch(rng, n, J, cfg.batch_size, P.counts)
        x0 = self.x
        # 1. local gradients of the regular, participating clients (at round-k models)
        grads = {}
        for i in range(n):
            if P.byzantine[i] or (active is not None and not active[i]):
                continue
            Wi = self.models[i].reshape(m.n_classes, m.n_inputs)
            if cfg.estimator == "saga":
                g = saga_gradient(Wi, P.X[i], P.y[i], idx[i], self.table[i], self.mean[i], P.counts[i])
            else:
                g = sgd_gradient(Wi, P.X[i], P.y[i], idx[i])
            if m.l2:
                g = g + m.l2 * self.models[i]
            grads[i] = g
        # 2. Byzantine models (their honest message is the server model)
        honest = np.array([x0 if P.byzantine[i] else self.models[i] for i in range(n)])
        z = attack_messages(cfg.attack, cfg.attack_params, honest, P.byzantine, rng) if P.byzantine.any() else []
        # 3. server direction at round-k values
        server = cfg.server_l2 * x0
        k = 0
        for i in range(n):
            on = active is None or active[i]
            if P.byzantine[i]:
                if on:
                    server = server + lam * np.sign(x0 - z[k])
                k += 1
            elif on:
                server = server + lam * np.sign(x0 - self.models[i])
        # 4. client updates, then the server update
        for i, g in grads.items():
            self.models[i] = self.models[i] - lr * (g + lam * np.sign(self.models[i] - x0))
        self.x = x0 - lr * server
        return self


# ------------------------------------------------------------------------------------
# workload B: the gradient family (Byrd-SAGA, RS-Byrd-SAGA, ...) with the geometric median
# ------------------------------------------------------------------------------------
class NaiveGradient:
    """Gradient family with ``aggregator`` geometric_median or mean, optional s-replacement
    resampling, per-client loop."""

    def __init__(self, cfg, problem, gm_tol=1e-12, gm_max_iter=5000):
        _check_model(problem.model)
        if cfg.aggregator not in ("geometric_median", "mean") or cfg.preaggregators:
            raise ValueError(f"naive loop: aggregator {cfg.aggregator!r} / preaggregators not implemented")
        self.cfg, self.P, self.model = cfg, problem, problem.model
        self.gm_tol, self.gm_max_iter = gm_tol, gm_max_iter
        gp = dict(cfg.aggregator_params)
        self.gm_eps = gp.get("eps", 1e-8)
        self.weighted = bool(gp.get("weighted", False))

    def init(self, x0):
        P, m = self.P, self.model
        self.x = np.array(x0, dtype=np.float64)
        self.table, self.mean = [], []
        if self.cfg.estimator == "saga":
            self.table, self.mean = init_tables(m, self.x, P, holders=np.ones(P.n, bool))
        return self

    def step(self, rng):
        cfg, P, m = self.cfg, self.P, self.model
        n, J = P.n, P.J
        active = participation_mask(rng, n, cfg.participation)
        idx = sample_batch(rng, n, J, cfg.batch_size, P.counts)
        W = self.x.reshape(m.n_classes, m.n_inputs)
        # Byzantine clients compute honest messages only when the attack looks at their own
        need_byz = cfg.attack in ("sign_flipping", "sign-flipping", "none")
        msgs = np.zeros((n, m.dim))
        for i in range(n):
            if P.byzantine[i] and not need_byz:
                continue
            on = active is None or active[i]
            if cfg.estimator == "saga" and not on:
                # sitting out: table untouched, and the message an attack may read is the
                # table mean (byzsim's SAGA for an inactive client: no new sample gradients)
                g = self.mean[i].copy()
            elif cfg.estimator == "saga":
                g = saga_gradient(W, P.X[i], P.y[i], idx[i], self.table[i], self.mean[i], P.counts[i])
            else:
                g = sgd_gradient(W, P.X[i], P.y[i], idx[i])
            if m.l2:
                g = g + m.l2 * self.x
            msgs[i] = g
        if P.byzantine.any():
            z = attack_messages(cfg.attack, cfg.attack_params, msgs, P.byzantine, rng)
            for k, i in enumerate(np.flatnonzero(P.byzantine)):
                msgs[i] = z[k]
        on = [i for i in range(n) if active is None or active[i]]
        rows = [msgs[i] for i in on]
        s = cfg.resample
        if s > 1:  # s-replacement: every message used s times, groups of s
            if active is not None:
                raise ValueError("resampling with partial participation is not supported")
            perm = rng.permutation(np.repeat(np.arange(n), s)).reshape(n, s)
            rows = [sum(msgs[k] for k in group) / s for group in perm]
        if not rows:
            agg = np.zeros(m.dim)
        elif cfg.aggregator == "mean" and self.weighted:  # FedAvg: Σ J_i v_i / Σ J_i
            agg = sum(P.counts[i] * msgs[i] for i in on) / sum(P.counts[i] for i in on)
        elif cfg.aggregator == "mean":
            agg = sum(rows) / len(rows)
        else:
            agg = weiszfeld(rows, tol=self.gm_tol, max_iter=self.gm_max_iter, eps=self.gm_eps)
        self.x = self.x - cfg.lr * (agg + cfg.server_l2 * self.x)
        return self


def make_naive(cfg, problem, **kw):
    """The naive per-client loop for ``cfg`` (penalty or gradient family)."""
    if cfg.family == "penalty":
        return NaivePenalty(cfg, problem)
    return NaiveGradient(cfg, problem, **kw)
