"""One shape for every named choice: models, studies, datasets, optimisers, schedulers,
normalisations, permutations, augmentations, tasks.

A registry maps names to entries, refuses a name registered twice, and turns an unknown
name into a usage error that lists the closest names (timm's `register_model` /
`create_model`, torchvision's `_api.py`).
"""

from __future__ import annotations

import contextlib
import sys
from typing import Generic, Iterator, TypeVar

from ablate.errors import UsageError, unknown_name

T = TypeVar("T")
_DECORATE = object()
BUILT_IN = "ablate"
REGISTRIES: list[Registry] = []  # every registry, for `ablate list plugins` and taking a plugin back
_OWNERS: list[tuple[str, list]] = [(BUILT_IN, [])]  # who registers now: ablate, or the plugin being loaded


@contextlib.contextmanager
def owned_by(plugin: str):
    """What is registered in the block belongs to `plugin`; yields the (kind, name) it adds."""
    added: list[tuple[str, str]] = []
    _OWNERS.append((plugin, added))
    try:
        yield added
    finally:
        _OWNERS.pop()


def take_back(plugin: str) -> None:
    """Remove everything `plugin` registered (it failed to load)."""
    for registry in REGISTRIES:
        for name in [n for n, owner in registry.owners.items() if owner == plugin]:
            del registry._entries[name], registry.owners[name]


def _importing_ablate() -> bool:
    """The module whose top level is registering is one of ablate's own."""
    frame = sys._getframe(2)
    while frame is not None and frame.f_code.co_name != "<module>":
        frame = frame.f_back
    name = frame.f_globals.get("__name__", "") if frame is not None else ""
    return name == "ablate" or name.startswith("ablate.")


class Registry(Generic[T]):
    def __init__(self, kind: str, hint: str = ""):
        self.kind = kind  # "model", "optimizer", ...: the word the error messages use
        self.hint = hint  # said instead of listing the names when there are many
        self._entries: dict[str, T] = {}
        self.owners: dict[str, str] = {}  # name -> who registered it: "ablate" or a plugin
        REGISTRIES.append(self)

    def register(self, name: str, entry=_DECORATE):
        """`registry.register("x", entry)`, or `@registry.register("x")` on a function. A name
        is registered once: a second registration is refused, naming who holds it."""
        if entry is _DECORATE:
            return lambda function: self.register(name, function)
        owner, added = _OWNERS[-1]
        if owner != BUILT_IN and _importing_ablate():  # ablate's own module, first imported by the plugin
            owner, added = BUILT_IN, []
        if not isinstance(name, str) or not name:
            raise UsageError(f"{owner}: a {self.kind} name must be a non-empty string, got {name!r}")
        if name in self._entries:
            holder = self.owners[name]
            by = "ablate's own" if holder == BUILT_IN else f"plugin {holder!r}"
            raise UsageError(f"{owner}: {self.kind} {name!r} is already registered (by {by})")
        self._entries[name] = entry
        self.owners[name] = owner
        added.append((self.kind, name))
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

