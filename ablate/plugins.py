"""Plugins: Python modules that add studies, models, tasks and datasets through ablate's public
registration calls (`ablate.register_study`, ...), the same calls ablate's own use.

A plugin is found three ways, all loaded before a command runs: the entry-point group
`ablate.plugins` of an installed package, `ABLATE_PLUGINS=mod1,mod2` (modules importable from
the current directory), and `--plugin MODULE` on any command. A plugin that fails to import,
or registers a name that is taken, is one warning line naming it and the error; whatever it
registered is taken back, and everything else works. Every process that trains (a Dask
worker too) loads the same plugins first (`load_named`).

Nothing here imports torch: `ablate --help` stays fast with plugins that import none.
"""

from __future__ import annotations

import importlib
import os
import sys
from dataclasses import dataclass, field
from importlib.metadata import entry_points

from ablate import registry
from ablate.errors import EnvironmentFailure, UsageError, describe_error

GROUP = "ablate.plugins"
ENVIRONMENT = "ABLATE_PLUGINS"


@dataclass
class Plugin:
    name: str  # the module (or the entry point's name)
    module: str  # what a worker imports
    source: str  # "entry point", "ABLATE_PLUGINS" or "--plugin"
    added: list[tuple[str, str]] = field(default_factory=list)  # (kind, name) it registered
    error: str | None = None  # why it did not load


LOADED: dict[str, Plugin] = {}  # module -> plugin, in the order they loaded (or failed to)


def _load(name: str, module: str, source: str, strict: bool = False) -> Plugin:
    """Import `module` as plugin `name`, recording what it registers. A failure takes back its
    registrations; with `strict` it raises (a worker must not train without it), else it is kept
    in the plugin's `error`."""
    if module in LOADED:
        return LOADED[module]
    plugin = Plugin(name, module, source)
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    with registry.owned_by(name) as added:
        try:
            importlib.import_module(module)
        except BaseException as error:  # noqa: BLE001 - a broken plugin is reported, never fatal
            if isinstance(error, KeyboardInterrupt):
                raise
            registry.take_back(name)
            sys.modules.pop(module, None)
            plugin.error = describe_error(error)
    plugin.added = [] if plugin.error else list(added)
    if plugin.error is not None and strict:
        raise EnvironmentFailure(f"plugin {name!r} did not load here: {plugin.error}")
    LOADED[module] = plugin
    return plugin


def discover(named: list[str] = ()) -> list[Plugin]:
    """Load the installed plugins (entry points), then $ABLATE_PLUGINS, then `named`; return
    those that failed (each says why)."""
    found = [(ep.name, ep.value.partition(":")[0], "entry point") for ep in entry_points(group=GROUP)]
    found += [(m.strip(), m.strip(), ENVIRONMENT) for m in os.environ.get(ENVIRONMENT, "").split(",") if m.strip()]
    found += [(m, m, "--plugin") for m in named]
    return [p for p in (_load(*f) for f in found) if p.error is not None]


def load_named(modules: list[str]) -> None:
    """In a worker: import the plugins the driver loaded, before any run; one that cannot be
    is an EnvironmentFailure naming it."""
    for module in modules:
        _load(module, module, "driver", strict=True)


def modules() -> list[str]:
    """The modules of the plugins that loaded: what a worker must import."""
    return [p.module for p in LOADED.values() if p.error is None]


def listing() -> list[dict]:
    """Who added what: a row per registered name of a plugin, and one per failed plugin."""
    rows = []
    for plugin in LOADED.values():
        if plugin.error is not None:
            rows.append({"plugin": plugin.name, "source": plugin.source, "kind": "", "name": "",
                         "status": f"failed: {plugin.error}"})
        for kind, name in plugin.added:
            rows.append({"plugin": plugin.name, "source": plugin.source, "kind": kind, "name": name,
                         "status": "loaded"})
        if plugin.error is None and not plugin.added:
            rows.append({"plugin": plugin.name, "source": plugin.source, "kind": "", "name": "",
                         "status": "loaded, registered nothing"})
    return rows


def split_arguments(args: list[str]) -> tuple[list[str], list[str]]:
    """`--plugin MODULE` / `--plugin=MODULE` taken out of a command line, anywhere in it:
    (the other arguments, the modules)."""
    rest, named, i = [], [], 0
    while i < len(args):
        arg = args[i]
        if arg == "--plugin":
            if i + 1 == len(args) or args[i + 1].startswith("-"):
                raise UsageError("--plugin takes a MODULE, importable from the current directory: --plugin mymod")
            named.append(args[i + 1])
            i += 2
            continue
        if arg.startswith("--plugin="):
            named.append(arg.partition("=")[2])
        else:
            rest.append(arg)
        i += 1
    return rest, named
