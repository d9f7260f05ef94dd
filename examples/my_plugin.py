"""A byzsim plugin: one aggregator and one attack, registered on import.

Use it with ``--plugin my_plugin`` (from this directory, or with it on ``PYTHONPATH``),
``--plugin examples/my_plugin.py``, or ``BYZSIM_PLUGINS=my_plugin``; see the README's
"Extending byzsim".
"""

import numpy as np

from byzsim.aggregators import AGGREGATORS
from byzsim.attacks import ATTACKS

__version__ = "0.1"


@AGGREGATORS.register("clipped_mean")
def clipped_mean(z, mask=None, *, tau: float | None = None):
    """Mean of the rows after scaling each down to norm ``tau`` (default: the median norm
    of the participating rows).

    Parameters
    ----------
    z : array_like, shape ``(..., n, d)``
    mask : None or bool array ``(n,)`` / ``(..., n)``
        Participating rows; elements with none return zeros.

    Returns
    -------
    ndarray, shape ``(..., d)``
    """
    z = np.asarray(z, dtype=float)
    m = np.ones(z.shape[:-1], bool) if mask is None else np.broadcast_to(np.asarray(mask, bool), z.shape[:-1])
    with np.errstate(invalid="ignore", over="ignore"):
        norms = np.linalg.norm(z, axis=-1)  # (..., n); inf for a row holding inf
        if tau is None:
            finite = np.where(m & np.isfinite(norms), norms, np.inf)
            k = np.maximum((m.sum(-1, keepdims=True) - 1) // 2, 0)
            tau = np.take_along_axis(np.sort(finite, axis=-1), k, axis=-1)  # (..., 1) median norm
        scale = np.where(m & np.isfinite(norms), np.minimum(1.0, tau / np.maximum(norms, 1e-300)), 0.0)
    rows = np.where(scale[..., None] > 0, z, 0.0) * scale[..., None]
    return rows.sum(-2) / np.maximum(m.sum(-1), 1)[..., None]


@ATTACKS.register("reverse_mean")
def reverse_mean(v, byzantine, rng, *, scale: float = 5.0):
    """Every Byzantine client sends ``-scale`` times the mean of the regular clients'
    messages ``(..., q, d)``."""
    honest = v[..., ~byzantine, :].mean(axis=-2, keepdims=True)
    q = int(byzantine.sum())
    return np.broadcast_to(-scale * honest, v.shape[:-2] + (q, v.shape[-1])).copy()
