"""Partitions: shapes, disjointness, class layouts, determinism, validation.

The ragged layout (ClientData, counts, padding) and the invariants of the ragged
partitions under random inputs are in test_ragged.py.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from byzsim.data import load_mnist
from byzsim.partition import PARTITIONS, class_counts, draw_byzantine, partition, partition_clients


def _data(N: int, C: int, p: int = 3, seed: int = 0, counts=None):
    """Features: column 0 is a unique sample id, the rest noise; labels 0..C-1."""
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(C), counts) if counts is not None else np.arange(N) % C
    y = rng.permutation(y)
    X = np.column_stack([np.arange(y.size, dtype=float), rng.standard_normal((y.size, p - 1))])
    return X, y


def _ids(Xc: np.ndarray) -> np.ndarray:
    return Xc[..., 0].astype(np.int64)


def _check_common(X, y, Xc, yc, n):
    assert Xc.ndim == 3 and Xc.shape[0] == n and Xc.shape[2] == X.shape[1]
    assert yc.shape == Xc.shape[:2]
    assert Xc.dtype == np.float64 and Xc.flags.c_contiguous and yc.dtype == np.int64
    ids = _ids(Xc)
    np.testing.assert_array_equal(Xc, X[ids])  # every row is a real training sample
    np.testing.assert_array_equal(yc, y[ids])  # with its label


def _no_reuse(ids: np.ndarray) -> bool:
    return np.unique(ids).size == ids.size


@pytest.fixture(scope="module")
def mnist():
    return load_mnist()


def test_registry():
    assert PARTITIONS.names() == ["by_class", "dirichlet", "iid", "quantity_skew", "unbalanced"]


# --------------------------------------------------------------------------- equal sizes unchanged
# Reference values computed with the partitions as they were before the ragged layout
# (client arrays built straight from an (n, J) index matrix): the engine and the stored
# results rely on the equal-size partitions giving bit-identical arrays for a seed.


def _digest(Xc: np.ndarray, yc: np.ndarray) -> str:
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(Xc).tobytes())
    h.update(np.ascontiguousarray(yc).tobytes())
    return h.hexdigest()[:16]


def test_equal_size_partitions_unchanged_small():
    X, y = _data(20, 2)
    Xc, _ = partition("iid", X, y, 4, np.zeros(4, bool), np.random.default_rng(0))
    assert _ids(Xc).tolist() == [[4, 19, 6, 2, 13], [16, 3, 11, 10, 8], [0, 12, 7, 5, 18],
                                 [17, 14, 9, 1, 15]]
    X, y = _data(0, 2, counts=[7, 5])
    Xc, _ = partition("by_class", X, y, 4, np.zeros(4, bool), np.random.default_rng(0))
    assert _ids(Xc).tolist() == [[4, 7], [6, 11], [10, 2], [5, 0]]
    X, y = _data(24, 3)
    Xc, _ = partition("unbalanced", X, y, 4, np.array([False, True, False, False]),
                      np.random.default_rng(0), concentration=0.5)
    assert _ids(Xc).tolist() == [[16, 4, 5, 14, 7, 21, 15, 9], [14, 12, 8, 18, 9, 7, 21, 6],
                                 [18, 20, 11, 6, 13, 17, 22, 19], [23, 8, 12, 1, 0, 2, 10, 3]]


def _reference_cases():
    X1, y1 = _data(103, 4)
    byz1 = np.zeros(10, bool)
    byz1[[1, 7]] = True
    X2, y2 = _data(0, 3, counts=[40, 31, 50])
    X3, y3 = _data(2000, 5)
    byz3 = draw_byzantine(12, 2, np.random.default_rng(1))
    return [
        ("iid", X1, y1, 10, byz1, 3, {}, "3497c3e263aab6a0"),
        ("iid", X1, y1, 10, byz1, 3, {"samples_per_client": 4}, "d36c7a29242a4e25"),
        ("by_class", X2, y2, 6, np.zeros(6, bool), 0, {}, "9ac8136995ec6591"),
        ("unbalanced", X3, y3, 12, byz3, 2, {}, "d4b32e5805ab3a22"),
        ("unbalanced", X3, y3, 12, byz3, 2, {"concentration": 0.5, "samples_per_client": 100},
         "0c53fd69133af840"),
    ]


@pytest.mark.parametrize("case", range(5))
def test_equal_size_partitions_unchanged_digest(case):
    name, X, y, n, byz, seed, params, digest = _reference_cases()[case]
    Xc, yc = partition(name, X, y, n, byz, np.random.default_rng(seed), **params)
    assert _digest(Xc, yc) == digest
    # partition_clients gives the same arrays, with every count equal to J
    cd = partition_clients(name, X, y, n, byz, np.random.default_rng(seed), **params)
    assert _digest(cd.X, cd.y) == digest
    assert cd.equal_sizes and (cd.counts == Xc.shape[1]).all() and cd.counts.dtype == np.int64


def test_equal_size_partitions_unchanged_mnist(mnist):
    X, y = mnist.X_train, mnist.y_train
    out = partition("by_class", X, y, 30, draw_byzantine(30, 3, None, indices=range(3)),
                    np.random.default_rng(0))
    assert _digest(*out) == "504050405833adf3"
    out = partition("unbalanced", X, y, 25, draw_byzantine(25, 5, np.random.default_rng(0)),
                    np.random.default_rng(1))
    assert _digest(*out) == "5f0c80598f6983fa"
    out = partition("iid", X, y, 30, np.zeros(30, bool), np.random.default_rng(2))
    assert _digest(*out) == "599df5c3492e772f"


def test_partition_refuses_ragged_before_any_draw():
    X, y = _data(0, 2, counts=[7, 5])
    rng = np.random.default_rng(0)
    state = rng.bit_generator.state
    for name, params in [("dirichlet", {}), ("quantity_skew", {"beta": 2.0}),
                         ("by_class", {"truncate": False})]:
        with pytest.raises(ValueError, match=rf"partition '{name}'.*unequal numbers of samples.*"
                                             r"use partition_clients\(\)"):
            partition(name, X, y, 2, np.zeros(2, bool), rng, **params)
    assert rng.bit_generator.state == state  # nothing was drawn


# --------------------------------------------------------------------------- iid


def test_iid_shapes_disjoint_deterministic():
    X, y = _data(103, 4)
    byz = np.zeros(10, bool)
    byz[[1, 7]] = True
    Xc, yc = partition("iid", X, y, 10, byz, np.random.default_rng(3))
    _check_common(X, y, Xc, yc, 10)
    assert Xc.shape == (10, 10, 3)
    assert _no_reuse(_ids(Xc))  # all clients, Byzantine ones included
    Xc2, _ = partition("iid", X, y, 10, byz, np.random.default_rng(3))
    np.testing.assert_array_equal(Xc, Xc2)
    Xc3, _ = partition("iid", X, y, 10, byz, np.random.default_rng(4))
    assert not np.array_equal(Xc, Xc3)
    Xs, _ = partition("iid", X, y, 10, byz, np.random.default_rng(3), samples_per_client=4)
    assert Xs.shape == (10, 4, 3)


def test_iid_samples_per_client_too_large():
    X, y = _data(50, 2)
    with pytest.raises(ValueError, match=r"samples_per_client=6 is too large: at most 5"):
        partition("iid", X, y, 10, np.zeros(10, bool), np.random.default_rng(0), samples_per_client=6)


def test_float32_input_gives_float64():
    X, y = _data(40, 2)
    Xc, yc = partition("iid", X.astype(np.float32), y.astype(np.int32), 4, np.zeros(4, bool),
                       np.random.default_rng(0))
    assert Xc.dtype == np.float64 and yc.dtype == np.int64


# --------------------------------------------------------------------------- by_class


def test_by_class_layout():
    X, y = _data(0, 3, counts=[40, 31, 50])
    n = 6  # two clients per class
    Xc, yc = partition("by_class", X, y, n, np.zeros(n, bool), np.random.default_rng(0))
    _check_common(X, y, Xc, yc, n)
    assert Xc.shape[1] == 31 // 2  # the smallest class limits J
    assert (yc == yc[:, :1]).all()  # one class per client
    assert yc[:, 0].tolist() == [0, 0, 1, 1, 2, 2]  # client k holds class k // (n/C)
    assert _no_reuse(_ids(Xc))


def test_by_class_uses_sorted_distinct_labels():
    X, y = _data(0, 3, counts=[10, 10, 10])
    y = np.array([2, 5, 9])[y]
    _, yc = partition("by_class", X, y, 3, np.zeros(3, bool), np.random.default_rng(0))
    assert yc[:, 0].tolist() == [2, 5, 9]


def test_by_class_needs_multiple_of_C():
    X, y = _data(100, 10)
    with pytest.raises(ValueError, match=r"n_clients=25, C=10"):
        partition("by_class", X, y, 25, np.zeros(25, bool), np.random.default_rng(0))


def test_by_class_mnist_paper_b_layout(mnist):
    byz = draw_byzantine(50, 10, None, indices=range(10))
    idx = np.arange(60000, dtype=float)[:, None]
    Xc, yc = partition("by_class", idx, mnist.y_train, 50, byz, np.random.default_rng(0))
    assert Xc.shape == (50, 5421 // 5, 1)
    assert set(np.unique(yc[~byz])) == set(range(2, 10))  # classes 0, 1 vanish
    assert _no_reuse(_ids(Xc))


def test_by_class_untruncated_mnist_drops_nothing(mnist):
    """Paper B's text: every three workers evenly share the data of one class."""
    y = mnist.y_train
    byz = draw_byzantine(30, 3, None, indices=range(3))
    ids = np.arange(60000.0)[:, None]
    cd = partition_clients("by_class", ids, y, 30, byz, np.random.default_rng(0), truncate=False)
    cd.validate(10)
    used = _ids(cd.X)[cd.mask]
    assert np.array_equal(np.sort(used), np.arange(60000))  # every sample, once
    n_c = np.bincount(y)
    K = class_counts(cd, 10)
    np.testing.assert_array_equal(K.sum(axis=0), n_c)
    # class c on clients 3c..3c+2 only, in shares n_c // 3 or n_c // 3 + 1, larger first
    expect = np.zeros((30, 10), np.int64)
    for c in range(10):
        expect[3 * c: 3 * c + 3, c] = n_c[c] // 3 + (np.arange(3) < n_c[c] % 3)
    np.testing.assert_array_equal(K, expect)
    assert cd.counts.min() == 5421 // 3 and cd.J_max == -(-6742 // 3)  # 1807 .. 2248
    # the truncated split drops 9.7 % of MNIST
    Xt, _ = partition("by_class", ids, y, 30, byz, np.random.default_rng(0))
    assert Xt.shape[:2] == (30, 1807) and round(1 - 30 * 1807 / 60000, 3) == 0.097


