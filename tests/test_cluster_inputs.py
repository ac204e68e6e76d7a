"""The cluster options, refused in one line before anything is loaded, started or contacted:
more LocalCluster workers than cores, SLURM without its commands, scheduler addresses that are
malformed or where no scheduler answers. Loopback only; SLURM is never started (mocks)."""

import os
import socket
import threading
import time

import pytest

from ablate import machine
from ablate.execution import cluster

STUDY = ["linearity", "--dataset", "synthetic", "--limit-train", "300", "--limit-test", "100", "--epochs", "1",
         "--batch-size", "50", "--device", "cpu"]


def refused(result, message, where=None):
    """Exit 2, the one line, no traceback; nothing created in `where`."""
    assert result.exit_code == 2, result.output
    assert result.stderr.strip().splitlines() == [result.stderr.strip()], result.stderr
    assert message in result.stderr, result.stderr
    assert "Traceback" not in result.output
    if where is not None:
        assert list(where.iterdir()) == []


@pytest.fixture
def nothing_starts(monkeypatch):
    """Every way a cluster starts, made to fail the test if reached."""
    def never(*args, **kwargs):
        raise AssertionError("a cluster was started")

    import dask_jobqueue
    import distributed

    for module, name in ((cluster, "local_cluster"), (cluster, "connect"),
                         (distributed, "LocalCluster"), (distributed, "Client"), (dask_jobqueue, "SLURMCluster"),
                         (socket, "create_connection")):
        monkeypatch.setattr(module, name, never)


def test_cpu_cores_is_the_affinity_mask(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 3, 5}, raising=False)
    assert machine.cpu_cores() == 3


@pytest.mark.parametrize("cores,args,message", [
    (2, ["--workers", "3"], "--workers 3: a LocalCluster takes at most one worker per CPU core (one run each), "
                            "and this machine has 2; use --dask-scheduler or --slurm for more"),
    (2, ["--workers", "1000"], "--workers 1000: a LocalCluster takes at most one worker per CPU core"),
    (1, ["--workers", "2"], "and this machine has 1; use --dask-scheduler or --slurm for more"),
    (4, ["--workers", "2", "--threads", "3"], "--workers 2 --threads 3: 6 torch threads on 4 CPU cores; "
                                              "give --threads 2 or fewer workers"),
    (4, ["--threads", "5"], "--threads 5: this machine has 4 CPU cores"),
    (4, ["--slurm", "--workers", "1001"], "--slurm --workers 1001: at most 1000 SLURM jobs at once"),
])
def test_more_than_the_machine_is_refused_before_anything_starts(ablate, monkeypatch, tmp_path, nothing_starts,
                                                                 cores, args, message):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(cores)), raising=False)
    monkeypatch.chdir(tmp_path)
    refused(ablate([*STUDY, *args]), message, tmp_path)


