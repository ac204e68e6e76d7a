"""Writing tables: Parquet that describes itself, or CSV, always by atomic replace."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shlex
import signal
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from filelock import FileLock, Timeout

from ablate import schema as result_columns  # the columns' one owner (a local `schema` is Arrow's)
from ablate.errors import EnvironmentFailure, UsageError

SUFFIXES = (".parquet", ".csv")
FIGURE_SUFFIXES = (".png", ".svg", ".pdf")  # the figures ablate draws (ablate plot, --plot)
ARROW_TYPES = {int: pa.int64(), float: pa.float64(), str: pa.string(), bool: pa.bool_()}
PER_CLASS_FOLDER = "_per_class"  # readers of a folder skip names starting with _ or .
MODELS_FOLDER = "_models"
PARTS_FOLDER = "_parts"
CLASSES_PART = ".classes.parquet"  # RUN_ID.classes.parquet beside RUN_ID.parquet in a parts folder


def arrow_schema(columns: dict[str, type]) -> pa.Schema:
    """An explicit schema from Python types, every column nullable: the same columns with
    the same types in every file, whatever values one study happens to hold."""
    return pa.schema([pa.field(name, ARROW_TYPES[kind]) for name, kind in columns.items()])


PER_CLASS_SCHEMA = arrow_schema(result_columns.types(result_columns.PER_CLASS))


def provenance(argv: list[str]) -> dict[str, str]:
    """Versions, command line and time: what every file we write records about itself."""
    from ablate import __version__

    return {
        "ablate_version": __version__,
        "torch_version": _version("torch"),
        "torchvision_version": _version("torchvision"),
        "command": shlex.join(["ablate", *argv]),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def _version(package: str) -> str:
    try:
        return version(package)
    except PackageNotFoundError:
        return "not installed"


def check_writable(path: Path, suffixes=SUFFIXES) -> None:
    """Fail early, before any work, when `path` could not be written. Creates nothing: the
    folders are made when the first result is written."""
    path = Path(path)
    if path.suffix.lower() not in suffixes:
        allowed = ", ".join(suffixes[:-1]) + " or " + suffixes[-1] if len(suffixes) > 1 else suffixes[0]
        raise UsageError(f"cannot write {str(path)!r}: the file name must end in {allowed}")
    if path.is_dir():
        raise UsageError(f"cannot write {str(path)!r}: it is a directory")
    folder = path.parent  # the nearest folder that exists: where the first new one would go
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        raise UsageError(f"cannot write {str(path)!r}: {str(folder)!r} is not a directory")
    try:
        with tempfile.TemporaryFile(dir=folder):  # gone when closed: nothing is left behind
            pass
    except OSError as error:
        raise UsageError(f"cannot write {str(path)!r}: {str(folder)!r} is not writable "
                         f"({error.strerror or error})") from None


def _arrow(frame: pd.DataFrame, schema: pa.Schema | None, metadata: dict) -> pa.Table:
    if schema is None:
        table = pa.Table.from_pandas(frame, preserve_index=False)
    else:
        table = pa.Table.from_pandas(frame.reindex(columns=schema.names), schema=schema, preserve_index=False)
    meta = dict(table.schema.metadata or {})
    meta[b"ablate"] = json.dumps(metadata or {}).encode()
    return table.replace_schema_metadata(meta)


def _write_temporary(frame: pd.DataFrame, path: Path, metadata: dict, schema: pa.Schema | None) -> str:
    """Write to a hidden temporary file beside `path`, on disk (fsync) before it returns."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    try:
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; a results file is as readable as any other
        if path.suffix.lower() == ".csv":
            frame.to_csv(tmp, index=False)
        else:
            pq.write_table(_arrow(frame, schema, metadata), tmp)
        with open(tmp, "rb") as written:  # on disk before it takes the name: power loss too
            os.fsync(written.fileno())
    except BaseException:
        with contextlib.suppress(FileNotFoundError):  # pyarrow removes what it could not finish
            os.unlink(tmp)
        raise
    return tmp