def test_by_class_untruncated_errors():
    X, y = _data(0, 2, counts=[7, 2])
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match=r"leave a client with no sample: class 1 has 2 samples "
                                         r"for n_clients/C = 3"):
        partition_clients("by_class", X, y, 6, np.zeros(6, bool), rng, truncate=False)
    with pytest.raises(ValueError, match=r"samples_per_client=2 .* leave it unset"):
        partition_clients("by_class", X, y, 2, np.zeros(2, bool), rng, truncate=False,
                          samples_per_client=2)
    with pytest.raises(ValueError, match="truncate must be true or false, got 'no'"):
        partition_clients("by_class", X, y, 2, np.zeros(2, bool), rng, truncate="no")


# --------------------------------------------------------------------------- dirichlet, quantity skew


def test_dirichlet_mnist_label_skew(mnist):
    y = mnist.y_train
    ids = np.arange(60000.0)[:, None]

    def split(beta, seed=0):
        cd = partition_clients("dirichlet", ids, y, 30, np.zeros(30, bool),
                               np.random.default_rng(seed), beta=beta)
        cd.validate(10)
        assert np.array_equal(np.sort(_ids(cd.X)[cd.mask]), np.arange(60000))  # none dropped
        K = class_counts(cd, 10)
        np.testing.assert_array_equal(K.sum(axis=0), np.bincount(y))
        assert cd.counts.min() >= 10  # the default min_size
        return cd, K

    skews = []
    for beta in (0.1, 1.0, 100.0):
        cd, K = split(beta)
        skews.append((K.max(axis=1) / K.sum(axis=1)).mean())  # share of a client's top class
    assert skews[0] > 0.5 > skews[1] > skews[2]
    assert skews[2] < 0.2  # beta = 100: close to iid (top class ~ 1/10)
    cd, _ = split(0.5)
    assert cd.counts.max() > 1.5 * cd.counts.min()  # unequal sizes
    cd2, _ = split(0.5)
    np.testing.assert_array_equal(cd.X, cd2.X)  # same seed, same split
    cd3, _ = split(0.5, seed=1)
    assert not np.array_equal(cd.counts, cd3.counts)


