"""Datasets: loaders with checksum verification, and a registry of them.

Every loader returns a :class:`Dataset` — dense ``float64`` features and ``int64``
labels ``0..C-1``:

==========  ====================  ==================  =======  ===========================
name        train ``X``           test ``X``          classes  source
==========  ====================  ==================  =======  ===========================
mnist       (60000, 784)          (10000, 784)        10       ``data/mnist/*.gz`` (IDX)
covtype     (11340, 54)           (3780, 54) [#]_     7        ``data/covtype/*.csv.gz``
digits      (~1347, 64)           (~450, 64)          10       scikit-learn (embedded)
synthetic   (n_samples, p)        (n_test, p)         C        generated from a seed
==========  ====================  ==================  =======  ===========================

.. [#] the canonical validation rows; the canonical test set (565,892 rows) is used
   instead when scikit-learn's ``fetch_covtype`` cache happens to exist locally.

Files live in :func:`data_dir` (``$BYZSIM_DATA_DIR`` if set, else ``<repo>/data``). Each
file's sha256 is checked before it is parsed, against ``SHA256SUMS`` in that directory
(``sha256sum -c`` format) or, when that file does not list it, against the checksums
embedded here (:data:`KNOWN_SHA256`). Nothing is ever downloaded: a missing or corrupt
file raises :class:`DataError` saying what is wrong, where we looked and how to restore
it.

Parsed arrays are cached in-process (keyed by the files' path, size and mtime) and
returned **read-only**; nothing is ever written next to the data files.

>>> ds = load_dataset("synthetic", n_samples=100, n_test=20, n_features=3, n_classes=2)
>>> ds.X_train.shape, ds.y_train.dtype, ds.n_classes
((100, 3), dtype('int64'), 2)
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import io
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .registry import Meta, Range, Registry, bind_parameters, optional_callable

__all__ = [
    "Dataset",
    "DataError",
    "DATASETS",
    "KNOWN_SHA256",
    "data_dir",
    "verify_file",
    "load_dataset",
    "load_mnist",
    "load_digits",
    "make_synthetic",
    "load_covtype",
]

#: sha256 of the data files as shipped in ``data/`` (paths relative to the data dir).
KNOWN_SHA256: dict[str, str] = {
    "mnist/t10k-images-idx3-ubyte.gz": "1a1a05eab793c14bb050b398624a11b0ffd1a2953baed553b1b9bd079e2a20be",
    "mnist/t10k-labels-idx1-ubyte.gz": "b91679a0acfe4ba0e50a2437a903084cba1f5f92592b016a25a7dfd00455798b",
    "mnist/train-images-idx3-ubyte.gz": "0b367032e93c5d0cea0925647cfdb18614af8ee15f83e6f2fc2ad904a6835971",
    "mnist/train-labels-idx1-ubyte.gz": "1787548bbe0bff1ec2ecdc0ef292b02df999e2d1a6002d27500982c652b17203",
    "covtype/covtype-rows1-15120.csv.gz": "537a651b186e805e168ff65f389df79ffd40536014e645f8d75a09aa1c4f9d9a",
}

_ENV_VAR = "BYZSIM_DATA_DIR"
_REPO = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------- Dataset


@dataclass(frozen=True, eq=False)
class Dataset:
    """A train/test classification dataset.

    Attributes
    ----------
    name : str
    X_train : ndarray, shape (N, p), float64
    y_train : ndarray, shape (N,), int64, labels in ``0..n_classes-1``
    X_test : ndarray, shape (M, p), float64
    y_test : ndarray, shape (M,), int64
    n_classes : int
    note : str
        Provenance worth reporting with results (e.g. which test set was used).
    """

    name: str
    X_train: np.ndarray
    y_train: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray
    n_classes: int
    note: str = ""

    def __post_init__(self) -> None:
        for split in ("train", "test"):
            X, y = getattr(self, f"X_{split}"), getattr(self, f"y_{split}")
            if X.ndim != 2 or y.ndim != 1 or X.shape[0] != y.shape[0]:
                raise ValueError(
                    f"dataset {self.name!r}: X_{split} {X.shape} and y_{split} {y.shape} "
                    "must be (N, p) and (N,)"
                )
            if X.dtype != np.float64 or y.dtype != np.int64:
                raise ValueError(
                    f"dataset {self.name!r}: X_{split} must be float64 and y_{split} int64, "
                    f"got {X.dtype} and {y.dtype}"
                )
        if self.X_train.shape[1] != self.X_test.shape[1]:
            raise ValueError(
                f"dataset {self.name!r}: train has {self.X_train.shape[1]} features, "
                f"test {self.X_test.shape[1]}"
            )

    @property
    def n_features(self) -> int:
        return int(self.X_train.shape[1])

    def __repr__(self) -> str:
        s = (
            f"Dataset({self.name!r}, train={self.X_train.shape}, test={self.X_test.shape}, "
            f"n_classes={self.n_classes}"
        )
        return s + (f", note={self.note!r})" if self.note else ")")


DATASETS: Registry = Registry("dataset", schema={
    "size": Meta("params -> (n_train, n_test, n_features, n_classes), known without loading "
                 "the data (memory and batch checks before a run)", default=None, check=optional_callable),
})


class DataError(ValueError):
    """A data file is missing, corrupt, or not in the expected format."""


def load_dataset(name: str, **params) -> Dataset:
    """Load the registered dataset ``name`` with keyword ``params``.

    Unknown names and parameters raise ``ValueError`` listing the valid ones before any
    file is touched.
    """
    fn = DATASETS[name]
    return bind_parameters("dataset", name, fn, params)()


# --------------------------------------------------------------------------- files


def data_dir() -> Path:
    """The data directory: ``$BYZSIM_DATA_DIR`` if set (non-empty), else ``<repo>/data``."""
    env = os.environ.get(_ENV_VAR)
    return Path(env).expanduser() if env else _REPO / "data"


def _resolve_dir(given: str | os.PathLike | None) -> tuple[Path, str]:
    """The directory to read, and a phrase saying where that choice came from."""
    if given is not None:
        return Path(given).expanduser(), "the data_dir argument"
    if os.environ.get(_ENV_VAR):
        return data_dir(), f"${_ENV_VAR}"
    return data_dir(), f"the default <repo>/data (set ${_ENV_VAR} to change it)"


def _restore_hint(rel: str) -> str:
    return (
        f"To restore, copy {rel} from the project's shared data directory "
        f"(../shared/data/{rel}, next to the repository) into the data directory, "
        f"or run `git checkout data/` in the repository (byzsim never downloads data)."
    )


def _relpath(path: Path) -> str:
    try:
        return path.resolve().relative_to(data_dir().resolve()).as_posix()
    except ValueError:
        return f"{path.parent.name}/{path.name}"


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _read_verified(path: Path, expected_sha256: str, rel: str) -> bytes:
    """Read ``path`` and check its sha256; return the bytes (so callers read once)."""
    if not path.is_file():
        raise DataError(f"data file {rel} is missing: looked for {path}. " + _restore_hint(rel))
    raw = path.read_bytes()
    actual = _sha256(raw)
    if actual != expected_sha256.lower():
        raise DataError(
            f"data file {path.name} is corrupt: checksum mismatch for {path}; "
            f"expected sha256 {expected_sha256.lower()}, got {actual}. " + _restore_hint(rel)
        )
    return raw


def verify_file(path: Path, expected_sha256: str) -> None:
    """Check that ``path`` exists and has sha256 ``expected_sha256``.

    Raises
    ------
    DataError
        naming the file, where it looked, the expected and actual checksums, and how to
        restore it. Never re-downloads.
    """
    path = Path(path)
    _read_verified(path, expected_sha256, _relpath(path))


def _read_sha256sums(root: Path) -> dict[str, str]:
    sums = root / "SHA256SUMS"
    if not sums.is_file():
        return {}
    out: dict[str, str] = {}
    for line in sums.read_text().splitlines():
        parts = line.strip().split(None, 1)
        if len(parts) == 2:
            out[parts[1].lstrip("*").strip()] = parts[0].lower()
    return out


def _expected(root: Path, rel: str) -> str:
    return _read_sha256sums(root).get(rel, KNOWN_SHA256[rel])


def _check_present(root: Path, origin: str, rels: list[str]) -> None:
    """Raise one DataError listing every missing file (cheap; before any reading)."""
    missing = [rel for rel in rels if not (root / rel).is_file()]
    if not missing:
        return
    if len(missing) == 1:
        raise DataError(
            f"data file {missing[0]} is missing: looked for {root / missing[0]} (data "
            f"directory from {origin}). " + _restore_hint(missing[0])
        )
    listing = ", ".join(str(root / rel) for rel in missing)
    raise DataError(
        f"{len(missing)} data files are missing from {root} (data directory from {origin}): "
        f"{listing}. " + _restore_hint(f"{Path(missing[0]).parent}/")
    )


def _read_all_verified(root: Path, rels: list[str]) -> list[bytes]:
    """Read every file and check every checksum before anything is parsed."""
    return [_read_verified(root / rel, _expected(root, rel), rel) for rel in rels]


def _file_key(root: Path, rels: list[str]) -> tuple:
    """Cache key: the files' resolved paths, sizes and mtimes (edits invalidate it)."""
    key: list = [str(root.resolve())]
    for rel in rels:
        p = (root / rel).resolve()
        try:
            st = p.stat()
            key.append((str(p), st.st_size, st.st_mtime_ns))
        except OSError:
            key.append((str(p), None, None))
    return tuple(key)


