"""Numerical helpers shared by the tests (imported as a plain module, like broken_variants)."""

import numpy as np


def fd_grad(f, w, h=1e-6):
    """Central finite-difference gradient of a scalar function ``f`` at ``w (d,)``."""
    g = np.zeros_like(w)
    for k in range(w.size):
        e = np.zeros_like(w)
        e[k] = h
        g[k] = (f(w + e) - f(w - e)) / (2 * h)
    return g


def random_mask(rng, shape, min_true):
    """Bool mask of ``shape`` (..., n) with at least ``min_true`` True per element."""
    n = shape[-1]
    keys = rng.random(shape)
    k = rng.integers(min_true, n + 1, size=shape[:-1])
    ranks = np.argsort(np.argsort(keys, axis=-1), axis=-1)
    return ranks < k[..., None]
