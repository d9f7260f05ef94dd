"""Milliseconds per call of the rules whose speed is compared with the field's
implementation: the pre-aggregators ``arc``, ``clipping`` and ``bucketing``, and the
aggregator ``monna`` with a trusted row (``idx=0``), on messages of shape (30, 7850)
and (100, 100000).

One BLAS thread, the median of 31 timed calls after one warm-up call; messages are
float64 N(0, 1) with f = n // 4 rows moved 10 spreads away.  Run::

    python benchmarks/preagg_bench.py [--repeat 31] [--shapes 30x7850,100x100000]
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import numpy as np  # noqa: E402

from byzsim.aggregators import get_aggregator  # noqa: E402
from byzsim.preaggregators import get_preaggregator  # noqa: E402


def cases(n: int):
    """(label, callable (z, rng) -> result) of the benchmarked rules for ``n`` rows."""
    f = n // 4
    arc = get_preaggregator("arc", f=f)
    clip = get_preaggregator("clipping", c=2.0)
    buck = get_preaggregator("bucketing", s=2)
    monna = get_aggregator("monna", f=f, idx=0)
    return [
        ("arc", lambda z, rng: arc(z, None, rng)),
        ("clipping", lambda z, rng: clip(z, None, rng)),
        ("bucketing", lambda z, rng: buck(z, None, rng)),
        ("monna idx=0", lambda z, rng: monna(z)),
    ]


def time_call(fn, z, rng, repeat: int) -> float:
    """Median milliseconds of ``repeat`` calls (one warm-up call first)."""
    fn(z, rng)
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn(z, rng)
        times.append(time.perf_counter() - t0)
    return 1e3 * float(np.median(times))


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=31)
    ap.add_argument("--shapes", default="30x7850,100x100000")
    args = ap.parse_args(argv)
    shapes = [tuple(int(v) for v in s.split("x")) for s in args.shapes.split(",")]
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="blas"):
        rows = []
        for n, d in shapes:
            rng = np.random.default_rng(0)
            z = rng.normal(size=(n, d))
            z[: n // 4] += 10.0 * rng.normal(size=d)
            for label, fn in cases(n):
                rows.append((label, f"({n}, {d})", time_call(fn, z, rng, args.repeat)))
    print(f"{'rule':<14}{'shape':<14}{'ms/call':>10}")
    for label, shape, ms in rows:
        print(f"{label:<14}{shape:<14}{ms:>10.3f}")


if __name__ == "__main__":
    main()
