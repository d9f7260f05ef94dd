"""Plugins: a user's own components, visible to every byzsim command and worker.

A plugin is a Python module that registers components with byzsim's registries when it
is imported::

    # my_plugin.py
    from byzsim.aggregators import AGGREGATORS

    @AGGREGATORS.register("my_mean")
    def my_mean(x):
        return x.mean(axis=-2)

Plugins are named (all three ways combine; each module is loaded once):

* ``--plugin MODULE`` on ``byzsim run/sweep/figure/experiment/matrix/list``
  (repeatable; ``MODULE`` is an importable module name, or a path to a ``.py`` file);
* ``$BYZSIM_PLUGINS``: module names separated by ``os.pathsep`` or commas;
* installed packages that declare an entry point in the group ``byzsim.plugins``
  (``[options.entry_points] byzsim.plugins = mine = my_package.plugin``), loaded always.

A plugin is loaded before any config is validated, and again (once) in every worker
process before the run, for loky (``--jobs N``) and Dask (``--scheduler``) alike: each
task carries the plugins its config uses.  The names a plugin registered are found by
comparing the registries before and after its import; ``byzsim list`` marks them.

The store key of a run that uses a plugin's component includes the plugin's name, its
``__version__`` (if any) and the sha256 of its source, so editing a plugin reruns its
runs; a run that uses only built-in components keeps the key it has without plugins.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.metadata
import os
import sys
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

__all__ = [
    "ENV_VAR", "ENTRY_POINT_GROUP", "Plugin", "PluginError", "registries", "requested",
    "load_plugin", "load_plugins", "loaded", "used_plugins", "ensure_loaded", "plugin_in_traceback",
]

ENV_VAR = "BYZSIM_PLUGINS"
ENTRY_POINT_GROUP = "byzsim.plugins"


class PluginError(ValueError):
    """A plugin could not be loaded (not importable, failed on import, name taken)."""


@dataclass(frozen=True)
class Plugin:
    """A loaded plugin module.

    ``name``: the module name; ``root``: the directory that must be on ``sys.path`` to
    import it (``None`` when it is importable without); ``version``: its
    ``__version__`` or ``None``; ``sha256``: of its source (all ``.py`` files of a
    package); ``added``: ``{kind: names}`` it registered; ``origin``: how it was named.
    """

    name: str
    root: str | None
    version: str | None
    sha256: str
    added: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    origin: str = "--plugin"
    files: tuple[str, ...] = ()

    def ref(self) -> dict[str, Any]:
        """What the store key records: name, version and source hash."""
        return {"name": self.name, "version": self.version, "sha256": self.sha256}

    def task(self) -> tuple[str, str | None, str]:
        """What a worker task carries to load the same plugin: (name, root, sha256)."""
        return (self.name, self.root, self.sha256)

    def names(self) -> set[str]:
        return {n for names in self.added.values() for n in names}


_LOADED: dict[str, Plugin] = {}


def registries() -> dict[str, Any]:
    """``{kind: Registry}`` of every registry a plugin can add to (``aggregators``,
    ``attacks``, ``methods``, …), found as module-level registries of byzsim's modules."""
    from . import aggregators, attacks, config, data, models, partition, preaggregators
    from . import algorithms
    from .registry import Registry

    out: dict[str, Any] = {}
    for mod in (config, aggregators, preaggregators, attacks, partition, data, models, algorithms):
        for attr, obj in vars(mod).items():
            if isinstance(obj, Registry) and attr.isupper():
                out.setdefault(attr.lower(), obj)
    return out


def _split(text: str) -> list[str]:
    return [p.strip() for chunk in text.split(os.pathsep) for p in chunk.split(",") if p.strip()]


def requested(cli: Sequence[str] = (), *, env: bool = True, entry_points: bool = True) -> list[tuple[str, str]]:
    """``[(module or path, origin)]``: ``--plugin`` values, then ``$BYZSIM_PLUGINS``, then
    the entry points of the group ``byzsim.plugins`` (duplicates dropped)."""
    out = [(p, "--plugin") for p in cli]
    if env:
        out += [(p, f"${ENV_VAR}") for p in _split(os.environ.get(ENV_VAR, ""))]
    if entry_points:
        for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
            dist = getattr(getattr(ep, "dist", None), "name", None)
            out.append((ep.value.split(":")[0].strip(), f"entry point {ep.name!r}" + (f" of {dist}" if dist else "")))
    seen: set[str] = set()
    return [(p, o) for p, o in out if not (p in seen or seen.add(p))]


def _source_files(module) -> tuple[Path, ...]:
    f = getattr(module, "__file__", None)
    if not f:
        return ()
    f = Path(f)
    if f.name == "__init__.py":
        return tuple(sorted(f.parent.rglob("*.py")))
    return (f,)