def write_frames(items: list[tuple[pd.DataFrame, Path, pa.Schema | None]], metadata: dict | None = None) -> None:
    """Write each (frame, path, schema) atomically: all are written to temporary files first,
    then each takes its name, so a failure leaves every file as it was."""
    temporary = []
    try:
        for frame, path, schema in items:
            temporary.append(_write_temporary(frame, Path(path), metadata or {}, schema))
        for tmp, (_, path, _) in zip(temporary, items):
            os.replace(tmp, path)
    finally:
        for tmp in temporary:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)


def write_frame(frame: pd.DataFrame, path: Path, metadata: dict | None = None, schema: pa.Schema | None = None) -> None:
    """Write `frame` to `path` (.parquet with `metadata` in the file, or .csv) atomically."""
    check_writable(path)
    write_frames([(frame, Path(path), schema)], metadata)


def read_schema(path: Path) -> pa.Schema:
    """The columns of a Parquet file and their types, without its metadata; of a study file,
    the runs saved beside it too (`parts_path`): a column only they hold is the study's."""
    path = Path(path)
    files = ([path] if path.exists() else []) + run_parts(path)
    schema = pq.read_schema(files[0]).remove_metadata()
    for file in files[1:]:
        held = pq.read_schema(file)
        for name in held.names:
            if name not in schema.names:
                schema = schema.append(held.field(name))
    return schema


def read_metadata(path: Path) -> dict:
    """The ablate metadata stored in a Parquet file by `write_frame` (of a study file not yet
    written, its newest saved run's): always a dict, empty where the file holds none or holds
    something else under ablate's key (edited by hand: `null`, a list), as a file of another
    tool's. Its readers check each key they use (`metadata_value`)."""
    path = Path(path)
    if not path.exists() and run_parts(path):
        path = max(run_parts(path), key=lambda p: p.stat().st_mtime)
    meta = pq.read_schema(path).metadata or {}
    held = json.loads(meta.get(b"ablate", b"{}"))
    return held if isinstance(held, dict) else {}


def study_metadata(meta: dict) -> dict:
    """The metadata `study` (Study.metadata) as its readers take it, each key checked: a key
    edited into another type reads as absent (no factors, the curves, no per-class table)."""
    study = metadata_value(meta, "study", dict, {})
    factors = study.get("factors")
    return {"name": study.get("name") if isinstance(study.get("name"), str) else None,
            "description": study.get("description") if isinstance(study.get("description"), str) else "",
            "factors": [f for f in factors if isinstance(f, str)] if isinstance(factors, list) else None,
            "plot": study.get("plot") if isinstance(study.get("plot"), str) else "curves",
            "per_class": study.get("per_class") is True}


def metadata_value(meta: dict, key: str, kind: type, default=None):
    """`meta[key]` where it is a `kind` (a dict's values too, where `kind` is dict: str keys),
    else `default`: a hand-edited key reads as absent, never as a crash."""
    value = meta.get(key) if isinstance(meta, dict) else None
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        return default
    if kind is dict and not all(isinstance(k, str) for k in value):
        return default
    return value


def parts_path(path: Path) -> Path:
    """results/linearity.parquet -> results/_parts/linearity/: each run's rows as it is saved
    (RUN_ID.parquet, and RUN_ID.classes.parquet written before it), until they are compacted
    into the study file. Every reader of ablate's sees them; readers of a folder skip it."""
    return _inside(path, PARTS_FOLDER, Path(path).name.removesuffix(".parquet"))


def run_parts(path: Path) -> list[Path]:
    """The saved runs of study file `path` not yet compacted into it, in file-name order."""
    folder = parts_path(path)
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.glob("*.parquet") if not p.name.endswith(CLASSES_PART))