def test_as_many_workers_as_cores_pass_the_check(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    cluster.check_options(2, None, None, False)
    cluster.check_options(2, 1, None, False)
    cluster.check_options(1000, 64, None, True)  # SLURM jobs run elsewhere: their cores are not this machine's


def test_a_workers_count_no_machine_has(ablate, tmp_path, monkeypatch, nothing_starts):
    monkeypatch.chdir(tmp_path)
    refused(ablate([*STUDY, "--workers", "100000"]), "a LocalCluster takes at most one worker per CPU core", tmp_path)


@pytest.fixture
def slurm_bin(tmp_path, monkeypatch):
    """A PATH with only python's folder (no SLURM); `add(name)` puts a fake command there that
    fails if it is ever run."""
    folder = tmp_path / "bin"
    folder.mkdir()
    monkeypatch.setenv("PATH", str(folder))

    def add(*names):
        for name in names:
            (folder / name).write_text("#!/bin/sh\necho never run >&2\nexit 99\n")
            (folder / name).chmod(0o755)

    return add


def test_slurm_without_sbatch_is_refused_and_its_dry_run_still_prints_the_script(ablate, tmp_path, monkeypatch,
                                                                               slurm_bin, nothing_starts):
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    refused(ablate([*STUDY, "--slurm", "--workers", "2"]), "--slurm: sbatch is not on PATH: run this on a machine "
                                                           "that submits SLURM jobs", work)
    slurm_bin("sbatch")
    refused(ablate([*STUDY, "--slurm"]), "--slurm: scancel is not on PATH", work)
    dry = ablate([*STUDY, "--slurm", "--workers", "2", "--dry-run"])  # how a user reads the job script
    assert dry.exit_code == 0, dry.output
    assert "#SBATCH" in dry.stdout and "each of the 2 SLURM jobs would run" in dry.stdout
    assert list(work.iterdir()) == []


def test_slurm_with_its_commands_reaches_the_slurm_cluster(ablate, tmp_path, monkeypatch, slurm_bin):
    import dask_jobqueue

    slurm_bin("sbatch", "scancel")
    seen = {}

    class Reached(Exception):
        pass

    def fake(**settings):  # instead of a scheduler listening for the compute nodes
        seen.update(settings)
        raise Reached

    monkeypatch.setattr(dask_jobqueue, "SLURMCluster", fake)
    monkeypatch.chdir(tmp_path)
    result = ablate([*STUDY, "--slurm", "--workers", "3", "--threads", "2", "--slurm-opts", "partition=gpu",
                     "--out", "s.parquet"])
    assert isinstance(result.exception, Reached), result.output
    assert seen["job_cpu"] == 2 and seen["queue"] == "gpu"
    assert not (tmp_path / "s.parquet").exists()


MALFORMED = [
    ("tcp://", "--dask-scheduler 'tcp://': no host and no port; give the address the scheduler prints, "
               "like tcp://HOST:8786"),
    ("tcp://host", "--dask-scheduler 'tcp://host': no port;"),
    ("tcp://:8786", "--dask-scheduler 'tcp://:8786': no host;"),
    ("tcp://host:", "no port;"),
    ("tcp://host:notaport", "the port 'notaport' is not a number;"),
    ("tcp://host:99999", "the port 99999 is out of range (1 to 65535);"),
    ("tcp://host:0", "the port 0 is out of range (1 to 65535);"),
    ("http://host:8787", "http:// is a web address (a dashboard's, port 8787?), not a scheduler's;"),
    ("ftp://host:21", "unknown protocol 'ftp://' (Dask's are tcp://, tls://, ws://, wss://, ucx://);"),
    ("inproc://host/1/2", "inproc:// is a scheduler inside one process"),
    ("", "--dask-scheduler '': the address is empty;"),
    ("   ", "the address is empty;"),
    ("localhost", "--dask-scheduler 'localhost': no port;"),
    ("tcp:/host:8786", "malformed (write PROTOCOL://HOST:PORT)"),
    ("tcp://host:8786/status", "unexpected '/status' (an address is PROTOCOL://HOST:PORT, nothing more);"),
    ("tcp://user@host:8786", "unexpected '@host:8786'"),
    ("tcp://::1:8786", "an IPv6 host goes in brackets, [::1];"),
    ("tcp://[::1:8786", "malformed IPv6 host"),
]


@pytest.mark.parametrize("address,message", MALFORMED)
def test_a_malformed_scheduler_address_is_refused_before_anything_connects(ablate, tmp_path, monkeypatch,
                                                                           nothing_starts, address, message):
    monkeypatch.chdir(tmp_path)
    refused(ablate([*STUDY, "--dask-scheduler", address]), message, tmp_path)


@pytest.mark.parametrize("address,parsed", [
    ("tcp://10.1.2.3:8786", ("tcp", "10.1.2.3", 8786)),
    ("TLS://node-7.cluster:8786", ("tls", "node-7.cluster", 8786)),
    ("node-7:8786", ("tcp", "node-7", 8786)),  # Dask's default protocol
    ("tcp://[::1]:8786", ("tcp", "::1", 8786)),
    (" ws://host:1 ", ("ws", "host", 1)),
])
def test_well_formed_scheduler_addresses(address, parsed):
    assert cluster.scheduler_address(address) == parsed


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_a_scheduler_address_where_nothing_listens_is_refused_at_once(ablate, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    port = free_port()
    start = time.monotonic()
    result = ablate([*STUDY, "--dask-scheduler", f"tcp://127.0.0.1:{port}", "--out", "x.parquet"])
    refused(result, f"--dask-scheduler tcp://127.0.0.1:{port}: cannot connect: nothing listens at 127.0.0.1:{port} "
                    "(is `dask scheduler` running there, on that port?)", tmp_path)
    assert time.monotonic() - start < 30  # the data and torch, not Dask's retries for 10 s


def test_a_listener_that_never_answers_is_refused_within_the_timeout(ablate, tmp_path, monkeypatch):
    monkeypatch.setattr(cluster, "CONNECT_SECONDS", 1)
    accepted = []
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        port = server.getsockname()[1]

        def accept():
            try:
                while True:
                    accepted.append(server.accept()[0])  # and say nothing
            except OSError:
                pass

        threading.Thread(target=accept, daemon=True).start()
        monkeypatch.chdir(tmp_path)
        start = time.monotonic()
        result = ablate([*STUDY, "--dask-scheduler", f"tcp://127.0.0.1:{port}", "--out", "x.parquet"])
        took = time.monotonic() - start
    for connection in accepted:
        connection.close()
    refused(result, f"--dask-scheduler tcp://127.0.0.1:{port}: no answer from a Dask scheduler there within 1 s; "
                    "is it the address `dask scheduler` printed?", tmp_path)
    assert accepted and took < 30


def test_the_dask_address_option_has_a_name_apart_from_the_learning_rate_scheduler(ablate, tmp_path, monkeypatch):
    """--dask-scheduler is the Dask address; --scheduler, its old name, is the learning-rate
    schedule now, and an address given to it says where it goes."""
    monkeypatch.chdir(tmp_path)  # the default --out, results/linearity.parquet, is this test's own
    new = ablate([*STUDY, "--dask-scheduler", "tcp://"])
    assert new.exit_code == 2 and "--dask-scheduler 'tcp://': no host and no port" in new.stderr
    for address in ("tcp://127.0.0.1:8786", "127.0.0.1:8786"):
        refused(ablate([*STUDY, "--scheduler", address]), f"--scheduler {address}: --scheduler is the learning-rate "
                "schedule (none, step, exponential, cosine, onecycle); a Dask scheduler's address is --dask-scheduler",
                tmp_path)
    dry = ablate([*STUDY, "--scheduler", "cosine", "--dry-run"])
    assert dry.exit_code == 0, dry.output
