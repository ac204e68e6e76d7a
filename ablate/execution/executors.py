"""Executors: where a study's packs of runs train, chosen by name from a registry, and the one
progress contract every executor keeps.

An executor is made by its entry's `make(options)`, a context manager (a cluster is started
on the way in and stopped on the way out) that gives an object with

    map(work, packs, data, report) -> iterator of (pack, results), as each pack finishes

`work(pack, data, on_batch=...)` trains a pack (it is picklable: another process may run it);
`report(Progress)` is how the executor tells the command line what is happening: a `started`
event when a pack begins, `trained` events as it trains (`on_batch` gives them). ablate's own
executors, `inprocess` and `dask`, are registered like a plugin's (`register_executor`). The
progress contract is `ablate.execution.progress`, which a cluster's workers use too.

Nothing here imports torch.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Callable, ContextManager

from ablate.errors import UsageError
from ablate.execution.progress import batch_reporter, started
from ablate.registry import Registry

@dataclass(frozen=True)
class ExecutorEntry:
    make: Callable[[dict], ContextManager]  # the study's options -> a context giving the executor
    description: str
    options: tuple[str, ...] = ()  # the command-line options that choose it (--workers, ...)


EXECUTORS: Registry[ExecutorEntry] = Registry("executor")


def register_executor(name: str, description: str, options: tuple[str, ...] = ()):
    """`@register_executor("name", "what it is")` on `make(options)`, a context manager that
    gives the executor (a generator function is made one)."""

    if not isinstance(description, str) or not isinstance(options, (tuple, list)) or not all(
            isinstance(o, str) for o in options):
        raise UsageError(f"executor {name!r}: register_executor takes a description (a string) and the names of "
                         f"the options that choose it (strings), got {description!r:.40} and {options!r:.40}")

    def decorator(make):
        if not callable(make):
            raise UsageError(f"executor {name!r}: register_executor decorates make(options), a function")
        maker = contextlib.contextmanager(make) if _is_generator(make) else make
        EXECUTORS.register(name, ExecutorEntry(maker, description, tuple(options)))
        return make

    return decorator


def _is_generator(function) -> bool:
    import inspect

    return inspect.isgeneratorfunction(function)


class InProcess:
    """One pack after another in this process."""

    def map(self, work, packs, data, report):
        for pack in packs:
            report(started(pack))
            yield pack, work(pack, data, on_batch=batch_reporter(pack, report))


@register_executor("inprocess", "one run after another in this process (the default)")
def _in_process(options: dict):
    yield InProcess()


@register_executor("dask", "a Dask cluster: a LocalCluster of --workers processes on 127.0.0.1, the cluster "
                   "at --dask-scheduler, or --workers SLURM jobs with --slurm",
                   options=("workers", "dask_scheduler", "slurm"))
def _dask(options: dict):
    from ablate.execution import cluster

    with cluster.dask_executor(options["workers"], options["threads"], options["dask_scheduler"],
                               options["slurm"], options["slurm_opts"], options["data_spec"]) as executor:
        yield executor


def choose(name: str | None, options: dict) -> str:
    """The executor to use: `name`, or the one whose options are given (dask for --workers,
    --dask-scheduler, --slurm), else inprocess. Options of another executor are refused."""
    given = [o for entry in EXECUTORS.items() for o in entry[1].options if options.get(o)]
    if name is None:
        name = next((n for n, e in EXECUTORS.items() if any(options.get(o) for o in e.options)), "inprocess")
    entry = EXECUTORS.get(name)
    foreign = [o for o in given if o not in entry.options]
    if foreign:
        said = ", ".join("--" + o.replace("_", "-") for o in foreign)
        raise UsageError(f"{said}: not an option of the {name} executor (its own: "
                         + (", ".join("--" + o.replace("_", "-") for o in entry.options) or "none") + ")")
    return name
