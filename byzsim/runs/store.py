"""On-disk result store: one directory per run, keyed by the resolved config.

Layout (``root`` defaults to ``results/store``)::

    root/STORE.json                   {"byzsim_store_format": 1}  (checked on open)
    root/runs/<key>/config.json       resolved config + provenance (version, numpy, timing, diverged)
    root/runs/<key>/metrics.csv       round,test_accuracy,train_loss,distance (floats as repr)
    root/runs/<key>/model.npy         the final server model (d,), only when models were kept
    root/runs/<key>/COMPLETE          completion marker, written last: the key, then
                                      "sha256 <hex> <file>" of metrics.csv, config.json
                                      (and model.npy when there is one)
    root/failed/<key>.json            the last failure of a run (error + traceback); not a result
    root/quarantine/<key>-<time>/     a run that failed its check, moved aside (never read)
    root/claims/<key>                 a run being simulated by a live sweep: {pid, host, started}
    root/sweeps/<name>.json           manifest of a sweep: the keys of its runs (+ labels)

``key = sha256(canonical JSON of {"store_format": FORMAT_VERSION, "config": Config.to_dict()})``
with float fields normalised (``lr = 1`` and ``lr = 1.0`` are the same run).  Provenance
(package version, timing, host) is stored but is not part of the key.

Guarantees (see ``docs/reliability.md``):

* A run is *finished* iff ``runs/<key>/COMPLETE`` exists.  A run directory is built in a
  temporary sibling directory (``runs/.tmp-…``), every file is fsync'ed, then the
  directory is renamed into place (atomic on POSIX) and the parent fsync'ed.  A crash
  at any point leaves either no ``runs/<key>`` or a complete one; temporary directories
  are never read and are cleaned up by :meth:`Store.clean_stale`.
* Only successful runs are written with :meth:`Store.put`; a failed run is recorded in
  ``failed/`` and never replaces a stored result.
* A store written by another format version is refused with :class:`StoreFormatError`.
* Every read of a finished run checks it (:meth:`Store.problem`): the sha256 of
  ``metrics.csv``, ``config.json`` and ``model.npy`` (if any) against those in
  ``COMPLETE`` (runs stored before the checksums existed: both files must parse), the
  key in ``config.json``, the metrics table, and that ``model.npy`` is a 1-D array.  A run that fails is reported in one line and moved to
  ``quarantine/``; it then counts as not run, so the next sweep simulates it again.
"""

from __future__ import annotations

import csv
import dataclasses
import datetime as _dt
import errno
import functools
import hashlib
import io
import json
import math
import os
import platform
import shutil
import socket
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np

from ..config import KEY_NEUTRAL_DEFAULTS, Config, make_config
from ..simulate import METRICS

__all__ = [
    "FORMAT_VERSION",
    "DEFAULT_STORE",
    "StoreError",
    "StoreFormatError",
    "StoreWriteError",
    "Store",
    "StoredRun",
    "default_store_dir",
    "canonical_config",
    "canonical_json",
    "config_key",
    "config_from_dict",
    "atomic_write_text",
    "format_metrics_csv",
    "model_bytes",
    "parse_model",
    "parse_metrics_csv",
]

#: Bumped whenever the layout, the key derivation or the file formats change (the
#: columns of ``metrics.csv`` are :data:`byzsim.simulate.METRICS`).
FORMAT_VERSION = 1
DEFAULT_STORE = "results/store"
_MARKER = "COMPLETE"
_CHECKED = ("metrics.csv", "config.json")  # files whose sha256 COMPLETE records
_MODEL = "model.npy"  # the final server model: optional, its sha256 in COMPLETE when present
_TMP_PREFIX = ".tmp-"
_OLD_PREFIX = ".old-"


class StoreError(RuntimeError):
    """A problem with the result store (unreadable, inconsistent)."""


class StoreFormatError(StoreError):
    """The store was written by another store format version."""


class StoreWriteError(StoreError):
    """The store could not be written (full file system, read-only, permission): names
    the store and the cause.  Whatever was stored before is intact."""

    def __init__(self, root: Path, error: OSError):
        cause = error.strerror or str(error)
        code = errno.errorcode.get(error.errno, "") if error.errno else ""
        where = f" ({error.filename})" if error.filename else ""
        super().__init__(f"cannot write to the result store {root}: {cause}{' [' + code + ']' if code else ''}"
                         f"{where}; the runs stored before are intact")
        self.root, self.error = root, error


