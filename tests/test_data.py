"""Dataset loaders: shapes, label counts, determinism, checksum and format errors."""

from __future__ import annotations

import gzip
import hashlib
import shutil
from pathlib import Path

import numpy as np
import pytest

from byzsim.data import (
    DATASETS,
    KNOWN_SHA256,
    DataError,
    Dataset,
    data_dir,
    load_covtype,
    load_dataset,
    load_digits,
    load_mnist,
    make_synthetic,
    verify_file,
)

REPO_DATA = Path(__file__).resolve().parents[1] / "data"
COVTYPE_REL = "covtype/covtype-rows1-15120.csv.gz"
MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


@pytest.fixture(scope="module")
def mnist() -> Dataset:
    return load_mnist()


@pytest.fixture(autouse=True)
def _default_dirs(monkeypatch, tmp_path_factory):
    """Use the repository's data/ and no scikit-learn covertype cache, whatever the
    environment says (so the covtype tests see the validation-row split)."""
    monkeypatch.delenv("BYZSIM_DATA_DIR", raising=False)
    monkeypatch.setenv("SCIKIT_LEARN_DATA", str(tmp_path_factory.mktemp("no_sklearn_data")))


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _copy(rels: list[str], dst: Path, sums: bool = True) -> Path:
    for rel in rels:
        (dst / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(REPO_DATA / rel, dst / rel)
    if sums:
        shutil.copyfile(REPO_DATA / "SHA256SUMS", dst / "SHA256SUMS")
    return dst


def _corrupt(path: Path) -> None:
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    path.write_bytes(bytes(raw))


def _write_covtype(path: Path, header: list[str], rows: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    body = "\n".join(",".join(map(str, r)) for r in rows.tolist())
    path.write_bytes(gzip.compress((",".join(header) + "\n" + body + "\n").encode()))
    (path.parents[1] / "SHA256SUMS").write_text(f"{_sha(path)}  {COVTYPE_REL}\n")


# --------------------------------------------------------------------------- checksums


def test_registry_lists_the_datasets():
    assert DATASETS.names() == ["covtype", "digits", "mnist", "synthetic"]


def test_known_checksums_match_the_sha256sums_files():
    for sums in (REPO_DATA / "SHA256SUMS", REPO_DATA.parents[1] / "shared/data/SHA256SUMS"):
        if not sums.exists():
            continue
        listed = dict(reversed(line.split()) for line in sums.read_text().splitlines() if line)
        assert listed == KNOWN_SHA256


def test_repo_files_verify():
    for rel, sha in KNOWN_SHA256.items():
        verify_file(REPO_DATA / rel, sha)


def test_verify_file_corrupt_names_file_checksums_and_remedy(tmp_path):
    rel = "mnist/t10k-labels-idx1-ubyte.gz"
    _copy([rel], tmp_path)
    _corrupt(tmp_path / rel)
    with pytest.raises(DataError) as e:
        verify_file(tmp_path / rel, KNOWN_SHA256[rel])
    msg = str(e.value)
    for part in ("t10k-labels-idx1-ubyte.gz", str(tmp_path), KNOWN_SHA256[rel],
                 _sha(tmp_path / rel), "git checkout data/", "../shared/data/"):
        assert part in msg


def test_verify_file_missing_names_path(tmp_path):
    path = tmp_path / "mnist" / "nothing.gz"
    with pytest.raises(DataError, match="missing") as e:
        verify_file(path, "0" * 64)
    assert str(path) in str(e.value)


def test_data_dir_env_var(monkeypatch, tmp_path):
    assert data_dir() == REPO_DATA
    monkeypatch.setenv("BYZSIM_DATA_DIR", str(tmp_path))
    assert data_dir() == tmp_path
    with pytest.raises(DataError) as e:
        load_dataset("covtype")
    assert str(tmp_path / COVTYPE_REL) in str(e.value) and "BYZSIM_DATA_DIR" in str(e.value)


def test_mnist_missing_files_all_listed(tmp_path):
    _copy(["mnist/train-images-idx3-ubyte.gz", "mnist/train-labels-idx1-ubyte.gz"], tmp_path)
    with pytest.raises(DataError) as e:
        load_mnist(data_dir=tmp_path)
    msg = str(e.value)
    assert str(tmp_path / "mnist/t10k-images-idx3-ubyte.gz") in msg
    assert str(tmp_path / "mnist/t10k-labels-idx1-ubyte.gz") in msg
    assert "data_dir argument" in msg and "git checkout data/" in msg


def test_mnist_corrupt_copy_raises_before_parsing(tmp_path):
    rels = [r for r in KNOWN_SHA256 if r.startswith("mnist/")]
    _copy(rels, tmp_path)
    _corrupt(tmp_path / "mnist/t10k-labels-idx1-ubyte.gz")
    with pytest.raises(DataError) as e:
        load_dataset("mnist", data_dir=str(tmp_path))
    msg = str(e.value)
    assert "t10k-labels-idx1-ubyte.gz" in msg
    assert KNOWN_SHA256["mnist/t10k-labels-idx1-ubyte.gz"] in msg


def test_embedded_checksums_used_without_sha256sums(tmp_path):
    _copy([COVTYPE_REL], tmp_path, sums=False)
    assert load_covtype(data_dir=tmp_path).X_train.shape == (11340, 54)
    _corrupt(tmp_path / COVTYPE_REL)
    with pytest.raises(DataError, match=KNOWN_SHA256[COVTYPE_REL]):
        load_covtype(data_dir=tmp_path)


# --------------------------------------------------------------------------- MNIST


def test_mnist_shapes_counts_range(mnist):
    assert mnist.X_train.shape == (60000, 784) and mnist.X_test.shape == (10000, 784)
    assert mnist.X_train.dtype == np.float64 and mnist.y_train.dtype == np.int64
    assert mnist.n_classes == 10
    assert np.bincount(mnist.y_train).tolist() == MNIST_TRAIN_COUNTS
    assert np.bincount(mnist.y_test).tolist() == MNIST_TEST_COUNTS
    for X in (mnist.X_train, mnist.X_test):
        assert X.min() == 0.0 and X.max() == 1.0
    # the pixels are k / 255 exactly
    sample = mnist.X_train[:100] * 255
    np.testing.assert_array_equal(sample, np.round(sample))


def test_mnist_cached_and_read_only(mnist):
    again = load_dataset("mnist")
    assert again.X_train is mnist.X_train
    with pytest.raises(ValueError):
        mnist.X_train[0, 0] = 1.0


# --------------------------------------------------------------------------- COVTYPE


def test_covtype_shapes_classes_standardized():
    ds = load_dataset("covtype")
    assert ds.X_train.shape == (11340, 54) and ds.X_test.shape == (3780, 54)
    assert ds.n_classes == 7
    assert np.bincount(ds.y_train).tolist() == [1620] * 7
    assert np.bincount(ds.y_test).tolist() == [540] * 7
    assert "validation rows 11,341-15,120" in ds.note and "not present" in ds.note
    np.testing.assert_allclose(ds.X_train.mean(axis=0), 0.0, atol=1e-10)
    sd = ds.X_train.std(axis=0)
    constant = sd < 0.5  # soil types absent from the training rows: std 0 kept at 0
    np.testing.assert_allclose(sd[~constant], 1.0, rtol=1e-10)
    np.testing.assert_array_equal(sd[constant], 0.0)
    assert constant.sum() < 5


def test_covtype_first_row_matches_file():
    ds = load_covtype(test_set="validation")
    with gzip.open(REPO_DATA / COVTYPE_REL, "rt") as f:
        f.readline()
        first = np.array(f.readline().split(","), dtype=float)
    assert ds.y_train[0] == first[-1] - 1
    raw = first[1:-1]
    # undo the standardization on column 0 (Elevation) using the raw training data
    with gzip.open(REPO_DATA / COVTYPE_REL, "rt") as f:
        elev = np.loadtxt(f, delimiter=",", skiprows=1, usecols=1, max_rows=11340)
    assert ds.X_train[0, 0] == pytest.approx((raw[0] - elev.mean()) / elev.std())


def test_covtype_from_copied_dir(tmp_path):
    _copy([COVTYPE_REL], tmp_path)
    ds = load_covtype(data_dir=str(tmp_path))
    np.testing.assert_array_equal(ds.X_test, load_covtype().X_test)


@pytest.mark.parametrize(
    "mutate, match",
    [
        (lambda h, M: (h[:-2] + h[-1:], np.delete(M, -2, axis=1)), "55 columns, expected 56"),
        (lambda h, M: (["ID"] + h[1:], M), "column 1 is 'ID', expected 'Id'"),
        (lambda h, M: (h, M[:100]), "100 rows"),
    ],
)
def test_covtype_wrong_layout(tmp_path, mutate, match):
    with gzip.open(REPO_DATA / COVTYPE_REL, "rt") as f:
        header = f.readline().strip().split(",")
        M = np.loadtxt(f, delimiter=",", dtype=np.int64, max_rows=200)
    header, M = mutate(header, M)
    _write_covtype(tmp_path / COVTYPE_REL, header, M)
    with pytest.raises(DataError, match=match):
        load_covtype(data_dir=tmp_path)


def test_covtype_test_set_choices():
    with pytest.raises(ValueError, match="valid choices: auto, full, validation"):
        load_covtype(test_set="ful")
    with pytest.raises(DataError, match="never downloads"):
        load_covtype(test_set="full")  # no sklearn cache in the patched SCIKIT_LEARN_DATA


# --------------------------------------------------------------------------- digits, synthetic


def test_digits_deterministic_stratified():
    a, b, c = load_digits(seed=1), load_dataset("digits", seed=1), load_digits(seed=2)
    np.testing.assert_array_equal(a.X_train, b.X_train)
    np.testing.assert_array_equal(a.y_test, b.y_test)
    assert not np.array_equal(a.y_train, c.y_train)
    assert a.X_train.shape[0] + a.X_test.shape[0] == 1797 and a.X_train.shape[1] == 64
    assert a.X_test.shape[0] == pytest.approx(0.25 * 1797, abs=1)
    assert 0.0 <= a.X_train.min() and a.X_train.max() == 1.0
    total = np.bincount(np.concatenate([a.y_train, a.y_test]))
    assert np.abs(np.bincount(a.y_test) - 0.25 * total).max() <= 1  # stratified
    with pytest.raises(ValueError, match="test_fraction"):
        load_digits(test_fraction=1.0)


def test_synthetic_deterministic_and_balanced():
    a = make_synthetic(n_samples=300, n_features=5, n_classes=3, n_test=60, seed=4)
    b = load_dataset("synthetic", n_samples=300, n_features=5, n_classes=3, n_test=60, seed=4)
    c = make_synthetic(n_samples=300, n_features=5, n_classes=3, n_test=60, seed=5)
    np.testing.assert_array_equal(a.X_train, b.X_train)
    np.testing.assert_array_equal(a.X_test, b.X_test)
    assert not np.allclose(a.X_train, c.X_train)
    assert a.X_train.shape == (300, 5) and a.X_test.shape == (60, 5) and a.n_classes == 3
    assert np.bincount(a.y_train).tolist() == [100, 100, 100]
    # the class means are separated by about `separation`
    far = make_synthetic(n_samples=3000, n_features=5, n_classes=2, separation=10.0)
    means = np.stack([far.X_train[far.y_train == k].mean(0) for k in range(2)])
    assert np.linalg.norm(means, axis=1) == pytest.approx([10.0, 10.0], rel=0.05)
    with pytest.raises(ValueError, match="n_classes"):
        make_synthetic(n_classes=0)


def test_load_dataset_errors():
    with pytest.raises(ValueError, match="valid choices: covtype, digits, mnist, synthetic"):
        load_dataset("mnits")
    with pytest.raises(ValueError, match="valid parameters: data_dir"):
        load_dataset("mnist", seed=0)


def test_dataset_checks_dtypes():
    X, y = np.zeros((3, 2)), np.zeros(3, dtype=np.int64)
    with pytest.raises(ValueError, match="float64"):
        Dataset("x", X.astype(np.float32), y, X, y, 1)
    with pytest.raises(ValueError, match="must be"):
        Dataset("x", X, y[:2], X, y, 1)
    assert "train=(3, 2)" in repr(Dataset("x", X, y, X, y, 1))