def test_dirichlet_byzantine_clients_hold_data():
    X, y = _data(600, 3)
    byz = np.array([True, False, False, True, False])
    cd = partition_clients("dirichlet", X, y, 5, byz, np.random.default_rng(0), beta=1.0)
    assert (cd.counts[byz] >= 10).all()
    assert np.unique(_ids(cd.X)[cd.mask]).size == 600  # Byzantine rows are real, distinct samples


def test_quantity_skew_sizes_unequal_labels_follow_the_data(mnist):
    y = mnist.y_train
    cd = partition_clients("quantity_skew", np.arange(60000.0)[:, None], y, 10, np.zeros(10, bool),
                           np.random.default_rng(0), beta=0.5)
    cd.validate(10)
    assert np.array_equal(np.sort(_ids(cd.X)[cd.mask]), np.arange(60000))
    assert cd.counts.max() > 3 * cd.counts.min()
    K = class_counts(cd, 10)
    big = cd.counts >= 1000
    # a uniform subset of >= 1000 samples: every class share within 0.04 of the data's
    assert np.abs(K[big] / cd.counts[big, None] - np.bincount(y) / 60000).max() < 0.04


@pytest.mark.parametrize("name", ["dirichlet", "quantity_skew"])
@pytest.mark.parametrize("params, match", [
    ({"beta": 0}, r"beta must be a finite number > 0 \(the Dirichlet concentration.*got 0"),
    ({"beta": -0.5}, "beta must be a finite number > 0 .*got -0.5"),
    ({"beta": float("nan")}, "beta must be a finite number > 0 .*got nan"),
    ({"beta": float("inf")}, "beta must be a finite number > 0 .*got inf"),
    ({"beta": True}, "beta must be a finite number > 0 .*got True"),
    ({"beta": "1"}, "beta must be a finite number > 0 .*got '1'"),
    ({"min_size": 0}, r"min_size must be an integer >= 1 \(a client needs a sample\), got 0"),
    ({"min_size": 2.5}, "min_size must be an integer >= 1 .*got 2.5"),
    ({"max_redraws": 0}, "max_redraws must be an integer >= 1, got 0"),
    ({"min_size": 13}, r"min_size=13 cannot hold: n_clients \* min_size = 8 \* 13 = 104 > N = 100"),
])
def test_dirichlet_family_bad_input(name, params, match):
    X, y = _data(100, 4)
    rng = np.random.default_rng(0)
    state = rng.bit_generator.state
    with pytest.raises(ValueError, match=rf"{name}: {match}"):
        partition_clients(name, X, y, 8, np.zeros(8, bool), rng, **params)
    assert rng.bit_generator.state == state  # refused before any draw