def _readonly(*arrays: np.ndarray) -> None:
    for a in arrays:
        a.setflags(write=False)


# --------------------------------------------------------------------------- MNIST

_MNIST_FILES = [
    "mnist/train-images-idx3-ubyte.gz",
    "mnist/train-labels-idx1-ubyte.gz",
    "mnist/t10k-images-idx3-ubyte.gz",
    "mnist/t10k-labels-idx1-ubyte.gz",
]


def _parse_idx(gz: bytes, rel: str, ndim: int, shape: tuple[int, ...]) -> np.ndarray:
    """Parse a gzipped IDX file of unsigned bytes with ``ndim`` dims and check its shape."""
    try:
        raw = gzip.decompress(gz)
    except (OSError, EOFError) as e:
        raise DataError(f"data file {rel} is not valid gzip: {e}. " + _restore_hint(rel)) from e
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"data file {rel} is too short for an IDX header. " + _restore_hint(rel))
    magic = int.from_bytes(raw[:4], "big")
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    if magic != 0x0800 + ndim or dims != shape or len(raw) != header + int(np.prod(shape)):
        raise DataError(
            f"data file {rel} is not the expected IDX file: magic 0x{magic:08x}, dims {dims}, "
            f"{len(raw)} bytes; expected magic 0x{0x0800 + ndim:08x} and dims {shape}. "
            + _restore_hint(rel)
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


@functools.lru_cache(maxsize=1)  # one copy (~440 MB of float64) at most
def _mnist_arrays(key: tuple) -> tuple[np.ndarray, ...]:
    gzs = _read_all_verified(Path(key[0]), _MNIST_FILES)  # every check before parsing
    shapes = [((60000, 28, 28), 3), ((60000,), 1), ((10000, 28, 28), 3), ((10000,), 1)]
    Xtr, ytr, Xte, yte = (
        _parse_idx(gz, rel, nd, shp) for gz, rel, (shp, nd) in zip(gzs, _MNIST_FILES, shapes)
    )
    out = (
        np.divide(Xtr.reshape(60000, 784), 255.0, dtype=np.float64),
        ytr.astype(np.int64),
        np.divide(Xte.reshape(10000, 784), 255.0, dtype=np.float64),
        yte.astype(np.int64),
    )
    for rel, y in ((_MNIST_FILES[1], out[1]), (_MNIST_FILES[3], out[3])):
        if y.max() > 9:
            raise DataError(f"data file {rel} has labels above 9. " + _restore_hint(rel))
    _readonly(*out)
    return out


@DATASETS.register("mnist", size=lambda params: (60000, 10000, 784, 10))
def load_mnist(*, data_dir: str | os.PathLike | None = None) -> Dataset:
    """MNIST from the four IDX ``.gz`` files in ``<data_dir>/mnist/``.

    Pixels are scaled by 1/255 (784 float64 features in [0, 1]); 60,000 train and 10,000
    test images. The sha256 of each ``.gz`` file is checked before parsing; the parsed
    arrays are cached in-process and returned read-only.
    """
    root, origin = _resolve_dir(data_dir)
    _check_present(root, origin, _MNIST_FILES)
    Xtr, ytr, Xte, yte = _mnist_arrays(_file_key(root, _MNIST_FILES))
    return Dataset("mnist", Xtr, ytr, Xte, yte, 10, note="MNIST, pixels / 255")


# --------------------------------------------------------------------------- digits


def _digits_size(params) -> tuple[int, int, int, int]:
    n_test = math.ceil(1797 * float(params.get("test_fraction", 0.25)))  # train_test_split's rounding
    return 1797 - n_test, n_test, 64, 10


@DATASETS.register("digits", size=_digits_size, ranges={
    "test_fraction": Range(0, 1, lo_open=True, hi_open=True), "seed": Range(lo=0, integer=True)})
def load_digits(*, test_fraction: float = 0.25, seed: int = 0) -> Dataset:
    """scikit-learn's embedded 8x8 digits (1,797 images, 10 classes), pixels / 16.

    Split into train/test with a stratified split that is deterministic in ``seed``.
    """
    if not 0.0 < float(test_fraction) < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction!r}")
    from sklearn.datasets import load_digits as _sk_load_digits
    from sklearn.model_selection import train_test_split

    X, y = _sk_load_digits(return_X_y=True)
    Xtr, Xte, ytr, yte = train_test_split(
        X, y, test_size=float(test_fraction), stratify=y, random_state=int(seed)
    )
    return Dataset(
        "digits",
        np.ascontiguousarray(Xtr / 16.0, dtype=np.float64),
        ytr.astype(np.int64),
        np.ascontiguousarray(Xte / 16.0, dtype=np.float64),
        yte.astype(np.int64),
        10,
        note=f"sklearn digits, pixels / 16, stratified split test_fraction={test_fraction}, seed={seed}",
    )