def _writes(method):
    """A :class:`Store` method that writes: an ``OSError`` becomes a :class:`StoreWriteError`."""
    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except StoreWriteError:
            raise
        except OSError as e:
            raise StoreWriteError(self.root, e) from None
    return wrapper


def default_store_dir() -> Path:
    """``$BYZSIM_STORE`` if set, else ``results/store`` (relative to the working directory)."""
    return Path(os.environ.get("BYZSIM_STORE") or DEFAULT_STORE)


# --------------------------------------------------------------------------- keys

_FLOAT_FIELDS = tuple(f.name for f in dataclasses.fields(Config) if f.type in ("float", float))


def _jsonable(v: Any) -> Any:
    if isinstance(v, Mapping):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (float, np.floating)):
        v = float(v)
        if not math.isfinite(v):
            return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf")
        return v
    return v


def canonical_config(cfg: Config) -> dict[str, Any]:
    """``cfg.to_dict()`` made canonical: JSON types only, float fields as floats, and
    the fields added after store format 1 left out while they hold their neutral value
    (:data:`byzsim.config.KEY_NEUTRAL_DEFAULTS`), so a new field keeps every old key."""
    d = _jsonable(cfg.to_dict())
    for k in _FLOAT_FIELDS:
        if isinstance(d.get(k), int) and not isinstance(d.get(k), bool):
            d[k] = float(d[k])
    for k, neutral in KEY_NEUTRAL_DEFAULTS.items():
        if k in d and d[k] == _jsonable(neutral):
            del d[k]
    return d


def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def config_key(cfg: Config, plugins: Sequence[Mapping[str, Any]] = ()) -> str:
    """The store key of a run: sha256 hex of the canonical config and the store format,
    and of the plugins whose components the run uses (``Plugin.ref()``: name, version,
    source sha256), when there are any; without plugins the key is as it always was."""
    obj: dict[str, Any] = {"store_format": FORMAT_VERSION, "config": canonical_config(cfg)}
    if plugins:
        obj["plugins"] = sorted((dict(p) for p in plugins), key=lambda p: p["name"])
    return hashlib.sha256(canonical_json(obj).encode("utf-8")).hexdigest()


def config_from_dict(d: Mapping[str, Any]) -> Config:
    """Rebuild a :class:`Config` from a stored (canonical) dict."""
    import warnings

    from ..config import TheoryWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TheoryWarning)
        return make_config(**dict(d))


# --------------------------------------------------------------------------- files


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _write_file(path: Path, data: str | bytes) -> None:
    """Write and fsync one file."""
    mode = "wb" if isinstance(data, bytes) else "w"
    kw = {} if isinstance(data, bytes) else {"encoding": "utf-8", "newline": ""}
    with open(path, mode, **kw) as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``path`` via a temporary file in the same directory and ``os.replace``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f"{_TMP_PREFIX}{path.name}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        _write_file(tmp, text)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def format_metrics_csv(columns: Mapping[str, Any]) -> str:
    """Metrics columns -> CSV text.  Deterministic: ints as ints, floats as ``repr``
    (shortest round-trip form), so equal arrays give byte-identical files."""
    cols = [np.asarray(columns[k]) for k in METRICS]
    n = len(cols[0])
    if any(len(c) != n for c in cols):
        raise ValueError("metrics columns have different lengths")
    out = io.StringIO()
    out.write(",".join(METRICS) + "\n")
    rounds = [int(r) for r in cols[0].tolist()]
    rest = [[repr(float(v)) for v in c.tolist()] for c in cols[1:]]
    for i in range(n):
        out.write(",".join([str(rounds[i])] + [c[i] for c in rest]) + "\n")
    return out.getvalue()


