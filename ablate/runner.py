"""A study's execution: plan the variant x seed matrix, skip what is done, train the rest
through an executor, save each run as it returns."""

from __future__ import annotations

import functools
import hashlib
import json
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Iterator, Protocol

import pandas as pd
import torch

from ablate import count, results
from ablate.data import Dataset, load_dataset
from ablate.errors import UsageError
from ablate.results import StudyFile
from ablate.studies import Study
from ablate.train import RunConfig, RunResult, build_model, column_types, resolve, train_run

RUN_COLUMNS = {
    "study": str, "variant": str, "seed": int, "epoch": int, "split": str, "loss": float,
    "accuracy": float, "lr": float, "seconds": float, "status": str, "run_id": str, "config_id": str,
    **column_types(), "params": int, "flops": int, "device": str,
}
RUN_SCHEMA = results.arrow_schema(RUN_COLUMNS)


def _digest(key: dict) -> str:
    return hashlib.sha1(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]


@dataclass(frozen=True)
class Run:
    study: str
    variant: str
    seed: int
    config: RunConfig

    @property
    def config_id(self) -> str:
        """A hash of everything that decides the run's numbers but the seed."""
        return _digest({"study": self.study, "variant": self.variant, **self.config.columns()})

    @property
    def run_id(self) -> str:
        """A hash of everything that decides the run's numbers."""
        return _digest({"study": self.study, "variant": self.variant, "seed": self.seed, **self.config.columns()})

    @property
    def label(self) -> str:
        return f"{self.variant} seed {self.seed}"


def plan(study: Study, options: dict, seeds: int) -> list[Run]:
    """Every variant under seeds 0..seeds-1, each configuration checked. Options left as
    None keep the defaults; a variant's own fields win over the options, and the options
    over the study's base."""
    given = {k: v for k, v in options.items() if v is not None}
    resolve(replace(RunConfig(), **{**study.base, **given}))  # the options, before any variant
    runs = []
    for variant, fields in study.variants.items():
        try:
            config = resolve(replace(RunConfig(), **{**study.base, **given, **fields}))
        except UsageError as error:
            raise UsageError(f"variant {variant!r}: {error}") from None
        runs += [Run(study.name, variant, seed, config) for seed in range(seeds)]
    return runs


# ---------------------------------------------------------------- before training


def _value(v):
    return None if v is None or v is pd.NA or (isinstance(v, float) and v != v) else v


def check_resumable(existing: pd.DataFrame, runs: list[Run], path) -> None:
    """Refuse to add `runs` to a file whose runs were made with other settings: a file holds
    one study, and one configuration per variant."""
    if existing.empty:
        return
    planned = pd.DataFrame([{"study": r.study, "variant": r.variant, **r.config.columns()} for r in runs])
    columns = [c for c in planned.columns if c in existing.columns]
    held = existing[columns].drop_duplicates()
    shared = [c for c in columns if c != "variant" and planned[c].nunique(dropna=False) == 1]
    differences = {}
    for column in shared:  # the settings every variant has: the same for every run in the file
        now = _value(planned[column].iloc[0])
        before = {_value(v) for v in held[column]} - {now}
        if before:
            differences[column] = (sorted(before, key=str), now)
    for _, row in held[held["variant"].isin(set(planned["variant"]))].iterrows():
        now = planned[planned["variant"] == row["variant"]].iloc[0]
        for column in columns:
            if column not in differences and _value(row[column]) != _value(now[column]):
                differences[column] = ([_value(row[column])], _value(now[column]))
    if differences:
        said = "; ".join(f"{c}: {', '.join(map(str, before))} in the file, {now} now"
                         for c, (before, now) in differences.items())
        raise UsageError(f"--resume: {str(path)!r} holds runs made with other settings ({said}); "
                         "give the same options, another --out, or --force to replace it")


@functools.cache  # every seed of a variant has the same model
def model_size(config: RunConfig, shape: tuple[int, ...], classes: int) -> count.Counts:
    """The run's model counted on the meta device: nothing is allocated."""
    return count.count_meta(lambda: build_model(config, shape[0], classes), shape)