# --------------------------------------------------------------------------- synthetic


@DATASETS.register("synthetic", ranges={
    "n_samples": Range(lo=1, integer=True), "n_features": Range(lo=1, integer=True),
    "n_classes": Range(lo=2, integer=True), "n_test": Range(lo=1, integer=True),
    "separation": Range(lo=0), "seed": Range(lo=0, integer=True)},
    size=lambda p: (p.get("n_samples", 2000), p.get("n_test", 500), p.get("n_features", 20), p.get("n_classes", 4)))
def make_synthetic(
    *,
    n_samples: int = 2000,
    n_features: int = 20,
    n_classes: int = 4,
    n_test: int = 500,
    separation: float = 2.0,
    seed: int = 0,
) -> Dataset:
    """Gaussian class clusters: ``x = separation * u_y + N(0, I_p)``.

    The class centres ``u_c`` are random unit vectors; labels are balanced
    (``i mod C`` then shuffled). Everything is deterministic in ``seed``.
    """
    for k, v, lo in (("n_samples", n_samples, 1), ("n_features", n_features, 1),
                     ("n_classes", n_classes, 1), ("n_test", n_test, 0)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
            raise ValueError(f"{k} must be an integer >= {lo}, got {v!r}")
    if not separation >= 0:
        raise ValueError(f"separation must be >= 0, got {separation!r}")
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((n_classes, n_features))
    centres *= separation / np.maximum(np.linalg.norm(centres, axis=1, keepdims=True), 1e-300)

    def draw(n: int) -> tuple[np.ndarray, np.ndarray]:
        y = rng.permutation(np.arange(n, dtype=np.int64) % n_classes)
        return centres[y] + rng.standard_normal((n, n_features)), y

    Xtr, ytr = draw(int(n_samples))
    Xte, yte = draw(int(n_test))
    return Dataset(
        "synthetic", Xtr, ytr, Xte, yte, int(n_classes),
        note=f"Gaussian clusters, separation={separation}, seed={seed}",
    )


# --------------------------------------------------------------------------- COVTYPE

_COVTYPE_FILE = "covtype/covtype-rows1-15120.csv.gz"
_COVTYPE_COLUMNS = (
    ["Id", "Elevation", "Aspect", "Slope", "Horizontal_Distance_To_Hydrology",
     "Vertical_Distance_To_Hydrology", "Horizontal_Distance_To_Roadways", "Hillshade_9am",
     "Hillshade_Noon", "Hillshade_3pm", "Horizontal_Distance_To_Fire_Points"]
    + [f"Wilderness_Area{i}" for i in range(1, 5)]
    + [f"Soil_Type{i}" for i in range(1, 41)]
    + ["Cover_Type"]
)
_COVTYPE_N_TRAIN = 11340
_COVTYPE_N_ROWS = 15120
_COVTYPE_FULL_ROWS = 581012
_TEST_SETS = ("auto", "full", "validation")


def _check_covtype_header(header: str, rel: str) -> None:
    cols = [c.strip().strip('"') for c in header.strip().split(",")]
    if cols == _COVTYPE_COLUMNS:
        return
    if len(cols) != len(_COVTYPE_COLUMNS):
        what = f"{len(cols)} columns, expected {len(_COVTYPE_COLUMNS)} (Id, 54 features, Cover_Type)"
    else:
        i = next(i for i, (a, b) in enumerate(zip(cols, _COVTYPE_COLUMNS)) if a != b)
        what = f"column {i + 1} is {cols[i]!r}, expected {_COVTYPE_COLUMNS[i]!r}"
    raise DataError(
        f"data file {rel} does not have the Kaggle train.csv layout: header has {what}. "
        + _restore_hint(rel)
    )


@functools.lru_cache(maxsize=2)
def _covtype_rows(key: tuple) -> tuple[np.ndarray, np.ndarray]:
    rel = _COVTYPE_FILE
    (gz,) = _read_all_verified(Path(key[0]), [rel])
    try:
        text = gzip.decompress(gz).decode("ascii")
    except (OSError, EOFError, UnicodeDecodeError) as e:
        raise DataError(f"data file {rel} is not a gzipped ASCII CSV: {e}. " + _restore_hint(rel)) from e
    header, _, body = text.partition("\n")
    _check_covtype_header(header, rel)
    try:
        M = np.loadtxt(io.StringIO(body), delimiter=",", dtype=np.int64, ndmin=2)
    except ValueError as e:
        raise DataError(f"data file {rel} has malformed rows: {e}. " + _restore_hint(rel)) from e
    if M.shape != (_COVTYPE_N_ROWS, len(_COVTYPE_COLUMNS)):
        raise DataError(
            f"data file {rel} has {M.shape[0]} rows of {M.shape[1]} columns, expected "
            f"{_COVTYPE_N_ROWS} rows of {len(_COVTYPE_COLUMNS)}. " + _restore_hint(rel)
        )
    if not np.array_equal(M[:, 0], np.arange(1, _COVTYPE_N_ROWS + 1)) or not (
        (M[:, -1] >= 1).all() and (M[:, -1] <= 7).all()
    ):
        raise DataError(
            f"data file {rel}: Id must run 1..{_COVTYPE_N_ROWS} and Cover_Type be in 1..7. "
            + _restore_hint(rel)
        )
    X, y = M[:, 1:-1].astype(np.float64), M[:, -1] - 1
    _readonly(X, y)
    return X, y


def _sklearn_covtype_home() -> Path | None:
    """scikit-learn's data home if it holds a covertype cache (checked without creating
    directories or touching the network)."""
    home = Path(os.environ.get("SCIKIT_LEARN_DATA") or "~/scikit_learn_data").expanduser()
    return home if (home / "covertype").is_dir() else None


@functools.lru_cache(maxsize=1)
def _sklearn_covtype(home: Path) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import fetch_covtype

    X, y = fetch_covtype(data_home=str(home), download_if_missing=False, return_X_y=True)
    X, y = np.asarray(X, dtype=np.float64), np.asarray(y, dtype=np.int64) - 1
    if X.shape != (_COVTYPE_FULL_ROWS, 54) or y.min() < 0 or y.max() > 6:
        raise DataError(
            f"scikit-learn's covertype cache in {home / 'covertype'} has shape {X.shape}, "
            f"expected ({_COVTYPE_FULL_ROWS}, 54) with Cover_Type 1..7; delete it."
        )
    _readonly(X, y)
    return X, y


def _standardize(Xtr: np.ndarray, Xte: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mu = Xtr.mean(axis=0)
    sd = Xtr.std(axis=0)
    sd[sd == 0] = 1.0
    return (Xtr - mu) / sd, (Xte - mu) / sd


@DATASETS.register("covtype", size=lambda params: (
    _COVTYPE_N_TRAIN, _COVTYPE_FULL_ROWS - _COVTYPE_N_ROWS if params.get("test_set") == "full"
    else _COVTYPE_N_ROWS - _COVTYPE_N_TRAIN, 54, 7))
def load_covtype(
    *, data_dir: str | os.PathLike | None = None, test_set: str = "auto"
) -> Dataset:
    """Forest Covertype (54 features, 7 classes, Cover_Type 1..7 -> labels 0..6).

    Train = the canonical 11,340 training rows (rows 1-11,340, 1,620 per class) of
    ``<data_dir>/covtype/covtype-rows1-15120.csv.gz`` (Kaggle ``train.csv`` layout:
    header, Id, 54 features, Cover_Type; sha256 and columns checked). Features are
    standardized with the mean/std of the training rows (std 0 -> 1).

    ``test_set`` chooses the test rows:

    - ``"validation"``: the canonical validation rows 11,341-15,120 (540 per class);
    - ``"full"``: the canonical test set, the last 565,892 rows of the full UCI file, read
      from scikit-learn's ``fetch_covtype`` cache (never downloaded; ``DataError`` if the
      cache is absent) — train is then the first 11,340 rows of that file;
    - ``"auto"`` (default): ``"full"`` if that cache exists locally, else ``"validation"``.

    ``Dataset.note`` records which test set was used.
    """
    if test_set not in _TEST_SETS:
        raise ValueError(
            f"covtype test_set {test_set!r} is not valid; valid choices: {', '.join(_TEST_SETS)}"
        )
    home = _sklearn_covtype_home()
    if test_set == "full" and home is None:
        raise DataError(
            "covtype test_set='full' needs the full UCI file from scikit-learn's "
            "fetch_covtype cache, but there is no covertype/ directory in "
            f"{Path(os.environ.get('SCIKIT_LEARN_DATA') or '~/scikit_learn_data').expanduser()} "
            "($SCIKIT_LEARN_DATA or ~/scikit_learn_data). byzsim never downloads; run "
            "sklearn.datasets.fetch_covtype() yourself where network access is allowed, or "
            "use test_set='validation'."
        )
    if test_set != "validation" and home is not None:
        try:
            X, y = _sklearn_covtype(home)
        except OSError as e:
            if test_set == "full":
                raise DataError(
                    f"scikit-learn's covertype cache in {home / 'covertype'} is incomplete "
                    f"({e}); rerun sklearn.datasets.fetch_covtype() or use "
                    "test_set='validation'."
                ) from e
        else:
            Xtr, Xte = _standardize(X[:_COVTYPE_N_TRAIN], X[_COVTYPE_N_ROWS:])
            return Dataset(
                "covtype", Xtr, y[:_COVTYPE_N_TRAIN].copy(), Xte, y[_COVTYPE_N_ROWS:].copy(), 7,
                note=(
                    "train = canonical rows 1-11,340; test = canonical test rows "
                    "15,121-581,012 (565,892 rows) of the full UCI file from scikit-learn's "
                    "fetch_covtype cache; features standardized on train"
                ),
            )
    root, origin = _resolve_dir(data_dir)
    _check_present(root, origin, [_COVTYPE_FILE])
    X, y = _covtype_rows(_file_key(root, [_COVTYPE_FILE]))
    Xtr, Xte = _standardize(X[:_COVTYPE_N_TRAIN], X[_COVTYPE_N_TRAIN:])
    return Dataset(
        "covtype", Xtr, y[:_COVTYPE_N_TRAIN].copy(), Xte, y[_COVTYPE_N_TRAIN:].copy(), 7,
        note=(
            "train = canonical rows 1-11,340; test = canonical validation rows 11,341-15,120 "
            "(the full UCI file is not present); features standardized on train"
        ),
    )
