"""The (masked) mean: the non-robust baseline, optionally weighted by the clients'
sample counts (FedAvg's weighting).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ._base import AGGREGATORS, _prepare, _shared_doc
from ._gram import _center

__all__ = ["mean"]


# --------------------------------------------------------------------------------------
# mean


@AGGREGATORS.register("mean", per_call=("weights",))
@_shared_doc
def mean(z: Any, mask: Any = None, *, weighted: bool = False, weights: Any = None) -> np.ndarray:
    """Average of the participating rows, plain (both papers) or weighted.

    .. math:: \\bar z = \\frac{1}{m_p} \\sum_{i \\in P} z_i
              \\qquad\\text{or}\\qquad
              \\bar z = \\frac{\\sum_{i \\in P} J_i z_i}{\\sum_{i \\in P} J_i}

    The weighted form is FedAvg's (McMahan et al. 2017): client i's message counts in
    proportion to the number ``J_i`` of samples it holds, so the mean of exact local
    gradients is the gradient of the loss averaged over all samples.  With equal
    ``J_i`` both forms agree (to round-off).

    Not robust: a single participating row holding inf/NaN makes the output non-finite
    in the coordinates it spoils (by design: the baseline that a run with the ``inf``
    attack shows diverging).

    Parameters
    ----------
    {z_mask}
    weighted : bool
        The configurable switch (``aggregator_params = { weighted = true }``): weight
        row i by ``weights[i]``; the simulator passes the clients' sample counts
        ``J_i`` as ``weights`` (the gradient family, without pre-aggregators or
        resampling, which would mix clients before this rule).  Default False: the
        papers' unweighted mean.
    weights : None or array ``(n,)`` / ``(..., n)``, finite and >= 0
        Supplied per call (not a config parameter); required when ``weighted``.
        Elements whose participating weights sum to 0 return zeros.

    {returns}

    Examples
    --------
    >>> z = np.array([[0.0, 1.0], [2.0, 3.0], [100.0, 100.0]])    # (n, d) = (3, 2)
    >>> mean(z), mean(z, np.array([True, True, False]))
    (array([34.        , 34.66666667]), array([1., 2.]))
    >>> mean(z, weighted=True, weights=[3, 1, 0])                    # (3 z_0 + z_1) / 4
    array([0.5, 1.5])
    >>> mean(np.zeros((4, 5, 3, 2))).shape                           # batch axes (4, 5)
    (4, 5, 2)
    """
    z, wts, m = _prepare(z, mask)
    if not weighted:
        return _center(z, wts, m, mask is not None)[1]
    if weights is None:
        raise ValueError(
            "mean: weighted=True weights row i by weights[i] (the clients' sample counts "
            "J_i), but no weights were passed; give weights of shape (n,) or (..., n)"
        )
    w = np.asarray(weights, dtype=z.dtype)
    try:
        w = np.broadcast_to(w, wts.shape)
    except ValueError:
        raise ValueError(f"mean: weights of shape {np.shape(weights)} do not broadcast to z.shape[:-1] = "
                         f"{wts.shape}") from None
    if not (np.isfinite(w).all() and (w >= 0).all()):
        raise ValueError(f"mean: weights must be finite and >= 0, got entries in [{w.min()}, {w.max()}]")
    wts = wts * w
    tot = wts.sum(axis=-1, keepdims=True)
    wts = np.divide(wts, tot, out=np.zeros_like(wts), where=tot > 0)
    return _center(z, wts, np.ones(m.shape, np.int64), True)[1]
