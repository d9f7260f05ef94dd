"""What a config's problem is, measured: its optimum, variations and the papers' bounds.

``diagnose(cfg) -> Diagnosis`` (and ``byzsim diagnose CONFIG… key=value…``) computes,
deterministically and without simulating a round:

- ``x*``, the minimiser of the regular workers' problem, to a certified tolerance
  (L-BFGS on the full gradient of the stacked regular data; the objective is smooth and,
  with an l2 term, ``κ``-strongly convex, so ``‖x − x*‖ ≤ ‖∇F(x)‖/κ`` and
  ``F(x) − F* ≤ ‖∇F(x)‖²/(2κ)``), its test accuracy and training loss (the ceiling of
  the setting).  The objective depends on the family (it is what the method converges to
  without attack)::

      penalty (paper A, problem (1)):  F(x) = Σ_{i∈R} f_i(x) + f0(x)
      gradient (paper B, problem (1)): F(x) = (1/R) Σ_{i∈R} f_i(x) + f0(x)

  with ``f_i(x) = (1/J) Σ_j ℓ(x; ξ_ij) + (l2/2)‖x‖²`` (the model's own ``l2``) and
  ``f0(x) = (server_l2 + ridge)/2 ‖x‖²`` (``ridge``: an optional term for the diagnostic
  only, for configs without any l2, whose softmax minimiser need not exist);
- the inner and outer variations at ``x*`` (paper B, Assumptions 2–3; paper A eq. 10)::

      σ_i² = (1/J) Σ_j ‖∇ℓ(x*; ξ_ij) − ∇f_i(x*)‖²      σ² = (1/R) Σ_{i∈R} σ_i²
      δ²   = (1/R) Σ_{i∈R} ‖∇f_i(x*) − ∇f(x*)‖²,        ∇f = (1/R) Σ_{i∈R} ∇f_i

  (the l2 terms are common to all samples and workers and cancel); a minibatch of ``b``
  distinct samples (as the runs draw them) has variance ``σ_b² = σ² (J − b)/(b (J − 1))``;
- ``μ`` and ``L``: for softmax regression ``μ`` is exactly the l2 coefficient (shifting
  every class row of ``W`` by one vector leaves the softmax unchanged, so the data
  Hessian is singular); ``L`` as the certified global bounds ``½‖x_j‖² + l2`` per sample
  (paper A, Assumption 2; the Hessian of the log-sum-exp is ``⪯ ½ I``) and
  ``½ λ_max(XᵀX/N) + κ`` for ``f`` (paper B, Assumption 1), and the local
  ``λ_max(∇²F(x*))`` by Lanczos on Hessian-vector products;
- penalty family: Lemma 1's threshold ``max_i ‖∇f_i(x̃*)‖_b`` (``1/b + 1/p = 1``) against
  the config's ``λ``, and Theorem 1's rate and ``Δ1`` (:func:`byzsim.theory.asynrsa_theorem1`);
- gradient family: paper B's Table I learning errors (:func:`byzsim.theory.paper_b_bounds`).

Ragged clients (the padded layout of :class:`byzsim.partition.ClientData`: worker i
holds ``J_i`` samples, the first rows of its block; ``Problem.counts``): every quantity is
over the real rows only, with ``f_i`` the mean over worker i's own ``J_i`` samples (so
``J`` above is ``J_i``, and ``σ_b²`` is the mean over workers of
``σ_i² (J_i − b)/(b (J_i − 1))``); the padding is never read (NaN allowed).  ``J`` in the
bounds' step conditions is then ``J_max``, the strictest.  Equal-size clients are computed
exactly as without counts.  Paper A's problem (3) (:func:`penalised_objective`,
:func:`penalised_optimum`) is for equal-size clients only.

Only convex models with a computable optimum are supported (:data:`CONVEX_MODELS`:
softmax regression); anything else is a ``ValueError``.

The penalised problem (3) of paper A is :func:`penalised_objective`; its optimum,
:func:`penalised_optimum`, is certified when ``λ`` is at or above Lemma 1's threshold.
:func:`distance_to_optimum` gives the ``‖x − x*‖²`` a run's final model is compared with.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
from scipy.special import log_softmax

from . import theory
from .config import Config

__all__ = [
    "CONVEX_MODELS", "Optimum", "Diagnosis", "PenalisedOptimum", "diagnose", "regular_optimum", "optimum_key",
    "penalised_objective", "penalised_optimum", "distance_to_optimum", "bound_at_end",
    "config_bound", "Diagnoses", "main",
]

#: models whose regular-worker problem has a unique optimum this module can compute
CONVEX_MODELS = ("softmax",)


# --------------------------------------------------------------------------------------
# the smooth objective on stacked data (softmax regression)
# --------------------------------------------------------------------------------------
class _SoftmaxObjective:
    """``F(w) = c · Σ_{i∈R} (1/J_i) Σ_{j<J_i} ℓ(w; x_ij, y_ij) + (κ/2)‖w‖²`` on the
    stacked regular data ``X (R, J, p')`` (float64, viewed as ``(N, p')``), with its
    gradient and Hessian-vector product; ``w`` is ``(d,) = (C·p',)`` class-major like the
    model.

    ``counts (R,)``: ragged clients, client i holding ``J_i`` samples, the first ``J_i``
    rows of ``X[i]`` (the rest is padding, never read: NaN allowed).  Only the real rows
    are kept (``X2 (N, p')``, ``N = Σ_i J_i``, client by client), each sample weighted
    ``ω_j = c/J_i`` (:attr:`wts`).  Without counts, or with every ``J_i = J``, it is the
    equal-size objective, computed exactly as before (one scalar weight ``c/J``)."""

    def __init__(self, model, X: np.ndarray, y: np.ndarray, c: float, kappa: float,
                 sparse: bool | None = None, counts: np.ndarray | None = None):
        self.model, self.c, self.kappa = model, float(c), float(kappa)
        self.R, self.J, self.p = X.shape
        self.counts = self.starts = self.wts = None
        if counts is not None and (np.asarray(counts) != self.J).any():
            counts = np.asarray(counts, dtype=np.int64)
            if counts.shape != (self.R,) or counts.min() < 1 or counts.max() > self.J:
                raise ValueError(f"counts must be (R,) = ({self.R},) integers in [1, J_max = {self.J}], "
                                 f"got shape {counts.shape}, range [{counts.min()}, {counts.max()}]")
            mask = np.arange(self.J) < counts[:, None]
            self.counts = counts
            self.starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
            self.wts = np.repeat(self.c / counts, counts)  # (N,) weight of each real sample
            self.X2 = np.ascontiguousarray(X[mask], dtype=np.float64)
            self.y = np.asarray(y)[mask]
        else:
            self.X2 = np.ascontiguousarray(X.reshape(-1, self.p), dtype=np.float64)
            self.y = np.asarray(y).reshape(-1)
        # sparse features (MNIST: 19% nonzero) make the two products per evaluation
        # ~1.5-2x cheaper as CSR (X and Xᵀ); dense otherwise
        self._Xs = self._XsT = None
        if sparse is None:
            sparse = self.X2.size > 100_000 and np.count_nonzero(self.X2) < 0.4 * self.X2.size
        if sparse:
            import scipy.sparse as sp

            self._Xs = sp.csr_matrix(self.X2)
            self._XsT = self._Xs.T.tocsr()
        self.C = model.n_classes
        self.scale = self.c / self.J  # weight of one sample's loss (equal sizes)

    @property
    def ragged(self) -> bool:
        return self.counts is not None

    def _segments(self):
        """``(i, slice of client i's rows in X2, J_i)`` per client (ragged)."""
        for i, (a, n) in enumerate(zip(self.starts.tolist(), self.counts.tolist())):
            yield i, slice(a, a + n), n

    def _weighted_t_times(self, P: np.ndarray) -> np.ndarray:
        """``Σ_j ω_j P_j ⊗ x_j`` as ``(C, p')``: the data term's gradient-like sums."""
        if self.wts is None:
            return self.scale * self._t_times(P)
        return self._t_times(P * self.wts[:, None])

    def _times(self, V: np.ndarray) -> np.ndarray:
        """``X V`` for ``V (p', C)``: ``(N, C)``."""
        return (self._Xs if self._Xs is not None else self.X2) @ V

    def _t_times(self, P: np.ndarray) -> np.ndarray:
        """``Pᵀ X`` for ``P (N, C)``: ``(C, p')``."""
        if self._XsT is not None:
            return (self._XsT @ P).T
        return P.T @ self.X2

    def value_grad(self, w: np.ndarray) -> tuple[float, np.ndarray]:
        W = w.reshape(self.C, self.p)
        logp = log_softmax(self._times(W.T), axis=1)  # (N, C)
        N = logp.shape[0]
        picked = logp[np.arange(N), self.y]
        nll = self.scale * -picked.sum() if self.wts is None else -(self.wts @ picked)
        P = np.exp(logp, out=logp)
        P[np.arange(N), self.y] -= 1.0  # residual softmax − onehot
        g = self._weighted_t_times(P).ravel() + self.kappa * w
        return float(nll + 0.5 * self.kappa * w @ w), g

    def hessp_at(self, w: np.ndarray):
        """``v ↦ ∇²F(w) v``: per sample ``(diag(p) − ppᵀ) V x ⊗ x``, vectorised as two GEMMs."""
        W = w.reshape(self.C, self.p)
        P = np.exp(log_softmax(self._times(W.T), axis=1))

        def hv(v: np.ndarray) -> np.ndarray:
            Z = self._times(v.reshape(self.C, self.p).T)  # (N, C)
            PZ = P * Z
            S = PZ - P * PZ.sum(axis=1, keepdims=True)
            return self._weighted_t_times(S).ravel() + self.kappa * v

        return hv

    def client_stats(self, w: np.ndarray):
        """Per-client data gradients ``G (R, d)`` and inner variations ``σ_i² (R,)`` at w.

        ``‖r_j ⊗ x_j‖² = ‖r_j‖² ‖x_j‖²``, so ``σ_i² = (1/J_i) Σ_j ‖r_j‖²‖x_j‖² − ‖G_i‖²``
        needs no per-sample gradient (``G_i = (1/J_i) Σ_{j<J_i} r_j ⊗ x_j``)."""
        W = w.reshape(self.C, self.p)
        Rs = np.exp(log_softmax(self._times(W.T), axis=1))
        Rs[np.arange(Rs.shape[0]), self.y] -= 1.0
        if self.ragged:
            G = np.empty((self.R, self.C * self.p))
            for i, rows, n in self._segments():
                G[i] = (Rs[rows].T @ self.X2[rows]).ravel() / n
            per = np.einsum("nc,nc->n", Rs, Rs) * np.einsum("np,np->n", self.X2, self.X2)
            sq = np.add.reduceat(per, self.starts) / self.counts
            return G, np.maximum(sq - np.einsum("rd,rd->r", G, G), 0.0)
        R3 = Rs.reshape(self.R, self.J, self.C)
        X3 = self.X2.reshape(self.R, self.J, self.p)
        G = (np.swapaxes(R3, 1, 2) @ X3).reshape(self.R, -1) / self.J
        sq = (np.einsum("rjc,rjc->rj", R3, R3) * np.einsum("rjp,rjp->rj", X3, X3)).mean(axis=1)
        return G, np.maximum(sq - np.einsum("rd,rd->r", G, G), 0.0)

    def client_smoothness(self) -> np.ndarray:
        """Certified smoothness of each client's data term ``(1/J_i) Σ_j ℓ``:
        ``½ λ_max(X_iᵀX_i/J_i)`` (Lanczos), ``(R,)``."""
        if self.ragged:
            return np.array([0.5 * _lanczos_max(lambda v, A=self.X2[rows], n=n: A.T @ (A @ v) / n, self.p)
                             for _, rows, n in self._segments()])
        X3 = self.X2.reshape(self.R, self.J, self.p)
        return np.array([
            0.5 * _lanczos_max(lambda v, A=X3[i]: A.T @ (A @ v) / self.J, self.p) for i in range(self.R)
        ])

    def smoothness_bounds(self) -> tuple[float, float]:
        """Certified global bounds of the data term's curvature: ``(½ max_j ‖x_j‖²,
        ½ λ_max(Σ_j ω'_j x_j x_jᵀ))`` (per real sample; the mean over the clients of each
        client's mean, ``ω'_j = 1/(R J_i)``, which is ``XᵀX/N`` for equal sizes)."""
        per_sample = 0.5 * float(np.einsum("np,np->n", self.X2, self.X2).max())
        if self.wts is None:
            N = self.X2.shape[0]
            gram = _lanczos_max(lambda v: self._t_times(self._times(v.reshape(-1, 1))).ravel() / N, self.p)
        else:
            om = (self.wts / (self.c * self.R))[:, None]
            gram = _lanczos_max(lambda v: self._t_times(om * self._times(v.reshape(-1, 1))).ravel(), self.p)
        return per_sample, 0.5 * gram


def _check_model(cfg: Config) -> None:
    if cfg.model not in CONVEX_MODELS:
        raise ValueError(
            f"diagnose: model {cfg.model!r} has no optimum this diagnostic can compute "
            f"({'it is non-convex' if cfg.model == 'mlp' else 'not supported'}); "
            f"supported models: {', '.join(CONVEX_MODELS)}"
        )


# --------------------------------------------------------------------------------------
# the optimum of the regular workers' problem
# --------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class Optimum:
    """Minimiser of a smooth ``κ``-strongly convex ``F`` and its certificate.

    ``x (d,)``; ``grad_norm = ‖∇F(x)‖₂ ≤ tol``; ``dist_bound = grad_norm/κ ≥ ‖x − x*‖₂``;
    ``gap_bound = grad_norm²/(2κ) ≥ F(x) − F*``."""

    x: np.ndarray
    objective: float
    grad_norm: float
    tol: float
    kappa: float
    iterations: int
    seconds: float

    @property
    def dist_bound(self) -> float:
        return self.grad_norm / self.kappa

    @property
    def gap_bound(self) -> float:
        return self.grad_norm**2 / (2 * self.kappa)


def _minimise(obj: _SoftmaxObjective, tol: float | None, max_iter: int = 20000) -> Optimum:
    from threadpoolctl import threadpool_limits

    # one BLAS thread: the thin GEMMs ((N, p') x (p', C) and back) are memory-bound, and
    # threaded OpenBLAS on them was 5-20x slower on a loaded 2-core machine
    with threadpool_limits(limits=1, user_api="blas"):
        return _lbfgs(obj, tol, max_iter)


def _lbfgs(obj: _SoftmaxObjective, tol: float | None, max_iter: int) -> Optimum:
    from scipy.optimize import minimize

    t0 = time.perf_counter()
    d = obj.C * obj.p
    w0 = np.zeros(d)
    f0, g0 = obj.value_grad(w0)
    if tol is None:
        tol = 1e-6 * max(1.0, float(np.linalg.norm(g0)))
    w, its = w0, 0
    for _ in range(4):  # L-BFGS's gtol is on the max-abs entry: tighten until ‖∇F‖₂ ≤ tol
        res = minimize(obj.value_grad, w, jac=True, method="L-BFGS-B",
                       options=dict(gtol=tol / np.sqrt(d), ftol=0.0, maxiter=max_iter, maxcor=30))
        w, its = res.x, its + int(res.nit)
        f, g = obj.value_grad(w)
        if np.linalg.norm(g) <= tol:
            break
    gn = float(np.linalg.norm(g))
    if not gn <= tol:
        raise RuntimeError(f"diagnose: L-BFGS stopped at ‖∇F‖ = {gn:.3g} > tol = {tol:.3g} "
                           f"after {its} iterations ({res.message})")
    return Optimum(x=w, objective=f, grad_norm=gn, tol=float(tol), kappa=obj.kappa,
                   iterations=its, seconds=time.perf_counter() - t0)


def _objective_of(cfg: Config, problem, ridge: float) -> _SoftmaxObjective:
    model, reg = problem.model, problem.regular
    R = int(reg.sum())
    l2m = float(model.l2)
    if cfg.family == "penalty":  # Σ_i f_i + f0
        c, kappa = 1.0, R * l2m + cfg.server_l2 + ridge
    else:  # (1/R) Σ_i f_i + f0
        c, kappa = 1.0 / R, l2m + cfg.server_l2 + ridge
    if not kappa > 0:
        raise ValueError(
            f"diagnose: config has no l2 term (model_params.l2 = {l2m}, server_l2 = "
            f"{cfg.server_l2}): the softmax loss is then not strongly convex and its minimiser "
            "need not exist (a class absent from the regular workers' data drives its logits "
            "to −∞); pass ridge > 0 (adds ridge/2·‖x‖² for the diagnostic only)"
        )
    return _SoftmaxObjective(model, problem.X[reg], problem.y[reg], c, kappa, counts=problem.counts[reg])


def _problem64(cfg: Config):
    from .simulate import problem_for

    return problem_for(cfg if cfg.dtype == "float64" else cfg.replace(dtype="float64"))


def _as_float64(problem):
    """``problem`` with float64 features (itself when they already are)."""
    import dataclasses

    if problem.X.dtype == np.float64:
        return problem
    return dataclasses.replace(problem, X=problem.X.astype(np.float64),
                               X_test=problem.X_test.astype(np.float64),
                               X_eval=problem.X_eval.astype(np.float64))


def regular_optimum(cfg: Config, *, ridge: float = 0.0, tol: float | None = None) -> Optimum:
    """``x*`` of the regular workers' problem of ``cfg`` (see the module docstring), to
    ``‖∇F(x*)‖₂ ≤ tol`` (default ``1e-6·max(1, ‖∇F(0)‖)``), in float64."""
    _check_model(cfg)
    if not (np.isfinite(ridge) and ridge >= 0):
        raise ValueError(f"diagnose: ridge must be a finite number >= 0, got {ridge!r}")
    problem = _problem64(cfg)
    return _minimise(_objective_of(cfg, problem, ridge), tol)


def optimum_key(cfg: Config, ridge: float = 0.0) -> str:
    """sha256 (hex) of what ``x*``, ``σ²`` and ``δ²`` of ``cfg`` depend on, so that
    configs with equal keys can share one :class:`Optimum` (``diagnose(…, optimum=…)``).

    Hashed: the regular workers' data of the float64 problem as a multiset of workers,
    each a multiset of its real rows (features as float64 and label; padding left out),
    plus the family (which sets the objective), the model and its parameters,
    ``server_l2`` and ``ridge``.  Order does not enter, so seeds that only reorder the
    rows of a worker or permute whole workers share a key (a by-class split with one
    worker per class and fixed Byzantine workers).  Seeds that draw other rows (the
    truncated by-class split) or deal rows to other workers do not: ``f_i`` is the mean
    over worker i's rows, so which rows share a worker enters ``δ²``, ``σ²`` and, with
    ragged workers (weights ``1/J_i``), ``x*`` itself.  The minibatch size is not hashed
    (``σ_b²`` depends on it, ``x*`` does not).  Cost: one sha256 per regular row.
    """
    import hashlib

    pr = _problem64(cfg)
    workers = []
    for i in np.flatnonzero(pr.regular):
        n = int(pr.counts[i])
        X = np.ascontiguousarray(pr.X[i, :n], dtype=np.float64)
        y = np.asarray(pr.y[i, :n], dtype=np.int64)
        rows = sorted(hashlib.sha256(X[j].tobytes() + y[j].tobytes()).digest() for j in range(n))
        workers.append(hashlib.sha256(b"".join(rows)).digest())
    h = hashlib.sha256(repr((cfg.family, cfg.model, sorted(cfg.model_params.items()), float(cfg.server_l2),
                             float(ridge))).encode())
    for w in sorted(workers):
        h.update(w)
    return h.hexdigest()


def distance_to_optimum(x: np.ndarray, x_star: np.ndarray) -> float:
    """``‖x − x*‖₂²`` of a run's final server model ``x (d,)`` (what paper B's Theorems
    1 and 3 bound in expectation) against ``x* (d,)`` from :func:`diagnose`."""
    x, x_star = np.asarray(x, dtype=np.float64), np.asarray(x_star, dtype=np.float64)
    if x.shape != x_star.shape:
        raise ValueError(f"x has shape {x.shape} but x* has shape {x_star.shape}")
    return float(np.sum((x - x_star) ** 2))


def bound_at_end(x_final: np.ndarray, diagnosis: "Diagnosis") -> dict:
    """A run's final server model against its config's bound: ``{"distance2": ‖x − x*‖²,
    "bound": Δ2 or None, "bound_formula": …, "bound_name": …}`` (the bound of the
    diagnosed config's own method, ``None`` outside its theorem's range or when paper B
    has no bound for the method)."""
    b = diagnosis.config_bound
    return {
        "distance2": distance_to_optimum(x_final, diagnosis.optimum.x),
        "bound": None if b is None else b.value,
        "bound_formula": None if b is None else b.formula,
        "bound_name": None if b is None else b.name,
    }


# --------------------------------------------------------------------------------------
# the diagnosis
# --------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class Diagnosis:
    """Everything :func:`diagnose` measures (see the module docstring for the formulas)."""

    config: Config
    objective: str  # the problem x* solves, in words
    d: int
    R: int
    J: int
    ridge: float
    optimum: Optimum
    test_accuracy: float
    train_loss: float
    sigma2: float  # mean over regular workers of the per-sample inner variation
    sigma2_max: float
    sigma2_batch: float  # of a minibatch of cfg.batch_size distinct samples (mean over workers)
    delta2: float
    mu: float  # strong convexity of F (= κ for softmax)
    L_bound: float  # certified global smoothness of F
    L_local: float  # λ_max(∇²F(x*)) by Lanczos
    # paper A (penalty family)
    mu_a: float | None = None  # min(μ of the f_i, μ of f0)
    L_a: float | None = None  # per-sample smoothness bound (Assumption 2)
    lemma1_threshold: float | None = None
    lemma1_error: float | None = None  # |threshold − its value at the exact x̃*| ≤ this
    theorem1: tuple | None = None  # (rate Bound, Δ1 Bound)
    # paper B (gradient family)
    paper_b: dict | None = None
    config_bound: theory.Bound | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)
    counts: np.ndarray | None = None  # (R,) J_i of the regular workers when ragged (J is J_max)

    @property
    def lemma1_holds(self) -> bool | None:
        """``λ ≥ max_i ‖∇f_i(x̃*)‖_b``: the optimum of (3) is then ``(x̃*, …, x̃*)``."""
        if self.lemma1_threshold is None:
            return None
        return self.config.penalty >= self.lemma1_threshold

    def format(self) -> str:
        c, o = self.config, self.optimum
        lines = [
            f"# diagnose: {c.method} ({c.family}) on {c.dataset}/{c.partition}, model {c.model}, "
            f"n = {c.n_clients}, B = {c.n_byzantine}, seed {c.seed}",
            f"problem       {self.objective}",
            f"sizes         d = {self.d}, R = {self.R} regular workers, " + (
                f"J = {self.J} samples each" if self.counts is None else
                f"J_i = {int(self.counts.min())}..{int(self.counts.max())} samples "
                f"(mean {self.counts.mean():.1f}; ragged)"),
            f"x*            ‖∇F(x*)‖ = {o.grad_norm:.3g} ≤ tol {o.tol:.3g}  "
            f"(‖x − x*‖ ≤ {o.dist_bound:.3g}, F − F* ≤ {o.gap_bound:.3g}); "
            f"{o.iterations} L-BFGS iterations, {o.seconds:.1f} s",
            f"ceiling       test accuracy {self.test_accuracy:.4f}, training loss {self.train_loss:.5g}, "
            f"F(x*) = {o.objective:.6g}, ‖x*‖ = {np.linalg.norm(o.x):.4g}",
            f"variation     σ² = {self.sigma2:.4g} (max over workers {self.sigma2_max:.4g}; "
            f"batch {c.batch_size}: σ_b² = {self.sigma2_batch:.4g}), δ² = {self.delta2:.4g}",
            f"curvature     μ = {self.mu:.4g} (exact), L ≤ {self.L_bound:.4g} (global bound), "
            f"λ_max(∇²F(x*)) = {self.L_local:.4g} (Lanczos)",
        ]
        if self.lemma1_threshold is not None:
            verdict = "above: the optimum of (3) is (x̃*, …, x̃*)" if self.lemma1_holds else \
                "BELOW: the optimum of (3) is not the consensus point"
            if abs(c.penalty - self.lemma1_threshold) <= self.lemma1_error:
                verdict = "undecided at this tolerance (|λ − threshold| ≤ its error): rerun with a smaller --tol"
            lines.append(f"Lemma 1       λ = {c.penalty:g} vs max_i ‖∇f_i(x̃*)‖_b = "
                         f"{self.lemma1_threshold:.5g} ± {self.lemma1_error:.2g} (p = {c.p:g}): {verdict}")
            lines.append(f"paper A       μ = {self.mu_a:.4g} (min over f_i and f0), "
                         f"L = {self.L_a:.4g} (per-sample bound)")
            for b in self.theorem1 or ():
                lines.append("  " + _fmt_bound(b))
        if self.paper_b is not None:
            lines.append("paper B       Table I learning errors Δ2 (bound on E‖x − x*‖² at stationarity):")
            for b in self.paper_b.values():
                lines.append("  " + _fmt_bound(b))
            lines.append("  this config: " + (_fmt_bound(self.config_bound) if self.config_bound
                                              else "no bound in paper B for its aggregation"))
        lines += [f"note          {n}" for n in self.notes]
        return "\n".join(lines)


def _fmt_bound(b: theory.Bound) -> str:
    if b.holds:
        return f"{b.name:<18} {b.value:.4g}   [{b.source}]"
    f = "undefined" if b.formula is None else f"formula {b.formula:.4g}"
    return f"{b.name:<18} none ({f}; the theorem needs {'; '.join(b.failed())})   [{b.source}]"


def _lanczos_max(hv, d: int) -> float:
    from scipy.sparse.linalg import LinearOperator, eigsh
    from threadpoolctl import threadpool_limits

    if d < 3:  # too small for ARPACK (k = 1 < ncv ≤ d): the dense matrix, column by column
        return float(np.linalg.eigvalsh(np.column_stack([hv(e) for e in np.eye(d)]))[-1])
    op = LinearOperator((d, d), matvec=hv, dtype=np.float64)
    v0 = np.ones(d) / np.sqrt(d)
    with threadpool_limits(limits=1, user_api="blas"):
        return float(eigsh(op, k=1, which="LA", v0=v0, tol=1e-6, return_eigenvectors=False)[0])


def diagnose(cfg: Config, *, ridge: float = 0.0, tol: float | None = None,
             optimum: Optimum | None = None, problem=None) -> Diagnosis:
    """Measure ``cfg``'s problem: ``x*``, ``σ²``, ``δ²``, ``μ``, ``L`` and the bounds.

    Parameters
    ----------
    cfg : Config
        Any config whose model is in :data:`CONVEX_MODELS`.
    ridge : float
        Extra ``(ridge/2)‖x‖²`` in ``f0`` for the diagnostic only (needed when the config
        has no l2 term at all).
    tol : float, optional
        Target ``‖∇F(x*)‖₂`` (default ``1e-6·max(1, ‖∇F(0)‖)``).
    optimum : Optimum, optional
        ``x*`` computed before for the same data, family, l2 and ridge (configs that
        differ only in the method share it); its gradient norm is re-checked.
    problem : Problem, optional
        Diagnose this problem's data instead of the config's own (computed in float64).

    Ragged clients (``problem.counts``): every quantity is over the real rows only,
    ``f_i`` the mean over client i's own ``J_i`` samples; ``σ_b²`` is the mean over
    workers of ``σ_i² (J_i − b)/(b (J_i − 1))``, and ``J`` in the bounds' step conditions
    is ``J_max`` (the strictest of the clients' conditions).

    Raises
    ------
    ValueError
        For a model without a computable optimum, or a config without l2 and no ridge.
    """
    _check_model(cfg)
    if not (np.isfinite(ridge) and ridge >= 0):
        raise ValueError(f"diagnose: ridge must be a finite number >= 0, got {ridge!r}")
    problem = _problem64(cfg) if problem is None else _as_float64(problem)
    model = problem.model
    obj = _objective_of(cfg, problem, ridge)
    if optimum is None:
        optimum = _minimise(obj, tol)
    elif not np.linalg.norm(obj.value_grad(optimum.x)[1]) <= optimum.tol * (1 + 1e-9):
        raise ValueError("diagnose: the optimum passed is not the optimum of this config's problem")
    opt = optimum
    x = opt.x
    R, J, d = obj.R, obj.J, model.dim
    l2m = float(model.l2)
    G, s2 = obj.client_stats(x)  # data-term gradients (R, d), σ_i² (R,)
    delta2 = float(np.mean(np.sum((G - G.mean(axis=0)) ** 2, axis=1)))
    sigma2 = float(s2.mean())
    b = cfg.batch_size
    if obj.ragged:  # each worker's minibatch of b distinct samples out of its own J_i
        Ji = obj.counts
        sigma2_b = float(np.mean(np.where(Ji > 1, s2 * (Ji - b) / (b * np.maximum(Ji - 1, 1)), 0.0)))
    else:
        sigma2_b = sigma2 * (J - b) / (b * (J - 1)) if J > 1 else 0.0
    per_sample, gram = obj.smoothness_bounds()
    L_bound = (obj.c * R) * gram + obj.kappa  # c·Σ_i f_i = c·R·(mean over all samples)
    L_local = _lanczos_max(obj.hessp_at(x), d)
    f0_l2 = cfg.server_l2 + ridge
    if cfg.family == "penalty":
        objective = (f"Σ_(i∈R) f_i(x) + f0(x), f_i with l2 = {l2m:g}, "
                     f"f0 = {f0_l2:g}/2‖x‖² (server_l2 {cfg.server_l2:g} + ridge {ridge:g})")
    else:
        objective = (f"(1/R) Σ_(i∈R) f_i(x) + f0(x), f_i with l2 = {l2m:g}, "
                     f"f0 = {f0_l2:g}/2‖x‖² (server_l2 {cfg.server_l2:g} + ridge {ridge:g})")
    notes = []
    if obj.ragged:
        notes.append(f"ragged workers (J_i from {int(obj.counts.min())} to {int(obj.counts.max())}): "
                     f"f_i is the mean over worker i's own samples; J = J_max = {J} in the step conditions")
    if ridge:
        notes.append(f"ridge {ridge:g} is not in the config: x* and the bounds are of the ridge problem")
    kw: dict = {}
    if cfg.family == "penalty":
        grads = G + l2m * x  # ∇f_i(x̃*) with the model's own l2
        mu_a, L_a = min(l2m, f0_l2), max(per_sample + l2m, f0_l2)
        kw["mu_a"], kw["L_a"] = mu_a, L_a
        kw["lemma1_threshold"] = theory.lemma1_lambda_threshold(grads, cfg.p)
        # ‖∇f_i(x) − ∇f_i(x̃*)‖₂ ≤ L_i ‖x − x̃*‖ ≤ L_i ‖∇F(x)‖/κ; the b-norm is at most
        # the 2-norm for b ≥ 2 and at most √d times it for b < 2
        Li = obj.client_smoothness() + l2m
        b_factor = 1.0 if (cfg.p <= 2) else np.sqrt(d)
        kw["lemma1_error"] = float(Li.max() * opt.dist_bound * b_factor)
        kw["theorem1"] = theory.asynrsa_theorem1(
            mu_a, L_a, J, cfg.lr, cfg.participation, cfg.penalty, R, cfg.n_byzantine, d, warn=False)
        if mu_a <= 0:
            notes.append("paper A's Assumption 1 fails: the f_i are not strongly convex "
                         "(model l2 = 0; add model_params.l2 for Theorem 1 to apply)")
    else:
        s = cfg.resample if cfg.resample > 1 else 2
        mu = obj.kappa
        common = dict(L=L_bound, step=cfg.lr, warn=False)
        pb = theory.paper_b_bounds(sigma2_b, delta2, mu, cfg.n_byzantine, cfg.n_clients, s,
                                   J=J, **common)
        kw["paper_b"] = pb
        kw["config_bound"] = _config_bound(cfg, sigma2_b, delta2, mu, J, common)
    train_loss = float(model.loss(x, problem.X_eval, problem.y_eval))
    test_acc = float(model.accuracy(x, problem.X_test, problem.y_test))
    diag = Diagnosis(
        config=cfg, objective=objective, d=d, R=R, J=J, ridge=float(ridge), optimum=opt,
        test_accuracy=test_acc, train_loss=train_loss, sigma2=sigma2, sigma2_max=float(s2.max()),
        sigma2_batch=float(sigma2_b), delta2=delta2, mu=obj.kappa, L_bound=float(L_bound),
        L_local=L_local, notes=tuple(notes), counts=obj.counts, **kw,
    )
    _warn_outside(diag)
    return diag


class Diagnoses:
    """A cache of :func:`diagnose` over many configs: ``x*`` (the L-BFGS solve, the
    expensive part) once per regular data set (:func:`optimum_key`), the rest of the
    diagnosis (``σ_b²`` depends on the minibatch) once per data spec and batch size.

    ``cache(cfg, where)`` returns ``(setting, diagnosis)``: ``setting`` numbers the
    distinct regular data sets in order of first use (equal for configs sharing ``x*``),
    ``diagnosis`` is ``cfg``'s :class:`Diagnosis` with ``ridge``.  Each new diagnosis is
    logged as one line (``log``, default stderr) starting with ``where``.

    Attributes: ``optima`` (optimum key -> :class:`Optimum`, in order of first use),
    ``keys`` (data spec -> optimum key: the rows are hashed once per data spec),
    ``by_spec`` ((data spec, batch size) -> :class:`Diagnosis`).
    """

    def __init__(self, ridge: float, log=None):
        self.ridge = ridge
        self.log = log or (lambda line: print(line, file=sys.stderr, flush=True))
        self.keys: dict = {}
        self.optima: dict[str, Optimum] = {}
        self.by_spec: dict = {}

    @staticmethod
    def _spec(cfg: Config) -> tuple:
        """What :func:`optimum_key` hashes, as config fields: the data spec, family, model and l2."""
        from .simulate import _data_key

        return (_data_key(cfg), cfg.family, cfg.model, repr(sorted(cfg.model_params.items())),
                float(cfg.server_l2))

    def __call__(self, cfg: Config, where: str = "") -> tuple[int, "Diagnosis"]:
        spec = self._spec(cfg)
        if spec not in self.keys:
            self.keys[spec] = optimum_key(cfg, self.ridge)
        okey = self.keys[spec]
        key = (spec, cfg.batch_size)
        if key not in self.by_spec:
            t0 = time.perf_counter()
            shared = okey in self.optima
            d = diagnose(cfg, ridge=self.ridge, optimum=self.optima.get(okey))
            self.optima[okey] = d.optimum
            self.by_spec[key] = d
            self.log(f"  {where or f'seed {cfg.seed}'}: {'x* shared, ' if shared else 'x* '}{okey[:8]} in "
                     f"{time.perf_counter() - t0:.0f} s, ‖∇F‖ {d.optimum.grad_norm:.2g}, acc {d.test_accuracy:.4f}, "
                     f"σ² {d.sigma2:.4g}, σ_b² {d.sigma2_batch:.4g}, δ² {d.delta2:.4g}")
        return list(self.optima).index(okey), self.by_spec[key]


def config_bound(cfg: Config, diag: "Diagnosis", *, warn: bool = False) -> theory.Bound | None:
    """The Table I bound of a gradient-family ``cfg``'s own method with the numbers of a
    diagnosis of the same data (configs that differ in method, resampling or step share
    ``x*``, ``σ²``, ``δ²``); ``None`` when paper B has no bound for its aggregation."""
    if cfg.batch_size != diag.config.batch_size:
        raise ValueError(f"config_bound: batch_size {cfg.batch_size} differs from the diagnosed "
                         f"config's {diag.config.batch_size} (σ_b² depends on it)")
    common = dict(L=diag.L_bound, step=cfg.lr, warn=warn)
    return _config_bound(cfg, diag.sigma2_batch, diag.delta2, diag.mu, diag.J, common)


def _config_bound(cfg: Config, sigma2_b, delta2, mu, J, common) -> theory.Bound | None:
    """The Table I bound of the config's own method: geometric median without
    pre-aggregators, SGD or SAGA estimator; ``None`` for any other aggregation."""
    if cfg.aggregator != "geometric_median" or cfg.preaggregators:
        return None
    B, W, s = cfg.n_byzantine, cfg.n_clients, cfg.resample
    if cfg.estimator == "saga":
        return theory.rs_byrd_saga_error(delta2, mu, B, W, s, J=J, **common)
    return theory.rs_byrd_sgd_error(sigma2_b, delta2, mu, B, W, s, **common)


def _warn_outside(diag: Diagnosis) -> None:
    """One TheoryWarning per bound of the config's own method outside its range."""
    from .config import TheoryWarning

    bounds = list(diag.theorem1[:1]) if diag.theorem1 else []
    if diag.config_bound is not None:
        bounds.append(diag.config_bound)
    for b in bounds:
        if not b.holds:
            warnings.warn(f"{b.name}: outside {b.source}'s range, which needs "
                          f"{'; '.join(b.failed())}: no bound reported", TheoryWarning, stacklevel=3)


# --------------------------------------------------------------------------------------
# paper A, problem (3)
# --------------------------------------------------------------------------------------
def penalised_objective(problem, x0: np.ndarray, X: np.ndarray, lam: float, p: float = 1.0,
                        server_l2: float = 0.0) -> float:
    """Paper A, problem (3): ``Σ_{i∈R} f_i(x_i) + f0(x0) + λ Σ_{i∈R} ‖x_i − x0‖_p``.

    Parameters
    ----------
    problem : Problem
        The run's data (the regular rows of ``problem.X``/``problem.y`` are used).
    x0 : ndarray, shape (d,) or (S, d)
        Server model (or S replicas' server models: the result is then ``(S,)``).
    X : ndarray, shape (R, d) or (S, R, d)
        Regular clients' models, in the order of ``problem.regular``.
    lam, p : float
        Penalty ``λ ≥ 0`` and norm ``p ≥ 1`` (or ``inf``).
    server_l2 : float
        ``f0(x0) = server_l2/2 ‖x0‖²``; ``f_i`` includes the model's own l2.
    """
    _refuse_ragged(problem, "penalised_objective")
    reg = problem.regular
    R = int(reg.sum())
    x0 = np.asarray(x0, dtype=np.float64)
    X = np.asarray(X, dtype=np.float64)
    if X.shape != x0.shape[:-1] + (R, problem.model.dim) or x0.ndim > 2:
        raise ValueError(f"X must have shape (R, d) = {(R, problem.model.dim)} (or (S, R, d) with "
                         f"x0 (S, d)), got X {X.shape} and x0 {x0.shape}")
    Xr, yr = problem.X[reg].astype(np.float64, copy=False), problem.y[reg]
    fi = np.sum(problem.model.loss(X, Xr, yr), axis=-1)
    pen = np.sum(np.linalg.norm(X - x0[..., None, :], ord=p, axis=-1), axis=-1)
    F = fi + 0.5 * server_l2 * np.sum(x0 * x0, axis=-1) + lam * pen
    return float(F) if x0.ndim == 1 else F


def _refuse_ragged(problem, what: str) -> None:
    """Problem (3) is evaluated on equal-size clients only (its ``f_i`` are the model's
    losses over whole client blocks)."""
    if getattr(problem, "ragged", False):
        c = problem.counts[problem.regular]
        raise ValueError(f"{what}: the clients are ragged (J_w from {int(c.min())} to {int(c.max())}); "
                         "problem (3) is computed for equal-size clients only (use a partition with "
                         "equal sizes, e.g. by_class with truncate = true)")


@dataclass(frozen=True, eq=False)
class PenalisedOptimum:
    """Optimum of problem (3): ``x0 (d,)``, ``X (R, d)``, ``objective``, how it was
    obtained, and its certificate.

    ``method = "lemma1"``: ``λ ≥ threshold``, the optimum is the consensus at ``x̃*``;
    ``ratio = max_i ‖∇f_i(x̃*)‖_b / λ ≤ 1`` (the x_i-conditions) and ``residual =
    ‖Σ_i ∇f_i(x̃*) + ∇f0(x̃*)‖`` (the x0-condition, problem (1)).
    ``method = "split"`` (p = 1, λ below the threshold): L-BFGS-B on the exact smooth
    reformulation; ``residual`` is the norm of its projected gradient (the KKT residual)."""

    x0: np.ndarray
    X: np.ndarray
    objective: float
    ratio: float
    residual: float
    tol: float
    method: str


def penalised_optimum(cfg: Config, *, tol: float | None = None, max_iter: int = 20000,
                      problem=None) -> PenalisedOptimum:
    """The optimum of paper A's problem (3) for a penalty-family ``cfg``.

    When ``λ ≥ max_i ‖∇f_i(x̃*)‖_b`` (Lemma 1) it is ``x_i = x0 = x̃*``, the optimum of
    (1): with ``u_i = −∇f_i(x̃*)/λ`` (``‖u_i‖_b ≤ 1``, a subgradient of ``‖·‖_p`` at 0)
    the ``x_i``-conditions ``∇f_i + λu_i = 0`` hold, and the ``x0``-condition
    ``∇f0 − λΣu_i = ∇f0 + Σ∇f_i = 0`` is (1)'s, met to ``residual``.

    Below the threshold, for ``p = 1`` only: ``x_i = x0 + u_i⁺ − u_i⁻`` with
    ``u^± ≥ 0`` turns (3) into the smooth bound-constrained problem
    ``Σ_i f_i(x0 + u_i⁺ − u_i⁻) + f0(x0) + λ Σ_i 1ᵀ(u_i⁺ + u_i⁻)`` (equal optimal
    values: at an optimum ``u⁺ ⊙ u⁻ = 0``), solved by L-BFGS-B from the consensus at
    ``x̃*`` until the projected gradient's norm is ``≤ tol`` (default
    ``1e-5·max(1, ‖∇F(x̃*)‖)`` of the split problem).  ``(R + 1)·d`` unknowns (plus
    ``R·d``): on MNIST (R = 20) many minutes.

    ``problem``: solve (3) on this problem's data (e.g. a subset of the config's) instead
    of the config's own; it is computed in float64 either way.

    Raises
    ------
    ValueError
        For a gradient-family config, or ``λ`` below the threshold with ``p ≠ 1``.
    RuntimeError
        When the split problem does not reach ``tol`` in ``max_iter`` iterations.
    """
    if cfg.family != "penalty":
        raise ValueError(f"penalised_optimum: problem (3) is the penalty family's; config "
                         f"{cfg.method!r} is in the {cfg.family!r} family")
    _check_model(cfg)
    problem = _problem64(cfg) if problem is None else _as_float64(problem)
    _refuse_ragged(problem, "penalised_optimum")
    obj = _objective_of(cfg, problem, 0.0)
    opt = _minimise(obj, None)
    G, _ = obj.client_stats(opt.x)
    grads = G + float(problem.model.l2) * opt.x
    thr = theory.lemma1_lambda_threshold(grads, cfg.p)
    R = obj.R
    ratio = thr / cfg.penalty if cfg.penalty else np.inf
    if cfg.penalty >= thr:
        X = np.broadcast_to(opt.x, (R, opt.x.size)).copy()
        F = penalised_objective(problem, opt.x, X, cfg.penalty, cfg.p, cfg.server_l2)
        return PenalisedOptimum(x0=opt.x, X=X, objective=F, ratio=ratio, residual=opt.grad_norm,
                                tol=opt.tol, method="lemma1")
    if cfg.p != 1:
        raise ValueError(
            f"penalised_optimum: λ = penalty = {cfg.penalty:g} is below Lemma 1's threshold "
            f"max_i ‖∇f_i(x̃*)‖_b = {thr:.4g} (p = {cfg.p:g}): the optimum of (3) is then not "
            "the consensus point, and it is computed only for p = 1; use p = 1 or "
            f"penalty >= {thr:.4g}"
        )
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="blas"):
        return _split_l1(problem, cfg, opt.x, ratio, tol, max_iter)


def _split_l1(problem, cfg: Config, x_start: np.ndarray, ratio: float, tol, max_iter: int) -> PenalisedOptimum:
    from scipy.optimize import minimize

    model, reg = problem.model, problem.regular
    Xr, yr = problem.X[reg].astype(np.float64, copy=False), problem.y[reg]
    R, d = Xr.shape[0], model.dim
    lam, l2s = cfg.penalty, cfg.server_l2

    def unpack(v):
        return v[:d], v[d:d + R * d].reshape(R, d), v[d + R * d:].reshape(R, d)

    def fun(v):
        x0, up, um = unpack(v)
        xs = x0 + up - um
        G = model.grad(xs, Xr, yr)  # (R, d): ∇f_i(x_i), with the model's l2
        val = model.loss(xs, Xr, yr).sum() + lam * (up.sum() + um.sum()) + 0.5 * l2s * x0 @ x0
        return float(val), np.concatenate([G.sum(0) + l2s * x0, (G + lam).ravel(), (lam - G).ravel()])

    def kkt(v, g):  # projected gradient: at a bound (0) only a negative partial can descend
        pg = g.copy()
        at0 = np.zeros(v.size, bool)
        at0[d:] = v[d:] <= 0
        pg[at0] = np.minimum(g[at0], 0.0)
        return float(np.linalg.norm(pg))

    v = np.concatenate([x_start, np.zeros(2 * R * d)])
    if tol is None:
        tol = 1e-5 * max(1.0, kkt(v, fun(v)[1]))
    bounds = [(None, None)] * d + [(0.0, None)] * (2 * R * d)
    its = 0
    for _ in range(4):
        res = minimize(fun, v, jac=True, method="L-BFGS-B", bounds=bounds,
                       options=dict(gtol=tol / np.sqrt(v.size), ftol=0.0, maxiter=max_iter, maxcor=30))
        v, its = res.x, its + int(res.nit)
        F, g = fun(v)
        r = kkt(v, g)
        if r <= tol:
            break
    if not r <= tol:
        raise RuntimeError(f"penalised_optimum: L-BFGS-B stopped at KKT residual {r:.3g} > tol "
                           f"{tol:.3g} after {its} iterations ({res.message})")
    x0, up, um = unpack(v)
    return PenalisedOptimum(x0=x0.copy(), X=x0 + up - um, objective=F, ratio=ratio, residual=r,
                            tol=float(tol), method="split")


# --------------------------------------------------------------------------------------
# command line
# --------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="byzsim diagnose",
        description="The regular workers' optimum x*, its accuracy (the ceiling), the inner "
                    "and outer variations σ², δ², Lemma 1's threshold and the papers' bounds "
                    "for a config (no simulation).",
        epilog="examples:\n  byzsim diagnose experiments/paper_a/fig2.toml method=rsa attack=same_value\n"
               "  byzsim diagnose experiments/paper_b/fig7.toml method=byrd-saga --ridge 1e-3",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("inputs", nargs="*", metavar="CONFIG.toml | key=value",
                    help="config files or a figure spec, then key=value overrides")
    ap.add_argument("--ridge", type=float, default=0.0,
                    help="extra ridge/2·‖x‖² for the diagnostic (configs without l2)")
    ap.add_argument("--tol", type=float, default=None, help="target ‖∇F(x*)‖ (default 1e-6·max(1, ‖∇F(0)‖))")
    ap.add_argument("--save-x", default=None, metavar="PATH.npy", help="write x* (of the first config)")
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    """``byzsim diagnose CONFIG… key=value…``: diagnose every distinct config of the input."""
    from .simulate import _data_key
    from .runs.spec import load_entries

    a = build_parser().parse_args(argv)
    files = [t for t in a.inputs if "=" not in t]
    overrides = [t for t in a.inputs if "=" in t]
    try:
        entries, _ = load_entries(files, overrides)
        out, optima = [], {}
        for i, e in enumerate(entries):
            c = e.config
            key = (_data_key(c), c.family, c.server_l2)
            d = diagnose(c, ridge=a.ridge, tol=a.tol, optimum=optima.get(key))
            optima[key] = d.optimum
            if i == 0 and a.save_x:
                np.save(a.save_x, d.optimum.x)
            label = f"[panel {e.panel}] " if e.panel else ""
            out.append(label + d.format())
    except ValueError as err:
        print(f"byzsim: error: {err}", file=sys.stderr)
        return 2
    print("\n\n".join(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
