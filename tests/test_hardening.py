"""Bad input (every row of the README's table), interruption, divergence, concurrent use."""

import gzip
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import errno

import pandas as pd
import pytest
import torch
from filelock import FileLock

from ablate.results import files as results
from ablate.results.files import write_frame
from conftest import NUMBERS, TINY

README = Path(__file__).parent.parent / "docs" / "reliability.md"


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
    from typer.testing import CliRunner

    from ablate.cli import app

    root = tmp_path_factory.mktemp("bad-input")
    (root / "corrupt.parquet").write_bytes(b"PAR1 this is not parquet")
    write_frame(pd.DataFrame({"name": ["x"], "value": [1.0]}), root / "foreign.parquet")
    (root / "notadir").write_text("a plain file")
    (root / "malformed.toml").write_text('name = "x"\n[vary\nlr = [0.1]\n')
    (root / "unknown.toml").write_text('name = "x"\n\n[base]\nlearning_rate = 0.1\n\n[vary]\nlr = [0.1, 1]\n')
    (root / "empty-data").mkdir()
    (root / "corrupt-data").mkdir()
    for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
                 "t10k-labels-idx1-ubyte"):
        header = b"\x00\x00\x08\x03" + (60000).to_bytes(4, "big") + (28).to_bytes(4, "big") * 2
        (root / "corrupt-data" / f"{name}.gz").write_bytes(gzip.compress(header + b"\x00" * 100))
    result = CliRunner().invoke(app, ["linearity", *TINY, "--out", str(root / "finished.parquet")])
    assert result.exit_code == 0, result.output
    finished = pd.read_parquet(root / "finished.parquet")
    keys = ["study", "variant", "seed", "epoch", "split", "run_id", "config_id"]
    write_frame(finished[keys], root / "onlykeys.parquet")
    write_frame(finished.assign(loss=finished["loss"].astype(str)), root / "textloss.parquet")
    write_frame(finished.assign(seed=finished["seed"].astype(str)), root / "textseed.parquet")
    write_frame(finished.drop_duplicates("run_id").assign(
        epoch=None, split=None, loss=None, accuracy=None, status="failed", error="RuntimeError: out of memory"),
        root / "failed.parquet")
    write_frame(finished.iloc[:0], root / "norows.parquet", results.read_metadata(root / "finished.parquet"),
                results.read_schema(root / "finished.parquet"))
    (root / "perdata.toml").write_text("[variants.a]\nlimit_train = 100\n[variants.b]\nlimit_train = 200\n")
    (root / "floatepochs.toml").write_text("[base]\nepochs = 1.5\n[vary]\nlr = [0.1, 0.2]\n")
    (root / "emptyvariants.toml").write_text("[variants]\n")
    (root / "badlist.toml").write_text('[vary]\nlr = ["fast", 0.2]\n')
    net = ("import torch\nfrom torch import nn\n\n\nclass Net(nn.Module):\n    def __init__(self):\n"
           "        super().__init__()\n{init}\n\n    def forward(self, x):\n        {forward}\n")
    body = "        self.body = nn.Sequential(nn.Flatten(), nn.Linear(3072, 64), nn.ReLU(), nn.Linear(64, {n}))"
    (root / "notes.pt").write_text("not weights")
    from ablate.arch import tutorial

    torch.save(tutorial(in_channels=3, num_classes=7).state_dict(), root / "tutorial7.pt")
    (root / "badimport.py").write_text("1 / 0\n")
    (root / "badbuild.py").write_text(net.format(init='        raise RuntimeError("constructor broke")',
                                                 forward="return x"))
    (root / "badforward.py").write_text(net.format(init=body.format(n=10), forward='raise RuntimeError("forward broke")'))
    (root / "keyforward.py").write_text(net.format(init=body.format(n=10), forward='return {"a": x}["b"]'))
    (root / "lazyunused.py").write_text(net.format(init="        self.spare = nn.LazyLinear(10)", forward="return x"))
    (root / "badclasses.py").write_text(net.format(init=body.format(n=17), forward="return self.body(x)"))
    return root


def snapshot(root: Path) -> dict:
    """Every path under `root`, folders and hidden files too, with each file's bytes."""
    return {p: p.read_bytes() if p.is_file() else None for p in root.rglob("*")}


@pytest.mark.parametrize("command,message", readme_rows())
def test_every_bad_input_in_the_readme(workdir, monkeypatch, ablate, command, message):
    import torchvision

    # matplotlib writes its font cache under XDG_CACHE_HOME on its first import, which the CLI
    # makes only when it draws: imported before XDG_CACHE_HOME points into the snapshot
    from ablate.reporting import plot  # noqa: F401

    def offline(*args, **kwargs):
        raise OSError("no network")

    monkeypatch.setattr(torchvision.datasets, "MNIST", offline)
    monkeypatch.setenv("XDG_CACHE_HOME", str(workdir / "cache"))
    monkeypatch.delenv("ABLATE_DATA", raising=False)
    monkeypatch.chdir(workdir)
    monkeypatch.setattr(sys, "dont_write_bytecode", True)  # importing a user's model writes no __pycache__
    before = snapshot(workdir)
    result = ablate(shlex.split(command)[1:])
    assert result.exit_code == 2, result.output
    assert message in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.output
    assert snapshot(workdir) == before


