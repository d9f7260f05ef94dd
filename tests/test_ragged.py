"""Ragged client data: the ClientData contract, counts against data, edge clients
(J_w = 1, one client with 90 % of the data), the invariants of every partition under
random inputs (each checked against a deliberately broken partition it must reject),
and the client x class heatmap."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from byzsim.partition import (
    PAD_LABEL, PARTITIONS, Assignment, ClientData, _class_groups, _draw_dirichlet_counts,
    _from_owners, class_counts, draw_byzantine, partition, partition_clients,
)


def _data(counts, p: int = 2, seed: int = 0):
    """Labels with the given class counts (shuffled); column 0 of X is a sample id."""
    rng = np.random.default_rng(seed)
    y = rng.permutation(np.repeat(np.arange(len(counts)), counts))
    X = np.column_stack([np.arange(y.size, dtype=float), rng.standard_normal((y.size, p - 1))])
    return X, y


def _small() -> ClientData:
    """3 clients holding 2, 3, 1 samples (J_max 3), zero padding."""
    X = np.zeros((3, 3, 2))
    X[0, :2] = [[1, 2], [3, 4]]
    X[1] = [[5, 6], [7, 8], [9, 10]]
    X[2, :1] = [[11, 12]]
    y = np.array([[0, 1, PAD_LABEL], [2, 2, 1], [1, PAD_LABEL, PAD_LABEL]])
    return ClientData(X, y, np.array([2, 3, 1]))


# --------------------------------------------------------------------------- the contract


def test_client_data_properties():
    cd = _small()
    assert (cd.n, cd.J_max, cd.equal_sizes) == (3, 3, False)
    np.testing.assert_array_equal(cd.mask, [[1, 1, 0], [1, 1, 1], [1, 0, 0]])
    assert cd.validate(3) is cd
    eq = ClientData.equal(np.ones((2, 4, 3)), np.zeros((2, 4), np.int64))
    assert eq.equal_sizes and eq.counts.tolist() == [4, 4] and eq.mask.all()
    assert eq.counts.dtype == np.int64


def test_class_counts_by_hand():
    np.testing.assert_array_equal(class_counts(_small(), 3), [[1, 1, 0], [0, 1, 2], [0, 1, 0]])
    with pytest.raises(ValueError, match=r"label 2 is outside \[0, n_classes\) = \[0, 2\)"):
        class_counts(_small(), 2)
    with pytest.raises(ValueError, match="n_classes must be an integer >= 1, got 0"):
        class_counts(_small(), 0)


@pytest.mark.parametrize("kw, match", [
    (dict(X=np.zeros((3, 3))), r"ClientData.X must be a 3-D array \(n, J_max, p\), got shape \(3, 3\)"),
    (dict(y=np.zeros((3, 2), np.int64)), r"ClientData.y must have shape \(n, J_max\) = \(3, 3\)"),
    (dict(y=np.zeros((3, 3))), "ClientData.y must hold integer labels, got dtype float64"),
    (dict(counts=np.array([2, 3])), r"ClientData.counts must have shape \(n,\) = \(3,\)"),
    (dict(counts=np.array([2.0, 3.0, 1.0])), "ClientData.counts must be integers"),
])
def test_client_data_shape_errors(kw, match):
    cd = _small()
    args = dict(X=cd.X, y=cd.y, counts=cd.counts) | kw
    with pytest.raises(ValueError, match=match):
        ClientData(**args)


def test_validate_names_the_mismatch():
    cd = _small()
    with pytest.raises(ValueError, match=r"counts\[2\] = 0 is out of range: every client holds "
                                         r"between 1 and J_max = 3"):
        ClientData(cd.X, cd.y, np.array([2, 3, 0])).validate()
    with pytest.raises(ValueError, match=r"counts\[0\] = 4 is out of range"):
        ClientData(cd.X, cd.y, np.array([4, 3, 1])).validate()
    # counts too small: a real row lies in the padding
    with pytest.raises(ValueError, match=r"padding rows of client 1 \(rows 2..2\) hold values other "
                                         r"than pad = 0.0; counts\[1\] = 2 does not match the data"):
        ClientData(cd.X, cd.y, np.array([2, 2, 1])).validate()
    # counts too large: a padding row counted as data (its label is PAD_LABEL)
    with pytest.raises(ValueError, match=r"ClientData.y\[2, 1\] = -1 is not a valid label "
                                         r"\(labels >= 0\); counts\[2\] = 2"):
        ClientData(cd.X, cd.y, np.array([2, 3, 2])).validate()
    y = cd.y.copy()
    y[0, 2] = 0
    with pytest.raises(ValueError, match=r"padding labels of client 0 \(rows 2..2\) must be -1"):
        ClientData(cd.X, y, cd.counts).validate()
    with pytest.raises(ValueError, match=r"y\[1, 0\] = 2 is not a valid label \(labels in \[0, 2\)\)"):
        cd.validate(n_classes=2)
    X = cd.X.copy()
    X[~cd.mask] = np.nan
    with pytest.raises(ValueError, match="other than pad = 0.0"):
        ClientData(X, cd.y, cd.counts).validate()
    ClientData(X, cd.y, cd.counts, pad=np.nan).validate(3)  # NaN padding, declared


def test_nan_padding_and_real_rows():
    X, y = _data([1, 9, 5])
    cd = partition_clients("by_class", X, y, 3, np.zeros(3, bool), np.random.default_rng(0),
                           truncate=False, pad=np.nan)
    cd.validate(3)
    assert cd.counts.tolist() == [1, 9, 5] and cd.X.shape == (3, 9, 2)
    assert np.isnan(cd.X[~cd.mask]).all() and (cd.y[~cd.mask] == PAD_LABEL).all()
    ids = cd.X[..., 0][cd.mask].astype(int)
    np.testing.assert_array_equal(cd.X[cd.mask], X[ids])  # real rows are real samples
    np.testing.assert_array_equal(cd.y[cd.mask], y[ids])
    with pytest.raises(ValueError, match="pad must be a real number"):
        partition_clients("iid", X, y, 3, np.zeros(3, bool), np.random.default_rng(0), pad="nan")


def test_client_with_one_sample():
    X, y = _data([1, 9, 5])
    cd = partition_clients("by_class", X, y, 3, np.zeros(3, bool), np.random.default_rng(0),
                           truncate=False)
    assert cd.counts[0] == 1 and cd.y[0, 0] == 0 and (cd.y[0, 1:] == PAD_LABEL).all()
    assert (cd.X[0, 1:] == 0).all()  # zero padding by default
    np.testing.assert_array_equal(class_counts(cd, 3), np.diag([1, 9, 5]))
    # dirichlet may also give J_w = 1 when min_size allows it
    X, y = _data([30, 30])
    sizes = [partition_clients("dirichlet", X, y, 6, np.zeros(6, bool), np.random.default_rng(s),
                               beta=0.05, min_size=1).counts.min() for s in range(40)]
    assert 1 in sizes


def test_one_client_holds_90_percent():
    X, y = _data([900, 50, 50])
    byz = np.array([False, True, False])
    cd = partition_clients("by_class", X, y, 3, byz, np.random.default_rng(0), truncate=False)
    cd.validate(3)
    assert cd.counts.tolist() == [900, 50, 50] and cd.J_max == 900
    assert cd.counts[0] / cd.counts.sum() == 0.9
    assert not cd.mask[1:, 50:].any()  # 850 padding rows each for the small clients
    # the padded array holds n * J_max / N = 2.7 times the data
    assert cd.n * cd.J_max / cd.counts.sum() == pytest.approx(2.7)


# --------------------------------------------------------------------------- invariants


def check_assignment(a: Assignment, y: np.ndarray, n: int, *, min_size: int = 1,
                     all_used: bool = True) -> None:
    """The invariants every partition keeps: shapes, counts against the index matrix
    (padding -1 at the end), each sample at most once, class totals preserved (every
    sample used when ``all_used``), every client at least ``min_size`` samples."""
    idx, counts = a
    assert idx.shape[0] == n and counts.shape == (n,) and counts.dtype == np.int64
    assert idx.shape[1] == counts.max()
    mask = np.arange(idx.shape[1]) < counts[:, None]
    assert (idx[~mask] == -1).all() and (idx[mask] >= 0).all()
    used = idx[mask]
    assert np.unique(used).size == used.size, "a sample is used twice"
    assert counts.min() >= min_size, f"a client holds {counts.min()} < min_size = {min_size}"
    if all_used:
        assert counts.sum() == y.size, f"{y.size - counts.sum()} samples dropped"
        np.testing.assert_array_equal(np.bincount(y[used], minlength=y.max() + 1), np.bincount(y))


@st.composite
def _labels(draw, min_class: int = 1):
    C = draw(st.integers(1, 6))
    counts = draw(st.lists(st.integers(min_class, 60), min_size=C, max_size=C))
    seed = draw(st.integers(0, 2**32 - 1))
    return _data(counts, seed=seed % 1000)[1], seed


@given(_labels(), st.integers(1, 12), st.floats(0.02, 50.0), st.integers(1, 5), st.booleans())
def test_dirichlet_family_invariants(labels, n, beta, min_size, sizes_only):
    y, seed = labels
    name = "quantity_skew" if sizes_only else "dirichlet"
    rng = np.random.default_rng(seed)
    byz = np.zeros(n, bool)
    params = dict(beta=beta, min_size=min_size, max_redraws=200)
    if n * min_size > y.size:
        with pytest.raises(ValueError, match="cannot hold"):
            PARTITIONS[name](y, n, byz, rng, **params)
        return
    try:
        a = PARTITIONS[name](y, n, byz, rng, **params)
    except ValueError as e:  # the guard may give up for small beta and tight min_size
        assert "none of max_redraws=200 draws" in str(e)
        return
    check_assignment(a, y, n, min_size=min_size)


@given(_labels(min_class=3), st.integers(1, 3))
def test_by_class_untruncated_invariants(labels, per_class):
    y, seed = labels
    C = np.unique(y).size
    a = PARTITIONS["by_class"](y, per_class * C, np.zeros(per_class * C, bool),
                               np.random.default_rng(seed), truncate=False)
    check_assignment(a, y, per_class * C)
    owner_class = np.repeat(np.arange(C), per_class)
    assert all((y[a.idx[w, :a.counts[w]]] == owner_class[w]).all() for w in range(per_class * C))
    sizes = a.counts.reshape(C, per_class)
    assert (sizes.max(axis=1) - sizes.min(axis=1) <= 1).all()  # evenly shared


@given(_labels(), st.integers(1, 8), st.sampled_from(["iid", "by_class", "unbalanced"]))
def test_equal_size_partitions_keep_the_invariants(labels, k, name):
    y, seed = labels
    n = k * np.unique(y).size if name == "by_class" else k
    byz = np.zeros(n, bool)
    byz[0] = name == "unbalanced" and n > 1
    try:
        a = PARTITIONS[name](y, n, byz, np.random.default_rng(seed))
    except ValueError as e:
        assert "not enough samples" in str(e)
        return
    reg = ~byz
    check_assignment(Assignment(a.idx[reg], a.counts[reg]), y, int(reg.sum()), all_used=False)
    assert (a.counts == a.idx.shape[1]).all()


@given(_labels(), st.integers(1, 10), st.floats(0.05, 5.0))
def test_gathered_client_data_matches_its_assignment(labels, n, beta):
    y, seed = labels
    X = np.column_stack([np.arange(y.size, dtype=float), np.ones(y.size)])
    try:
        cd = partition_clients("dirichlet", X, y, n, np.zeros(n, bool), np.random.default_rng(seed),
                               beta=beta, min_size=1, pad=np.nan)
    except ValueError as e:  # N < n, or the guard gives up (e.g. N = n with a small beta)
        assert "cannot hold" in str(e) or "none of max_redraws=1000 draws" in str(e)
        return
    cd.validate(int(y.max()) + 1)
    a = PARTITIONS["dirichlet"](y, n, np.zeros(n, bool), np.random.default_rng(seed), beta=beta,
                                min_size=1)
    np.testing.assert_array_equal(cd.counts, a.counts)
    np.testing.assert_array_equal(cd.X[..., 0][cd.mask], a.idx[cd.mask])
    np.testing.assert_array_equal(class_counts(cd, int(y.max()) + 1).sum(axis=0), np.bincount(y))


# --------------------------------------------------------------------------- broken variants
# Mistakes a Dirichlet splitter could make; check_assignment must reject each.


def _dirichlet_floor_each_share(y, n, rng, beta=0.5):
    """Gives client w floor(n_c * p_{c,w}) of class c: the remainders are dropped."""
    _, counts, members = _class_groups(y)
    P = rng.dirichlet(np.full(n, beta), size=counts.size)
    K = np.floor(P * counts[:, None]).astype(np.int64)
    owners = np.concatenate([np.repeat(np.arange(n), K[c]) for c in range(counts.size)])
    samples = np.concatenate([rng.permutation(members[c])[: K[c].sum()] for c in range(counts.size)])
    return _from_owners(samples, owners, n)


def _dirichlet_with_replacement(y, n, rng, beta=0.5):
    """Draws each client's share of a class with replacement from the class."""
    _, counts, members = _class_groups(y)
    K = _draw_dirichlet_counts(rng, counts, n, beta, 1, 1000, "broken")
    owners = np.concatenate([np.repeat(np.arange(n), K[c]) for c in range(counts.size)])
    samples = np.concatenate([rng.choice(members[c], counts[c]) for c in range(counts.size)])
    return _from_owners(samples, owners, n)