def class_part(run_part: Path) -> Path:
    return run_part.with_name(run_part.name.removesuffix(".parquet") + CLASSES_PART)


def study_exists(path: Path) -> bool:
    """Whether study file `path` holds runs: the file, or runs saved beside it."""
    return Path(path).exists() or bool(run_parts(path))


def per_class_path(path: Path) -> Path:
    """results/linearity.parquet -> results/_per_class/linearity.parquet: out of the way of
    readers of the folder (pandas, polars, DuckDB, Spark skip names starting with _)."""
    return _inside(path, PER_CLASS_FOLDER, Path(path).name)


def models_path(path: Path) -> Path:
    """results/latent.parquet -> results/_models/latent/: one RUN_ID.safetensors per run."""
    return _inside(path, MODELS_FOLDER, Path(path).name.removesuffix(".parquet"))


def _inside(path: Path, folder: str, name: str) -> Path:
    """`folder/name` beside results file `path`, checked to lie inside `path`'s folder: ablate
    writes nowhere but where --out points."""
    path = Path(path)
    derived = path.parent / folder / name
    if name in ("", ".", "..") or not derived.resolve().is_relative_to((path.parent / folder).resolve()):
        raise UsageError(f"results file {str(path)!r}: its name gives no folder of its own under "
                         f"{str(path.parent / folder)!r}; give --out a file name like results/study.parquet")
    return derived


def _read_parquet(path: Path, parts: list[Path], relist=None) -> pd.DataFrame:
    """The file at `path` (if any) with the rows of `parts`, each part's runs in place of any
    rows the file holds of them (a run saved again, or saved and compacted before a kill). A
    part that is gone when it is read was compacted into the file after it was listed (its
    rows are in the file now): the file and the parts (`relist()`) are read again, so a reader
    sees each run once while a study is being written, and never a false error."""
    for _ in range(10):
        try:
            return _read_once(path, parts)
        except FileNotFoundError:
            parts = relist() if relist is not None else [p for p in parts if Path(p).exists()]
    return _read_once(path, parts, settled=True)


def _read_once(path: Path, parts: list[Path], settled: bool = False) -> pd.DataFrame:
    frames = []
    for file in ([Path(path)] if Path(path).is_file() else []) + list(parts):
        try:
            frames.append(pd.read_parquet(file))
        except FileNotFoundError:
            if not settled:
                raise
            raise UsageError(f"{str(file)!r} went away while it was read: another process is writing this "
                             "study; read it again once it is done") from None
        except Exception as error:
            raise UsageError(f"{str(file)!r} is not a readable Parquet file ({type(error).__name__})") from None
    if len(frames) == 1:
        return frames[0]
    newer = set().union(*(set(f["run_id"]) for f in frames[1:] if "run_id" in f)) if len(frames) > 1 else set()
    if Path(path).is_file() and "run_id" in frames[0]:
        frames[0] = frames[0][~frames[0]["run_id"].isin(newer)]
    return pd.concat([f for f in frames if len(f)] or frames[:1], ignore_index=True)


