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

Factored per-sample gradients (for exact, small SAGA tables): for softmax
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
``grad_diff_from_factors(X, new, old)``     optional: ``Σ_j ∇_j(new) − ∇_j(old)`` in one pass
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
    y = np.broadcast_to(y, logits.shape[:-1])  # labels shared by several models
    mx = logits.max(axis=-1, keepdims=True)
    lse = np.log(np.exp(logits - mx).sum(axis=-1)) + mx[..., 0]
    return lse - np.take_along_axis(logits, y[..., None], -1)[..., 0]


class _Classifier:
    """What every model shares given ``logits``, ``sample_factors``/``grad_from_factors``
    and an ``l2`` field: prediction, accuracy, mean cross-entropy loss and its gradient.
    ``grad`` is the mean of the per-sample gradients (through the factors) plus ``l2·w``.
    """

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
        """Gradient of :meth:`loss` (mean of the per-sample gradients), ``(..., d)``."""
        g = self.grad_from_factors(X, self.sample_factors(w, X, y)) / X.shape[-2]
        return self.add_regularizer_grad(g, w)

    def add_regularizer_grad(self, g: np.ndarray, w: np.ndarray) -> np.ndarray:
        """``g + l2·w`` (returns ``g`` itself when ``l2 = 0``)."""
        if self.l2:
            g = g + self.l2 * w
        return g


