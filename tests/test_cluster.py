"""Studies on a Dask cluster: a LocalCluster, an existing scheduler with its workers, a worker
killed mid-study, a run that fails on its own, and the SLURM job script. Loopback only."""

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pandas as pd
import pytest

from conftest import NUMBERS, late_failing_model

STUDY = ["linearity", "--dataset", "synthetic", "--limit-train", "400", "--limit-test", "100", "--epochs", "2",
         "--batch-size", "50", "--device", "cpu", "--threads", "1", "--seeds", "2"]
BIN = Path(sys.executable).parent
FAILING_MODEL = late_failing_model('this model refuses to train\nsecond line')


@pytest.fixture(scope="module")
def in_process(tmp_path_factory):
    """The study trained in this process at one thread: the table every cluster must give."""
    from typer.testing import CliRunner

    from ablate.cli import app

    out = tmp_path_factory.mktemp("in-process") / "study.parquet"
    result = CliRunner().invoke(app, [*STUDY, "--out", str(out)])
    assert result.exit_code == 0, result.output
    return pd.read_parquet(out)


def test_a_local_cluster_gives_the_in_process_table(tmp_path, ablate, in_process):
    out = tmp_path / "cluster.parquet"
    result = ablate([*STUDY, "--workers", "2", "--out", out])
    assert result.exit_code == 0, result.output
    frame = pd.read_parquet(out)
    pd.testing.assert_frame_equal(frame[NUMBERS], in_process[NUMBERS], check_exact=True)
    assert set(frame["threads"]) == {1}


def test_packed_seeds_on_a_local_cluster_give_the_packed_table(tmp_path, ablate):
    here, there = tmp_path / "here.parquet", tmp_path / "there.parquet"
    assert ablate([*STUDY, "--pack", "--out", here]).exit_code == 0
    assert ablate([*STUDY, "--pack", "--workers", "2", "--out", there]).exit_code == 0
    frame = pd.read_parquet(there)
    pd.testing.assert_frame_equal(frame[NUMBERS], pd.read_parquet(here)[NUMBERS], check_exact=True)
    assert set(frame["packed"]) == {2}


@pytest.fixture
def dask_cluster(tmp_path):
    """`dask scheduler` and two `dask worker` processes on 127.0.0.1, as a user starts them."""
    scheduler_file = tmp_path / "scheduler.json"
    env = {**os.environ, "DASK_DISTRIBUTED__WORKER__DAEMON": "False"}
    processes = [subprocess.Popen([BIN / "dask", "scheduler", "--host", "127.0.0.1", "--port", "0",
                                   "--no-dashboard", "--scheduler-file", scheduler_file],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)]
    deadline = time.monotonic() + 60
    while not scheduler_file.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    address = json.loads(scheduler_file.read_text())["address"]
    assert address.startswith("tcp://127.0.0.1:")
    for name in ("w1", "w2"):
        processes.append(subprocess.Popen(
            [BIN / "dask", "worker", address, "--host", "127.0.0.1", "--nthreads", "1", "--no-nanny",
             "--no-dashboard", "--name", name], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env))
    from distributed import Client

    with Client(address, timeout=30) as client:
        client.wait_for_workers(2, timeout=60)
    yield address, processes
    for process in processes:
        process.kill()
        process.wait()


