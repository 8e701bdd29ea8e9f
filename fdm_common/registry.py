"""Name -> constructor registries, extendable by users and by entry-point plug-ins."""

from __future__ import annotations

import warnings
from importlib.metadata import entry_points
from typing import Generic, Iterator, TypeVar

from fdm_common.errors import FdmError

T = TypeVar("T")


class Registry(Generic[T]):
    """A dict from name to object, with a decorator to add to it.

    Plug-ins add entries through the entry-point group given as `group`; they are loaded on the
    first lookup, never at import. Entries in a group's former names (`former_groups`) still
    load, with a DeprecationWarning naming the group to move them to.
    """

    def __init__(self, kind: str, group: str | None = None, former_groups: tuple[str, ...] = ()):
        self.kind = kind
        self.group = group
        self.former_groups = former_groups
        self._items: dict[str, T] = {}
        self._plugins_loaded = group is None

    def register(self, name: str, obj: T | None = None):
        """`registry.register("name", obj)` or `@registry.register("name")`."""
        if obj is not None:
            self._items[name] = obj
            return obj

        def decorator(o: T) -> T:
            self._items[name] = o
            return o

        return decorator

    def _load_plugins(self) -> None:
        if self._plugins_loaded:
            return
        self._plugins_loaded = True
        for ep in entry_points(group=self.group):
            self._items.setdefault(ep.name, ep.load())
        for old in self.former_groups:
            for ep in entry_points(group=old):
                warnings.warn(f"entry point {ep.name!r} ({ep.value}) is in the deprecated group {old!r}; "
                              f"declare it in {self.group!r}", DeprecationWarning, stacklevel=3)
                self._items.setdefault(ep.name, ep.load())

    def get(self, name: str) -> T:
        self._load_plugins()
        if name not in self._items:
            raise FdmError(f"unknown {self.kind} {name!r} (known: {', '.join(self.names())})")
        return self._items[name]

    def names(self) -> list[str]:
        self._load_plugins()
        return sorted(self._items)

    def __contains__(self, name: str) -> bool:
        self._load_plugins()
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
