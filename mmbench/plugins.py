"""One registry type for every kind of part mmbench looks up by name: models, metrics, suites, samplers, commands.

A :class:`Registry` maps names to entries whose target is an object or a lazy ``"package.module:attr"`` string,
so listing names imports nothing heavy (torch, mlflow). Other installed packages add entries through the
kind's entry-point group (``importlib.metadata``; in a ``pyproject.toml``:
``[project.entry-points."mmbench.models"] my-model = "my_pkg.model:MyModel"``). A target is imported on
first resolution and checked there against the kind's base class or protocol, so a wrong plugin fails with
a message naming the entry, not deep inside a run. A registry made with ``targets=True`` also accepts a
``"package.module:attr"`` string as a name (registered under that name on first look-up), so a user's class
can be named without any registration. Unknown names get a did-you-mean error listing the
known ones.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from importlib import metadata
from typing import Any, Generic, TypeVar

from mmbench.config import did_you_mean

T = TypeVar("T")


def load_target(target: str) -> Any:
    """The object a ``"package.module:attr"`` string names (``attr`` may be dotted); a clear error if absent."""
    module_name, sep, attr = target.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"target {target!r} is not of the form 'package.module:attribute'")
    obj: Any = importlib.import_module(module_name)
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise AttributeError(f"target {target!r}: module {module_name!r} has no attribute {attr!r}") from None
    return obj


@dataclass(frozen=True)
class Entry:
    """One registered name: its target (an object, or a ``"module:attr"`` string imported on resolution),
    a one-line summary, and keyword defaults that make this name (e.g. a model variant's config fields)."""

    name: str
    target: Any
    summary: str = ""
    defaults: tuple[tuple[str, Any], ...] = ()

    @property
    def lazy(self) -> bool:
        return isinstance(self.target, str)


class Registry(Mapping[str, T], Generic[T]):
    """Names to parts of one kind (a read-only mapping of name -> resolved part, in registration order).

    ``kind`` names the kind in messages (``"model"``); ``group`` is its entry-point group (None: none);
    ``expects`` is the base class or runtime-checkable protocol a resolved part must satisfy (a type, or a
    ``"module:attr"`` string imported at the first check); ``classes`` says the parts are classes
    (checked with ``issubclass``) rather than instances; ``builtins`` are modules imported before the
    first look-up, which register the built-in parts themselves.
    """

    def __init__(self, kind: str, *, group: str | None = None, expects: type | str | None = None,
                 classes: bool = False, builtins: tuple[str, ...] = (), targets: bool = False) -> None:
        self.kind, self.group, self.expects, self.classes, self.builtins = kind, group, expects, classes, builtins
        self.targets = targets  # a name containing ':' is its own "package.module:attr" target
        self.entries: dict[str, Entry] = {}
        self._resolved: dict[str, T] = {}
        self._builtins_loaded = not builtins
        self._plugins_loaded = group is None

    # --- writing ------------------------------------------------------------------------------------
    def register(self, name: str, target: Any, summary: str = "", *, replace: bool = False, **defaults: Any) -> Entry:
        """Add ``name``; registering it again is a no-op when nothing differs, a ValueError otherwise
        (unless ``replace``)."""
        entry = Entry(name, target, summary, tuple(sorted(defaults.items())))
        old = self.entries.get(name)
        if old is not None and not replace and (old.target != entry.target or old.defaults != entry.defaults):
            raise ValueError(f"{self.kind} name {name!r} is already registered (for {_describe(old.target)}); "
                             "choose another name")
        self.entries[name] = entry
        self._resolved.pop(name, None)
        return entry

    def unregister(self, name: str) -> None:
        self.entries.pop(name, None)
        self._resolved.pop(name, None)

    # --- reading ------------------------------------------------------------------------------------
    def entry(self, name: str) -> Entry:
        """The entry of ``name``; a KeyError with a did-you-mean and the known names if there is none."""
        self._load_builtins()
        if name not in self.entries:
            self._load_plugins()
        if name not in self.entries and self.targets and ":" in name:
            self.register(name, name, f"{self.kind} named by its import path")
        if name not in self.entries:
            known = ", ".join(self.entries)
            spelled = " or a 'package.module:Class' import path" if self.targets else ""
            raise KeyError(f"unknown {self.kind} {name!r}.{did_you_mean(name, self.entries)} "
                           f"Known {self.kind}s: {known}{spelled}.")
        return self.entries[name]

    def resolve(self, name: str) -> T:
        """The part registered as ``name``, imported if lazy and checked against ``expects`` (once)."""
        if name not in self._resolved:
            entry = self.entry(name)
            try:
                part = self._import(entry) if entry.lazy else entry.target
                self._check(entry, part)
            except Exception:
                if self.targets and entry.target == name:  # named by its own import path: not kept when wrong
                    self.entries.pop(name, None)
                raise
            self._resolved[name] = part
        return self._resolved[name]

    def names(self) -> list[str]:
        """Every registered name, in registration order (built-ins, then plugins)."""
        self._load_builtins()
        self._load_plugins()
        return list(self.entries)

    def __getitem__(self, name: str) -> T:
        return self.resolve(name)

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self.names())

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in self.names()

    # --- internals ----------------------------------------------------------------------------------
    def _import(self, entry: Entry) -> Any:
        """The entry's lazy target; a name that is its own import path fails with what to do."""
        if entry.name != entry.target:
            return load_target(entry.target)
        try:
            return load_target(entry.target)
        except (ImportError, AttributeError, ValueError) as exc:
            raise PluginImportError(
                f"{self.kind} {entry.name!r} cannot be imported ({exc}); install its package or put the folder "
                "holding it on PYTHONPATH, and spell it 'package.module:Class'"
            ) from None

    def _check(self, entry: Entry, part: Any) -> None:
        if self.expects is None:
            return
        base = load_target(self.expects) if isinstance(self.expects, str) else self.expects
        ok = isinstance(part, type) and issubclass(part, base) if self.classes else isinstance(part, base)
        if not ok:
            wanted = f"a subclass of {_qualname(base)}" if self.classes else f"an instance of {_qualname(base)}"
            raise TypeError(f"{self.kind} {entry.name!r} ({_describe(entry.target)}) is {_describe(part)}, "
                            f"not {wanted}; register a {self.kind} that is")

    def _load_builtins(self) -> None:
        if self._builtins_loaded:
            return
        self._builtins_loaded = True  # before importing: the modules call register()
        for module in self.builtins:
            importlib.import_module(module)

    def _load_plugins(self) -> None:
        """Register the entry points of the kind's group once per process (a scan costs ~0.1 s);
        a built-in name wins over a plugin's."""
        if self._plugins_loaded:
            return
        self._plugins_loaded = True
        assert self.group is not None
        for ep in metadata.entry_points(group=self.group):
            if ep.name not in self.entries:
                source = ep.dist.name if ep.dist is not None else "an installed package"
                self.register(ep.name, ep.value, f"plugin {self.kind} from {source}")


class PluginImportError(ImportError):
    """A part named by its import path (``"package.module:attr"``) cannot be imported; the message says why."""


def _qualname(obj: Any) -> str:
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', repr(obj))}"


def _describe(obj: Any) -> str:
    if isinstance(obj, str):
        return obj
    if isinstance(obj, type) or callable(obj) and hasattr(obj, "__qualname__"):
        return _qualname(obj)
    return f"a {type(obj).__name__}"