@pytest.mark.parametrize("name", ["dirichlet", "quantity_skew"])
def test_dirichlet_family_min_size_unreachable(name):
    X, y = _data(100, 4)
    with pytest.raises(ValueError, match=rf"{name}: none of max_redraws=5 draws with beta=0.01 gave "
                                         r"every one of the 10 clients at least min_size=10 samples"):
        partition_clients(name, X, y, 10, np.zeros(10, bool), np.random.default_rng(0),
                          beta=0.01, min_size=10, max_redraws=5)


# --------------------------------------------------------------------------- unbalanced


def test_unbalanced_regular_clients_exact_J_disjoint_and_unequal():
    X, y = _data(2000, 5)
    n = 12
    byz = draw_byzantine(n, 2, np.random.default_rng(1))
    Xc, yc = partition("unbalanced", X, y, n, byz, np.random.default_rng(2))
    _check_common(X, y, Xc, yc, n)
    r = n - 2
    assert Xc.shape == (n, 2000 // r, 3)
    assert _no_reuse(_ids(Xc[~byz]))
    counts = np.stack([np.bincount(row, minlength=5) for row in yc[~byz]])
    assert (counts.sum(axis=1) == 2000 // r).all()
    assert (counts.sum(axis=0) <= 400).all()
    shares = counts / counts.sum(axis=1, keepdims=True)
    assert shares.std(axis=0).mean() > 0.05  # iid would give ~0.01


def test_unbalanced_concentration_controls_skew():
    X, y = _data(3000, 6)
    byz = np.zeros(10, bool)

    def skew(conc):
        _, yc = partition("unbalanced", X, y, 10, byz, np.random.default_rng(0), concentration=conc)
        counts = np.stack([np.bincount(row, minlength=6) for row in yc])
        return (counts.max(axis=1) / counts.sum(axis=1)).mean()

    assert skew(0.1) > skew(1.0) > skew(1000.0)
    assert skew(1000.0) < 0.25  # close to iid (1/6)


def test_unbalanced_byzantine_rows_are_filler():
    X, y = _data(600, 3)
    byz = np.zeros(6, bool)
    byz[[0, 3]] = True
    Xc, yc = partition("unbalanced", X, y, 6, byz, np.random.default_rng(5))
    ids = _ids(Xc)
    # regular clients use each sample at most once; the filler is drawn with
    # replacement from the whole set, so it overlaps the regular clients' samples
    assert _no_reuse(ids[~byz])
    assert np.isin(ids[byz], ids[~byz]).any()
    assert Xc.shape == (6, 150, 3)


def test_unbalanced_deterministic():
    X, y = _data(500, 4)
    byz = np.array([False, True, False, False, False])
    a = partition("unbalanced", X, y, 5, byz, np.random.default_rng(9), concentration=0.5)
    b = partition("unbalanced", X, y, 5, byz, np.random.default_rng(9), concentration=0.5)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])