def test_readme_table_is_not_empty():
    assert len(readme_rows()) >= 40


def test_every_row_of_the_files_table_names_tests_that_exist():
    """docs/reliability.md's "Files and plugins someone else wrote": each row is run by the tests
    it names (a file, or file::function), and each of them is in the suite."""
    table = README.read_text().split("<!-- files-table -->")[1].split("<!-- end -->")[0].strip().splitlines()[2:]
    assert len(table) >= 15
    for row in table:
        named = re.findall(r"`(tests/[\w/]+\.py)(?:::(\w+))?`", row.rsplit(" | ", 1)[1])
        assert named, row
        for path, function in named:
            source = (README.parent.parent / path).read_text()
            assert not function or re.search(rf"^def {function}\(", source, re.M), (path, function)


def test_kill_9_keeps_finished_runs_and_resume_completes(tmp_path, ablate):
    args = ["linearity", "--dataset", "synthetic", "--limit-train", "3000", "--limit-test", "200",
            "--epochs", "3", "--batch-size", "50", "--device", "cpu"]
    whole = tmp_path / "whole.parquet"
    assert ablate([*args, "--out", str(whole)]).exit_code == 0

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
    assert (partial.groupby("run_id").size() == 4 * 2).all()  # every saved run is whole: epochs 0-3

    # what a writer killed between writing and renaming leaves (made here: the kill may miss it)
    stale = [tmp_path / ".killed.parquet.x1.tmp", tmp_path / "_per_class" / ".killed.parquet.x2.tmp"]
    for path in stale:
        path.write_bytes(b"half a parquet file")
    resumed = ablate([*args, "--out", str(killed), "--resume"])
    assert resumed.exit_code == 0, resumed.output
    assert not any(path.exists() for path in stale)
    pd.testing.assert_frame_equal(pd.read_parquet(whole)[NUMBERS], pd.read_parquet(killed)[NUMBERS],
                                  check_exact=True)
    assert resumed.stdout == ablate([*args, "--out", str(whole), "--resume"]).stdout


def test_a_full_disk_loses_no_saved_run(tmp_path, ablate, monkeypatch):
    out = tmp_path / "full.parquet"
    real, calls = results._write_temporary, []

    def disk_fills(frame, path, *args):
        calls.append(path)
        if len(calls) == 4:  # the second run: its per-class file is written, then the runs file fails
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(frame, path, *args)

    monkeypatch.setattr(results, "_write_temporary", disk_fills)
    result = ablate(["linearity", *TINY, "--out", out])
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines()[-1] == (f"ablate linearity: error: disk full while saving linear seed 0: 1 run is "
                                      f"saved in {out}; free space and run the same command with --resume")
    frame = pd.read_parquet(out)
    assert frame["variant"].unique().tolist() == ["relu"]
    assert pd.read_parquet(results.per_class_path(out))["variant"].unique().tolist() == ["relu"]
    assert not list(tmp_path.rglob("*.tmp"))
    monkeypatch.setattr(results, "_write_temporary", real)
    assert ablate(["linearity", *TINY, "--out", out, "--resume"]).exit_code == 0
    assert pd.read_parquet(out)["run_id"].nunique() == 3


def test_divergence_is_recorded_and_the_study_goes_on(tmp_path, ablate):
    out = tmp_path / "d.parquet"
    result = ablate(["optimizer", *TINY, "--optimizers", "momentum,adam", "--lr", "100", "--out", str(out)])
    assert result.exit_code == 0, result.output
    frame = pd.read_parquet(out)
    assert set(frame["variant"]) == {"momentum", "adam"}
    assert (frame[frame.variant == "momentum"]["status"] == "diverged").all()
    assert "(diverged)" in result.stdout and "recorded as diverged" in result.stderr


def test_second_writer_is_refused(tmp_path, ablate):
    out = tmp_path / "busy.parquet"
    with FileLock(tmp_path / ".busy.parquet.lock"):
        result = ablate(["linearity", *TINY, "--out", str(out)])
    assert result.exit_code == 2
    assert "another ablate is writing" in result.stderr and not out.exists()
    assert ablate(["linearity", *TINY, "--out", str(out)]).exit_code == 0  # free again


def test_deterministic_runs_are_bit_identical(tmp_path, ablate):
    frames = []
    for name in ("a", "b"):
        out = tmp_path / f"{name}.parquet"
        result = ablate(["permutation", *TINY, "--deterministic", "--out", str(out)])
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
