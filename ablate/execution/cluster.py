"""Runs on a Dask cluster: a LocalCluster on 127.0.0.1, an existing scheduler, or SLURM jobs.

The driver keeps the results file (the one ledger); workers only train. Dask retries a run
whose worker died; a run that raises is a result of its own (status `failed`), not a retry.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import shlex
import shutil
import signal
import socket
import threading
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from queue import SimpleQueue
from typing import Callable, Iterator

from ablate import machine, plugins
from ablate.data.datasets import Dataset, load_dataset
from ablate.errors import EnvironmentFailure, UsageError
from ablate.execution import progress

PROGRESS_TOPIC = "ablate-progress"
PACKAGES = ("ablate", "torch", "torchvision")
SLURM_MAX_JOBS = 1000  # --slurm --workers N: N jobs submitted at once (SLURM sites cap a user's jobs near this)
PROTOCOLS = ("tcp", "tls", "ws", "wss", "ucx")  # Dask's, for a scheduler in another process
CONNECT_SECONDS = 10  # to reach an existing scheduler: then a clean refusal, not a hang


def _cores(n: int) -> str:
    return f"{n} CPU core{'s' if n != 1 else ''}"


def versions() -> dict[str, str]:
    """This process's versions of what a run's numbers depend on."""
    found = {}
    for package in PACKAGES:
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            found[package] = "not installed"
    return found


@dataclass(frozen=True)
class DataSpec:
    """A dataset a worker loads from its own data folder (so that nothing large is sent)."""

    name: str
    data_dir: str | None
    limit_train: int | None
    limit_test: int | None
    image_size: int | None
    test_fraction: float

    def load(self) -> Dataset:
        return _load_once(self)


@functools.cache  # once per worker process, however many runs it trains
def _load_once(spec: DataSpec) -> Dataset:
    return load_dataset(spec.name, spec.data_dir, spec.limit_train, spec.limit_test, spec.image_size,
                        spec.test_fraction)


def can_load(spec: DataSpec) -> bool:
    """Whether this process sees the dataset without downloading it (run on each worker)."""
    from ablate.data import datasets as data

    return data.on_disk(spec.name, spec.data_dir)


def _on_worker(work: Callable, topic: str, plugin_modules: list[str], pack, data):
    """A pack of runs on a worker: the driver's plugins loaded first (one that cannot be is an
    error naming it, never a silent fallback), the data loaded or received, progress sent to
    the driver as events of `topic` (under the pack's first run). Events go through the
    worker's own link to the scheduler: no client in the worker, nothing to wait for in the
    training loop."""
    from distributed import get_worker

    plugins.load_named(plugin_modules)
    if isinstance(data, DataSpec):
        data = data.load()
    worker = get_worker()

    def send(event: progress.Progress) -> None:
        worker.log_event(topic, dataclasses.astuple(event))

    send(progress.started(pack, worker.address))
    return work(pack, data, on_batch=progress.batch_reporter(pack, send, worker.address))


class DaskExecutor:
    """Maps packs of runs over a Dask cluster, yielding each pack's results as they arrive. The
    dataset goes to every worker once (loaded there when they see it, else scattered by
    broadcast)."""

    def __init__(self, client, data_spec: DataSpec | None = None):
        self.client, self.data_spec = client, data_spec

    def data_on_workers(self, data: Dataset):
        workers = self.client.scheduler_info()["workers"]
        if self.data_spec is not None and all(self.client.run(can_load, self.data_spec).values()):
            return self.data_spec
        return self.client.scatter(data, broadcast=True, hash=False) if workers else data

    def map(self, work, packs, data, report) -> Iterator:
        from distributed import as_completed

        if not packs:
            return
        topic = f"{PROGRESS_TOPIC}-{uuid.uuid4().hex}"  # this study's alone, on a scheduler others may share
        events: SimpleQueue = SimpleQueue()
        self.client.subscribe_topic(topic, lambda event: events.put(event[1]))  # in the client's thread
        futures = {}
        try:
            shipped = self.data_on_workers(data)
            task = functools.partial(_on_worker, work, topic, plugins.modules())
            futures = {self.client.submit(task, pack, shipped, key=f"ablate-{pack[0].run_id}", retries=3,
                                          pure=False): pack for pack in packs}
            pending = as_completed(futures)
            while not pending.is_empty():
                while not events.empty():
                    report(progress.Progress(*events.get()))
                for future in pending.next_batch(block=False):
                    yield futures[future], future.result()
                time.sleep(0.05)
        finally:
            self.client.cancel(list(futures))  # Ctrl-C, or a failure of the driver: nothing left running
            try:
                self.client.unsubscribe_topic(topic)
            except Exception:  # a client that lost its scheduler: nothing to unsubscribe from; the error is elsewhere
                pass


# ---------------------------------------------------------------- clusters


def _quiet(interrupted: bool = False) -> None:
    """Dask logs every worker it stops; one line per real problem is what a user reads. After
    Ctrl-C, none: what Dask says of the runs it is stopping (a broadcast that failed, a comm
    closed) is not a problem."""
    import logging

    level = logging.CRITICAL if interrupted else logging.ERROR
    for name in ("distributed", "distributed.client", "distributed.nanny", "distributed.scheduler",
                 "distributed.worker", *(("asyncio",) if interrupted else ())):
        logging.getLogger(name).setLevel(level)


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread() and hasattr(signal, "pthread_sigmask")


@contextmanager
def _ctrl_c_held():
    """Ctrl-C while Dask starts its threads and processes is acted on once they have started
    (KeyboardInterrupt raised on the way out, so that the caller closes what started), and never
    reaches them: SIGINT is blocked in the threads started meanwhile (Dask's event loops, which
    spawn the worker processes), and processes inherit that. A Ctrl-C in a terminal signals the
    whole process group; only this driver acts on it, and stops the workers itself."""
    if not _main_thread():
        yield
        return
    from multiprocessing import resource_tracker

    resource_tracker.ensure_running()  # its first start unblocks SIGINT in the thread that starts it: here, before
    caught = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: caught.append(signum))
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})  # runs the handler of one held
        signal.signal(signal.SIGINT, previous if previous is not None else signal.default_int_handler)
    if caught:
        raise KeyboardInterrupt


@contextmanager
def _ctrl_c_ignored():
    """Closing a cluster takes seconds, bounded; a second Ctrl-C then would leave its processes
    behind and print Dask's tracebacks, so it is ignored meanwhile."""
    if not _main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous if previous is not None else signal.default_int_handler)