def _dirichlet_without_guard(y, n, rng, beta=0.5):
    """Takes the first draw whatever the smallest client holds."""
    _, counts, members = _class_groups(y)
    K = _draw_dirichlet_counts(rng, counts, n, beta, 0, 1, "broken")
    owners = np.concatenate([np.repeat(np.arange(n), K[c]) for c in range(counts.size)])
    samples = np.concatenate([rng.permutation(members[c]) for c in range(counts.size)])
    return _from_owners(samples, owners, n)


@pytest.mark.parametrize("broken, min_size, message", [
    (_dirichlet_floor_each_share, 0, "samples dropped"),
    (_dirichlet_with_replacement, 0, "used twice"),
    (_dirichlet_without_guard, 5, "< min_size"),
])
def test_invariants_catch_broken_dirichlet(broken, min_size, message):
    y = _data([40, 25, 35])[1]
    caught = 0
    for seed in range(20):
        try:
            check_assignment(broken(y, 8, np.random.default_rng(seed), beta=0.5), y, 8,
                             min_size=min_size)
        except AssertionError as e:
            caught += message in str(e)
    assert caught > 0
    for seed in range(20):  # the library passes the same check
        a = PARTITIONS["dirichlet"](y, 8, np.zeros(8, bool), np.random.default_rng(seed), beta=0.5,
                                    min_size=max(min_size, 1))
        check_assignment(a, y, 8, min_size=min_size)