@MODELS.register("softmax")
@dataclass(frozen=True)
class SoftmaxRegression(_Classifier):
    """Multinomial logistic regression ``p(y | x) = softmax(W [x, 1])``.

    Parameters
    ----------
    n_features : int
        ``p``, the raw feature dimension.
    n_classes : int
        ``C``.
    bias : bool
        Append a constant-1 feature (the flat parameter is ``W`` of shape ``(C, p+1)``).
    l2 : float
        Coefficient of ``(l2/2)‖w‖²`` added to the local loss.

    The flat parameter vector has ``d = C · (p + bias)`` entries: ``W (C, p')`` row-major,
    *class-major* (the layout of PyTorch's ``nn.Linear.weight``; the bias is the last
    column).  The per-sample gradient ``r ⊗ x`` then has ``C`` contiguous rows of length
    ``p'`` (784 for MNIST), which NumPy writes in long vectorized runs; the transposed
    layout ``(p', C)`` has inner runs of length C = 10 and made the SAGA outer product
    of paper A's round 2x slower.
    """

    n_features: int
    n_classes: int
    bias: bool = True
    l2: float = 0.0

    @property
    def n_inputs(self) -> int:
        """Columns of W: ``p + bias``."""
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
        """``(..., d) -> (..., C, p')`` view."""
        return w.reshape(w.shape[:-1] + (self.n_classes, self.n_inputs))

    # -- forward --------------------------------------------------------------------
    def logits(self, w: np.ndarray, X: np.ndarray) -> np.ndarray:
        """``(..., d), (..., m, p') -> (..., m, C)`` with ``p'`` the prepared feature size.

        A shared ``w (d,)`` is one GEMM over all clients' samples; one sample per client
        (``m = 1``) is a batched matrix-vector product."""
        W = self._W(w)  # (..., C, p')
        if X.shape[-2] == 1 and w.ndim > 1 and w.shape[-2] == X.shape[-3]:
            return np.swapaxes(W @ np.swapaxes(X, -1, -2), -1, -2)
        return _affine(X, np.swapaxes(W, -1, -2))

    # -- per-sample gradients -------------------------------------------------------
    #: ``grad_from_factors`` is linear in the factors (lets SAGA subtract factors first).
    factors_linear = True

    def residuals(self, w: np.ndarray, X: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Per-sample residuals ``r_j = softmax(W x_j) − onehot(y_j)``: ``(..., m, C)``.

        The data-term gradient of sample j is ``r_j ⊗ x_j`` (shape ``(C, p')``).
        """
        return _softmax_residual(self.logits(w, X), y)

    def sample_factors(self, w: np.ndarray, X: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, ...]:
        """Per-sample gradient factors, a tuple of ``(..., m, k)`` arrays: here ``(r,)``, k = C."""
        return (self.residuals(w, X, y),)

    def grad_from_factors(self, X: np.ndarray, factors: tuple[np.ndarray, ...], out=None) -> np.ndarray:
        """``Σ_j r_j ⊗ x_j`` flattened: ``(..., m, p'), ((..., m, C),) -> (..., d)`` (a sum,
        not a mean).  ``out``: optional C-contiguous ``(..., d)`` buffer."""
        (R,) = factors
        Rt = np.swapaxes(R, -1, -2)  # (..., C, m)
        if out is None:
            out = np.empty(np.broadcast_shapes(X.shape[:-2], R.shape[:-2]) + (self.dim,),
                           np.result_type(X, R))
        out3 = self._W(out)
        if X.shape[-2] == 1:  # one sample: a plain outer product beats a k=1 matmul
            np.multiply(Rt, X, out=out3)
        else:
            np.matmul(Rt, X, out=out3)
        return out

    def per_sample_grads(self, w: np.ndarray, X: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Data-term gradient of each sample, ``(..., m, d)`` (dense; the general SAGA path)."""
        R = self.residuals(w, X, y)
        G = R[..., :, :, None] * X[..., :, None, :]
        return G.reshape(G.shape[:-2] + (self.dim,))


def _affine(A: np.ndarray, W: np.ndarray) -> np.ndarray:
    """``A @ W`` for ``A (..., m, k)`` and ``W (k, o)`` or ``(..., k, o)``.

    A single shared ``W`` multiplies all leading axes of ``A`` in one GEMM
    (``(∏ lead · m, k) @ (k, o)``) instead of one small GEMM per client; likewise one
    ``W`` per replica shared by its clients (``A (S, n, m, k)``, ``W (S, 1, k, o)``) is
    one GEMM ``(n · m, k) @ (k, o)`` per replica."""
    if W.ndim == 2 and A.ndim > 2:
        return (A.reshape(-1, A.shape[-1]) @ W).reshape(A.shape[:-1] + (W.shape[-1],))
    if W.ndim == A.ndim >= 4 and W.shape[-3] == 1 and A.shape[-3] > 1 and W.shape[:-3] == A.shape[:-3]:
        A2 = A.reshape(A.shape[:-3] + (-1, A.shape[-1]))
        return (A2 @ W[..., 0, :, :]).reshape(A.shape[:-1] + (W.shape[-1],))
    return A @ W


@MODELS.register("mlp")
@dataclass(frozen=True)
class MLP(_Classifier):
    """Multi-layer perceptron: tanh hidden layers, softmax output, cross-entropy loss.

    ``a_0 = x``, ``a_l = tanh(a_{l−1} W_l + b_l)`` for the hidden layers
    ``l = 1 … L−1``, logits ``z_L = a_{L−1} W_L + b_L``, ``p(y | x) = softmax(z_L)``.

    Paper B's "two-layer perceptrons, in which each layer has 50 neurons and the
    activation function is 'tanh'" is read as **two hidden tanh layers of 50 units**
    followed by a linear softmax output layer: ``hidden = (50, 50)``, for MNIST
    784-50-50-10 (d = 42,310), for COVTYPE 54-50-50-7 (d = 5,657).  (The other reading,
    one hidden layer of 50 plus the output layer, is ``hidden = (50,)``; the output
    layer cannot have 50 neurons, so "each layer has 50" points to two hidden layers.)

    Parameters
    ----------
    n_features : int
        ``p``, the input dimension.
    n_classes : int
        ``C``, the number of output units.
    hidden : tuple of int
        Widths of the hidden layers, each a positive integer (default ``(50, 50)``;
        ``()`` gives multinomial logistic regression with a bias).  In TOML:
        ``model_params = { hidden = [50, 50] }``.
    l2 : float
        Coefficient of ``(l2/2)‖w‖²`` (all weights and biases, like PyTorch's
        ``weight_decay``) added to the local loss.

    Layout of the flat parameter ``w`` (``d = Σ_l (n_{l−1} + 1) n_l``): layer by layer,
    ``W_l`` of shape ``(n_{l−1}, n_l)`` row-major (input-by-output, as the softmax
    model's ``W``; PyTorch's ``nn.Linear.weight`` is its transpose) followed by
    ``b_l (n_l,)``.  :meth:`layer_slices` gives the offsets.

    ``w`` may be ``(d,)`` (one model; the batched forward pass is then one GEMM per
    layer over all clients' samples) or ``(..., d)`` (one per client, batched matmul).
    ``prepare`` is the identity (C-contiguous float64, or float32 for ``dtype =
    "float32"`` runs: every array then stays float32): the biases are explicit.

    Initialisation (:meth:`init`): PyTorch's ``nn.Linear`` default, weights and biases
    i.i.d. ``U(−1/√fan_in, 1/√fan_in)`` with ``fan_in = n_{l−1}`` (``kaiming_uniform_``
    with ``a = √5`` gives exactly this bound for the weights), drawn from the given rng.

    SAGA factors (:meth:`sample_factors`, packed in one array; :meth:`split_factors`):
    ``(a_1, …, a_{L−1}, δ_1, …, δ_L)`` with
    ``δ_L = softmax(z_L) − onehot(y)`` and ``δ_l = (δ_{l+1} W_{l+1}ᵀ) ⊙ (1 − a_l²)``;
    the per-sample gradient is ``a_{l−1} ⊗ δ_l`` for ``W_l`` and ``δ_l`` for ``b_l``.
    The gradient is bilinear in ``(a_{l−1}, δ_l)``, not linear in the factors, so
    ``factors_linear = False``: a SAGA difference is ``grad_from_factors(new) −
    grad_from_factors(old)`` (or, in one pass, :meth:`grad_diff_from_factors`).  Per
    sample the table stores ``2 Σ h_l + C`` numbers instead of ``d``: 210 instead of
    42,310 for 784-50-50-10 (paper B's Fig. 10 SAGA state: ~0.1 GB instead of ~18 GB).
    """

    n_features: int
    n_classes: int
    hidden: tuple[int, ...] = (50, 50)
    l2: float = 0.0

    def __post_init__(self):
        h = self.hidden
        if isinstance(h, (str, bytes)) or not hasattr(h, "__iter__"):
            raise ValueError(
                f"mlp: hidden must be a list of hidden-layer widths such as [50, 50] "
                f"(two hidden layers of 50 units), got {h!r}"
            )
        h = tuple(h)
        for v in h:
            if not (isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_)) and v > 0):
                raise ValueError(
                    f"mlp: hidden layer sizes must be positive integers, got {v!r} in hidden={self.hidden!r}"
                )
        for name, lo in (("n_features", 1), ("n_classes", 2)):
            v = getattr(self, name)
            if not (isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v >= lo):
                raise ValueError(f"mlp: {name} must be an integer >= {lo}, got {v!r}")
        if not (isinstance(self.l2, (int, float, np.floating)) and not isinstance(self.l2, bool)
                and np.isfinite(self.l2) and self.l2 >= 0):
            raise ValueError(f"mlp: l2 must be a finite number >= 0, got {self.l2!r}")
        object.__setattr__(self, "hidden", tuple(int(v) for v in h))
        sizes = (int(self.n_features),) + self.hidden + (int(self.n_classes),)
        layout, off = [], 0
        for fi, fo in zip(sizes[:-1], sizes[1:]):
            layout.append((off, off + fi * fo, fi, fo))  # (offset of W, offset of b, fan_in, fan_out)
            off += (fi + 1) * fo
        object.__setattr__(self, "_layout", tuple(layout))
        object.__setattr__(self, "_dim", off)

    # -- shapes ---------------------------------------------------------------------
    @property
    def sizes(self) -> tuple[int, ...]:
        """Layer widths ``(p, h_1, …, h_{L−1}, C)``."""
        return (self.n_features,) + self.hidden + (self.n_classes,)

    @property
    def n_layers(self) -> int:
        """``L``, the number of affine layers (hidden layers + 1)."""
        return len(self.hidden) + 1

    @property
    def dim(self) -> int:
        return self._dim

    def layer_slices(self) -> tuple[tuple[slice, slice], ...]:
        """``((slice of W_1, slice of b_1), …)`` into the flat parameter."""
        return tuple((slice(oW, ob), slice(ob, ob + fo)) for oW, ob, fi, fo in self._layout)

    def unflatten(self, w: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
        """Views ``[(W_l (..., n_{l−1}, n_l), b_l (..., n_l)), …]`` of ``w (..., d)``."""
        lead = w.shape[:-1]
        return [
            (w[..., oW:ob].reshape(lead + (fi, fo)), w[..., ob:ob + fo])
            for oW, ob, fi, fo in self._layout
        ]

    def factor_sizes(self) -> tuple[int, ...]:
        """Widths of the packed factor columns (:meth:`sample_factors`):
        ``(h_1, …, h_{L−1}, h_1, …, h_{L−1}, C)`` for ``a_1 … a_{L−1}, δ_1 … δ_L``."""
        return self.hidden + self.hidden + (self.n_classes,)

    # -- data -----------------------------------------------------------------------
    def prepare(self, X: np.ndarray) -> np.ndarray:
        """The identity on values: C-contiguous ``(..., p)`` (the biases are explicit);
        float32 stays float32, anything else becomes float64."""
        X = np.asarray(X)
        return np.ascontiguousarray(X, dtype=np.float32 if X.dtype == np.float32 else np.float64)

    def init(self, rng: np.random.Generator) -> np.ndarray:
        """PyTorch ``nn.Linear`` default: every weight and bias of layer l i.i.d.
        ``U(−1/√fan_in, 1/√fan_in)``; ``(d,)``, drawn from ``rng`` layer by layer
        (weights, then biases)."""
        w = np.empty(self.dim)
        for oW, ob, fi, fo in self._layout:
            bound = 1.0 / np.sqrt(fi)
            w[oW:ob] = rng.uniform(-bound, bound, size=fi * fo)
            w[ob:ob + fo] = rng.uniform(-bound, bound, size=fo)
        return w

    # -- forward --------------------------------------------------------------------
    def _forward(self, w: np.ndarray, X: np.ndarray) -> tuple[list[np.ndarray], np.ndarray]:
        """Hidden activations ``[a_1, …, a_{L−1}]`` and logits ``z_L``, each ``(..., m, ·)``."""
        params = self.unflatten(w)
        acts, A = [], X
        for l, (W, b) in enumerate(params):
            Z = _affine(A, W)
            Z += b[..., None, :]
            if l == len(params) - 1:
                return acts, Z
            A = np.tanh(Z, out=Z)
            acts.append(A)
        raise AssertionError("unreachable")

    def logits(self, w: np.ndarray, X: np.ndarray) -> np.ndarray:
        """``(..., d), (..., m, p) -> (..., m, C)``."""
        return self._forward(w, X)[1]

    # -- per-sample gradients -------------------------------------------------------
    #: the factors (activations and deltas) enter the gradient bilinearly
    factors_linear = False

    def sample_factors(self, w: np.ndarray, X: np.ndarray, y: np.ndarray) -> tuple[np.ndarray]:
        """Per-sample gradient factors from one forward and one backward pass, packed in
        one array: ``(F,)`` with ``F (..., m, K)``, ``K = 2 Σ_l h_l + C``, whose columns
        are ``[a_1 | … | a_{L−1} | δ_1 | … | δ_L]`` (widths :meth:`factor_sizes`;
        :meth:`split_factors` gives the named views).

        The input ``a_0 = X`` is not stored (it is the data).  The data term of the
        gradient of sample j is ``a_{l−1,j} ⊗ δ_{l,j}`` for ``W_l`` and ``δ_{l,j}`` for
        ``b_l`` (see :meth:`grad_from_factors`).  One packed array makes the SAGA table a
        single ``(n, J, K)`` array: one gather and one scatter per round instead of
        ``2L − 1`` (narrow fancy-indexed gathers cost ~0.2 ms each at Fig. 10 sizes)."""
        params = self.unflatten(w)
        acts, Z = self._forward(w, X)
        D = _softmax_residual(Z, y)
        deltas = [D]
        for l in range(len(acts) - 1, -1, -1):  # backward over hidden layers L−1 … 1
            W_next = params[l + 1][0]
            D = _affine(D, np.swapaxes(W_next, -1, -2))
            A = acts[l]
            D -= D * (A * A)  # ⊙ tanh' = 1 − a²
            deltas.append(D)
        deltas.reverse()
        return (np.concatenate(acts + deltas, axis=-1),)

    def split_factors(self, factors) -> tuple[np.ndarray, ...]:
        """Named views ``(a_1, …, a_{L−1}, δ_1, …, δ_L)`` (each ``(..., m, k)``) of the
        packed factors ``(F,)`` or ``F``; an already split tuple is returned as is."""
        L = self.n_layers
        if isinstance(factors, np.ndarray):
            factors = (factors,)
        factors = tuple(factors)
        if len(factors) == 2 * L - 1:  # already split (for L = 1 packed == split)
            return factors
        if len(factors) != 1 or factors[0].shape[-1] != sum(self.factor_sizes()):
            raise ValueError(
                f"mlp: expected the packed factors (F,) with F (..., m, {sum(self.factor_sizes())}) "
                f"or {2 * L - 1} arrays (a_1..a_{L - 1}, δ_1..δ_{L}), got "
                f"{len(factors)} array(s) of widths {[f.shape[-1] for f in factors]}"
            )
        (F,) = factors
        edges = np.cumsum((0,) + self.factor_sizes())
        return tuple(F[..., a:b] for a, b in zip(edges[:-1], edges[1:]))

    def _split(self, X, factors):
        parts = self.split_factors(factors)
        L = self.n_layers
        return (X,) + parts[: L - 1], parts[L - 1:]

    def _out(self, X, factors, out):
        lead = np.broadcast_shapes(X.shape[:-2], *(f.shape[:-2] for f in factors))
        if out is None:
            out = np.empty(lead + (self.dim,), dtype=np.result_type(X, *factors))
        elif out.shape != lead + (self.dim,):
            raise ValueError(f"mlp: out must have shape {lead + (self.dim,)}, got {out.shape}")
        return lead, out

    def grad_from_factors(self, X: np.ndarray, factors: tuple[np.ndarray, ...], out=None) -> np.ndarray:
        """``Σ_j`` per-sample gradients, flattened like ``w``:
        ``(..., m, p), factors -> (..., d)`` (a sum, not a mean).

        ``W_l``: ``a_{l−1}ᵀ δ_l`` (``(n_{l−1}, m) @ (m, n_l)`` per client, ``a_0 = X``);
        ``b_l``: ``Σ_j δ_{l,j}``.  ``factors``: as returned by :meth:`sample_factors` (or
        split).  ``out``: optional ``(..., d)`` buffer (written in place, each layer
        straight into its slice)."""
        acts, deltas = self._split(X, factors)
        lead, out = self._out(X, deltas, out)
        for (oW, ob, fi, fo), A, D in zip(self._layout, acts, deltas):
            np.matmul(np.swapaxes(A, -1, -2), D, out=out[..., oW:ob].reshape(lead + (fi, fo)))
            D.sum(axis=-2, out=out[..., ob:ob + fo])
        return out

    def grad_diff_from_factors(self, X: np.ndarray, new: tuple[np.ndarray, ...],
                               old: tuple[np.ndarray, ...], out=None) -> np.ndarray:
        """``grad_from_factors(X, new) − grad_from_factors(X, old)`` in one pass (both
        factor sets of the same samples ``X``): the first layer, whose input is ``X``
        in both, costs one product ``Xᵀ(δ_1 − δ_1')`` instead of two; the others are one
        product of the factors stacked along the sample axis,
        ``[a; a']ᵀ [δ; −δ']``.  ``(..., d)``; ``out`` as in :meth:`grad_from_factors`."""
        acts_n, deltas_n = self._split(X, new)
        acts_o, deltas_o = self._split(X, old)
        lead, out = self._out(X, deltas_n + deltas_o, out)
        for l, (oW, ob, fi, fo) in enumerate(self._layout):
            Wv = out[..., oW:ob].reshape(lead + (fi, fo))
            dD = deltas_n[l] - deltas_o[l]
            if l == 0:
                A, D = X, dD
            else:
                A = np.concatenate([acts_n[l], acts_o[l]], axis=-2)
                D = np.concatenate([deltas_n[l], -deltas_o[l]], axis=-2)
            np.matmul(np.swapaxes(A, -1, -2), D, out=Wv)
            dD.sum(axis=-2, out=out[..., ob:ob + fo])
        return out

    def per_sample_grads(self, w: np.ndarray, X: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Data-term gradient of each sample, ``(..., m, d)`` (dense; the reference and
        the general SAGA path — 8 bytes × m × d, use on small problems only)."""
        acts, deltas = self._split(X, self.sample_factors(w, X, y))
        lead = np.broadcast_shapes(X.shape[:-2], *(a.shape[:-2] for a in deltas))
        m = X.shape[-2]
        G = np.empty(lead + (m, self.dim), dtype=np.result_type(X, *deltas))
        for (oW, ob, fi, fo), A, D in zip(self._layout, acts, deltas):
            G[..., oW:ob] = (A[..., :, :, None] * D[..., :, None, :]).reshape(lead + (m, fi * fo))
            G[..., ob:ob + fo] = D
        return G


def make_model(name: str, n_features: int, n_classes: int, **params):
    """Build a registered model, e.g. ``make_model("softmax", 784, 10, bias=True)`` or
    ``make_model("mlp", 784, 10, hidden=(50, 50))``."""
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