def test_unbalanced_errors():
    X, y = _data(100, 2)
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="concentration must be a number > 0, got 0"):
        partition("unbalanced", X, y, 4, np.zeros(4, bool), rng, concentration=0)
    with pytest.raises(ValueError, match="at least one regular client"):
        partition("unbalanced", X, y, 2, np.ones(2, bool), rng)
    with pytest.raises(ValueError, match="at most 33"):
        partition("unbalanced", X, y, 4, np.array([1, 0, 0, 0], bool), rng, samples_per_client=34)


def test_unbalanced_mnist(mnist):
    byz = draw_byzantine(25, 5, np.random.default_rng(0))
    Xc, yc = partition("unbalanced", mnist.X_train, mnist.y_train, 25, byz,
                       np.random.default_rng(1))
    assert Xc.shape == (25, 3000, 784) and Xc.dtype == np.float64 and Xc.flags.c_contiguous
    counts = np.stack([np.bincount(row, minlength=10) for row in yc[~byz]])
    assert (counts.sum(axis=0) <= np.bincount(mnist.y_train)).all()
    # disjointness via an id feature carrying the same labels
    ids, _ = partition("unbalanced", np.arange(60000.0)[:, None], mnist.y_train, 25, byz,
                       np.random.default_rng(1))
    np.testing.assert_array_equal(yc, mnist.y_train[_ids(ids)])
    assert _no_reuse(_ids(ids[~byz]))


# --------------------------------------------------------------------------- validation


def test_partition_validation():
    X, y = _data(40, 2)
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="valid choices: by_class, dirichlet, iid, quantity_skew, unbalanced"):
        partition("idd", X, y, 4, np.zeros(4, bool), rng)
    with pytest.raises(ValueError, match="valid parameters: samples_per_client"):
        partition("iid", X, y, 4, np.zeros(4, bool), rng, concentration=1.0)
    with pytest.raises(ValueError, match="n_clients must be an integer >= 1, got 0"):
        partition("iid", X, y, 0, np.zeros(0, bool), rng)
    with pytest.raises(ValueError, match=r"shape \(n_clients,\) = \(4,\)"):
        partition("iid", X, y, 4, np.zeros(5, bool), rng)
    with pytest.raises(ValueError, match="bool mask"):
        partition("iid", X, y, 4, np.zeros(4, int), rng)
    with pytest.raises(ValueError, match="Generator"):
        partition("iid", X, y, 4, np.zeros(4, bool), 0)
    with pytest.raises(ValueError, match="y must have shape"):
        partition("iid", X, y[:-1], 4, np.zeros(4, bool), rng)
    with pytest.raises(ValueError, match="integer class labels"):
        partition("iid", X, y.astype(float), 4, np.zeros(4, bool), rng)
    with pytest.raises(ValueError, match="samples_per_client must be an integer >= 1"):
        partition("iid", X, y, 4, np.zeros(4, bool), rng, samples_per_client=0)
    with pytest.raises(ValueError, match="not enough samples"):
        partition("iid", X[:3], y[:3], 4, np.zeros(4, bool), rng)


