"""Writing tables: Parquet that describes itself, or CSV, always by atomic replace."""

from __future__ import annotations

import json
import os
import shlex
import tempfile
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from filelock import FileLock, Timeout

from ablate.errors import UsageError

SUFFIXES = (".parquet", ".csv")


def provenance(argv: list[str]) -> dict[str, str]:
    """Versions, command line and time: what every file we write records about itself."""
    import torch
    import torchvision

    from ablate import __version__

    return {
        "ablate_version": __version__,
        "torch_version": torch.__version__,
        "torchvision_version": torchvision.__version__,
        "command": shlex.join(["ablate", *argv]),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def check_writable(path: Path, suffixes=SUFFIXES) -> None:
    """Fail early, before any work, when `path` cannot be written (its folder is made here)."""
    path = Path(path)
    if path.suffix.lower() not in suffixes:
        allowed = ", ".join(suffixes[:-1]) + " or " + suffixes[-1] if len(suffixes) > 1 else suffixes[0]
        raise UsageError(f"cannot write {str(path)!r}: the file name must end in {allowed}")
    if path.is_dir():
        raise UsageError(f"cannot write {str(path)!r}: it is a directory")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path.parent):
            pass
    except OSError as error:
        raise UsageError(
            f"cannot write {str(path)!r}: {str(path.parent)!r} is not a writable directory "
            f"({error.strerror or error})"
        ) from None


def write_frame(frame: pd.DataFrame, path: Path, metadata: dict[str, str] | None = None) -> None:
    """Write `frame` to `path` (.parquet with `metadata` in the file, or .csv) atomically."""
    path = Path(path)
    check_writable(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; a results file is as readable as any other
    try:
        if path.suffix.lower() == ".csv":
            frame.to_csv(tmp, index=False)
        else:
            table = pa.Table.from_pandas(frame, preserve_index=False)
            meta = dict(table.schema.metadata or {})
            meta[b"ablate"] = json.dumps(metadata or {}).encode()
            pq.write_table(table.replace_schema_metadata(meta), tmp)
        with open(tmp, "rb") as written:  # on disk before it takes the name: power loss too
            os.fsync(written.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def read_metadata(path: Path) -> dict[str, str]:
    """The ablate metadata stored in a Parquet file by `write_frame`."""
    meta = pq.read_schema(path).metadata or {}
    return json.loads(meta.get(b"ablate", b"{}"))


def classes_path(path: Path) -> Path:
    """results/linearity.parquet -> results/linearity.classes.parquet"""
    return path.with_name(path.name.removesuffix(".parquet") + ".classes.parquet")


def read_results(path: Path) -> pd.DataFrame:
    """A study file written by ablate; anything else is a usage error."""
    if not Path(path).is_file():
        raise UsageError(f"no such file: {str(path)!r}")
    try:
        frame = pd.read_parquet(path)
    except Exception as error:
        raise UsageError(f"{str(path)!r} is not a readable Parquet file ({type(error).__name__})") from None
    missing = {"study", "variant", "seed", "epoch", "split", "run_id"} - set(frame.columns)
    if missing:
        raise UsageError(f"{str(path)!r} is not an ablate study result: no column {', '.join(sorted(missing))}")
    return frame


class StudyFile:
    """The Parquet pair of one study, rewritten by atomic replace after every finished run.

    An existing file is refused unless `resume` (keep its runs, skip their run_ids) or
    `force` (replace it when the first new run finishes). While it is open, a lock file
    beside it keeps a second ablate from writing the same study (the OS releases the lock
    even when the process is killed).
    """

    def __init__(self, path: Path, resume: bool = False, force: bool = False):
        self.path = Path(path)
        self.classes = classes_path(self.path)
        check_writable(self.path, (".parquet",))
        self.lock = FileLock(self.path.with_name(f".{self.path.name}.lock"))
        try:
            self.lock.acquire(timeout=0)
        except Timeout:
            raise UsageError(
                f"another ablate is writing {str(self.path)!r}: wait for it to finish, or give another --out"
            ) from None
        for name in (self.path.name, self.classes.name):  # temporary files a killed writer left
            for stale in self.path.parent.glob(f".{name}.*.tmp"):
                stale.unlink()
        try:
            self._load(resume, force)
        except BaseException:
            self.close()
            raise

    def _load(self, resume: bool, force: bool) -> None:
        self.runs = pd.DataFrame()
        self.class_rows = pd.DataFrame()
        if self.path.exists() and not force:
            if not resume:
                raise UsageError(
                    f"{str(self.path)!r} exists: add --resume to finish its study, --force to "
                    "overwrite it, or give another --out"
                )
            self.runs = read_results(self.path)
            if self.classes.exists():
                try:
                    self.class_rows = pd.read_parquet(self.classes)
                except Exception as error:
                    raise UsageError(f"{str(self.classes)!r} is not a readable Parquet file "
                                     f"({type(error).__name__}); move it away to resume") from None

    def close(self) -> None:
        self.lock.release()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def done(self) -> set[str]:
        return set(self.runs["run_id"]) if len(self.runs) else set()

    def add(self, runs: pd.DataFrame, class_rows: pd.DataFrame, metadata: dict[str, str]) -> None:
        """Append one run's rows; the classes file first, so the main file never runs ahead."""
        run_ids = set(runs["run_id"])
        if len(self.class_rows):
            self.class_rows = self.class_rows[~self.class_rows["run_id"].isin(run_ids)]
        self.class_rows = pd.concat([self.class_rows, class_rows], ignore_index=True)
        self.runs = pd.concat([self.runs, runs], ignore_index=True)
        write_frame(self.class_rows, self.classes, metadata)
        write_frame(self.runs, self.path, metadata)
