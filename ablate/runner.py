"""A study's execution: plan the variant x seed matrix, skip what is done, train the rest
through an executor, save each run as it returns."""

from __future__ import annotations

import ast
import functools
import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Protocol

import pandas as pd
import torch

from ablate import arch, count, results
from ablate.data import Dataset, load_dataset, load_test_dataset
from ablate.errors import UsageError
from ablate.results import StudyFile
from ablate.studies import Study
from ablate.train import TASKS, RunConfig, RunResult, build_model, column_types, resolve, train_runs

RUN_COLUMNS = {
    "study": str, "variant": str, "seed": int, "epoch": int, "split": str, "loss": float,
    "accuracy": float, "lr": float, "seconds": float, "status": str, "error": str, "run_id": str, "config_id": str,
    **column_types(), "latent_corr": float, "params": int, "flops": int, "device": str, "packed": int,
}
RUN_SCHEMA = results.arrow_schema(RUN_COLUMNS)


def run_columns(runs: list[Run]) -> dict[str, type]:
    """RUN_COLUMNS, and a column for each constructor argument of a user's model."""
    extra = {}
    for run in runs:
        for name, value in run.config.model_args:
            if name not in RUN_COLUMNS:
                extra.setdefault(name, arch.knob_type(value))
    return {**RUN_COLUMNS, **extra}


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
    over the study's base. Names that are not RunConfig fields are the model's arguments."""
    given = {k: v for k, v in options.items() if v is not None}
    resolve(RunConfig().with_fields(**{**study.base, **given}))  # the options, before any variant
    runs = []
    for variant, fields in study.variants.items():
        try:
            config = resolve(RunConfig().with_fields(**{**study.base, **given, **fields}))
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
                         "give the same options (--threads too), another --out, or --force to replace it")


@functools.cache  # every seed of a variant has the same model
def model_size(config: RunConfig, shape: tuple[int, ...], classes: int) -> count.Counts:
    """The run's model counted on the meta device: nothing is allocated."""
    try:
        return count.count_meta(lambda: build_model(config, shape[0], classes, shape[1]), shape)
    except UsageError:
        raise
    except Exception as error:  # a user's model that fails to build or to run once
        raise UsageError(f"model {config.model!r} failed before training: {type(error).__name__}: "
                         f"{(str(error).strip().splitlines() or [''])[0]}") from None


def available_memory(device: torch.device) -> float:
    """Bytes free for training on `device` (infinite when the system does not say)."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    return count.available_memory() or float("inf")


def check_model(run: Run, data: Dataset) -> list[str]:
    """With strip_activations, the model must have activation modules: say how many go."""
    config = run.config
    if not config.strip_activations:
        return []
    with torch.device("meta"):  # nothing is allocated
        model = arch.model_source(config.model).build(data.shape[0], len(data.classes), data.shape[1],
                                                      **dict(config.model_args))
    replaced = arch.strip_activations(model)
    if not replaced:
        raise UsageError(f"variant {run.variant!r}: model {config.model!r} has no activation module to remove "
                         "(activations called as functions in forward cannot be replaced)")
    said = ", ".join(f"{n} {name}" for name, n in replaced.items())
    return [f"variant {run.variant!r}: {sum(replaced.values())} activation modules replaced by identity ({said})"]


def training_bytes(config: RunConfig, data: Dataset) -> int:
    """Memory to train one model of `config`: parameters, gradients and up to two optimiser
    slots (4 x the parameters) and the activations of one batch."""
    size = model_size(config, data.shape, len(data.classes))
    return 4 * size.param_bytes + size.activation_bytes * config.batch_size


def check_memory(runs: list[Run], data: Dataset, device: torch.device) -> None:
    """Refuse a variant whose training would not fit."""
    free = available_memory(device)
    for run in {r.variant: r for r in runs}.values():
        need = training_bytes(run.config, data)
        if need > free:
            size = model_size(run.config, data.shape, len(data.classes))
            raise UsageError(
                f"variant {run.variant!r} needs about {need / 1e9:,.1f} GB to train ({size.params:,} "
                f"parameters, and the activations of a batch of {run.config.batch_size}); "
                f"{free / 1e9:,.1f} GB are free on {device.type}")


# ---------------------------------------------------------------- rows


def run_rows(run: Run, result: RunResult, device: str, data: Dataset,
             columns: dict = RUN_COLUMNS) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The tidy rows of one run: (variant, seed, epoch, split) rows, and per-class rows."""
    head = {"study": run.study, "variant": run.variant, "seed": run.seed}
    ids = {"run_id": run.run_id, "config_id": run.config_id}
    size = model_size(run.config, data.shape, len(data.classes))
    common = {**head, "status": result.status, "error": result.error, **ids, **run.config.columns(),
              "params": size.params, "flops": size.flops, "device": device, "packed": result.packed}
    rows = pd.DataFrame([
        {**common, "epoch": r.epoch, "split": r.split, "loss": r.loss, "accuracy": r.accuracy, "lr": r.lr,
         "seconds": r.seconds, "latent_corr": result.latent_corr if r.epoch == result.epochs[-1].epoch else None}
        for r in result.epochs
    ] or [common], columns=list(columns))  # a failed run: one row that says why
    images = torch.bincount(data.test_y, minlength=len(data.classes)).tolist()
    per_class = pd.DataFrame([
        {**head, **ids, "class_index": i, "class_name": name, "images": n, "accuracy": accuracy}
        for i, (name, n, accuracy) in enumerate(zip(data.classes, images, result.class_accuracy))
    ], columns=results.PER_CLASS_SCHEMA.names)
    return rows, per_class