def read_results(path: Path, kinds: dict[str, type] | None = None,
                 what: str = "an ablate study result", parts: list[Path] = (), relist=None) -> pd.DataFrame:
    """A study file written by ablate, checked whole against what its readers need: every
    column they read, holding what ablate writes there (`kinds`: {column: int, float, str
    or bool}, every one required, for another of ablate's tables). Anything else is a usage
    error naming the columns and what ablate expects; numbers stored as objects (an
    all-null column) come back as floats."""
    parts = run_parts(path) if kinds is None else parts
    if not Path(path).is_file() and not parts:
        raise UsageError(f"no such file: {str(path)!r}")
    frame = _read_parquet(path, parts, (lambda: run_parts(path)) if kinds is None else relist)
    if not isinstance(frame.index, pd.RangeIndex):  # an index another tool stored: its named levels are columns
        frame = frame.reset_index(drop=all(level is None for level in frame.index.names))
    name = repr(str(path))
    if kinds is None:  # a study file: its key columns first, the message a foreign file gets
        from ablate.metrics import METRICS

        table = result_columns
        fixed = table.types(table.of_kind(table.KEY, table.SETTING, table.OUTCOME, table.METRIC))
        keys = table.types(table.of_kind(table.KEY))
        required = {name: fixed[name] for name in table.REQUIRED}
        optional = {name: kind for name, kind in fixed.items() if name not in required}
        never_null = table.IDENTITY
    else:
        keys, required, optional, never_null = kinds, kinds, {}, tuple(c for c, k in kinds.items() if k is not float)
    missing = [c for c in keys if c not in frame.columns]
    if not missing:
        missing = [c for c in required if c not in frame.columns]
        if missing:
            raise UsageError(f"{name} is not {what}: no column {', '.join(sorted(missing))} (its readers "
                             f"need {', '.join(list(required)[:-1])} and {list(required)[-1]})")
    if missing:
        raise UsageError(f"{name} is not {what}: no column {', '.join(sorted(missing))}")
    words = {int: "whole numbers", float: "numbers", str: "text", bool: "true or false"}
    found_words = {"string": "text", "boolean": "true or false", "integer": "numbers", "floating": "numbers",
                   "mixed-integer-float": "numbers", "decimal": "numbers", "bytes": "bytes", "date": "dates",
                   "datetime": "dates", "datetime64": "dates", "timedelta": "durations",
                   "timedelta64": "durations"}
    wrong = []
    for column, kind in {**required, **optional}.items():
        if column not in frame.columns:
            continue
        values = frame[column]
        if isinstance(values.dtype, pd.CategoricalDtype):  # dictionary-encoded by another tool: its values
            values = frame[column] = values.astype(values.cat.categories.dtype if values.notna().all() else object)
        if values.isna().all():  # null everywhere: of no kind, and every kind may be null
            if kind in (int, float) and not pd.api.types.is_numeric_dtype(values):
                frame[column] = values.astype(float)
            continue
        found = pd.api.types.infer_dtype(values, skipna=True)
        said = found_words.get(found, "mixed values" if found.startswith("mixed") else found)
        numeric = said == "numbers"
        if kind in (int, float) and numeric:
            if not pd.api.types.is_numeric_dtype(values):
                values = frame[column] = pd.to_numeric(values).astype(float)
            if kind is int and not pd.api.types.is_integer_dtype(values):
                whole = values.dropna()
                fractional = (whole != whole.round()) | whole.isin([float("inf"), float("-inf")])
                if fractional.any():
                    example = whole[fractional].iloc[0]
                    wrong.append(f"{column} holds numbers that are not whole ({float(example):g})")
            continue
        if said != words[kind]:
            wrong.append(f"{column} holds {said} where ablate writes {words[kind]}")
    if wrong:
        shown = wrong[:4] + ([f"and {len(wrong) - 4} more"] if len(wrong) > 4 else [])
        raise UsageError(f"{name} is not {what}: {'; '.join(shown)}")
    empty = [f"{column} is empty in {frame[column].isna().sum()} of {len(frame)} rows"
             for column in never_null if column in frame.columns and frame[column].isna().any()]
    if kinds is None:
        status = frame["status"].dropna()
        unknown = sorted(set(status) - {"ok", "diverged", "failed"})
        if unknown:
            raise UsageError(f"{name} is not {what}: column status holds {', '.join(map(repr, unknown[:3]))}; "
                             "ablate writes ok, diverged or failed")
        finished = frame["status"] != "failed"  # a failed run is one row with no epoch: its error
        empty += [f"{column} is empty in {(finished & frame[column].isna()).sum()} rows of finished runs"
                  for column in ("epoch", "split") if (finished & frame[column].isna()).any()]
    if empty:
        raise UsageError(f"{name} is not {what}: {'; '.join(empty)}; ablate fills {', '.join(never_null[:-1])} "
                         f"and {never_null[-1]} in every row"
                         + (", epoch and split in every row but a failed run's" if kinds is None else ""))
    if kinds is None:
        identity = ["run_id", "epoch", "split"]
        measured = [c for c in ("accuracy", *METRICS) if c in frame]
        rows = frame.loc[finished, [*identity, "study", "variant", "seed", "status", "loss", *dict.fromkeys(measured)]]
        rows = rows.drop_duplicates()
        twice = rows[rows.duplicated(identity, keep=False)]
        if len(twice):
            first = twice.iloc[0]
            count = len(twice[identity].drop_duplicates())
            raise UsageError(f"{name} holds rows that disagree: {count} (run_id, epoch, split) "
                             f"{'has' if count == 1 else 'have'} two rows with different values (the first: run "
                             f"{first['run_id']}, epoch {first['epoch']:g}, split {first['split']}); ablate "
                             "writes one row per run, epoch and split")
    return frame


