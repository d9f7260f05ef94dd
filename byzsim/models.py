"""Models, vectorized over a leading client axis.

A model is a small object with the flat parameter dimension ``d`` and pure functions
of a flat parameter array ``w``.  All functions broadcast over leading axes:

- ``w``: ``(d,)`` (one model shared by all clients) or ``(n, d)`` (one per client);
- ``X``: ``(n, m, p)`` features of m samples on each of n clients, ``y``: ``(n, m)`` labels.

Losses are *means* over the m samples, so ``grad`` is the gradient of the local
empirical risk ``f_w(x) = (1/m) Σ_j ℓ(x; ξ_j)``.  The optional l2 term
``(l2/2)‖w‖²`` is part of ``loss``/``grad`` but *not* of the per-sample gradients used
by SAGA tables: SAGA acts on the data term and the regularizer gradient is added
exactly (this keeps dense and factored tables identical).

Factored per-sample gradients (for exact, small SAGA tables, DESIGN §4): for softmax
regression the gradient of sample j is the outer product ``x_j ⊗ r_j`` with the
residual ``r_j = softmax(W x_j) − onehot(y_j)`` of shape ``(C,)``.  Storing ``r_j``
instead of the ``d``-vector is exact and ``d/C`` times smaller.  For the MLP the
gradient of sample j is one outer product per layer, ``a_{l−1,j} ⊗ δ_{l,j}`` (plus the
bias part ``δ_{l,j}``): the hidden activations and the back-propagated deltas are
stored (the input ``a_0 = x_j`` is the data itself and is not), ``Σ_l h_l + Σ_l n_l``
numbers per sample instead of ``d`` (784-50-50-10: 210 instead of 42,310).

The model protocol (what :mod:`byzsim.algorithms` and :mod:`byzsim.simulate` use):

==========================================  ==============================================
``dim``                                     flat parameter size ``d``
``prepare(X)``                              raw features -> what the model consumes
``init(rng)``                               initial ``(d,)`` parameter, drawn from ``rng``
``logits``/``predict``/``accuracy``/``loss``  forward pass, ``(..., d), (..., m, p')``
``grad``                                    gradient of ``loss``, ``(..., d)``
``add_regularizer_grad(g, w)``              ``g + l2·w``
``sample_factors(w, X, y)``                 per-sample gradient factors, tuple of ``(..., m, k)``
``grad_from_factors(X, factors, out=None)``  ``Σ_j`` per-sample gradients, ``(..., d)``
``factors_linear``                          ``grad_from_factors`` is linear in the factors
``per_sample_grads(w, X, y)``               dense ``(..., m, d)`` (reference, general SAGA)
==========================================  ==============================================
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

from .registry import Registry

MODELS: Registry = Registry("model")


def _softmax_residual(logits: np.ndarray, y: np.ndarray) -> np.ndarray:
    """``softmax(logits) − onehot(y)``, in place on ``logits``; shapes ``(..., m, C)``, ``(..., m)``."""
    logits -= logits.max(axis=-1, keepdims=True)
    np.exp(logits, out=logits)
    logits /= logits.sum(axis=-1, keepdims=True)
    np.put_along_axis(
        logits, y[..., None], np.take_along_axis(logits, y[..., None], -1) - 1.0, -1
    )
    return logits


def _log_softmax_nll(logits: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Per-sample negative log-likelihood ``(..., m)`` of labels ``y`` under ``logits (..., m, C)``."""
    mx = logits.max(axis=-1, keepdims=True)
    lse = np.log(np.exp(logits - mx).sum(axis=-1)) + mx[..., 0]
    return lse - np.take_along_axis(logits, y[..., None], -1)[..., 0]


