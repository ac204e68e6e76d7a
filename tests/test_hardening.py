"""Bad input (every row of the README's table), interruption, divergence, concurrent use."""

import gzip
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from filelock import FileLock
from typer.testing import CliRunner

from ablate.cli import app
from ablate.results import write_frame

cli = CliRunner()
README = Path(__file__).parent.parent / "README.md"
TINY = ["--dataset", "synthetic", "--limit-train", "300", "--limit-test", "100", "--epochs", "2",
        "--batch-size", "50", "--device", "cpu"]
NUMBERS = ["variant", "seed", "epoch", "split", "loss", "accuracy", "lr", "status", "run_id"]


def readme_rows():
    text = README.read_text()
    table = text.split("<!-- bad-input-table -->")[1].split("<!-- end -->")[0]
    rows = []
    for line in table.strip().splitlines()[2:]:
        command, message = (cell.strip().strip("`") for cell in line.strip("|").split("` |"))
        rows.append((command, message.split(", ...")[0]))
    return rows


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad-input")
    (root / "corrupt.parquet").write_bytes(b"PAR1 this is not parquet")
    write_frame(pd.DataFrame({"name": ["x"], "value": [1.0]}), root / "foreign.parquet")
    (root / "notadir").write_text("a plain file")
    (root / "empty-data").mkdir()
    (root / "corrupt-data").mkdir()
    for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
                 "t10k-labels-idx1-ubyte"):
        header = b"\x00\x00\x08\x03" + (60000).to_bytes(4, "big") + (28).to_bytes(4, "big") * 2
        (root / "corrupt-data" / f"{name}.gz").write_bytes(gzip.compress(header + b"\x00" * 100))
    result = cli.invoke(app, ["linearity", *TINY, "--out", str(root / "finished.parquet")])
    assert result.exit_code == 0, result.output
    return root


def snapshot(root: Path) -> dict:
    """Every file's bytes, less the hidden lock files a study leaves beside its results."""
    return {p: p.read_bytes() for p in root.rglob("*") if p.is_file() and not p.name.endswith(".lock")}


@pytest.mark.parametrize("command,message", readme_rows())
def test_every_bad_input_in_the_readme(workdir, monkeypatch, command, message):
    import torchvision

    def offline(*args, **kwargs):
        raise OSError("no network")

    monkeypatch.setattr(torchvision.datasets, "MNIST", offline)
    monkeypatch.setenv("XDG_CACHE_HOME", str(workdir / "cache"))
    monkeypatch.delenv("ABLATE_DATA", raising=False)
    monkeypatch.chdir(workdir)
    before = snapshot(workdir)
    result = cli.invoke(app, shlex.split(command)[1:])
    assert result.exit_code == 2, result.output
    assert message in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.output
    assert snapshot(workdir) == before


def test_readme_table_is_not_empty():
    assert len(readme_rows()) >= 30


def test_kill_9_keeps_finished_runs_and_resume_completes(tmp_path):
    args = ["linearity", "--dataset", "synthetic", "--limit-train", "3000", "--limit-test", "200",
            "--epochs", "3", "--batch-size", "50", "--device", "cpu"]
    whole = tmp_path / "whole.parquet"
    assert cli.invoke(app, [*args, "--out", str(whole)]).exit_code == 0

    killed = tmp_path / "killed.parquet"
    process = subprocess.Popen([sys.executable, "-m", "ablate", *args, "--out", str(killed)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not killed.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)  # into the second run
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert killed.exists(), "the first run never finished"
    partial = pd.read_parquet(killed)  # readable: written by atomic replace
    assert partial["run_id"].nunique() < 3
    assert (partial.groupby("run_id").size() == 3 * 2).all()  # every saved run is whole

    resumed = cli.invoke(app, [*args, "--out", str(killed), "--resume"])
    assert resumed.exit_code == 0, resumed.output
    assert not list(tmp_path.glob(".*.tmp"))  # what the killed writer left is cleared
    pd.testing.assert_frame_equal(pd.read_parquet(whole)[NUMBERS], pd.read_parquet(killed)[NUMBERS])
    assert resumed.stdout == cli.invoke(app, [*args, "--out", str(whole), "--resume"]).stdout


def test_divergence_is_recorded_and_the_study_goes_on(tmp_path):
    out = tmp_path / "d.parquet"
    result = cli.invoke(app, ["optimizer", *TINY, "--optimizers", "momentum,adam", "--lr", "100",
                              "--out", str(out)])
    assert result.exit_code == 0, result.output
    frame = pd.read_parquet(out)
    assert set(frame["variant"]) == {"momentum", "adam"}
    assert (frame[frame.variant == "momentum"]["status"] == "diverged").all()
    assert "(diverged)" in result.stdout and "recorded as diverged" in result.stderr


def test_second_writer_is_refused(tmp_path):
    out = tmp_path / "busy.parquet"
    with FileLock(tmp_path / ".busy.parquet.lock"):
        result = cli.invoke(app, ["linearity", *TINY, "--out", str(out)])
    assert result.exit_code == 2
    assert "another ablate is writing" in result.stderr and not out.exists()
    assert cli.invoke(app, ["linearity", *TINY, "--out", str(out)]).exit_code == 0  # free again


def test_deterministic_runs_are_bit_identical(tmp_path):
    frames = []
    for name in ("a", "b"):
        out = tmp_path / f"{name}.parquet"
        result = cli.invoke(app, ["permutation", *TINY, "--deterministic", "--out", str(out)])
        assert result.exit_code == 0, result.output
        frames.append(pd.read_parquet(out))
    assert frames[0]["deterministic"].all()
    pd.testing.assert_frame_equal(frames[0][NUMBERS], frames[1][NUMBERS], check_exact=True)


@pytest.mark.skipif(os.name != "posix", reason="signals")
def test_ctrl_c_in_a_subprocess_says_how_to_resume(tmp_path):
    out = tmp_path / "c.parquet"
    process = subprocess.Popen(
        [sys.executable, "-m", "ablate", "linearity", "--dataset", "synthetic", "--limit-train", "3000",
         "--limit-test", "200", "--epochs", "3", "--batch-size", "50", "--device", "cpu", "--out", str(out)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not out.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130
    assert "runs are saved in" in stderr and "--resume" in stderr and "Traceback" not in stderr