def parse_metrics_csv(text: str) -> dict[str, np.ndarray]:
    """CSV text of :func:`format_metrics_csv` -> columns; :class:`StoreError` naming the
    line when the text is not such a table (truncated, garbled)."""
    rows = list(csv.reader(io.StringIO(text)))
    if not rows or tuple(rows[0]) != METRICS:
        raise StoreError(f"metrics.csv: unexpected header {rows[0] if rows else None!r}")
    body = rows[1:]
    if not body:
        raise StoreError("metrics.csv: no rows (a run has at least the evaluation at round 0)")
    values = []
    for line, r in enumerate(body, 2):
        try:
            if len(r) != len(METRICS):
                raise ValueError(f"{len(r)} fields, expected {len(METRICS)}")
            values.append((int(r[0]), *map(float, r[1:])))
        except ValueError as e:
            raise StoreError(f"metrics.csv line {line}: {e}") from None
    cols = list(zip(*values))
    out = {"round": np.array(cols[0], dtype=np.int64)}
    for j, k in enumerate(METRICS[1:], 1):
        out[k] = np.array(cols[j], dtype=np.float64)
    return out


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _marker_text(key: str, files: Mapping[str, bytes]) -> str:
    """``COMPLETE``: the key, then ``sha256 <hex> <name>`` per checked file (and the
    model, when the run has one)."""
    names = _CHECKED + ((_MODEL,) if _MODEL in files else ())
    return f"{key}\n" + "".join(f"sha256 {_sha256(files[n])} {n}\n" for n in names)


def model_bytes(model: Any) -> bytes:
    """A final server model ``(d,)`` as the bytes of ``model.npy`` (``np.save``, no
    pickle: equal arrays give equal bytes)."""
    a = np.asarray(model)
    if a.ndim != 1:
        raise ValueError(f"invalid model of shape {a.shape}: expected the server model (d,)")
    buf = io.BytesIO()
    np.save(buf, a, allow_pickle=False)
    return buf.getvalue()


def parse_model(data: bytes) -> np.ndarray:
    """The bytes of ``model.npy`` -> the model ``(d,)``; :class:`StoreError` when they are
    not a 1-D ``.npy`` array."""
    try:
        a = np.load(io.BytesIO(data), allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise StoreError(f"{_MODEL} does not parse ({e})") from None
    if not isinstance(a, np.ndarray) or a.ndim != 1:
        raise StoreError(f"{_MODEL} holds shape {getattr(a, 'shape', None)}, expected a model (d,)")
    return a


def _marker_sums(text: str) -> dict[str, str]:
    """The ``{file: sha256}`` recorded in a ``COMPLETE`` text (empty for runs stored
    before checksums were recorded, whose marker holds only the key)."""
    out = {}
    for line in text.splitlines()[1:]:
        parts = line.split()
        if len(parts) == 3 and parts[0] == "sha256":
            out[parts[2]] = parts[1]
    return out


def timestamp() -> str:
    """Now, in UTC, ISO 8601 to the millisecond: the store's one time format
    (``stored_at``, ``failed_at``), so that two stamps compare as strings."""
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="milliseconds")


# --------------------------------------------------------------------------- store


@dataclass(frozen=True)
class StoredRun:
    """A finished run read back from the store."""

    key: str
    path: Path
    meta: dict  # the whole config.json

    @property
    def config_dict(self) -> dict:
        return self.meta["config"]

    @property
    def config(self) -> Config:
        return config_from_dict(self.meta["config"])

    @property
    def diverged(self) -> bool:
        return bool(self.meta.get("diverged", False))

    @property
    def diverged_round(self) -> int | None:
        return self.meta.get("diverged_round")

    def metrics_text(self) -> str:
        return (self.path / "metrics.csv").read_text(encoding="utf-8")

    def columns(self) -> dict[str, np.ndarray]:
        return parse_metrics_csv(self.metrics_text())

    @property
    def has_model(self) -> bool:
        """True iff the run was stored with its final server model (``model.npy``)."""
        return (self.path / _MODEL).is_file()

    def model(self) -> np.ndarray | None:
        """The final server model ``(d,)`` (:attr:`byzsim.simulate.RunResult.model`), or
        ``None`` when the run was stored without it."""
        try:
            data = (self.path / _MODEL).read_bytes()
        except FileNotFoundError:
            return None
        return parse_model(data)