@MODELS.register("softmax")
@dataclass(frozen=True)
class SoftmaxRegression:
    """Multinomial logistic regression ``p(y | x) = softmax(Wᵀ [x, 1])``.

    Parameters
    ----------
    n_features : int
        ``p``, the raw feature dimension.
    n_classes : int
        ``C``.
    bias : bool
        Append a constant-1 feature (the flat parameter is ``W`` of shape ``(p+1, C)``).
    l2 : float
        Coefficient of ``(l2/2)‖w‖²`` added to the local loss.

    The flat parameter vector has ``d = (p + bias) · C`` entries (row-major ``W``).
    """

    n_features: int
    n_classes: int
    bias: bool = True
    l2: float = 0.0

    @property
    def n_inputs(self) -> int:
        """Rows of W: ``p + bias``."""
        return self.n_features + int(self.bias)

    @property
    def dim(self) -> int:
        return self.n_inputs * self.n_classes

    # -- data -----------------------------------------------------------------------
    def prepare(self, X: np.ndarray) -> np.ndarray:
        """Features as the model consumes them: ``(..., p) -> (..., p + bias)``, C-contiguous
        (float32 stays float32, anything else becomes float64)."""
        X = np.asarray(X)
        if X.dtype != np.float32:
            X = X.astype(np.float64, copy=False)
        if self.bias:
            X = np.concatenate([X, np.ones(X.shape[:-1] + (1,), X.dtype)], axis=-1)
        return np.ascontiguousarray(X)

    def init(self, rng: np.random.Generator) -> np.ndarray:
        """Zero initialisation ``(d,)`` (the authors' group's code; the loss is convex)."""
        return np.zeros(self.dim)

    def _W(self, w: np.ndarray) -> np.ndarray:
        return w.reshape(w.shape[:-1] + (self.n_inputs, self.n_classes))

    # -- forward --------------------------------------------------------------------
    def logits(self, w: np.ndarray, X: np.ndarray) -> np.ndarray:
        """``(..., d), (..., m, p') -> (..., m, C)`` with ``p'`` the prepared feature size."""
        return X @ self._W(w)

    def predict(self, w: np.ndarray, X: np.ndarray) -> np.ndarray:
        return self.logits(w, X).argmax(axis=-1)

    def accuracy(self, w: np.ndarray, X: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Fraction of correct predictions, ``(...,)``."""
        return (self.predict(w, X) == y).mean(axis=-1)

    def loss(self, w: np.ndarray, X: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Mean cross-entropy over the m samples plus ``(l2/2)‖w‖²``; ``(...,)``."""
        nll = _log_softmax_nll(self.logits(w, X), y).mean(axis=-1)
        if self.l2:
            nll = nll + 0.5 * self.l2 * np.sum(w * w, axis=-1)
        return nll

    def grad(self, w: np.ndarray, X: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Gradient of :meth:`loss`, ``(..., d)``."""
        g = self.grad_from_factors(X, self.sample_factors(w, X, y)) / X.shape[-2]
        return self.add_regularizer_grad(g, w)

    def add_regularizer_grad(self, g: np.ndarray, w: np.ndarray) -> np.ndarray:
        """``g + l2·w`` (returns ``g`` itself when ``l2 = 0``)."""
        if self.l2:
            g = g + self.l2 * w
        return g

    # -- per-sample gradients -------------------------------------------------------
    #: ``grad_from_factors`` is linear in the factors (lets SAGA subtract factors first).
    factors_linear = True

    def residuals(self, w: np.ndarray, X: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Per-sample residuals ``r_j = softmax(W x_j) − onehot(y_j)``: ``(..., m, C)``.

        The data-term gradient of sample j is ``x_j ⊗ r_j``.
        """
        return _softmax_residual(self.logits(w, X), y)

    def sample_factors(self, w: np.ndarray, X: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, ...]:
        """Per-sample gradient factors, a tuple of ``(..., m, k)`` arrays: here ``(r,)``, k = C."""
        return (self.residuals(w, X, y),)

    def grad_from_factors(self, X: np.ndarray, factors: tuple[np.ndarray, ...], out=None) -> np.ndarray:
        """``Σ_j x_j ⊗ r_j`` flattened: ``(..., m, p'), ((..., m, C),) -> (..., d)`` (a sum,
        not a mean).  ``out``: optional C-contiguous ``(..., d)`` buffer."""
        (R,) = factors
        Xt = np.swapaxes(X, -1, -2)
        if out is None:
            G = Xt @ R
            return G.reshape(G.shape[:-2] + (self.dim,))
        np.matmul(Xt, R, out=out.reshape(out.shape[:-1] + (self.n_inputs, self.n_classes)))
        return out

    def per_sample_grads(self, w: np.ndarray, X: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Data-term gradient of each sample, ``(..., m, d)`` (dense; the general SAGA path)."""
        R = self.residuals(w, X, y)
        G = X[..., :, None] * R[..., None, :]
        return G.reshape(G.shape[:-2] + (self.dim,))


def make_model(name: str, n_features: int, n_classes: int, **params):
    """Build a registered model, e.g. ``make_model("softmax", 784, 10, bias=True)``."""
    cls = MODELS[name]
    if not (isinstance(n_features, (int, np.integer)) and n_features > 0):
        raise ValueError(f"n_features must be a positive integer, got {n_features!r}")
    if not (isinstance(n_classes, (int, np.integer)) and n_classes > 1):
        raise ValueError(f"n_classes must be an integer >= 2, got {n_classes!r}")
    valid = sorted(f.name for f in fields(cls) if f.name not in ("n_features", "n_classes"))
    unknown = sorted(set(params) - set(valid))
    if unknown:
        raise ValueError(
            f"model {name!r} has no parameter(s) {', '.join(map(repr, unknown))}; "
            f"valid parameters: {', '.join(valid)}"
        )
    return cls(n_features=int(n_features), n_classes=int(n_classes), **params)