# --------------------------------------------------------------------------- the picture


def test_heatmap_tiny_case():
    pytest.importorskip("matplotlib")
    from byzsim.partition_plot import partition_heatmap

    X, y = _data([5, 3, 4])
    byz = draw_byzantine(4, 1, None, indices=[2])
    cd = partition_clients("dirichlet", X, y, 4, byz, np.random.default_rng(0), beta=1.0, min_size=1)
    K = class_counts(cd, 3)
    fig = partition_heatmap(K, byzantine=byz, title="tiny")
    assert len(fig.axes) == 3  # heatmap, client sizes, colour bar
    ax = fig.axes[0]
    texts = [t.get_text() for t in ax.texts]
    assert sorted(map(int, texts)) == sorted(K.ravel().tolist())  # every count annotated
    labels = ax.get_yticklabels()
    assert [l.get_text() for l in labels] == ["0", "1", "2 B", "3"]
    assert labels[2].get_color() == "tab:red" and labels[0].get_color() != "tab:red"
    assert "J_w min" in fig._suptitle.get_text() and "12 samples" in fig._suptitle.get_text()
    fig2 = partition_heatmap(np.ones((50, 10), int))  # 500 cells: no annotation
    assert not fig2.axes[0].texts
    import matplotlib.pyplot as plt

    plt.close(fig)
    plt.close(fig2)


