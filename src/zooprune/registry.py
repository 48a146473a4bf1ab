"""One small generic registry: names (and aliases) -> objects, with helpful errors."""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """A name -> object map used for methods (by name) and adapters (by ``config.model_type``).

    Lookups are case-insensitive and ``-``/``_`` insensitive; an unknown name raises a
    ``KeyError`` that lists every registered name and suggests the closest one.
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}
        self._aliases: dict[str, str] = {}

    @staticmethod
    def _key(name: str) -> str:
        return name.strip().lower().replace("_", "-")

    def add(self, name: str, item: T, aliases: tuple[str, ...] = ()) -> T:
        key = self._key(name)
        if key in self._items or key in self._aliases:
            raise ValueError(f"{self.kind} {name!r} is already registered")
        self._items[key] = item
        for alias in aliases:
            self._aliases[self._key(alias)] = key
        return item

    def register(self, name: str, aliases: tuple[str, ...] = ()) -> Callable[[T], T]:
        """Decorator form of :meth:`add`."""

        def deco(item: T) -> T:
            return self.add(name, item, aliases)

        return deco

    def get(self, name: str) -> T:
        key = self._key(name)
        key = self._aliases.get(key, key)
        if key not in self._items:
            close = difflib.get_close_matches(key, list(self._items) + list(self._aliases), n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise KeyError(f"Unknown {self.kind} {name!r}. Available: {', '.join(self.names())}.{hint}")
        return self._items[key]

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        key = self._key(name)
        return key in self._items or key in self._aliases

    def names(self) -> list[str]:
        return sorted(self._items)

    def items(self) -> Iterator[tuple[str, T]]:
        return iter(sorted(self._items.items()))

    def __len__(self) -> int:
        return len(self._items)