def _sha256(files: Iterable[Path]) -> str:
    h = hashlib.sha256()
    for f in files:
        h.update(f.name.encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()


def _resolve(spec: str) -> tuple[str, str | None]:
    """A module name or a ``.py`` path -> (module name, directory to put on sys.path)."""
    if spec.endswith(".py") or os.sep in spec or (os.altsep and os.altsep in spec):
        path = Path(spec).expanduser().resolve()
        if not path.is_file():
            raise PluginError(f"plugin {spec!r}: no such file")
        return path.stem, str(path.parent)
    return spec, None


def _add_path(root: str | None) -> None:
    if root and root not in sys.path:
        sys.path.append(root)


def _rollback(regs: Mapping[str, Any], before: Mapping[str, set]) -> None:
    """Remove what a plugin registered before it failed (a retry would find them taken)."""
    for kind, reg in regs.items():
        items = getattr(reg, "_items", None)
        if isinstance(items, dict):
            for n in set(items) - before[kind]:
                items.pop(n, None)


def load_plugin(spec: str, origin: str = "--plugin", root: str | None = None) -> Plugin:
    """Import one plugin (once per process) and record what it registered.

    Raises :class:`PluginError` (one line naming the plugin) when the module cannot be
    imported or its import fails, e.g. because it registers a name already taken."""
    name, file_root = _resolve(spec)
    if name in _LOADED:
        return _LOADED[name]
    _add_path(root or file_root)
    if root is None and file_root is None and os.getcwd() not in sys.path:
        sys.path.append(os.getcwd())  # like `python -m`: a module in the working directory
    regs = registries()
    before = {k: set(r.names()) for k, r in regs.items()}
    imported_before = name in sys.modules
    try:
        module = importlib.import_module(name)
    except ImportError as e:
        _rollback(regs, before)
        raise PluginError(f"plugin {name!r} ({origin}) cannot be imported: {type(e).__name__}: {e}") from None
    except Exception as e:  # noqa: BLE001 - any failure on import is the plugin's
        _rollback(regs, before)
        raise PluginError(f"plugin {name!r} ({origin}) failed on import: {type(e).__name__}: {e}") from None
    if file_root is not None and Path(getattr(module, "__file__", "") or "").resolve() != Path(spec).resolve():
        raise PluginError(f"plugin {spec!r} ({origin}): the module name {name!r} is taken by "
                          f"{getattr(module, '__file__', None) or 'a built-in module'}; rename the file")
    if imported_before:  # imported earlier in this process: its components by module
        added = {k: tuple(n for n in r.names() if _defined_in(r[n], name)) for k, r in regs.items()}
    else:
        added = {k: tuple(sorted(set(r.names()) - before[k])) for k, r in regs.items()}
    files = _source_files(module)
    plugin = Plugin(name=name, root=root or file_root or _import_root(module, name), version=_version(module),
                    sha256=_sha256(files), added={k: v for k, v in added.items() if v}, origin=origin,
                    files=tuple(map(str, files)))
    _LOADED[name] = plugin
    return plugin


def _import_root(module, name: str) -> str | None:
    """The directory holding the top-level package of ``name`` (``a.b`` in ``root/a/b.py``
    or ``root/a/b/__init__.py`` -> ``root``): a worker puts it on ``sys.path``."""
    f = getattr(module, "__file__", None)
    if not f:
        return None
    f = Path(f).resolve()
    return str(f.parents[name.count(".") + (f.name == "__init__.py")])


def _defined_in(obj: Any, module: str) -> bool:
    mod = getattr(obj, "__module__", None) or getattr(getattr(obj, "func", None), "__module__", None)
    return isinstance(mod, str) and (mod == module or mod.startswith(module + "."))


def _version(module) -> str | None:
    v = getattr(module, "__version__", None)
    return None if v is None else str(v)


def load_plugins(cli: Sequence[str] = (), *, env: bool = True, entry_points: bool = True) -> list[Plugin]:
    """Load the plugins named by ``--plugin`` values, ``$BYZSIM_PLUGINS`` and the entry
    points (see :func:`requested`); returns them in that order."""
    return [load_plugin(spec, origin) for spec, origin in requested(cli, env=env, entry_points=entry_points)]


def loaded() -> list[Plugin]:
    """The plugins loaded in this process, in load order."""
    return list(_LOADED.values())


def _strings(obj: Any) -> Iterable[str]:
    if isinstance(obj, str):
        yield obj
    elif isinstance(obj, Mapping):
        for v in obj.values():
            yield from _strings(v)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            yield from _strings(v)


def used_plugins(config_dict: Mapping[str, Any]) -> tuple[Plugin, ...]:
    """The loaded plugins whose components a config names (any string value in the
    config, nested parameters included, equal to a name the plugin registered)."""
    if not _LOADED:
        return ()
    norm = lambda s: s.replace("-", "_").lower()  # noqa: E731 - hyphen and underscore spellings
    names = {norm(s) for s in _strings(config_dict)}
    return tuple(p for p in _LOADED.values() if any(norm(n) in names for n in p.names()))


def ensure_loaded(tasks: Sequence[tuple[str, str | None, str]]) -> None:
    """In a worker: load the plugins of a task (``Plugin.task()`` tuples), once per
    process, and check that each one's source is the one the run's key was made with."""
    for name, root, sha in tasks:
        try:
            p = load_plugin(name, "worker", root=root)
        except PluginError as e:
            raise PluginError(f"{e} (in a worker process; is it importable there?)") from None
        if p.sha256 != sha:
            raise PluginError(f"plugin {name!r}: its source in the worker differs from the one the run's "
                              "key was made with (edited during the sweep?); run the command again")


def plugin_in_traceback(tb, plugins: Sequence[Plugin] | None = None) -> str | None:
    """The name of the plugin whose source file holds the innermost frame of ``tb`` that
    belongs to a plugin, or ``None``."""
    plugins = loaded() if plugins is None else plugins
    files = {str(Path(f).resolve()): p.name for p in plugins for f in p.files}
    hit = None
    for frame in traceback.extract_tb(tb):
        name = files.get(str(Path(frame.filename).resolve()))
        if name is not None:
            hit = name
    return hit