def local_cluster(workers: int, threads: int):
    """N worker processes of T threads on 127.0.0.1, no dashboard. The worker processes log
    nothing of Dask's own (a busy event loop, tasks cancelled by Ctrl-C, a heartbeat to a
    scheduler that is stopping): what matters reaches the driver (results, errors, a worker that
    died)."""
    import dask
    from distributed import Client, LocalCluster

    _quiet()
    environ = dict(os.environ)
    quiet_workers = {"distributed.nanny.pre-spawn-environ.DASK_LOGGING__DISTRIBUTED": "critical"}
    try:
        with dask.config.set(quiet_workers):
            cluster = LocalCluster(host="127.0.0.1", n_workers=workers, threads_per_worker=1, processes=True,
                                   dashboard_address=None, worker_dashboard_address=None,
                                   # the scheduler's HTTP routes (health, metrics) serve anyway:
                                   # on a free port, not 8787, so a port taken there warns nothing
                                   scheduler_kwargs={"dashboard": False, "dashboard_address": "127.0.0.1:0"})
    except (OSError, RuntimeError, TimeoutError) as error:  # a worker process that cannot start (memory, limits)
        cause = error.__cause__ or error
        raise EnvironmentFailure(f"--workers {workers}: the LocalCluster did not start: "
                                 f"{str(cause).strip() or type(cause).__name__}") from None
    finally:
        os.environ.clear()  # Dask leaves OMP_NUM_THREADS=1 (and more) set in this process: undone
        os.environ.update(environ)
    try:
        return Client(cluster), cluster
    except BaseException:
        cluster.close()
        raise


