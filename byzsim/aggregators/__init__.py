"""Robust aggregators: pure functions ``(..., n, d) -> (..., d)`` in a registry.

Contract
--------
Every aggregator has the signature ``agg(z, mask=None, **keyword_only_params)``.

``z`` : array_like, shape ``(..., n, d)``
    ``n`` messages (rows) of dimension ``d``; any number of leading batch axes.
    Integer input is promoted to float64; float32 stays float32.  ``z`` is never
    modified and the result never aliases it.
``mask`` : None or bool array, shape ``(n,)`` or ``(..., n)``
    Must broadcast to ``z.shape[:-1]`` (without adding axes).  Only rows with ``True``
    take part (partial participation); ``None`` means all rows.  Shapes never change:
    weight-based rules (mean, Weiszfeld, Krum's average) give absent rows weight 0,
    order statistics (median, trimmed mean) fill them with NaN, which sorts last, and
    pick order statistics by the per-element count.  Absent rows have no influence
    whatever they contain (finite or not).  Write ``P`` for the participating rows and
    ``m_p = |P|`` (per batch element).  **A batch element with no participating row
    returns zeros.**
returns : ndarray, shape ``(..., d)``

Parameters that depend on ``n`` (``f``, ``m``) are validated at call time with a
``ValueError`` naming the value and the valid range.  :func:`get_aggregator` binds
parameters by name through :meth:`byzsim.registry.Registry.bind`, so unknown or missing
parameters fail before any work is done.

Distances through the Gram matrix
---------------------------------
Krum's pairwise distances and the Weiszfeld iteration of the geometric median use
``G = (Z − c)(Z − c)ᵀ``: one ``n²d`` matrix product, after which every distance is
O(1), ``‖z_i − z_j‖² = G_ii + G_jj − 2 G_ij``.  The roundoff of such a distance is about
``ε_mach (‖z_i − c‖ + ‖z_j − c‖)²``, so it is accurate for the rows that matter only if
``c`` is near them.  A first pass uses ``c = 0`` (no ``(n, d)`` temporary; messages such
as gradients scatter around the origin, whereas the mean is dragged away by far Byzantine
rows).  When the first answer lies far from ``c`` compared with the distances around it
(ratio of squares ``ρ > max(100, rel / ε_mach)``), ``G`` is recomputed centered at that
answer, which makes the distances near it accurate to ``ε_mach`` relative, whatever the
scale of the other rows (e.g. honest rows ~1e-3 around an offset, Byzantine rows ~1e4).
:func:`gram_sq_distances` (public) centers at the mean of the rows.

Non-finite and huge messages
----------------------------
Participating rows holding inf/NaN (a crashed or malicious client) are *infinitely far*
from every other row: distance rules never prefer them (Krum scores them ``+∞`` and never
selects them; the geometric median gives them weight 0), filters remove them first, and
coordinate-wise rules order them as values.  So a robust rule returns a finite value
while at most its tolerated number of participating rows is non-finite; if it must keep
such a row (more of them than it can discard) its output is non-finite — the geometric
median returns NaN when half or more of the participating rows are non-finite.  The
mean is not robust: one non-finite row makes it non-finite (and a run using it is
recorded as diverged, see :mod:`byzsim.simulate`).  Finite rows too large for a Gram
matrix (squared norms overflow: ``‖z_i‖ >~ 1e154`` in float64) are handled exactly: the
Gram matrix is formed from the rows scaled by a power of two.  Inputs without such rows
cost one check of the Gram diagonal.

Registered rules
----------------
``mean``, ``geometric_median`` (``geomed``), ``coordinate_median`` (``median``),
``trimmed_mean``, ``krum``, ``multi_krum``, and the field's standard set: ``bulyan``,
``centered_clipping`` (``cc``), ``mda`` (exact minimum-diameter averaging by a bounded
search tree), ``meamed``, ``monna``, ``caf``, ``smea`` (exact, enumeration with
pruning), ``median_of_means`` (``mom``), ``dnc``.  Pre-aggregators (NNM, bucketing,
clipping, ARC, SignGuard) live in :mod:`byzsim.preaggregators`.

The Byzantine count ``f``
-------------------------
Every rule with an ``f`` parameter declares ``max_f`` when it is registered
(``AGGREGATORS.entry(name).meta["max_f"](n)``): the largest ``f`` it is meant for with
``n`` rows (``n − 3`` for Krum, ``(n − 3) // 4`` for Bulyan, ``(n − 1) // 2`` otherwise);
the simulate layer caps its default ``f`` with it.  In the field's standard set (Bulyan
to DnC above), ``f=None`` (the default) means ``max_f(m_p)`` of each batch element, so
that ``agg(z, mask) == agg(z[mask])``, and an explicit ``f`` is clipped per element to
``m_p``'s range.  Rules that need randomness (DnC's coordinate subsets, the grouping of
median of means) take a ``seed``: aggregators stay deterministic functions of
``(z, mask)``.

Adding an aggregator (the contract is :class:`byzsim.protocols.Aggregator`; check it
with :func:`byzsim.testing.check_aggregator`)::

    @AGGREGATORS.register("my_rule", max_f=lambda n: (n - 1) // 2)  # max_f: rules with f
    def my_rule(z, mask=None, *, f=None, p=1.0): ...

Registration without ``max_f`` for a rule with an ``f`` parameter fails at once.

Layout
------
One private module per concept, re-exported here: ``_base`` (the registry, input
preparation, ``f`` helpers and the start shared by the rules with an ``f``, the numpydoc
entries every rule shares), ``_gram`` (Gram matrices and distances), ``_order`` (order
statistics), and one module per family of rules: ``_mean``, ``_geomed``, ``_median``
(coordinate-wise rules and median of means), ``_krum`` (Krum, multi-Krum, Bulyan, MoNNA),
``_clipping``, ``_mda``, ``_spectral`` (CAF, SMEA, DnC).
"""

from ._base import AGGREGATORS, get_aggregator
from ._clipping import CenteredClippingState, centered_clipping, centered_clipping_momentum
from ._geomed import geometric_median, geometric_median_convergence
from ._gram import gram_sq_distances
from ._krum import bulyan, krum, monna, multi_krum
from ._mda import mda
from ._mean import mean
from ._median import coordinate_median, meamed, median_of_means, trimmed_mean
from ._spectral import caf, dnc, dnc_fresh, smea

__all__ = [
    "AGGREGATORS",
    "bulyan",
    "caf",
    "CenteredClippingState",
    "centered_clipping",
    "centered_clipping_momentum",
    "coordinate_median",
    "dnc",
    "dnc_fresh",
    "geometric_median",
    "geometric_median_convergence",
    "get_aggregator",
    "gram_sq_distances",
    "krum",
    "mda",
    "meamed",
    "mean",
    "median_of_means",
    "monna",
    "multi_krum",
    "smea",
    "trimmed_mean",
]
