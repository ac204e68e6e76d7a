"""Runs on a Dask cluster: a LocalCluster on 127.0.0.1, an existing scheduler, or SLURM jobs.

The driver keeps the results file (the one ledger); workers only train. Dask retries a run
whose worker died; a run that raises is a result of its own (status `failed`), not a retry.
"""

from __future__ import annotations

import functools
import os
import shlex
import time
from contextlib import contextmanager
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from typing import Callable, Iterator

from ablate.data import Dataset, load_dataset
from ablate.errors import UsageError

PROGRESS_QUEUE = "ablate-progress"
PACKAGES = ("ablate", "torch", "torchvision")


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
    from ablate import data

    if spec.name == "synthetic":
        return True
    try:
        if spec.name.startswith(data.FOLDER_PREFIX):
            return data._folder_root(spec.name).is_dir()
        roots = data.search_dirs(spec.data_dir)
        if spec.name == "cifar10":
            return any((root / "cifar-10-batches-py").is_dir() for root in roots)
        folders = data._idx_folders(spec.name, roots)
        return any(all(data._find_idx(f, stem) for pair in data.IDX_FILES.values() for stem in pair)
                   for f in folders)
    except Exception:
        return False


def _on_worker(work: Callable, pack, data):
    """A pack of runs on a worker: the data loaded or received, progress sent to the driver
    (under the pack's first run)."""
    from distributed import Queue, get_worker

    if isinstance(data, DataSpec):
        data = data.load()
    address, key = get_worker().address, pack[0].run_id
    queue = Queue(PROGRESS_QUEUE)
    queue.put(("start", key, address, 0))

    def on_batch(epoch, images, loss, speed):
        queue.put(("images", key, address, images))

    return work(pack, data, on_batch=on_batch)


class DaskExecutor:
    """Maps packs of runs over a Dask cluster, yielding each pack's results as they arrive. The
    dataset goes to every worker once (loaded there when they see it, else scattered by
    broadcast)."""

    def __init__(self, client, data_spec: DataSpec | None = None,
                 on_event: Callable[[str, str, str, int], None] | None = None):
        self.client, self.data_spec, self.on_event = client, data_spec, on_event

    def data_on_workers(self, data: Dataset):
        workers = self.client.scheduler_info()["workers"]
        if self.data_spec is not None and all(self.client.run(can_load, self.data_spec).values()):
            return self.data_spec
        return self.client.scatter(data, broadcast=True, hash=False) if workers else data

    def map(self, work, packs, data) -> Iterator:
        from distributed import Queue, as_completed

        if not packs:
            return
        queue = Queue(PROGRESS_QUEUE, client=self.client)
        shipped = self.data_on_workers(data)
        task = functools.partial(_on_worker, work)
        futures = {self.client.submit(task, pack, shipped, key=f"ablate-{pack[0].run_id}", retries=3, pure=False): pack
                   for pack in packs}
        pending = as_completed(futures)
        try:
            while not pending.is_empty():
                for event in queue.get(batch=True):
                    if self.on_event is not None:
                        self.on_event(*event)
                for future in pending.next_batch(block=False):
                    yield futures[future], future.result()
                time.sleep(0.05)
        finally:
            self.client.cancel(list(futures))  # Ctrl-C, or a failure of the driver: nothing left running


# ---------------------------------------------------------------- clusters


def _quiet() -> None:
    """Dask logs every worker it stops; one line per real problem is what a user reads."""
    import logging

    for name in ("distributed", "distributed.nanny", "distributed.scheduler", "distributed.worker"):
        logging.getLogger(name).setLevel(logging.ERROR)


def local_cluster(workers: int, threads: int):
    """N worker processes of T threads on 127.0.0.1, no dashboard."""
    from distributed import Client, LocalCluster

    _quiet()
    environ = dict(os.environ)
    cluster = LocalCluster(host="127.0.0.1", n_workers=workers, threads_per_worker=1, processes=True,
                           dashboard_address=None, worker_dashboard_address=None)
    os.environ.clear()  # Dask leaves OMP_NUM_THREADS=1 (and more) set in this process: undone
    os.environ.update(environ)
    return Client(cluster), cluster


def connect(address: str):
    """A client of an existing scheduler, checked: every worker runs the driver's versions."""
    from distributed import Client

    _quiet()
    try:
        client = Client(address, timeout=10)
    except (OSError, TimeoutError) as error:
        raise UsageError(f"--scheduler {address}: cannot connect ({error})") from None
    mine = versions()
    for worker, theirs in client.run(versions).items():
        differ = [f"{p} {theirs.get(p)} there, {mine[p]} here" for p in PACKAGES if theirs.get(p) != mine[p]]
        if differ:
            client.close()
            raise UsageError(f"--scheduler {address}: worker {worker} differs: {'; '.join(differ)}")
    if not client.scheduler_info()["workers"]:
        client.close()
        raise UsageError(f"--scheduler {address}: the scheduler has no worker")
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

    cluster = SLURMCluster(**slurm_settings(threads, options))
    cluster.scale(jobs=workers)
    return Client(cluster), cluster


def run_threads(threads: int | None, workers: int | None, scheduler: str | None, slurm: bool) -> int:
    """torch threads per run: as given; else 1 on an existing cluster (its machines are not
    known here), the cores shared out on a LocalCluster or SLURM, all of them in-process."""
    if threads:
        return threads
    if scheduler:
        return 1
    if workers or slurm:
        return max(1, (os.cpu_count() or 1) // (workers or 1))
    import torch

    return torch.get_num_threads()


@contextmanager
def dask_executor(workers: int | None, threads: int, scheduler: str | None, slurm: bool, slurm_opts: str | None,
                  data_spec: DataSpec | None, on_event=None):
    """The executor the options ask for, its cluster started here and stopped on the way out."""
    if slurm:
        client, cluster = slurm_cluster(workers or 1, threads, slurm_opts)
    elif scheduler:
        client, cluster = connect(scheduler), None
    else:
        client, cluster = local_cluster(workers, threads)
    try:
        yield DaskExecutor(client, data_spec, on_event)
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def check_options(workers: int | None, threads: int | None, scheduler: str | None, slurm: bool) -> None:
    if scheduler and (workers or slurm):
        raise UsageError("--scheduler runs on the workers that cluster has: give it without --workers or --slurm")
    if scheduler and not scheduler.startswith(("tcp://", "tls://", "ws://", "wss://", "inproc://", "ucx://")):
        raise UsageError(f"--scheduler {scheduler!r}: give an address like tcp://HOST:8786")
    if threads is not None and not (workers or scheduler or slurm) and threads > (os.cpu_count() or 1):
        raise UsageError(f"--threads {threads}: this machine has {os.cpu_count()} cores")