def read_per_class(path: Path) -> pd.DataFrame:
    """The per-class rows written beside the study file `path` (empty when there are none),
    checked as `read_results` checks a study file."""
    per_class = per_class_path(path)
    def listed():  # a run's rows say it is saved
        return [class_part(p) for p in run_parts(path) if class_part(p).exists()]

    parts = listed()
    if not per_class.exists() and not parts:
        return pd.DataFrame(columns=PER_CLASS_SCHEMA.names)
    kinds = {c.name: c.type for c in result_columns.PER_CLASS if c.name in result_columns.PER_CLASS_REQUIRED}
    try:
        return read_results(per_class, kinds, "ablate's per-class rows", parts, listed)
    except UsageError as error:
        raise UsageError(f"{error}; move it away to go on") from None


def existing_runs(path: Path, resume: bool, force: bool) -> pd.DataFrame:
    """The runs already in `path` that a study writing there would keep; refuses an existing
    file unless `resume` or `force`. Reads only: nothing is created."""
    path = Path(path)
    check_writable(path, (".parquet",))
    if resume and force:
        raise UsageError("give --resume (keep the runs in --out) or --force (replace them), not both")
    if not study_exists(path) or force:
        return pd.DataFrame()
    if not resume:
        raise UsageError(f"{str(path)!r} exists: add --resume to finish its study, --force to "
                         "overwrite it, or give another --out")
    runs = read_results(path)
    read_per_class(path)  # a broken per-class file is refused now, before anything is opened
    return runs