# ---------------------------------------------------------------- executors


Pack = tuple[Run, ...]  # runs of one configuration, seeds apart, that train together
Work = Callable[[Pack, Dataset], list[RunResult]]


def pack_label(pack: Pack) -> str:
    seeds = [r.seed for r in pack]
    if len(seeds) == 1:
        return pack[0].label
    span = f"{seeds[0]}-{seeds[-1]}" if seeds == list(range(seeds[0], seeds[-1] + 1)) else ",".join(map(str, seeds))
    return f"{pack[0].variant} seeds {span}"


def packs(runs: list[Run], data: Dataset, device: torch.device, pack: bool = True) -> list[Pack]:
    """The runs in the groups they train in: the seeds of one configuration together, as many
    as fit in memory at once (ablate.pack trains them as one model when it can), or each run
    alone without `pack`."""
    groups: dict[str, list[Run]] = {}
    for run in runs:
        groups.setdefault(run.config_id, []).append(run)
    out = []
    for group in groups.values():
        size = 1
        if pack:
            size = max(1, int(0.8 * available_memory(device) // training_bytes(group[0].config, data)))
        out += [tuple(group[i:i + size]) for i in range(0, len(group), size)]
    return out


class Executor(Protocol):
    """Maps `work` over picklable packs of runs, yielding (pack, results) as each finishes."""

    def map(self, work: Work, packs: list[Pack], data: Dataset) -> Iterator[tuple[Pack, list[RunResult]]]: ...


class InProcess:
    """One pack after another in this process, with progress per batch."""

    def __init__(self, on_batch: Callable[[Pack, int, int, float, float], None] | None = None):
        self.on_batch = on_batch

    def map(self, work, packs, data):
        for pack in packs:
            report = None if self.on_batch is None else functools.partial(self.on_batch, pack)
            yield pack, work(pack, data, on_batch=report)


def train_pack(pack: Pack, data: Dataset, device: torch.device, on_batch=None, other_test=None,
               keep_model: bool = False) -> list[RunResult]:
    """The runs of one pack with their thread count; an exception of their own (a user's model
    that raises) is their result, status `failed`, and the study goes on."""
    threads = torch.get_num_threads()
    config = pack[0].config
    torch.set_num_threads(config.threads or threads)
    try:
        return train_runs(config, data, [r.seed for r in pack], device, on_batch, other_test, keep_model)
    except Exception as error:  # noqa: BLE001 - any error of the runs is recorded, not raised
        if len(pack) > 1:  # one run's error, or a pack too big for the device: each run on its own
            return [result for run in pack for result in train_pack((run,), data, device, on_batch, other_test,
                                                                    keep_model)]
        message = str(error).strip().splitlines()[0] if str(error).strip() else ""
        return [RunResult([], [], "failed", error=f"{type(error).__name__}: {message}".rstrip(": "))]
    finally:
        torch.set_num_threads(threads)


def execute(
    runs: list[Run],
    data: Dataset,
    device: torch.device,
    store: StudyFile,
    metadata: dict,
    executor: Executor | None = None,
    on_run: Callable[[Run, str], None] | None = None,
    other_test=None,
    pack: bool = True,
) -> None:
    """Train the runs not yet in `store`, saving each one as soon as its pack finishes (its
    weights first, when the store keeps models)."""
    done = store.done()
    todo = packs([r for r in runs if r.run_id not in done], data, device, pack)
    work = functools.partial(train_pack, device=device, other_test=other_test, keep_model=store.models is not None)
    columns = run_columns(runs)
    for finished, results_ in (executor or InProcess()).map(work, todo, data):
        for run, result in zip(finished, results_):
            if result.state is not None:
                store.save_model(run.run_id, result.state, run.label)
            store.add(*run_rows(run, result, device.type, data, columns), metadata, run.label)
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
    save_models: bool = False
    pack: bool = False  # the seeds of a variant train together (ablate.pack)
    other_test: tuple | None = None  # (name, images, labels) of --test-dataset
    notes: list[str] = field(default_factory=list)  # what the user should know before training

    def todo(self, done: set[str]) -> list[Run]:
        return [r for r in self.runs if r.run_id not in done]


class Interrupted(KeyboardInterrupt):
    """Ctrl-C during a study: `saved` are the planned runs that are in the file."""

    def __init__(self, saved: list[Run], planned: int):
        super().__init__()
        self.saved, self.planned = saved, planned


def prepare(study: Study, options: dict, seeds: int, device: torch.device, data_dir: Path | None,
            out: Path, resume: bool = False, force: bool = False, save_models: bool = False,
            pack: bool | None = None) -> Prepared:
    """Check everything a study needs, the cheap checks first; raise UsageError on the first
    problem. Creates no file or folder."""
    existing = results.existing_runs(out, resume, force)
    runs = plan(study, options, seeds)
    check_resumable(existing, runs, out)
    config = runs[0].config  # the data settings are the same for every run of a study
    data = load_dataset(config.dataset, data_dir, config.limit_train, config.limit_test,
                        image_size=config.image_size, test_fraction=config.test_fraction or 0.2)
    other_test = None
    if config.test_dataset is not None:
        other_test = load_test_dataset(config.test_dataset, data.classes, data_dir, data.shape[1], data.shape[0])
    notes = [note for run in {r.variant: r for r in runs}.values() for note in check_model(run, data)]
    check_memory(runs, data, device)
    if pack is None:  # packing pays where per-step costs dominate: on GPUs, not on a CPU (benchmarks/speed.py)
        pack = device.type == "cuda"
    return Prepared(study, runs, data, device, Path(out), resume, force, save_models, pack, other_test, notes)


def run_study(prepared: Prepared, metadata: dict, executor: Executor | None = None,
              on_run: Callable[[Run, str], None] | None = None,
              on_start: Callable[[list[Run]], None] | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Train what `prepared` plans and the file does not hold yet; return the planned runs'
    rows and per-class rows. `on_start(runs to train)` is called once the file is open."""
    p = prepared
    schema = results.arrow_schema(run_columns(p.runs))
    order = {r.run_id: i for i, r in enumerate(p.runs)}  # the table's order, whatever order runs end in
    with StudyFile(p.out, schema, resume=p.resume, force=p.force, save_models=p.save_models, order=order) as store:
        check_resumable(store.runs, p.runs, p.out)  # a writer may have finished since we looked
        if on_start is not None:
            on_start(p.todo(store.done()))
        try:
            execute(p.runs, p.data, p.device, store, metadata, executor, on_run, p.other_test, p.pack)
        except KeyboardInterrupt:
            raise Interrupted([r for r in p.runs if r.run_id in store.done()], len(p.runs)) from None
        planned = {r.run_id for r in p.runs}
        return (store.runs[store.runs["run_id"].isin(planned)],
                store.class_rows[store.class_rows["run_id"].isin(planned)])


# ---------------------------------------------------------------- planning before spending


def seconds_per_image(config: RunConfig, data: Dataset, device: torch.device, steps: int = 3) -> float:
    """Training time per image of the run's model on `device`, from a few timed batches of
    real images (after one untimed batch: allocation and first-call costs)."""
    model = build_model(config, data.shape[0], len(data.classes), data.shape[1]).to(
        device, memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-9)
    x = (data.train_x[:config.batch_size].float() / 255).to(device).contiguous(memory_format=torch.channels_last)
    y = data.train_y[:config.batch_size].to(device)
    task = TASKS.get(config.task)
    timings = []
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        for _ in range(steps + 1):
            start = time.perf_counter()
            optimizer.zero_grad(set_to_none=True)
            task.loss(model(x), x, y).backward()
            optimizer.step()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            timings.append(time.perf_counter() - start)
    return min(timings[1:]) / len(y)


def dry_run(prepared: Prepared) -> list[dict]:
    """Per variant: its runs, what `--out` already holds, the model's size and an estimate of
    the time left (training, and evaluation at a third of the training cost per image)."""
    p = prepared
    existing = results.existing_runs(p.out, p.resume, p.force)
    done = set(existing.loc[existing["status"] != "failed", "run_id"]) if len(existing) else set()
    train_images, test_images = len(p.data.train_y), len(p.data.test_y)
    rows = []
    for variant in dict.fromkeys(r.variant for r in p.runs):
        runs = [r for r in p.runs if r.variant == variant]
        config = runs[0].config
        size = model_size(config, p.data.shape, len(p.data.classes))
        left = sum(r.run_id not in done for r in runs)
        per_image = seconds_per_image(config, p.data, p.device) if left else 0.0
        evaluated = train_images + (config.epochs + 1) * test_images
        rows.append({
            "variant": variant, "seeds": len(runs), **{f: config.columns().get(f) for f in p.study.factors
                                                        if f not in ("params", "flops")},
            "params": size.params, "flops": size.flops, "epochs": config.epochs, "images": train_images,
            "done": len(runs) - left, "left": left,
            "seconds": left * per_image * (config.epochs * train_images + evaluated / 3),
        })
    return rows


# ---------------------------------------------------------------- saved models


def config_from_row(row: pd.Series) -> RunConfig:
    """The configuration a results row records: its fields and the model's arguments."""
    types = column_types()
    values = {}
    for field_name in RunConfig.__dataclass_fields__:
        column = "base_lr" if field_name == "lr" else field_name
        if field_name == "model_args" or column not in row:
            continue
        value = row[column]
        values[field_name] = None if pd.isna(value) else types[column](value)
    config = RunConfig(**values)
    knobs = arch.model_source(config.model).knobs
    args = {}
    for name, default in knobs.items():
        if name in row and not pd.isna(row[name]):
            value = row[name]
            args[name] = ast.literal_eval(value) if isinstance(value, str) and not isinstance(default, str) \
                else type(default)(value) if isinstance(default, (bool, int, float)) else value
    return config.with_fields(**args)


def load_run_model(path: Path, row: pd.Series, data: Dataset) -> torch.nn.Module:
    """The final weights of the run of `row`, saved beside the results `path` (--save-models)."""
    from safetensors.torch import load_file

    weights = results.models_path(path) / f"{row['run_id']}.safetensors"
    if not weights.exists():
        raise UsageError(f"no saved weights for {row['variant']} seed {row['seed']} ({weights}): train the study "
                         "with --save-models")
    model = build_model(config_from_row(row), data.shape[0], len(data.classes), data.shape[1])
    model.load_state_dict(load_file(weights))
    return model.eval()


def data_spec(prepared: Prepared, data_dir: Path | None):
    """How a worker loads the study's dataset itself (a cluster sends it only to workers that
    cannot)."""
    from ablate.cluster import DataSpec

    config = prepared.runs[0].config
    return DataSpec(config.dataset, str(data_dir) if data_dir else None, config.limit_train, config.limit_test,
                    config.image_size, config.test_fraction or 0.2)
