"""Writing tables: Parquet that describes itself, or CSV, always by atomic replace."""

from __future__ import annotations

import json
import os
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from ablate.errors import UsageError

SUFFIXES = (".parquet", ".csv")


def provenance() -> dict[str, str]:
    """Versions, command line and time: what every file we write records about itself."""
    import torch
    import torchvision

    from ablate import __version__

    return {
        "ablate_version": __version__,
        "torch_version": torch.__version__,
        "torchvision_version": torchvision.__version__,
        "command": " ".join(["ablate", *sys.argv[1:]]),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def check_writable(path: Path, suffixes=SUFFIXES) -> None:
    """Fail early, before any work, when `path` cannot be written."""
    if path.suffix.lower() not in suffixes:
        raise UsageError(f"cannot write {str(path)!r}: the file name must end in {' or '.join(suffixes)}")
    parent = path.parent if str(path.parent) else Path(".")
    existing = parent
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir() or not os.access(existing, os.W_OK):
        raise UsageError(f"cannot write {str(path)!r}: {str(existing)!r} is not a writable directory")
    if path.is_dir():
        raise UsageError(f"cannot write {str(path)!r}: it is a directory")


def write_frame(frame: pd.DataFrame, path: Path, metadata: dict[str, str] | None = None) -> None:
    """Write `frame` to `path` (.parquet with `metadata` in the file, or .csv) atomically."""
    path = Path(path)
    check_writable(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        if path.suffix.lower() == ".csv":
            frame.to_csv(tmp, index=False)
        else:
            table = pa.Table.from_pandas(frame, preserve_index=False)
            meta = dict(table.schema.metadata or {})
            meta[b"ablate"] = json.dumps(metadata or {}).encode()
            pq.write_table(table.replace_schema_metadata(meta), tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def read_metadata(path: Path) -> dict[str, str]:
    """The ablate metadata stored in a Parquet file by `write_frame`."""
    meta = pq.read_schema(path).metadata or {}
    return json.loads(meta.get(b"ablate", b"{}"))