def scheduler_address(address: str) -> tuple[str, str, int]:
    """--dask-scheduler's PROTOCOL://HOST:PORT as (protocol, host, port), checked without contacting
    anything. HOST:PORT alone is tcp, as for Dask; an IPv6 host is written in brackets."""
    def bad(why: str) -> UsageError:
        return UsageError(f"--dask-scheduler {address!r}: {why}; give the address the scheduler prints, "
                          "like tcp://HOST:8786")

    text = address.strip()
    if not text:
        raise bad("the address is empty")
    protocol, sep, rest = text.partition("://")
    if not sep:
        if "/" in text:
            raise bad("malformed (write PROTOCOL://HOST:PORT)")
        protocol, rest = "tcp", text
    protocol = protocol.lower()
    if protocol in ("http", "https"):
        raise bad(f"{protocol}:// is a web address (a dashboard's, port 8787?), not a scheduler's")
    if protocol == "inproc":
        raise bad("inproc:// is a scheduler inside one process, out of reach of this command")
    if protocol not in PROTOCOLS:
        raise bad(f"unknown protocol {protocol + '://'!r} (Dask's are {', '.join(p + '://' for p in PROTOCOLS)})")
    for mark in "/?#@":
        if mark in rest:
            raise bad(f"unexpected {rest[rest.index(mark):]!r} (an address is PROTOCOL://HOST:PORT, nothing more)")
    if rest.startswith("["):
        host, close, port = rest[1:].partition("]")
        if not close or (port and not port.startswith(":")):
            raise bad("malformed IPv6 host (in brackets, then :PORT)")
        port = port[1:]
    else:
        host, _, port = rest.rpartition(":") if ":" in rest else (rest, "", "")
        if ":" in host:
            raise bad("an IPv6 host goes in brackets, [::1]")
    if not host and not port:
        raise bad("no host and no port")
    if not host:
        raise bad("no host")
    if not port:
        raise bad("no port")
    if not (port.isascii() and port.isdigit()):
        raise bad(f"the port {port!r} is not a number")
    if not 1 <= int(port) <= 65535:
        raise bad(f"the port {int(port)} is out of range (1 to 65535)")
    return protocol, host, int(port)


def _reachable(address: str, host: str, port: int) -> None:
    """Refuse at once a scheduler address where nothing listens (a TCP connection, nothing sent),
    rather than after Dask's retries until its timeout."""
    try:
        with socket.create_connection((host, port), timeout=CONNECT_SECONDS):
            pass
    except socket.gaierror as error:
        raise UsageError(f"--dask-scheduler {address}: cannot connect: unknown host {host!r} ({error.strerror})") from None
    except ConnectionRefusedError:
        where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        raise UsageError(f"--dask-scheduler {address}: cannot connect: nothing listens at {where} "
                         "(is `dask scheduler` running there, on that port?)") from None
    except TimeoutError:
        raise UsageError(f"--dask-scheduler {address}: cannot connect: no answer from {host} within "
                         f"{CONNECT_SECONDS} s") from None
    except OSError as error:
        raise UsageError(f"--dask-scheduler {address}: cannot connect: {error.strerror or error}") from None


