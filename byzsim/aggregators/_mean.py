"""The (masked) mean: the non-robust baseline.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ._base import AGGREGATORS, _prepare
from ._gram import _center

__all__ = ["mean"]


# --------------------------------------------------------------------------------------
# mean


@AGGREGATORS.register("mean")
def mean(z: Any, mask: Any = None) -> np.ndarray:
    """Average of the participating rows.

    .. math:: \\bar z = \\frac{1}{m_p} \\sum_{i \\in P} z_i

    Not robust: a single participating row holding inf/NaN makes the output non-finite
    in the coordinates it spoils (by design: the baseline that a run with the ``inf``
    attack shows diverging).

    Parameters
    ----------
    z : array_like, shape ``(..., n, d)``
    mask : None or bool array ``(n,)`` / ``(..., n)``
        Participating rows; elements with none return zeros.

    Returns
    -------
    ndarray, shape ``(..., d)``

    Examples
    --------
    >>> z = np.array([[0.0, 1.0], [2.0, 3.0], [100.0, 100.0]])    # (n, d) = (3, 2)
    >>> mean(z), mean(z, np.array([True, True, False]))
    (array([34.        , 34.66666667]), array([1., 2.]))
    >>> mean(np.zeros((4, 5, 3, 2))).shape                           # batch axes (4, 5)
    (4, 5, 2)
    """
    z, wts, m = _prepare(z, mask)
    return _center(z, wts, m, mask is not None)[1]