class Store:
    """A directory of finished runs (see the module docstring for the layout).

    ``Store(root)`` creates the store if the directory is missing or empty, and raises
    :class:`StoreFormatError` if it was written by another format version, or
    :class:`StoreError` if the directory is something else.
    """

    def __init__(self, root: str | os.PathLike | None = None, *, create: bool = True):
        self.root = Path(root) if root is not None else default_store_dir()
        self._check_or_create(create)
        self.runs_dir = self.root / "runs"
        self.failed_dir = self.root / "failed"
        self.sweeps_dir = self.root / "sweeps"
        self.quarantine_dir = self.root / "quarantine"
        self.claims_dir = self.root / "claims"
        self._verified: set[str] = set()  # keys checked by this process
        #: called with one line when a run fails its check and is quarantined
        self.report: Callable[[str], None] = lambda line: print(f"byzsim: {line}", file=sys.stderr, flush=True)

    # -- format ---------------------------------------------------------------
    @_writes
    def _check_or_create(self, create: bool) -> None:
        header = self.root / "STORE.json"
        if header.is_file():
            try:
                fmt = json.loads(header.read_text(encoding="utf-8")).get("byzsim_store_format")
            except (OSError, ValueError, AttributeError) as e:
                raise StoreError(f"unreadable store header {header}: {e}") from None
            if fmt != FORMAT_VERSION:
                raise StoreFormatError(
                    f"the result store {self.root} was written with store format version {fmt!r}; "
                    f"this byzsim (version {_version()}) reads format {FORMAT_VERSION}. Use another "
                    f"store directory (--store DIR) or move this one away; nothing was changed."
                )
            return
        if self.root.exists() and not self.root.is_dir():
            raise StoreError(f"result store path {self.root} exists and is not a directory")
        if self.root.is_dir() and any(p.name != ".gitkeep" for p in self.root.iterdir()):
            raise StoreError(
                f"{self.root} is not empty and has no STORE.json: not a byzsim result store "
                "(refusing to write into it; pass another --store DIR)"
            )
        if not create:
            raise StoreError(f"no result store at {self.root}")
        self.root.mkdir(parents=True, exist_ok=True)
        atomic_write_text(header, canonical_json({"byzsim_store_format": FORMAT_VERSION}) + "\n")

    # -- reading --------------------------------------------------------------
    def run_dir(self, key: str) -> Path:
        return self.runs_dir / key

    def has(self, key: str) -> bool:
        """True iff the run ``key`` is finished (its completion marker exists) and passes
        its check (:meth:`problem`); a run that fails is quarantined (:meth:`quarantine`)."""
        if not (self.runs_dir / key / _MARKER).is_file():
            return False
        if key in self._verified:
            return True
        problem = self.problem(key)
        if problem is None:
            self._verified.add(key)
            return True
        self.quarantine(key, problem)
        return False

    def problem(self, key: str) -> str | None:
        """What is wrong with the finished run ``key`` (``None`` if nothing is): a
        checksum in ``COMPLETE`` that does not match its file, a ``config.json`` that
        does not parse or names another key or format, a ``metrics.csv`` that is not a
        metrics table.  Reads only; see :meth:`has` for the quarantine."""
        d = self.runs_dir / key
        try:
            sums = _marker_sums((d / _MARKER).read_text(encoding="utf-8", errors="replace"))
            data = {n: (d / n).read_bytes() for n in _CHECKED}
            if _MODEL in sums or (d / _MODEL).exists():
                data[_MODEL] = (d / _MODEL).read_bytes()
        except OSError as e:
            return f"unreadable ({e.strerror or e}: {Path(e.filename or d).name})"
        for n, want in sums.items():
            if n in data and _sha256(data[n]) != want:
                return f"{n} does not match its sha256 in {_MARKER} (changed or truncated)"
        if _MODEL in data and _MODEL not in sums:
            return f"{_MODEL} has no sha256 in {_MARKER} (not written with this run)"
        try:
            meta = json.loads(data["config.json"].decode("utf-8"))
            if not isinstance(meta, dict) or not isinstance(meta.get("config"), dict):
                raise ValueError("no config table")
        except ValueError as e:
            return f"config.json does not parse ({e})"
        if meta.get("store_format") != FORMAT_VERSION:
            return f"config.json has store format {meta.get('store_format')!r}, expected {FORMAT_VERSION}"
        if meta.get("key", key) != key:
            return f"config.json names the key {str(meta.get('key'))[:12]}…, not its directory's"
        try:
            parse_metrics_csv(data["metrics.csv"].decode("utf-8"))
        except (StoreError, UnicodeDecodeError) as e:
            return str(e)
        if _MODEL in data:
            try:
                parse_model(data[_MODEL])
            except StoreError as e:
                return str(e)
        return None

    def has_model(self, key: str) -> bool:
        """True iff the run ``key`` is finished, passes its check and has its final
        server model (``model.npy``)."""
        return self.has(key) and (self.runs_dir / key / _MODEL).is_file()

    def complete(self, key: str, *, model: bool = False) -> bool:
        """True iff the run ``key`` is stored with what is asked: finished (:meth:`has`)
        and, with ``model``, with its final server model (:meth:`has_model`)."""
        return self.has_model(key) if model else self.has(key)

    def quarantine(self, key: str, reason: str) -> Path | None:
        """Move the run ``key`` to ``quarantine/<key>-<time>`` (kept for inspection, never
        read again) and report it in one line; ``None`` if it could not be moved (it
        then still counts as not run in this process)."""
        self._verified.discard(key)
        dest = self.quarantine_dir / f"{key}-{_dt.datetime.now(_dt.timezone.utc):%Y%m%dT%H%M%S%fZ}"
        try:
            self.quarantine_dir.mkdir(parents=True, exist_ok=True)
            os.rename(self.runs_dir / key, dest)
            where = f"moved to {dest}; the next sweep runs it again"
        except FileNotFoundError:
            return None  # another process moved it first
        except OSError as e:
            dest, where = None, f"could not move it to {self.quarantine_dir} ({e.strerror or e}); treated as not run"
        self.report(f"stored run {key[:12]} in {self.root} failed its check: {reason}; {where}")
        return dest

    def verify(self) -> list[tuple[str, str]]:
        """``(key, problem)`` of every finished run that fails :meth:`problem` (reads only)."""
        return [(k, p) for k in self.keys() if (p := self.problem(k)) is not None]

    def get(self, key: str) -> StoredRun | None:
        """The finished run ``key`` if it passes its check, else ``None`` (also for an
        incomplete directory; a run that fails is quarantined, see :meth:`has`)."""
        if not self.has(key):
            return None
        d = self.runs_dir / key
        try:
            meta = json.loads((d / "config.json").read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:  # changed since it was checked
            self.quarantine(key, f"config.json unreadable ({e})")
            return None
        return StoredRun(key, d, meta)

    def __contains__(self, key: str) -> bool:
        return self.has(key)

    def keys(self) -> list[str]:
        """Keys of all finished runs."""
        if not self.runs_dir.is_dir():
            return []
        return sorted(p.name for p in self.runs_dir.iterdir()
                      if not p.name.startswith(".") and (p / _MARKER).is_file())

    def __iter__(self) -> Iterator[StoredRun]:
        for k in self.keys():
            r = self.get(k)
            if r is not None:
                yield r

    # -- writing --------------------------------------------------------------
    @_writes
    def put(
        self,
        cfg: Config,
        columns: Mapping[str, Any],
        *,
        diverged: bool = False,
        diverged_round: int | None = None,
        seconds: float | None = None,
        extra: Mapping[str, Any] | None = None,
        force: bool = False,
        plugins: Sequence[Mapping[str, Any]] = (),
        model: Any = None,
    ) -> Path:
        """Store a *successful* run atomically and return its directory.

        If the run is already stored, the existing result is kept (it is the same
        config and the simulator is deterministic) unless ``force``, in which case the
        new directory atomically takes its place.  ``plugins``: the ``Plugin.ref()`` of
        the plugins the run uses (part of the key, recorded in ``config.json``).
        ``model``: the final server model ``(d,)``, written as ``model.npy`` (checksummed
        in ``COMPLETE``; not part of the key); a stored run without a model is then
        replaced as with ``force``.
        """
        key = config_key(cfg, plugins)
        final = self.runs_dir / key
        force = force or (model is not None and not self.has_model(key))
        if self.has(key) and not force:
            return final
        self.runs_dir.mkdir(parents=True, exist_ok=True)
        meta = {
            "store_format": FORMAT_VERSION,
            "key": key,
            "config": canonical_config(cfg),
            "seed": cfg.seed,
            "diverged": bool(diverged),
            "diverged_round": None if diverged_round is None else int(diverged_round),
            "seconds": None if seconds is None else float(seconds),
            "byzsim_version": _version(),
            "numpy_version": np.__version__,
            "python_version": platform.python_version(),
            "host": socket.gethostname(),
            "stored_at": timestamp(),
            **({"plugins": _jsonable(list(plugins))} if plugins else {}),
            **_jsonable(dict(extra or {})),
        }
        files = {"metrics.csv": format_metrics_csv(columns).encode("utf-8"),
                 "config.json": (json.dumps(meta, indent=2, sort_keys=True, allow_nan=False) + "\n").encode("utf-8")}
        if model is not None:
            files[_MODEL] = model_bytes(model)
        tmp = self.runs_dir / f"{_TMP_PREFIX}{key}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        tmp.mkdir()
        try:
            for name in files:
                _write_file(tmp / name, files[name])
            _write_file(tmp / _MARKER, _marker_text(key, files))
            _fsync_dir(tmp)
            self._install(tmp, final, force)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        _fsync_dir(self.runs_dir)
        self._verified.discard(key)
        self.clear_failure(key)
        return final

    def _install(self, tmp: Path, final: Path, force: bool) -> None:
        try:
            os.rename(tmp, final)
            return
        except OSError:
            if not final.exists():
                raise
        # the destination exists: a finished run (another writer got there first, or
        # --force), or a leftover directory without its marker (never a result)
        if (final / _MARKER).is_file() and not force:
            shutil.rmtree(tmp, ignore_errors=True)
            return
        old = final.parent / f"{_OLD_PREFIX}{final.name}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        os.rename(final, old)
        try:
            os.rename(tmp, final)
        except BaseException:
            if not final.exists():
                os.rename(old, final)  # put the previous result back
            raise
        shutil.rmtree(old, ignore_errors=True)

    # -- failures -------------------------------------------------------------
    @_writes
    def record_failure(self, cfg: Config, error: str, traceback: str = "",
                       plugins: Sequence[Mapping[str, Any]] = ()) -> Path:
        """Record that run ``cfg`` raised (it stays unfinished and will be retried)."""
        key = config_key(cfg, plugins)
        path = self.failed_dir / f"{key}.json"
        atomic_write_text(path, json.dumps({
            "store_format": FORMAT_VERSION, "key": key, "config": canonical_config(cfg),
            "error": error, "traceback": traceback, "byzsim_version": _version(),
            "failed_at": timestamp(), "host": socket.gethostname(),
        }, indent=2, sort_keys=True) + "\n")
        return path

    def failure(self, key: str) -> dict | None:
        path = self.failed_dir / f"{key}.json"
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None

    def clear_failure(self, key: str) -> None:
        (self.failed_dir / f"{key}.json").unlink(missing_ok=True)

    # -- sweeps ---------------------------------------------------------------
    @_writes
    def write_sweep(self, name: str, manifest: Mapping[str, Any]) -> Path:
        _check_name(name)
        path = self.sweeps_dir / f"{name}.json"
        atomic_write_text(path, json.dumps({"store_format": FORMAT_VERSION, "name": name, **manifest},
                                           indent=2, sort_keys=False, default=str) + "\n")
        return path

    def read_sweep(self, name: str) -> dict:
        path = self.sweeps_dir / f"{name}.json"
        if not path.is_file():
            known = ", ".join(self.sweeps()) or "(none)"
            raise StoreError(f"no sweep named {name!r} in {self.root}; stored sweeps: {known}")
        try:
            m = json.loads(path.read_text(encoding="utf-8"))
            if not isinstance(m, dict) or not isinstance(m.get("runs"), list) or not all(
                    isinstance(r, dict) and isinstance(r.get("key"), str) for r in m["runs"]):
                raise ValueError("expected a table with a list of runs, each with a key")
        except (OSError, ValueError) as e:
            raise StoreError(f"the sweep manifest {path} is unreadable ({e}); rerun the sweep to "
                             "write it again (its runs stay stored)") from None
        return m

    def sweeps(self) -> list[str]:
        """Names of the stored sweep manifests, oldest first."""
        if not self.sweeps_dir.is_dir():
            return []
        files = [p for p in self.sweeps_dir.glob("*.json") if not p.name.startswith(".")]
        return [p.stem for p in sorted(files, key=lambda p: (p.stat().st_mtime_ns, p.name))]

    # -- claims ---------------------------------------------------------------
    #: a claim of another host is stale after this many seconds (its owner cannot be
    #: checked from here); generous: longer than any run
    CLAIM_TIMEOUT = 24 * 3600.0

    @_writes
    def claim(self, key: str) -> bool:
        """Claim the run ``key`` for this process before simulating it: create
        ``claims/<key>`` exclusively (``O_CREAT | O_EXCL``) holding the owner's pid, host
        and start time.  ``False`` if a live owner holds it (see :meth:`claim_owner`); a
        stale claim (its pid gone from this host, or older than :attr:`CLAIM_TIMEOUT`
        on another host) is released first."""
        self.claims_dir.mkdir(parents=True, exist_ok=True)
        path = self.claims_dir / key
        body = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()}).encode()
        for _ in range(2):
            try:
                fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                if self.claim_owner(key) is not None:
                    return False
                self._release_stale(path)
                continue
            try:
                os.write(fd, body)
                os.fsync(fd)
            finally:
                os.close(fd)
            return True
        return False

    def claim_owner(self, key: str) -> dict | None:
        """The live owner ``{pid, host, started}`` of the claim of ``key``, or ``None``
        (no claim, or a stale one).  A claim being written (empty for a moment) is live."""
        path = self.claims_dir / key
        try:
            text = path.read_text(encoding="utf-8")
            age = time.time() - path.stat().st_mtime
        except OSError:
            return None
        try:
            owner = json.loads(text)
            pid, host = int(owner["pid"]), str(owner["host"])
        except (ValueError, KeyError, TypeError):
            return {"pid": None, "host": None, "started": None} if age < 10 else None
        if host == socket.gethostname():
            return owner if _alive(pid) else None
        return owner if age < self.CLAIM_TIMEOUT else None

    def _release_stale(self, path: Path) -> None:
        """Remove a stale claim; renaming it first makes one remover win a race."""
        aside = path.with_name(f"{_TMP_PREFIX}{path.name}-{os.getpid()}-{uuid.uuid4().hex[:8]}")
        try:
            os.rename(path, aside)
            aside.unlink()
        except FileNotFoundError:
            pass

    def release(self, key: str) -> None:
        """Remove this process's claim of ``key`` (another owner's claim is left alone)."""
        path = self.claims_dir / key
        try:
            owner = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return
        if owner.get("pid") == os.getpid() and owner.get("host") == socket.gethostname():
            path.unlink(missing_ok=True)

    # -- housekeeping ---------------------------------------------------------
    @_writes
    def clean_stale(self, min_age: float = 60.0) -> list[Path]:
        """Remove temporary directories left by writers that no longer run (their pid is
        gone from this host and they are older than ``min_age`` seconds, which also
        spares a writer on another host sharing the store).  Restores a result whose
        ``--force`` replacement was interrupted."""
        removed: list[Path] = []
        now = time.time()
        for parent in (self.runs_dir, self.failed_dir, self.sweeps_dir, self.claims_dir, self.root):
            if not parent.is_dir():
                continue
            for p in parent.iterdir():
                if not p.name.startswith((_TMP_PREFIX, _OLD_PREFIX)):
                    continue
                pid = _pid_of(p.name)
                if pid is not None and _alive(pid):
                    continue
                try:
                    if now - p.stat().st_mtime < min_age:
                        continue
                except FileNotFoundError:
                    continue
                if p.name.startswith(_OLD_PREFIX):
                    key = p.name[len(_OLD_PREFIX):].split("-")[0]
                    if not (parent / key).exists():
                        os.rename(p, parent / key)  # an interrupted --force replacement
                        continue
                shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
                removed.append(p)
        return removed


def _pid_of(name: str) -> int | None:
    parts = name.split("-")
    try:
        return int(parts[-2])
    except (IndexError, ValueError):
        return None


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _check_name(name: str) -> None:
    if not name or "/" in name or "\\" in name or name.startswith(".") or len(name) > 200:
        raise ValueError(f"invalid sweep name {name!r}: use letters, digits, '-', '_', '.' (not leading)")


def _version() -> str:
    from .. import __version__

    return __version__
