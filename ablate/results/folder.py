"""A study file, or a folder of them, as one table: `ablate.load`, and `report` and `plot` given
a folder. The union of every file's columns (two studies of models with different constructor
arguments keep both), typed as the files are, with the runs still in `_parts/`."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ablate.errors import UsageError
from ablate.results.files import PARTS_FOLDER, read_per_class, read_results, run_parts


def study_files(path: Path) -> list[Path]:
    """`path` itself when it is not a folder; else the study files in it, by name: its
    `*.parquet` (not the `_`- or `.`-named ones, which are ablate's own or hidden) and the
    studies whose runs are all still in `_parts/` (killed before their first compaction)."""
    path = Path(path)
    if not path.is_dir():
        return [path]
    files = {p for p in path.glob("*.parquet") if p.is_file() and not p.name.startswith(("_", "."))}
    parts = path / PARTS_FOLDER
    if parts.is_dir():
        files |= {path / f"{d.name}.parquet" for d in parts.iterdir() if d.is_dir() and not d.name.startswith(".")
                  and run_parts(path / f"{d.name}.parquet")}
    return sorted(files)


def read_studies(path: Path, per_class: bool = False) -> tuple[pd.DataFrame, list[Path], list[str]]:
    """Every study of `path` (a study file or a folder of them) as one frame, the files it came
    from, and a note per file of the folder that is not a study's (skipped). A file named
    itself must read; a folder must hold at least one study."""
    path = Path(path)
    if not path.exists() and not run_parts(path):
        raise UsageError(f"no such file or folder: {str(path)!r}")
    files = study_files(path)
    if not path.is_dir():
        return union([read_per_class(files[0]) if per_class else read_results(files[0])]), files, []
    frames, read, notes = [], [], []
    for file in files:
        try:
            frames.append(read_per_class(file) if per_class else read_results(file))
            read.append(file)
        except UsageError as error:
            notes.append(f"skipped {error}")
    if not read:
        raise UsageError(f"{str(path)!r} holds no ablate study file (*.parquet)"
                         + (f": {notes[0].removeprefix('skipped ')}" if notes else ""))
    return union(frames), read, notes


def union(frames: list[pd.DataFrame]) -> pd.DataFrame:
    """The frames one under another with the union of their columns: a column some files lack
    is null there, and keeps its type (whole numbers as Int64, true/false as boolean, rather
    than floats and objects)."""
    frames = [f for f in frames if len(f.columns)]
    if len(frames) <= 1:
        return frames[0] if frames else pd.DataFrame()
    frame = pd.concat([f for f in frames if len(f)] or frames[:1], ignore_index=True, sort=False)
    for column in frame.columns:
        kinds = {f[column].dtype.kind for f in frames if column in f and len(f) and f[column].notna().any()}
        if not frame[column].isna().any() or len(kinds) != 1:
            continue
        kind = next(iter(kinds))
        if kind in "iu":
            frame[column] = frame[column].astype("Int64")
        elif kind == "b" or (kind == "O" and frame[column].dropna().map(type).eq(bool).all()):
            frame[column] = frame[column].astype("boolean")
    return frame


def load(path, per_class: bool = False) -> pd.DataFrame:
    """Every run of a study file or of a folder of them, as one typed DataFrame: one row per
    (study, variant, seed, epoch, split), the union of the files' columns (a constructor
    argument of one study's model is null in another's rows), the runs still in `_parts/`
    included. `per_class=True`: the per-class test rows instead. Files in the folder that are
    not ablate's study files are skipped with a warning."""
    import warnings

    frame, _, notes = read_studies(Path(path), per_class)
    for note in notes:
        warnings.warn(note, stacklevel=2)
    return frame
