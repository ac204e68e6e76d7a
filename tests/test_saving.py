"""Saving under a failing machine: a full disk, an unwritable weights folder. One line, exit 1,
and every run saved before stays saved; a trained run is in the table before anything else
can fail."""

import errno
import os
import subprocess
from pathlib import Path

import pandas as pd
import pytest

from ablate.results import files as results
from conftest import TINY


def one_error_line(result) -> str:
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    return lines[-1]


def test_pyarrow_removing_its_own_temporary_file_still_says_disk_full(tmp_path, ablate, monkeypatch):
    """What pyarrow does on a full disk: it removes the file it could not finish and raises
    OSError 28; the cleanup must not turn that into "No such file or directory"."""
    out = tmp_path / "full.parquet"
    real, calls = results.pq.write_table, []

    def full(table, where, *args, **kwargs):
        calls.append(where)
        if len(calls) == 3:  # the second run's per-class file
            Path(where).unlink()
            raise OSError(errno.ENOSPC, "Error writing bytes to file. Detail: [errno 28] No space left on device")
        return real(table, where, *args, **kwargs)

    monkeypatch.setattr(results.pq, "write_table", full)
    line = one_error_line(ablate(["linearity", *TINY, "--out", out]))
    assert line == (f"ablate linearity: error: disk full while saving linear seed 0: 1 run is saved in {out}; "
                    "free space and run the same command with --resume")
    assert pd.read_parquet(out)["variant"].unique().tolist() == ["relu"]
    assert not list(tmp_path.rglob("*.tmp"))


@pytest.mark.parametrize("error,reason", [
    (RuntimeError("Error while serializing: I/O error: No space left on device (os error 28)"), "disk full"),
    (PermissionError(errno.EACCES, "Permission denied"), "permission denied"),
])
def test_weights_that_cannot_be_saved_lose_no_run(tmp_path, ablate, monkeypatch, error, reason):
    """safetensors raises its own SafetensorError (not an OSError) on a full disk."""
    import safetensors.torch

    def fails(*args, **kwargs):
        raise error

    out = tmp_path / "m.parquet"
    monkeypatch.setattr(safetensors.torch, "save_file", fails)
    line = one_error_line(ablate(["linearity", *TINY, "--out", out, "--save-models"]))
    assert line.startswith(f"ablate linearity: error: {reason} while saving the weights of relu seed 0 "
                           f"(its results are saved): 1 run is saved in {out}; ")
    assert pd.read_parquet(out)["variant"].unique().tolist() == ["relu"]  # trained, so in the table
    monkeypatch.undo()
    resumed = ablate(["linearity", *TINY, "--out", out, "--save-models", "--resume"])
    assert resumed.exit_code == 0, resumed.output
    frame = pd.read_parquet(out)
    saved = {p.stem for p in results.models_path(out).glob("*.safetensors")}
    assert saved == set(frame["run_id"]) and len(saved) == 3  # relu trained again, with its weights


def test_an_unwritable_weights_folder_is_refused_before_training(tmp_path, ablate, monkeypatch):
    out = tmp_path / "m.parquet"
    models = results.models_path(out)
    models.parent.mkdir(parents=True)
    models.write_text("a file where the weights folder goes")
    result = ablate(["linearity", *TINY, "--out", out, "--save-models"])
    assert result.exit_code == 2, result.output
    assert "is not a directory" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not out.exists()


def _mount_tmpfs(where: Path, size: str) -> bool:
    where.mkdir()
    if os.geteuid() != 0:
        return False
    return subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
                          capture_output=True).returncode == 0


def test_a_real_full_disk(tmp_path, ablate, monkeypatch):
    """On a real file system that fills up after the first run (a small tmpfs, where this
    machine lets us mount one)."""
    disk = tmp_path / "disk"
    if not _mount_tmpfs(disk, "2m"):
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        out = disk / "full.parquet"
        real = results.StudyFile.add

        def add_then_fill(self, *args, **kwargs):
            real(self, *args, **kwargs)
            with open(disk / "filler", "ab") as filler:  # take every byte left
                try:
                    while True:
                        filler.write(b"\0" * 65536)
                        filler.flush()
                except OSError:
                    pass

        monkeypatch.setattr(results.StudyFile, "add", add_then_fill)
        line = one_error_line(ablate(["linearity", *TINY, "--out", out]))
        assert line.startswith("ablate linearity: error: disk full while saving linear seed 0: 1 run is saved")
        assert pd.read_parquet(out)["variant"].unique().tolist() == ["relu"]
        assert not [p for p in disk.rglob("*") if p.name.endswith(".tmp")]
    finally:
        subprocess.run(["umount", "-l", str(disk)], capture_output=True)