def _identity(address: str, url: str) -> None:
    """Refuse, within CONNECT_SECONDS, an address where something listens that is not a Dask
    scheduler (Dask's own connect waits for ever on a listener that never answers)."""
    import asyncio

    from distributed.comm import connect as open_comm
    from distributed.security import Security

    async def identity():
        comm = await open_comm(url, timeout=CONNECT_SECONDS, **Security().get_connection_args("client"))
        try:
            await comm.write({"op": "identity", "reply": True})
            return await comm.read()
        finally:
            comm.abort()

    try:
        answer = asyncio.run(asyncio.wait_for(identity(), CONNECT_SECONDS))
    except (TimeoutError, asyncio.TimeoutError):
        raise UsageError(f"--dask-scheduler {address}: no answer from a Dask scheduler there within {CONNECT_SECONDS} s; "
                         "is it the address `dask scheduler` printed?") from None
    except Exception as error:
        raise UsageError(f"--dask-scheduler {address}: cannot connect ({type(error).__name__}: {error}); "
                         "is it the address `dask scheduler` printed?") from None
    kind = answer.get("type") if isinstance(answer, dict) else None
    if kind != "Scheduler":
        what = f"a Dask {kind.lower()}'s address" if isinstance(kind, str) else "not a Dask scheduler"
        raise UsageError(f"--dask-scheduler {address}: that is {what}; give the scheduler's (`dask scheduler` prints it)")


def connect(address: str):
    """A client of an existing scheduler, checked: every worker runs the driver's versions."""
    from distributed import Client

    _quiet()
    protocol, host, port = scheduler_address(address)
    url = f"{protocol}://[{host}]:{port}" if ":" in host else f"{protocol}://{host}:{port}"
    if protocol != "ucx":  # nothing to reach it with here but Dask's own
        _reachable(address, host, port)
        _identity(address, url)
    try:
        client = Client(url, timeout=CONNECT_SECONDS)
    except (OSError, TimeoutError) as error:
        raise UsageError(f"--dask-scheduler {address}: cannot connect ({error}); is it a Dask scheduler's address?") \
            from None
    mine = versions()
    for worker, theirs in client.run(versions).items():
        differ = [f"{p} {theirs.get(p)} there, {mine[p]} here" for p in PACKAGES if theirs.get(p) != mine[p]]
        if differ:
            client.close()
            raise UsageError(f"--dask-scheduler {address}: worker {worker} differs: {'; '.join(differ)}")
    if not client.scheduler_info()["workers"]:
        client.close()
        raise UsageError(f"--dask-scheduler {address}: the scheduler has no worker")
    return client


SLURM_OPTIONS = ("partition", "time", "mem", "account", "gpus", "qos")


def slurm_settings(threads: int, options: str | None) -> dict:
    """dask_jobqueue's settings for one worker per job: T CPUs for torch's threads, one Dask
    thread (one run at a time). `options` like "partition=gpu time=02:00:00 mem=16GB gpus=1"."""
    given = {}
    for item in shlex.split(options or ""):
        key, sep, value = item.partition("=")
        if not sep or key not in SLURM_OPTIONS:
            raise UsageError(f"--slurm-opts {item!r}: write KEY=VALUE with KEY one of {', '.join(SLURM_OPTIONS)}")
        given[key] = value
    settings = {"cores": 1, "processes": 1, "job_cpu": threads, "memory": given.get("mem", "8GB"),
                "walltime": given.get("time", "01:00:00"), "name": "ablate-worker",
                "job_extra_directives": [f"--{k}={given[k]}" for k in ("gpus", "qos") if k in given]}
    if "partition" in given:
        settings["queue"] = given["partition"]
    if "account" in given:
        settings["account"] = given["account"]
    return settings


def slurm_job_script(threads: int, options: str | None, scheduler: str = "tcp://SCHEDULER-ADDRESS:8786") -> str:
    """The job script each worker's job runs, rendered without starting anything."""
    from dask_jobqueue.slurm import SLURMJob

    return SLURMJob(scheduler=scheduler, **slurm_settings(threads, options)).job_script()


def slurm_cluster(workers: int, threads: int, options: str | None):
    """A SLURMCluster of `workers` jobs, and its client. Its scheduler runs here, where the
    compute nodes can reach it."""
    from dask_jobqueue import SLURMCluster
    from distributed import Client

    check_slurm()
    cluster = SLURMCluster(**slurm_settings(threads, options))
    cluster.scale(jobs=workers)
    return Client(cluster), cluster