@pytest.mark.parametrize("kw, match", [
    (dict(counts=np.ones(3, int)), "non-empty 2-D array"),
    (dict(counts=-np.ones((2, 2), int)), "integers >= 0"),
    (dict(counts=np.ones((2, 2))), "integers >= 0"),
    (dict(counts=np.ones((2, 2), int), byzantine=np.zeros(3, bool)), r"shape \(n,\) = \(2,\)"),
    (dict(counts=np.ones((2, 2), int), class_names=["a"]), "C = 2 entries, got 1"),
])
def test_heatmap_bad_input(kw, match):
    pytest.importorskip("matplotlib")
    from byzsim.partition_plot import partition_heatmap

    with pytest.raises(ValueError, match=match):
        partition_heatmap(**kw)


def test_partition_plot_main_writes_png_of_the_runs_partition(tmp_path):
    pytest.importorskip("matplotlib")
    from byzsim.config import make_config
    from byzsim.partition_plot import client_data_for, main
    from byzsim.simulate import problem_for

    out = tmp_path / "split.png"
    argv = ["dataset=digits", "partition=unbalanced", "n_clients=10", "n_byzantine=2", "seed=3"]
    assert main([*argv, "--out", str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the same stream as a run: the picture's counts are the run's client labels
    cfg = make_config(method="sgd", dataset="digits", partition="unbalanced", n_clients=10,
                      n_byzantine=2, seed=3)
    cd, byz, C = client_data_for(cfg)
    problem = problem_for(cfg)
    np.testing.assert_array_equal(byz, problem.byzantine)
    np.testing.assert_array_equal(class_counts(cd, C), class_counts(ClientData.equal(
        problem.X, problem.y), C))


def test_partition_plot_main_bad_input(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    from byzsim.partition_plot import main

    rc = main(["dataset=digits", "partition=dirichlet", "partition_params.beta=0",
               "--out", str(tmp_path / "x.png")])
    assert rc == 2
    assert "'partition_params.beta' = 0: expected a finite number > 0" in capsys.readouterr().err  # checked with the config
    assert not (tmp_path / "x.png").exists()
    rc = main(["dataset=digits", "seed=0,1", "--out", str(tmp_path / "x.png")])
    assert rc == 2 and "2 different data setups" in capsys.readouterr().err


def test_partition_front_door_and_equal_layout_agree():
    X, y = _data([10, 10])
    Xc, yc = partition("iid", X, y, 4, np.zeros(4, bool), np.random.default_rng(0))
    cd = partition_clients("iid", X, y, 4, np.zeros(4, bool), np.random.default_rng(0))
    np.testing.assert_array_equal(cd.X, Xc)
    np.testing.assert_array_equal(cd.y, yc)
    assert cd.equal_sizes and cd.validate(2) is cd