def test_an_existing_scheduler_and_a_worker_killed_mid_study(tmp_path, in_process, dask_cluster):
    address, processes = dask_cluster
    out = tmp_path / "remote.parquet"
    driver = subprocess.Popen([sys.executable, "-m", "ablate", *STUDY, "--dask-scheduler", address, "--out", out],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not out.exists() and time.monotonic() < deadline and driver.poll() is None:
        time.sleep(0.05)
    processes[1].send_signal(signal.SIGKILL)  # a worker dies in the middle of the study
    stdout, stderr = driver.communicate(timeout=300)
    assert driver.returncode == 0, stderr
    frame = pd.read_parquet(out)
    pd.testing.assert_frame_equal(frame[NUMBERS], in_process[NUMBERS], check_exact=True)
    assert "linear-wide" in stdout


def test_a_scheduler_that_is_not_there_is_a_usage_error(ablate):
    result = ablate([*STUDY, "--dask-scheduler", "tcp://127.0.0.1:9", "--out", "x.parquet"])
    assert result.exit_code == 2 and "--dask-scheduler tcp://127.0.0.1:9: cannot connect" in result.stderr


def test_a_run_that_raises_is_recorded_as_failed_and_the_study_goes_on(tmp_path, ablate, monkeypatch):
    (tmp_path / "explodingnets.py").write_text(FAILING_MODEL)
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "f.parquet"
    result = ablate(["sweep", *STUDY[1:-2], "--model", "explodingnets:Net", "--vary", "explode=False,True",
                     "--out", out])
    assert result.exit_code == 0, result.output
    frame = pd.read_parquet(out)
    failed = frame[frame.variant == "explode=True"]
    assert (failed["status"] == "failed").all() and len(failed) == 1
    assert failed["error"].iloc[0] == "ValueError: this model refuses to train"
    assert (frame[frame.variant == "base"]["status"] == "ok").all()
    assert "explode=True seed 0 failed" in result.stderr
    again = ablate(["sweep", *STUDY[1:-2], "--model", "explodingnets:Net", "--vary", "explode=False,True",
                    "--out", out, "--resume"])  # a failed run is tried again; the others are kept
    assert again.exit_code == 0 and "explode=True seed 0 failed" in again.stderr
    assert "base seed 0" not in again.stderr and len(pd.read_parquet(out)) == len(frame)


def test_the_slurm_job_script(ablate, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    result = ablate([*STUDY, "--slurm", "--workers", "4", "--threads", "2", "--dry-run",
                     "--slurm-opts", "partition=gpu time=02:00:00 mem=16GB gpus=1"])
    assert result.exit_code == 0, result.output
    for line in ("#SBATCH -p gpu", "#SBATCH --cpus-per-task=2", "#SBATCH -t 02:00:00", "#SBATCH --gpus=1",
                 "#SBATCH --mem=15G", "--nthreads 1"):
        assert line in result.stdout, line
    assert "each of the 4 SLURM jobs would run" in result.stdout
    assert list(tmp_path.iterdir()) == []
    bad = ablate([*STUDY, "--slurm", "--dry-run", "--slurm-opts", "nodes=2"])
    assert bad.exit_code == 2 and "KEY one of partition, time, mem, account, gpus, qos" in bad.stderr


def test_data_a_worker_cannot_see_is_sent_once_per_worker_and_no_dashboard_listens(tmp_path, tiny_data):
    from distributed import Future

    from ablate.execution import cluster

    with socket.socket() as taken, warnings.catch_warnings(record=True) as warned:
        warnings.simplefilter("always")
        with contextlib.suppress(OSError):  # 8787 taken, as by another Dask or Jupyter: no warning about it
            taken.bind(("127.0.0.1", 8787))
            taken.listen()
        client, local = cluster.local_cluster(2, 1)
    try:
        assert not [str(w.message) for w in warned if "ort" in str(w.message)]
        http = [s.getsockname() for s in local.scheduler.http_server._sockets.values()]
        assert http and all(host == "127.0.0.1" and port != 8787 for host, port in http)  # no dashboard on 8787
        unseen = cluster.DataSpec("mnist", str(tmp_path), None, None, None, 0.2)  # an empty data folder
        shipped = cluster.DaskExecutor(client, unseen).data_on_workers(tiny_data)
        assert isinstance(shipped, Future)
        holders = client.who_has(shipped)[shipped.key]
        assert len(holders) == 2  # broadcast: on every worker, sent once
        seen = cluster.DataSpec("synthetic", None, 300, 100, None, 0.2)
        assert cluster.DaskExecutor(client, seen).data_on_workers(tiny_data) == seen  # loaded there instead
    finally:
        client.close()
        local.close()


INTERRUPTED = re.compile(r"interrupted: (\d+) of (\d+) runs are saved in (.+) \((.*)\); "
                         r"run the same command with --resume to finish")


def ctrl_c(tmp_path, name, when, again=None):
    """A study on a LocalCluster of 2 in a process group of its own, and Ctrl-C as a terminal
    sends it (SIGINT to the driver and its workers) once `when(process, out)` holds, and again
    `again` s later. Returns the process's stderr, the file and every process it started."""
    psutil = pytest.importorskip("psutil")
    out = tmp_path / f"{name}.parquet"
    process = subprocess.Popen(
        [sys.executable, "-m", "ablate", *CTRL_C_STUDY, "--out", out], stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE, text=True, start_new_session=True)
    driver, started = psutil.Process(process.pid), set()

    def children():
        try:
            found = driver.children(recursive=True)
        except psutil.Error:
            return []
        started.update(found)
        return found

    deadline = time.monotonic() + 120
    while process.poll() is None and not when(children(), out) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert process.poll() is None, "the study ended before the signal"
    os.killpg(process.pid, signal.SIGINT)
    if again is not None:
        time.sleep(again)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGINT)
    while process.poll() is None and time.monotonic() < deadline + 60:
        children()
        time.sleep(0.05)
    _, stderr = process.communicate(timeout=10)
    assert process.returncode == 130, stderr
    psutil.wait_procs(list(started), timeout=10)
    assert not [p for p in started if p.is_running() and p.status() != psutil.STATUS_ZOMBIE], "left running"
    return stderr, out


def command_line(process) -> str:
    try:
        return " ".join(process.cmdline())
    except Exception:  # gone, or a zombie
        return ""


def starting(children, out):  # the cluster's first process: its resource tracker or a worker
    return any("multiprocessing" in command_line(c) for c in children)


def saved(children, out):
    return out.exists()


CTRL_C_STUDY = ["linearity", "--dataset", "synthetic", "--limit-train", "800", "--limit-test", "100", "--epochs",
                "3", "--batch-size", "50", "--device", "cpu", "--threads", "1", "--workers", "2"]


@pytest.mark.skipif(os.name != "posix", reason="signals, process groups")
@pytest.mark.parametrize("when,again", [(starting, None), (saved, 0.5)], ids=["while-starting", "while-training"])
def test_ctrl_c_on_a_local_cluster_prints_one_line_and_keeps_what_it_says(tmp_path, when, again):
    stderr, out = ctrl_c(tmp_path, "c", when, again)
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert lines, "nothing printed"
    found = INTERRUPTED.fullmatch(lines[-1])
    assert found and found[3] == str(out), stderr
    assert all(line.startswith("linearity") for line in lines[:-1]), stderr  # the display's last frame
    for noise in ("Traceback", "distributed", "tornado", "asyncio", "Error", "WARNING", "Warning", "Exception",
                  "KeyboardInterrupt"):
        assert noise not in stderr, stderr
    listed = set() if found[4] == "none" else {tuple(run.rsplit("/", 1)) for run in found[4].split(", ")}
    assert int(found[1]) == len(listed) and int(found[2]) == 3
    if out.exists():
        frame = pd.read_parquet(out)
        assert {(v, str(s)) for v, s in zip(frame["variant"], frame["seed"])} == listed
        assert (frame.groupby("run_id").size() == 4 * 2).all()  # each saved run whole: epochs 0-3, train and test
    else:
        assert not listed
    if when is saved:
        assert listed