class StudyFile:
    """The Parquet pair of one study (runs, and per-class rows under _per_class/). Each finished
    run is saved at once: into the study file by atomic replace while that is cheap, else as a
    part file of its own (`parts_path`), at a cost that does not grow with the study, the
    parts being compacted into the study file every so often (`_compacting_due`) and when it
    is closed. A kill at any moment loses no saved run: every reader merges the parts.

    An existing file is refused unless `resume` (keep its runs, skip their run_ids) or
    `force` (replace it when the first new run finishes). While it is open, a lock file
    beside it keeps a second ablate from writing the same study (the OS releases the lock
    even when the process is killed). Opening it creates its folder and the lock: check
    everything else first.
    """

    PATIENCE = 20
    MAX_PARTS = 1000  # what a reader merges at most

    def __init__(self, path: Path, schema: pa.Schema, resume: bool = False, force: bool = False,
                 save_models: bool = False, order: dict[str, int] | None = None):
        self.path = Path(path)
        self.order = order or {}  # run_id -> its place in the table
        self.schema = schema
        self.per_class = per_class_path(self.path)
        self.parts = parts_path(self.path)
        self.models = models_path(self.path) if save_models else None
        existing_runs(self.path, resume, force)  # refuses before anything is created
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.lock = FileLock(self.path.with_name(f".{self.path.name}.lock"))
        try:
            self.lock.acquire(timeout=0)
        except Timeout:
            raise UsageError(
                f"another ablate is writing {str(self.path)!r}: wait for it to finish, or give another --out"
            ) from None
        try:
            for folder in (self.path.parent, self.per_class.parent, self.parts):  # what a killed writer left
                for stale in folder.glob(f".{self.path.name}.*.tmp") if folder != self.parts else folder.glob(".*.tmp"):
                    stale.unlink()
            # --force: the old study (its file and parts) is replaced when the first new run is saved
            self._replaced = run_parts(self.path) if force and study_exists(self.path) else None
            self.metadata = None  # the newest run's, for the study file
            self._stale = False  # set_metadata changed it since the file was written
            self._said_kept = False  # part files that could not be removed: said once
            # each save: (its runs' rows, their per-class rows); the first, what the files held
            runs = existing_runs(self.path, resume, force)
            self._saves = [(runs, read_per_class(self.path) if len(runs) else pd.DataFrame())]
            self._done = set(runs["run_id"][runs["status"] != "failed"]) if len(runs) else set()
            self._on_disk = [] if force else run_parts(self.path)  # part files the study file does not hold yet
            self._compacted_at, self._compact_seconds = time.monotonic(), 0.0
            if self.models is not None:
                self._match_models()
        except BaseException:
            self.lock.release()
            raise

    @property
    def runs(self) -> pd.DataFrame:
        """Every row of the study's saved runs, in the table's order (`order`)."""
        return self._merged()[0]

    @property
    def class_rows(self) -> pd.DataFrame:
        return self._merged()[1]

    def _merged(self) -> tuple[pd.DataFrame, pd.DataFrame]:
        """The saves as one (runs, per-class rows) pair, a run's newest save in place of any
        before it; computed once after each save, not at every save."""
        if len(self._saves) > 1:
            newest = {}  # run_id -> the save that saved it last
            for i, (runs, _) in enumerate(self._saves):
                if len(runs):
                    newest.update(dict.fromkeys(runs["run_id"].unique(), i))
            merged = []
            for column, names in ((0, self.schema.names), (1, PER_CLASS_SCHEMA.names)):
                kept = [save[column][save[column]["run_id"].map(newest) == i]
                        for i, save in enumerate(self._saves) if len(save[column])]
                merged.append(self._ordered(pd.concat(kept, ignore_index=True)) if kept else
                              pd.DataFrame(columns=names))
            self._saves = [tuple(merged)]
        return self._saves[0]

    def _match_models(self) -> None:
        """Keep the weights and the table consistent: weights of a run the table does not
        hold are removed (a run killed between saving both), and a run the table holds
        without weights is dropped from it, to be trained again."""
        self.models.mkdir(parents=True, exist_ok=True)
        for stale in self.models.glob(".*.tmp"):
            stale.unlink()
        saved = {p.stem for p in self.models.glob("*.safetensors")}
        for run_id in saved - self.done():
            (self.models / f"{run_id}.safetensors").unlink()
        missing = self.done() - saved
        if missing:
            runs, class_rows = self._merged()
            self._saves = [(runs[~runs["run_id"].isin(missing)],
                            class_rows[~class_rows["run_id"].isin(missing)] if len(class_rows) else class_rows)]
            self._done -= missing

    def save_model(self, run_id: str, state: dict, label: str) -> None:
        """A run's final weights, written atomically after its rows: a run whose weights could
        not be saved keeps its rows, and is trained again by a --resume that keeps models."""
        from safetensors.torch import save_file

        path = self.models / f"{run_id}.safetensors"
        tmp = None
        try:
            fd, tmp = tempfile.mkstemp(dir=self.models, prefix=f".{run_id}.", suffix=".tmp")
            os.close(fd)
            save_file(state, tmp)
            with open(tmp, "rb") as written:
                os.fsync(written.fileno())
            os.replace(tmp, path)
        except Exception as error:  # noqa: BLE001 - OSError, or safetensors' own error of a full disk
            self._failed(error, label, f"the weights of {label} (its results are saved)")
        finally:
            if tmp is not None:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp)

    def set_metadata(self, metadata: dict, key: str) -> None:
        """The study file's metadata from now on, written when its record `key` changes it (what
        a run's save wrote is the metadata of that time)."""
        before = self.metadata
        if before is None and self.path.exists():
            with contextlib.suppress(ValueError, OSError):  # metadata not of this version's: written anew
                before = read_metadata(self.path)
        self.metadata = metadata
        if (before or {}).get(key) != metadata.get(key):
            self._stale = True

    def close(self) -> None:
        """Compact what is saved beside the study file into it, and let go of the file."""
        try:
            if self._on_disk or (self._stale and self.path.exists()):
                self.compact()
        finally:
            self.lock.release()

    def __enter__(self):
        return self

    def __exit__(self, kind, error, traceback):
        try:
            self.close()
        except EnvironmentFailure:
            if kind is None:  # else the error that ended the study is the one to tell: the parts keep the runs
                raise

    def done(self) -> set[str]:
        """The runs that need no training: a failed run (its model raised) is tried again."""
        return set(self._done)

    def add(self, runs: pd.DataFrame, class_rows: pd.DataFrame, metadata: dict, label: str) -> None:
        """Save one run's rows, in place of any it had (`label` names it in errors): into the
        study file when compacting is due, else as its part files (per-class rows first). Each
        file is written whole before it takes its name; a failure (a full disk) leaves every
        saved run, and this object, as they were."""
        with _whole():
            self._add(runs, class_rows, metadata, label)

    def _add(self, runs: pd.DataFrame, class_rows: pd.DataFrame, metadata: dict, label: str) -> None:
        self.metadata = metadata
        run_id = runs["run_id"].iloc[0]
        if self._replaced is not None or self._compacting_due():
            self.compact([(runs, class_rows)], label)  # --force: the first run replaces the old study
        else:
            part = self.parts / f"{run_id}.parquet"
            try:
                self.parts.mkdir(parents=True, exist_ok=True)
                write_frames([(class_rows, class_part(part), PER_CLASS_SCHEMA), (runs, part, self.schema)], metadata)
            except OSError as error:
                self._failed(error, label)
            self._saves.append((runs, class_rows))
            self._on_disk.append(part)
        self._done.discard(run_id)
        if (runs["status"] != "failed").any():
            self._done.add(run_id)

    def _compacting_due(self) -> bool:
        """Rewriting the study file costs what it holds: it is done when there is none yet, when
        the time since the last rewrite is PATIENCE times what that one took (so that rewriting
        is at most about 1/PATIENCE of the time spent saving), or when MAX_PARTS wait."""
        return (not self.path.exists() or len(self._on_disk) >= self.MAX_PARTS
                or time.monotonic() - self._compacted_at >= self.PATIENCE * self._compact_seconds)

    def compact(self, saves: list = (), label: str = "the study file") -> None:
        """Write every saved run (and `saves`) into the study file and its per-class file (both
        written, then both replaced), then remove the part files it now holds."""
        start = time.monotonic()
        before = self._saves
        self._saves = [*(before if self._replaced is None else [(pd.DataFrame(), pd.DataFrame())]), *saves]
        runs, class_rows = self._merged()
        try:
            write_frames([(class_rows, self.per_class, PER_CLASS_SCHEMA), (runs, self.path, self.schema)],
                         self.metadata if self.metadata is not None else read_metadata(self.path))
        except OSError as error:
            self._saves = before
            self._failed(error, label)
        kept = []
        for part in [*self._on_disk, *(self._replaced or [])]:
            for file in (class_part(part), part):
                try:
                    file.unlink()
                except FileNotFoundError:
                    pass
                except OSError as error:  # an immutable folder: the rows are in the study file all the same
                    kept.append((file, error))
        if kept and not self._said_kept:
            self._said_kept = True
            sys.stderr.write(f"warning: {len(kept)} compacted part file{'s' if len(kept) > 1 else ''} in "
                             f"{kept[0][0].parent} could not be removed ({failure_reason(kept[0][1])}); their rows "
                             f"are in {self.path} too, and ablate's readers count each run once\n")
        self._on_disk, self._replaced, self._stale = [], None, False
        self._compacted_at, self._compact_seconds = time.monotonic(), time.monotonic() - start

    def _ordered(self, frame: pd.DataFrame) -> pd.DataFrame:
        """Rows by the runs' places (runs of the file it was not told about first), each run's
        rows in their own order: the same table whatever order the runs finished in."""
        if frame.empty:
            return frame
        place = frame["run_id"].map(self.order).fillna(-1)
        return frame.iloc[place.argsort(kind="stable")].reset_index(drop=True)

    def _failed(self, error: Exception, label: str, what: str | None = None):
        saved, reason = len(self.done()), failure_reason(error)
        remedy = {"disk full": "free space", "permission denied": "make the folder writable"}.get(reason, "fix that")
        parts = len({p.name for p in run_parts(self.path)})
        where = str(self.path) if not parts else \
            f"{self.path} and {parts} part file{'s' if parts != 1 else ''} in {parts_path(self.path)} (ablate's " \
            "readers see them all; pandas sees the file's until --resume compacts them)"
        raise EnvironmentFailure(
            f"{reason} while saving {what or label}: {saved} run{'s' if saved != 1 else ''} "
            f"{'are' if saved != 1 else 'is'} saved in {where}; {remedy} and run the same command with "
            "--resume") from None