def check_slurm() -> None:
    """SLURM's commands are here (a login node), before a scheduler starts waiting for jobs that
    cannot be submitted."""
    for command in ("sbatch", "scancel"):  # what dask-jobqueue runs: to submit a job, to cancel it
        if shutil.which(command) is None:
            raise UsageError(f"--slurm: {command} is not on PATH: run this on a machine that submits SLURM jobs "
                             "(a login node), or use --workers N alone for a LocalCluster here; "
                             "--slurm --dry-run prints the job script without SLURM")


def run_threads(threads: int | None, workers: int | None, scheduler: str | None, slurm: bool) -> int:
    """torch threads per run: as given; else 1 on an existing cluster (its machines are not
    known here), the cores shared out on a LocalCluster or SLURM, all of them in-process."""
    if threads:
        return threads
    if scheduler:
        return 1
    if workers or slurm:
        return max(1, machine.cpu_cores() // (workers or 1))
    import torch

    return torch.get_num_threads()


@contextmanager
def dask_executor(workers: int | None, threads: int, scheduler: str | None, slurm: bool, slurm_opts: str | None,
                  data_spec: DataSpec | None):
    """The executor the options ask for, its cluster started here and stopped on the way out.
    Ctrl-C while it starts stops it once started; Ctrl-C while it stops is ignored."""
    client = cluster = None
    interrupted = False
    try:
        with _ctrl_c_held():
            if slurm:
                client, cluster = slurm_cluster(workers or 1, threads, slurm_opts)
            elif scheduler is not None:
                client = connect(scheduler)
            else:
                client, cluster = local_cluster(workers, threads)
        yield DaskExecutor(client, data_spec)
    except KeyboardInterrupt:
        interrupted = True
        raise
    finally:
        with _ctrl_c_ignored():
            if interrupted:
                _quiet(interrupted=True)
            if client is not None:
                client.close()
            if cluster is not None:
                if interrupted and not slurm:
                    _stop_workers_now(cluster)
                cluster.close()


def _stop_workers_now(cluster) -> None:
    """After Ctrl-C the runs on a LocalCluster's workers are not waited for (the file holds what
    is saved): each worker process has a second to stop, then is killed, where Dask would give a
    busy one 4 s."""
    import asyncio

    async def close_all():
        await asyncio.gather(*(worker.close(timeout=1) for worker in list(cluster.workers.values())),
                             return_exceptions=True)

    try:
        cluster.sync(close_all)
    except Exception:  # the cluster's own close follows
        pass


def check_options(workers: int | None, threads: int | None, scheduler: str | None, slurm: bool) -> None:
    """The cluster options, checked before anything is loaded or started: their combination, the
    scheduler's address (its form), and what this machine can run."""
    if scheduler is not None and (workers or slurm):
        raise UsageError("--dask-scheduler runs on the workers that cluster has: give it without --workers or --slurm")
    if scheduler is not None:
        scheduler_address(scheduler)
        return
    cores = machine.cpu_cores()
    if slurm:
        if workers is not None and workers > SLURM_MAX_JOBS:
            raise UsageError(f"--slurm --workers {workers}: at most {SLURM_MAX_JOBS} SLURM jobs at once "
                             "(one worker per job)")
        return
    if workers is not None:
        if workers > cores:
            raise UsageError(f"--workers {workers}: a LocalCluster takes at most one worker per CPU core (one run "
                             f"each), and this machine has {cores}; use --dask-scheduler or --slurm for more")
        if threads is not None and workers * threads > cores:
            raise UsageError(f"--workers {workers} --threads {threads}: {workers * threads} torch threads on "
                             f"{_cores(cores)}; give --threads {max(1, cores // workers)} or fewer workers")
        return
    if threads is not None and threads > cores:
        raise UsageError(f"--threads {threads}: this machine has {_cores(cores)}")