def available_memory(device: torch.device) -> int:
    """Bytes free for training on `device`."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")


def check_memory(runs: list[Run], data: Dataset, device: torch.device) -> None:
    """Refuse a variant whose training would not fit: parameters, gradients and up to two
    optimiser slots (4 x the parameters) and the activations of one batch."""
    free = available_memory(device)
    for run in {r.variant: r for r in runs}.values():
        size = model_size(run.config, data.shape, len(data.classes))
        need = 4 * size.param_bytes + size.activation_bytes * run.config.batch_size
        if need > free:
            raise UsageError(
                f"variant {run.variant!r} needs about {need / 1e9:,.1f} GB to train ({size.params:,} "
                f"parameters, and the activations of a batch of {run.config.batch_size}); "
                f"{free / 1e9:,.1f} GB are free on {device.type}")


# ---------------------------------------------------------------- rows


def run_rows(run: Run, result: RunResult, device: str, data: Dataset) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The tidy rows of one run: (variant, seed, epoch, split) rows, and per-class rows."""
    head = {"study": run.study, "variant": run.variant, "seed": run.seed}
    ids = {"run_id": run.run_id, "config_id": run.config_id}
    size = model_size(run.config, data.shape, len(data.classes))
    rows = pd.DataFrame([
        {**head, "epoch": r.epoch, "split": r.split, "loss": r.loss, "accuracy": r.accuracy,
         "lr": r.lr, "seconds": r.seconds, "status": result.status, **ids,
         **run.config.columns(), "params": size.params, "flops": size.flops, "device": device}
        for r in result.epochs
    ], columns=list(RUN_COLUMNS))
    images = torch.bincount(data.test_y, minlength=len(data.classes)).tolist()
    per_class = pd.DataFrame([
        {**head, **ids, "class_index": i, "class_name": name, "images": n, "accuracy": accuracy}
        for i, (name, n, accuracy) in enumerate(zip(data.classes, images, result.class_accuracy))
    ], columns=results.PER_CLASS_SCHEMA.names)
    return rows, per_class


# ---------------------------------------------------------------- executors


Work = Callable[[Run, Dataset], RunResult]


class Executor(Protocol):
    """Maps `work` over picklable runs, yielding (run, result) as each finishes."""

    def map(self, work: Work, runs: list[Run], data: Dataset) -> Iterator[tuple[Run, RunResult]]: ...


class InProcess:
    """One run after another in this process, with progress per batch."""

    def __init__(self, on_batch: Callable[[Run, int, int, float, float], None] | None = None):
        self.on_batch = on_batch

    def map(self, work, runs, data):
        for run in runs:
            report = None if self.on_batch is None else functools.partial(self.on_batch, run)
            yield run, work(run, data, on_batch=report)


def train_one(run: Run, data: Dataset, device: torch.device, on_batch=None) -> RunResult:
    return train_run(run.config, data, run.seed, device, on_batch)


def execute(
    runs: list[Run],
    data: Dataset,
    device: torch.device,
    store: StudyFile,
    metadata: dict,
    executor: Executor | None = None,
    on_run: Callable[[Run, str], None] | None = None,
) -> None:
    """Train the runs not yet in `store`, saving each one as soon as it finishes."""
    done = store.done()
    todo = [r for r in runs if r.run_id not in done]
    work = functools.partial(train_one, device=device)
    for run, result in (executor or InProcess()).map(work, todo, data):
        store.add(*run_rows(run, result, device.type, data), metadata, run.label)
        if on_run is not None:
            on_run(run, result.status)


# ---------------------------------------------------------------- a whole study


@dataclass
class Prepared:
    """A study checked from end to end, with its data loaded; nothing is created yet."""

    study: Study
    runs: list[Run]
    data: Dataset
    device: torch.device
    out: Path
    resume: bool
    force: bool

    def todo(self, done: set[str]) -> list[Run]:
        return [r for r in self.runs if r.run_id not in done]


class Interrupted(KeyboardInterrupt):
    """Ctrl-C during a study: `saved` are the planned runs that are in the file."""

    def __init__(self, saved: list[Run], planned: int):
        super().__init__()
        self.saved, self.planned = saved, planned


def prepare(study: Study, options: dict, seeds: int, device: torch.device, data_dir: Path | None,
            out: Path, resume: bool = False, force: bool = False) -> Prepared:
    """Check everything a study needs, the cheap checks first; raise UsageError on the first
    problem. Creates no file or folder."""
    existing = results.existing_runs(out, resume, force)
    runs = plan(study, options, seeds)
    check_resumable(existing, runs, out)
    data = load_dataset(options.get("dataset") or RunConfig.dataset, data_dir,
                        options.get("limit_train"), options.get("limit_test"))
    check_memory(runs, data, device)
    return Prepared(study, runs, data, device, Path(out), resume, force)


def run_study(prepared: Prepared, metadata: dict, executor: Executor | None = None,
              on_run: Callable[[Run, str], None] | None = None,
              on_start: Callable[[list[Run]], None] | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Train what `prepared` plans and the file does not hold yet; return the planned runs'
    rows and per-class rows. `on_start(runs to train)` is called once the file is open."""
    p = prepared
    with StudyFile(p.out, RUN_SCHEMA, resume=p.resume, force=p.force) as store:
        check_resumable(store.runs, p.runs, p.out)  # a writer may have finished since we looked
        if on_start is not None:
            on_start(p.todo(store.done()))
        try:
            execute(p.runs, p.data, p.device, store, metadata, executor, on_run)
        except KeyboardInterrupt:
            raise Interrupted([r for r in p.runs if r.run_id in store.done()], len(p.runs)) from None
        planned = {r.run_id for r in p.runs}
        return (store.runs[store.runs["run_id"].isin(planned)],
                store.class_rows[store.class_rows["run_id"].isin(planned)])
