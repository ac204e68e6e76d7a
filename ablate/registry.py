"""One shape for every named choice: models, studies, datasets, optimisers, schedulers,
normalisations, permutations, augmentations, tasks.

A registry maps names to entries, refuses a name registered twice, and turns an unknown
name into a usage error that lists the closest names (timm's `register_model` /
`create_model`, torchvision's `_api.py`).
"""

from __future__ import annotations

from typing import Generic, Iterator, TypeVar

from ablate.errors import unknown_name

T = TypeVar("T")
_DECORATE = object()


class Registry(Generic[T]):
    def __init__(self, kind: str, hint: str = ""):
        self.kind = kind  # "model", "optimizer", ...: the word the error messages use
        self.hint = hint  # said instead of listing the names when there are many
        self._entries: dict[str, T] = {}

    def register(self, name: str, entry=_DECORATE):
        """`registry.register("x", entry)`, or `@registry.register("x")` on a function."""
        if entry is _DECORATE:
            return lambda function: self.register(name, function)
        if name in self._entries:
            raise ValueError(f"{self.kind} {name!r} is already registered")
        self._entries[name] = entry
        return entry

    def get(self, name: str) -> T:
        if name not in self._entries:
            raise unknown_name(self.kind, name, self.names(), self.hint)
        return self._entries[name]

    def names(self) -> list[str]:
        return list(self._entries)

    def items(self) -> list[tuple[str, T]]:
        return list(self._entries.items())

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