@contextlib.contextmanager
def _whole():
    """A Ctrl-C while a run is being saved takes effect once the save is whole, so that the
    files and what the study says it saved agree (signal handlers run in the main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: caught.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous if previous is not None else signal.default_int_handler)
    if caught and previous is not signal.SIG_IGN:
        raise KeyboardInterrupt


def failure_reason(error: Exception) -> str:
    """A file system error in a few words: "disk full", "permission denied", ..."""
    text = str(error)
    if getattr(error, "errno", None) == errno.ENOSPC or "No space left" in text or "ENOSPC" in text:
        return "disk full"
    if getattr(error, "errno", None) in (errno.EACCES, errno.EPERM) or "Permission denied" in text:
        return "permission denied"
    if getattr(error, "errno", None) == errno.EROFS or "Read-only file system" in text:
        return "read-only file system"
    strerror = getattr(error, "strerror", None)
    return (strerror or (text.strip().splitlines() or [type(error).__name__])[0]).lower()


def separate_configurations(frame: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """Runs of different configurations never share a variant name, so nothing averages
    them: a variant holding several is split, each part named by the settings that differ
    (`relu [epochs=1]`). Returns the frame and a note per variant split."""
    frame = frame.drop_duplicates(["run_id", "epoch", "split"]).copy()
    notes = []
    for (study, variant), rows in frame.groupby(["study", "variant"], sort=False):
        configs = rows.drop_duplicates("config_id").set_index("config_id")
        if len(configs) < 2:
            continue
        settings = [c for c in configs.columns if c not in result_columns.outcome_names() | {"study", "variant"}]
        differ = [c for c in settings if configs[c].astype(str).nunique() > 1] or ["config_id"]
        for config_id, config in configs.iterrows():
            said = ", ".join(f"{c}={config_id if c == 'config_id' else config[c]}" for c in differ)
            chosen = (frame["study"] == study) & (frame["variant"] == variant) & (frame["config_id"] == config_id)
            frame.loc[chosen, "variant"] = f"{variant} [{said}]"
        notes.append(f"{study}: variant {variant!r} holds runs of {len(configs)} configurations "
                     f"(differing in {', '.join(differ)}): they are shown apart, never averaged")
    return frame, notes
