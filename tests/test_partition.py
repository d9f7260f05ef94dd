"""Partitions: shapes, disjointness, class layouts, determinism, validation."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from byzsim.data import load_mnist
from byzsim.partition import PARTITIONS, draw_byzantine, partition


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
