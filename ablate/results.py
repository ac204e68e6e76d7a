"""Writing tables: Parquet that describes itself, or CSV, always by atomic replace."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shlex
import tempfile
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from filelock import FileLock, Timeout

from ablate.errors import EnvironmentFailure, UsageError

SUFFIXES = (".parquet", ".csv")
ARROW_TYPES = {int: pa.int64(), float: pa.float64(), str: pa.string(), bool: pa.bool_()}
PER_CLASS_FOLDER = "_per_class"  # readers of a folder skip names starting with _ or .
MODELS_FOLDER = "_models"


def arrow_schema(columns: dict[str, type]) -> pa.Schema:
    """An explicit schema from Python types, every column nullable: the same columns with
    the same types in every file, whatever values one study happens to hold."""
    return pa.schema([pa.field(name, ARROW_TYPES[kind]) for name, kind in columns.items()])


PER_CLASS_SCHEMA = arrow_schema({
    "study": str, "variant": str, "seed": int, "run_id": str, "config_id": str,
    "class_index": int, "class_name": str, "images": int, "accuracy": float,
})


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
    """The columns of a Parquet file and their types, without its metadata."""
    return pq.read_schema(path).remove_metadata()


def read_metadata(path: Path) -> dict:
    """The ablate metadata stored in a Parquet file by `write_frame`."""
    meta = pq.read_schema(path).metadata or {}
    return json.loads(meta.get(b"ablate", b"{}"))


def per_class_path(path: Path) -> Path:
    """results/linearity.parquet -> results/_per_class/linearity.parquet: out of the way of
    readers of the folder (pandas, polars, DuckDB, Spark skip names starting with _)."""
    path = Path(path)
    return path.parent / PER_CLASS_FOLDER / path.name


def models_path(path: Path) -> Path:
    """results/latent.parquet -> results/_models/latent/: one RUN_ID.safetensors per run."""
    path = Path(path)
    return path.parent / MODELS_FOLDER / path.name.removesuffix(".parquet")


def read_results(path: Path, kinds: dict[str, type] | None = None,
                 what: str = "an ablate study result") -> pd.DataFrame:
    """A study file written by ablate, checked whole against what its readers need: every
    column they read, holding what ablate writes there (`kinds`: {column: int, float, str
    or bool}, every one required, for another of ablate's tables). Anything else is a usage
    error naming the columns and what ablate expects; numbers stored as objects (an
    all-null column) come back as floats."""
    if not Path(path).is_file():
        raise UsageError(f"no such file: {str(path)!r}")
    try:
        frame = pd.read_parquet(path)
    except Exception as error:
        raise UsageError(f"{str(path)!r} is not a readable Parquet file ({type(error).__name__})") from None
    if not isinstance(frame.index, pd.RangeIndex):  # an index another tool stored: its named levels are columns
        frame = frame.reset_index(drop=all(level is None for level in frame.index.names))
    name = repr(str(path))
    if kinds is None:  # a study file: its key columns first, the message a foreign file gets
        keys = {"study": str, "variant": str, "seed": int, "epoch": int, "split": str, "run_id": str,
                "config_id": str}
        required = {**keys, "status": str, "loss": float, "accuracy": float}
        from ablate.config import column_types  # no torch: the settings' columns and their types
        from ablate.metrics import METRICS

        optional = {**column_types(), **dict.fromkeys(METRICS, float), "lr": float, "seconds": float, "error": str,
                    "latent_corr": float, "params": int, "flops": int, "device": str, "packed": int}
        never_null = ("study", "variant", "seed", "run_id", "config_id", "status")
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
        rows = frame.loc[finished, [*identity, "study", "variant", "seed", "status", "loss", "accuracy"]]
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
    if not per_class.exists():
        return pd.DataFrame(columns=PER_CLASS_SCHEMA.names)
    kinds = {"study": str, "seed": int, "run_id": str, "class_index": int, "class_name": str, "accuracy": float}
    try:
        return read_results(per_class, kinds, "ablate's per-class rows")
    except UsageError as error:
        raise UsageError(f"{error}; move it away to go on") from None


def existing_runs(path: Path, resume: bool, force: bool) -> pd.DataFrame:
    """The runs already in `path` that a study writing there would keep; refuses an existing
    file unless `resume` or `force`. Reads only: nothing is created."""
    path = Path(path)
    check_writable(path, (".parquet",))
    if resume and force:
        raise UsageError("give --resume (keep the runs in --out) or --force (replace them), not both")
    if not path.exists() or force:
        return pd.DataFrame()
    if not resume:
        raise UsageError(f"{str(path)!r} exists: add --resume to finish its study, --force to "
                         "overwrite it, or give another --out")
    runs = read_results(path)
    read_per_class(path)  # a broken per-class file is refused now, before anything is opened
    return runs


class StudyFile:
    """The Parquet pair of one study (runs, and per-class rows under _per_class/), rewritten
    by atomic replace after every finished run.

    An existing file is refused unless `resume` (keep its runs, skip their run_ids) or
    `force` (replace it when the first new run finishes). While it is open, a lock file
    beside it keeps a second ablate from writing the same study (the OS releases the lock
    even when the process is killed). Opening it creates its folder and the lock: check
    everything else first.
    """

    def __init__(self, path: Path, schema: pa.Schema, resume: bool = False, force: bool = False,
                 save_models: bool = False, order: dict[str, int] | None = None):
        self.path = Path(path)
        self.order = order or {}  # run_id -> its place in the table
        self.schema = schema
        self.per_class = per_class_path(self.path)
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
            for folder in (self.path.parent, self.per_class.parent):  # what a killed writer left
                for stale in folder.glob(f".{self.path.name}.*.tmp"):
                    stale.unlink()
            self.runs = existing_runs(self.path, resume, force)
            self.class_rows = read_per_class(self.path) if len(self.runs) else pd.DataFrame()
            if self.models is not None:
                self._match_models()
        except BaseException:
            self.close()
            raise

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
            self.runs = self.runs[~self.runs["run_id"].isin(missing)]
            if len(self.class_rows):
                self.class_rows = self.class_rows[~self.class_rows["run_id"].isin(missing)]

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

    def close(self) -> None:
        self.lock.release()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def done(self) -> set[str]:
        """The runs that need no training: a failed run (its model raised) is tried again."""
        if not len(self.runs):
            return set()
        return set(self.runs["run_id"][self.runs["status"] != "failed"])

    def add(self, runs: pd.DataFrame, class_rows: pd.DataFrame, metadata: dict, label: str) -> None:
        """Add one run's rows, in place of any it had (`label` names it in errors). Both files
        are written, then both replaced: a failure (a full disk) leaves them, and this
        object, as they were."""
        run_ids = set(runs["run_id"])
        kept = self.class_rows[~self.class_rows["run_id"].isin(run_ids)] if len(self.class_rows) else None
        new_class_rows = pd.concat([kept, class_rows], ignore_index=True) if kept is not None else class_rows
        held = self.runs[~self.runs["run_id"].isin(run_ids)] if len(self.runs) else None
        new_runs = pd.concat([held, runs], ignore_index=True) if held is not None and len(held) else runs
        new_runs, new_class_rows = self._ordered(new_runs), self._ordered(new_class_rows)
        try:
            write_frames([(new_class_rows, self.per_class, PER_CLASS_SCHEMA),
                          (new_runs, self.path, self.schema)], metadata)
        except OSError as error:
            self._failed(error, label)
        self.runs, self.class_rows = new_runs, new_class_rows

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
        raise EnvironmentFailure(
            f"{reason} while saving {what or label}: {saved} run{'s' if saved != 1 else ''} "
            f"{'are' if saved != 1 else 'is'} saved in {self.path}; {remedy} and run the same command with "
            "--resume") from None


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


def outcome_columns() -> set[str]:
    """The columns a run's outcome fills (never one of its settings), a plugin's metrics too."""
    from ablate.metrics import METRICS

    return {"seed", "epoch", "split", "loss", "lr", "seconds", "status", "run_id", "config_id", "params", "flops",
            "device", *METRICS}


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
        settings = [c for c in configs.columns if c not in outcome_columns() | {"study", "variant"}]
        differ = [c for c in settings if configs[c].astype(str).nunique() > 1] or ["config_id"]
        for config_id, config in configs.iterrows():
            said = ", ".join(f"{c}={config_id if c == 'config_id' else config[c]}" for c in differ)
            chosen = (frame["study"] == study) & (frame["variant"] == variant) & (frame["config_id"] == config_id)
            frame.loc[chosen, "variant"] = f"{variant} [{said}]"
        notes.append(f"{study}: variant {variant!r} holds runs of {len(configs)} configurations "
                     f"(differing in {', '.join(differ)}): they are shown apart, never averaged")
    return frame, notes
