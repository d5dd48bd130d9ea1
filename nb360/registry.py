"""One registry type for tasks, methods and networks: names and aliases (case-insensitive), built-ins loaded lazily."""

from __future__ import annotations

import importlib
from typing import Generic, TypeVar

from nb360.errors import UsageError

__all__ = ["Registry"]

T = TypeVar("T")


class Registry(Generic[T]):
    """Entries by name, with aliases; an unknown name is a one-line :class:`UsageError` listing the choices.

    ``builtins`` names a module whose import registers the built-in entries; it is
    imported the first time the registry is read, so importing a registry is cheap.
    """

    def __init__(self, kind: str, builtins: str | None = None) -> None:
        self.kind = kind
        self._builtins = builtins
        self._entries: dict[str, T] = {}
        self._keys: dict[str, str] = {}

    def _load(self) -> None:
        if self._builtins is not None:
            module, self._builtins = self._builtins, None
            importlib.import_module(module)

    def register(self, name: str, entry: T, aliases: tuple[str, ...] = ()) -> T:
        keys = [name.lower(), *(a.lower() for a in aliases)]
        for key in keys:
            owner = self._keys.get(key)
            if owner is not None and owner != name:
                raise ValueError(f"{self.kind} name or alias {key!r} of {name!r} is already taken by {owner!r}")
        self.unregister(name)
        self._entries[name] = entry
        self._keys.update(dict.fromkeys(keys, name))
        return entry

    def unregister(self, name: str) -> None:
        self._entries.pop(name, None)
        self._keys = {k: v for k, v in self._keys.items() if v != name}

    def names(self) -> list[str]:
        """Canonical names, in registration order."""
        self._load()
        return list(self._entries)

    def values(self) -> list[T]:
        self._load()
        return list(self._entries.values())

    def get(self, name: str) -> T:
        self._load()
        key = self._keys.get(str(name).lower())
        if key is None:
            raise UsageError(f"unknown {self.kind} {name!r}; choose one of: {', '.join(self.names())}")
        return self._entries[key]