# --------------------------------------------------------------------------- draw_byzantine


def test_draw_byzantine():
    m = draw_byzantine(20, 4, np.random.default_rng(0))
    assert m.shape == (20,) and m.dtype == bool and m.sum() == 4
    np.testing.assert_array_equal(m, draw_byzantine(20, 4, np.random.default_rng(0)))
    assert draw_byzantine(5, 0, np.random.default_rng(0)).sum() == 0
    e = draw_byzantine(6, 2, None, indices=[4, 1])
    assert np.flatnonzero(e).tolist() == [1, 4]
    assert draw_byzantine(6, None, indices=np.array([0, 2, 3])).sum() == 3
    assert draw_byzantine(6, 0, None, indices=[]).sum() == 0


@pytest.mark.parametrize(
    "args, match",
    [
        ((5, 5), "0 <= n_byzantine < n_clients = 5"),
        ((5, -1), "got -1"),
        ((0, 0), "n_clients must be an integer >= 1"),
        ((5, 2, None), "needs rng"),
        ((5, 2, None, [1, 5]), r"\[5\] are out of range; valid: 0..4"),
        ((5, 2, None, [1, 1]), r"repeated: \[1\]"),
        ((5, 3, None, [1, 2]), "got 2 Byzantine indices but n_byzantine=3"),
        ((5, 1, None, [0.5]), "integer client ids"),
    ],
)
def test_draw_byzantine_errors(args, match):
    with pytest.raises(ValueError, match=match):
        draw_byzantine(*args)


# --------------------------------------------------------------------------- properties


@st.composite
def _setups(draw):
    C = draw(st.integers(1, 5))
    counts = draw(st.lists(st.integers(1, 40), min_size=C, max_size=C))
    n = draw(st.integers(1, 8))
    b = draw(st.integers(0, n - 1))
    seed = draw(st.integers(0, 2**32 - 1))
    X, y = _data(0, C, p=2, seed=seed % 1000, counts=counts)
    rng = np.random.default_rng(seed)
    byz = draw_byzantine(n, b, rng)
    return X, y, n, byz, rng, seed


@given(_setups())
def test_iid_invariants(setup):
    X, y, n, byz, rng, seed = setup
    if X.shape[0] < n:
        with pytest.raises(ValueError):
            partition("iid", X, y, n, byz, rng)
        return
    Xc, yc = partition("iid", X, y, n, byz, rng)
    _check_common(X, y, Xc, yc, n)
    assert Xc.shape[1] == X.shape[0] // n
    assert _no_reuse(_ids(Xc))


@given(_setups(), st.integers(1, 3))
def test_by_class_invariants(setup, per_class):
    X, y, _, _, rng, seed = setup
    C = np.unique(y).size
    n = per_class * C
    if np.bincount(y).min() < per_class:
        with pytest.raises(ValueError, match="not enough samples"):
            partition("by_class", X, y, n, np.zeros(n, bool), rng)
        return
    Xc, yc = partition("by_class", X, y, n, np.zeros(n, bool), rng)
    _check_common(X, y, Xc, yc, n)
    assert Xc.shape[1] == np.bincount(y).min() // per_class
    assert (yc == (np.arange(n) // per_class)[:, None]).all()
    assert _no_reuse(_ids(Xc))


@given(_setups(), st.floats(0.01, 100.0), st.integers(1, 10**6))
def test_unbalanced_invariants(setup, concentration, j_seed):
    X, y, n, byz, rng, seed = setup
    r = int((~byz).sum())
    J_max = X.shape[0] // r
    if J_max < 1:
        with pytest.raises(ValueError):
            partition("unbalanced", X, y, n, byz, rng)
        return
    J = 1 + j_seed % J_max
    Xc, yc = partition("unbalanced", X, y, n, byz, rng, concentration=concentration, samples_per_client=J)
    _check_common(X, y, Xc, yc, n)
    assert Xc.shape[1] == J
    assert _no_reuse(_ids(Xc[~byz]))
    # default J = N // r uses (almost) the whole training set among the regular clients
    Xd, _ = partition("unbalanced", X, y, n, byz, np.random.default_rng(seed), concentration=concentration)
    assert Xd.shape[1] == J_max and _no_reuse(_ids(Xd[~byz]))
