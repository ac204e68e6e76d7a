"""A study's execution: plan the variant x seed matrix, skip what is done, train the rest
through an executor, save each run as it returns."""

from __future__ import annotations

import functools
import hashlib
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Protocol

import pandas as pd
import pyarrow as pa
import torch

from ablate import arch, count, results
from ablate.data import Dataset, data_bytes, deferred_cache_writes, load_dataset, load_test_dataset
from ablate.errors import UsageError
from ablate.executors import InProcess, Progress
from ablate.results import StudyFile
from ablate.studies import MAX_VARIANTS, Study
from ablate.config import DATA_FIELDS, RESULT_COLUMNS, column_types
from ablate.train import TASKS, RunConfig, RunResult, build_model, resolve, train_runs

RUN_COLUMNS = {  # the columns of every study file: results, settings, and ablate's own models' arguments
    **{k: RESULT_COLUMNS[k] for k in ("study", "variant", "seed", "epoch", "split", "loss", "accuracy", "lr",
                                      "seconds", "status", "error", "run_id", "config_id")},
    **column_types(), **arch.registry_knobs(),
    **{k: RESULT_COLUMNS[k] for k in ("latent_corr", "params", "flops", "device", "packed")},
}


def run_columns(runs: list[Run]) -> dict[str, type]:
    """RUN_COLUMNS, and a column for each constructor argument of the runs' models. A model
    argument's column is typed by the values the study's runs give it (an int `activation`
    of your model is an int column, whatever type ablate's own models give that name); where
    two of its models give one name values of two types, the column holds their text."""
    kinds: dict[str, set] = {}
    for config in {r.config for r in runs}:
        defaults = arch.model_source(config.model).knobs  # the default's type too: 0 for a float dropout
        for name, value in config.model_args:
            kinds.setdefault(name, set()).update(
                arch.knob_type(v) for v in (value, defaults.get(name)) if v is not None)
    return {**RUN_COLUMNS, **{name: _common_type(types) for name, types in kinds.items() if types}}


def _common_type(types: set) -> type:
    if len(types) == 1:
        return next(iter(types))
    return float if types == {int, float} else str


def typed_columns(values: dict, columns: dict[str, type]) -> dict:
    """`values` as `columns` types them: what a model argument's column holds (its text in a
    text column, an int as a float in a float column)."""
    def typed(name, value):
        kind = columns.get(name)
        if value is None or kind is None or isinstance(value, kind):
            return value
        return float(value) if kind is float and isinstance(value, int) else str(value) if kind is str else value

    return {k: typed(k, v) for k, v in values.items()}


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
        return _digest({"study": self.study, "variant": self.variant, **self.config.identity()})

    @property
    def run_id(self) -> str:
        """A hash of everything that decides the run's numbers."""
        return _digest({"study": self.study, "variant": self.variant, "seed": self.seed, **self.config.identity()})

    @property
    def label(self) -> str:
        return f"{self.variant} seed {self.seed}"


MAX_RUNS = 100_000  # a study larger than this is a typo, not a plan (and MAX_VARIANTS variants)


def plan(study: Study, options: dict, seeds: int) -> list[Run]:
    """Every variant under seeds 0..seeds-1, each configuration checked. Options left as
    None keep the defaults; a variant's own fields win over the options, and the options
    over the study's base. Names that are not RunConfig fields are the model's arguments.
    Every run of a study trains on the same data: a variant may not change it."""
    if len(study.variants) > MAX_VARIANTS:
        raise UsageError(f"{len(study.variants):,} variants; a study takes at most {MAX_VARIANTS:,}: give fewer values")
    if len(study.variants) * seeds > MAX_RUNS:
        raise UsageError(f"{len(study.variants):,} variants x {seeds:,} seeds = {len(study.variants) * seeds:,} runs; "
                         f"a study takes at most {MAX_RUNS:,} runs: split it, or give fewer values or seeds")
    given = {k: v for k, v in options.items() if v is not None}
    study_settings(study, options)  # the options checked, before any variant
    runs = []
    for variant, fields in study.variants.items():
        try:
            config = resolve(RunConfig().with_fields(**{**study.base, **given, **fields}))
        except UsageError as error:
            raise UsageError(f"variant {variant!r}: {error}") from None
        changed = [f for f in DATA_FIELDS if runs and getattr(config, f) != getattr(runs[0].config, f)]
        if changed:
            raise UsageError(f"variants {runs[0].variant!r} and {variant!r} differ in {', '.join(changed)}: every "
                             "variant of a study trains on the same data; give the data settings once, for the "
                             "whole study")
        runs += [Run(study.name, variant, seed, config) for seed in range(seeds)]
    return runs


# ---------------------------------------------------------------- before training


def _value(v):
    return None if v is None or v is pd.NA or (isinstance(v, float) and v != v) else v


def study_settings(study: Study, options: dict) -> dict:
    """The columns of the study's own settings, before any variant: its base and the options."""
    given = {k: v for k, v in options.items() if v is not None}
    return {"study": study.name, **resolve(RunConfig().with_fields(**{**study.base, **given})).columns()}


def check_resumable(existing: pd.DataFrame, runs: list[Run], path, factors: tuple[str, ...] = (),
                    settings: dict | None = None) -> None:
    """Refuse to add `runs` to a file whose runs were made with other settings: a file holds
    one study, one configuration per variant, and in every variant the same value of each of
    the study's own `settings` (study_settings: its budget, data, model) that no variant
    changes and that is not one of its `factors`."""
    if existing.empty:
        return
    columns_ = run_columns(runs)
    planned = pd.DataFrame([{"study": r.study, "variant": r.variant, **typed_columns(r.config.columns(), columns_)}
                            for r in runs])
    columns = [c for c in planned.columns if c in existing.columns]
    held = existing[columns].drop_duplicates()
    differences = {}
    for _, row in held[held["variant"].isin(set(planned["variant"]))].iterrows():  # each variant: its own rows
        now = planned[planned["variant"] == row["variant"]].iloc[0]
        for name in columns:
            if name not in differences and _value(row[name]) != _value(now[name]):
                differences[name] = ([_value(row[name])], _value(now[name]))
    settings = settings if settings is not None else {"study": runs[0].study}
    fixed = [c for c in columns if c in settings and c not in factors and held[c].nunique(dropna=False) == 1
             and (planned[c].map(_value) == _value(settings[c])).all()]
    for name in fixed:  # the study's own settings, in new variants too: the same as in the file
        now, before = _value(planned[name].iloc[0]), _value(held[name].iloc[0])
        if name not in differences and before != now:
            differences[name] = ([before], now)
    if differences:
        said = "; ".join(f"{c}: {', '.join(map(str, before))} in the file, {now} now"
                         for c, (before, now) in differences.items())
        raise UsageError(f"--resume: {str(path)!r} holds runs made with other settings ({said}); "
                         "give the same options (--threads too), another --out, or --force to replace it")


def results_schema(runs: list[Run], existing: pd.DataFrame, path: Path) -> pa.Schema:
    """The columns the study's file will have: those of the planned runs, and any other the
    file holds (a run of another model) with its type. Every planned run's row is checked
    against it now, before anything trains: a value the file could not hold is refused here,
    never after a run has trained."""
    columns = run_columns(runs)
    schema = results.arrow_schema(columns)
    if len(existing):
        held = results.read_schema(path)
        for name in held.names:
            kind = held.field(name).type
            if name in schema.names and not pa.types.is_null(kind) and kind != schema.field(name).type:
                raise UsageError(f"--resume: column {name!r} of {str(path)!r} holds {kind} values; the planned runs "
                                 f"give it {schema.field(name).type}: give another --out")
            if name not in schema.names:
                schema = schema.append(pa.field(name, kind))
    rows = pd.DataFrame([{"run_id": r.run_id, **typed_columns(r.config.columns(), columns)}
                         for r in {r.config_id: r for r in runs}.values()])
    try:
        pa.Table.from_pandas(rows.reindex(columns=schema.names), schema=schema, preserve_index=False)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError) as error:
        raise UsageError(f"a setting does not fit its column: {error}") from None
    return schema


@functools.cache  # every seed of a variant has the same model
def model_size(config: RunConfig, shape: tuple[int, ...], classes: int) -> count.Counts:
    """The run's model counted on the meta device: nothing is allocated."""
    try:
        return count.count_meta(lambda: build_model(config, shape[0], classes, shape[1]), shape)
    except UsageError:
        raise
    except Exception as error:  # a user's model that fails to build or to run once
        raise UsageError(f"model {config.model!r} failed before training: {arch.describe_error(error)}") from None


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
    source = arch.model_source(config.model)

    def build():
        return source.build(data.shape[0], len(data.classes), data.shape[1], **dict(config.model_args))

    model = count.build_meta(build)  # nothing is allocated
    if model is None:  # a model that cannot be built on the meta device: with real weights, or why not
        try:
            model = build()
        except UsageError:
            raise
        except (Exception, SystemExit) as error:  # noqa: BLE001 - whatever the user's model raises is bad input
            raise UsageError(f"model {config.model!r} failed to build: {arch.describe_error(error)}") from None
    replaced = arch.strip_activations(model)
    if not replaced:
        raise UsageError(f"variant {run.variant!r}: model {config.model!r} has no activation module to remove "
                         "(activations called as functions in forward cannot be replaced)")
    said = ", ".join(f"{n} {name}" for name, n in replaced.items())
    return [f"variant {run.variant!r}: {sum(replaced.values())} activation modules replaced by identity ({said})"]


PROBE_IMAGES = 2  # the real images a model's output is checked on before training
PROBE_MAX_BYTES = 2 ** 30  # a model with more weights than this is not built for the check


class _Running:
    """The modules running at each moment (global forward hooks): the innermost one when an
    exception is raised is the layer that failed."""

    def __enter__(self):
        self.stack: list[torch.nn.Module] = []
        hooks = torch.nn.modules.module
        self.handles = [hooks.register_module_forward_pre_hook(lambda module, args: self.stack.append(module)),
                        hooks.register_module_forward_hook(lambda module, args, out: self._leave(module))]
        return self

    def _leave(self, module) -> None:
        if any(m is module for m in self.stack):  # and any it called that raised and was caught
            while self.stack.pop() is not module:
                pass

    def __exit__(self, *exc) -> None:
        for handle in self.handles:
            handle.remove()

    def where(self, model: torch.nn.Module | None = None) -> str:
        """" in layer 'body.3' (Linear)": the innermost module running, if any and not `model`."""
        if not self.stack:
            return ""
        root, inner = self.stack[0], self.stack[-1]
        if isinstance(root, arch.GrayToRGB):
            root = root.model
        if model is not None and inner in (model, root):
            return ""
        name = next((n for n, m in root.named_modules() if m is inner), "")
        return f" in layer {name!r} ({type(inner).__name__})" if name else f" in a {type(inner).__name__}"


def check_outputs(runs: list[Run], data: Dataset) -> None:
    """Each model configuration of `runs`, built once with real weights on the CPU, on a batch
    of PROBE_IMAGES real images (in evaluation mode, then in training mode): it must build,
    run, give what its task needs (`Task.check_output`) and outputs that a gradient reaches. The
    global random state is given back as it was: no run's numbers change. A model of more
    than PROBE_MAX_BYTES of weights (or half the free memory) is left to check_memory."""
    configs = {}
    for run in runs:
        c = run.config
        configs.setdefault((c.model, c.model_args, c.strip_activations, c.task), run)
    x = data.train_x[:PROBE_IMAGES].float().div(255).contiguous(memory_format=torch.channels_last)
    batch = f"a batch of {len(x)} {data.name} images ({'x'.join(map(str, data.shape))})"
    for run in configs.values():
        config, task = run.config, TASKS.get(run.config.task)
        name = f"model {config.model!r}" + (f" (variant {run.variant!r})" if len(configs) > 1 else "")

        def build():
            return build_model(config, data.shape[0], len(data.classes), data.shape[1])

        meta = count.build_meta(build)
        weights = 0 if meta is None else sum(t.numel() * t.element_size() for t in (*meta.parameters(),
                                                                                     *meta.buffers()))
        if weights > min(PROBE_MAX_BYTES, (count.available_memory() or float("inf")) / 2):
            continue  # slow to build for real, or too big: check_memory's to judge
        model, mode = None, ""
        with torch.random.fork_rng(devices=[]), _Running() as running:
            try:
                model = build()
                for training in (False, True):  # epoch 0 evaluates first
                    mode = " in training mode" if training else ""
                    model.train(training)
                    with torch.set_grad_enabled(training):
                        output = model(task.inputs(x, torch.Generator().manual_seed(0)))
                    problem = task.check_output(output, x, data)
                    if problem is not None:
                        raise UsageError(f"{name}{mode} {problem}")
                if isinstance(output, torch.Tensor) and not output.requires_grad:
                    raise UsageError(f"{name} gives outputs that depend on no trainable parameter (no gradient "
                                     "reaches them): training cannot change them")
            except UsageError:
                raise
            except (Exception, SystemExit) as error:  # noqa: BLE001 - whatever the user's model raises is bad input
                said = arch.describe_error(error)
                if model is None:
                    raise UsageError(f"{name} failed to build{running.where()}: {said}") from None
                raise UsageError(f"{name} failed{running.where(model)}{mode} on {batch}: {said}") from None


def training_bytes(config: RunConfig, data: Dataset) -> int:
    """Memory to train one model of `config`: parameters, gradients and up to two optimiser
    slots (4 x the parameters) and the activations of one batch."""
    size = model_size(config, data.shape, len(data.classes))
    return 4 * size.param_bytes + size.activation_bytes * config.batch_size


def float_data_bytes(data: Dataset) -> int:
    """What training adds to the loaded uint8 images: their normalised float copy, at its peak."""
    images = len(data.train_y) + len(data.test_y)
    return data_bytes(len(data.train_y), len(data.test_y), data.shape) - images * math.prod(data.shape)


def check_memory(runs: list[Run], data: Dataset, device: torch.device) -> None:
    """Refuse a variant whose training would not fit."""
    free = available_memory(device)
    for run in {r.variant: r for r in runs}.values():
        model, images = training_bytes(run.config, data), float_data_bytes(data)
        if model + images > free:
            size = model_size(run.config, data.shape, len(data.classes))
            raise UsageError(
                f"variant {run.variant!r} needs about {(model + images) / 1e9:,.1f} GB to train ({size.params:,} "
                f"parameters and the activations of a batch of {run.config.batch_size}: {model / 1e9:,.1f} GB; "
                f"the images as floats: {images / 1e9:,.1f} GB); {free / 1e9:,.1f} GB are free on {device.type}")


# ---------------------------------------------------------------- rows


def run_rows(run: Run, result: RunResult, device: str, data: Dataset,
             columns: dict = RUN_COLUMNS) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The tidy rows of one run: (variant, seed, epoch, split) rows, and per-class rows."""
    head = {"study": run.study, "variant": run.variant, "seed": run.seed}
    ids = {"run_id": run.run_id, "config_id": run.config_id}
    size = model_size(run.config, data.shape, len(data.classes))
    common = {**head, "status": result.status, "error": result.error, **ids,
              **typed_columns(run.config.columns(), columns),
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
    """Maps `work` over picklable packs of runs, yielding (pack, results) as each finishes and
    telling `report` how it goes (ablate.executors: the registry and the contract)."""

    def map(self, work: Work, packs: list[Pack], data: Dataset,
            report: Callable[[Progress], None]) -> Iterator[tuple[Pack, list[RunResult]]]: ...


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
    report: Callable[[Progress], None] = lambda progress: None,
) -> None:
    """Train the runs not yet in `store`, saving each one as soon as its pack finishes (then
    its weights, when the store keeps models)."""
    done = store.done()
    todo = packs([r for r in runs if r.run_id not in done], data, device, pack)
    work = functools.partial(train_pack, device=device, other_test=other_test, keep_model=store.models is not None)
    columns = run_columns(runs)
    for finished, results_ in (executor or InProcess()).map(work, todo, data, report):
        for run, result in zip(finished, results_):  # the pack's rows first: nothing after training loses them
            store.add(*run_rows(run, result, device.type, data, columns), metadata, run.label)
        for run, result in zip(finished, results_):
            if result.state is not None:
                store.save_model(run.run_id, result.state, run.label)
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
    schema: pa.Schema | None = None  # the results file's columns: the planned runs' and the file's
    settings: dict | None = None  # the study's own settings (study_settings), for check_resumable

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
    settings = study_settings(study, options)
    check_resumable(existing, runs, out, study.factors, settings)
    schema = results_schema(runs, existing, out)
    if save_models:
        results.check_writable(results.models_path(out) / "x.safetensors", (".safetensors",))
    config = runs[0].config  # plan checked that the data settings are the same for every run
    with deferred_cache_writes():  # a folder's decoded images are cached only once everything is checked
        data = load_dataset(config.dataset, data_dir, config.limit_train, config.limit_test,
                            image_size=config.image_size, test_fraction=config.test_fraction or 0.2)
        labels = max((r.config.labels for r in runs if r.config.labels is not None), default=None)
        if labels is not None and labels > len(data.train_y):
            raise UsageError(f"--labels {labels}: the train split has {len(data.train_y):,} images; "
                             f"give at most {len(data.train_y):,}")
        other_test = None
        if config.test_dataset is not None:
            other_test = load_test_dataset(config.test_dataset, data.classes, data_dir, data.shape[1], data.shape[0])
        notes = [note for run in {r.variant: r for r in runs}.values() for note in check_model(run, data)]
        check_outputs(runs, data)  # one real batch through each model: it runs, and gives what the task needs
        check_memory(runs, data, device)
        if pack is None:  # packing pays where per-step costs dominate: on GPUs, not on a CPU (benchmarks/speed.py)
            pack = device.type == "cuda"
    return Prepared(study, runs, data, device, Path(out), resume, force, save_models, pack, other_test, notes,
                    schema, settings)


def run_study(prepared: Prepared, metadata: dict, executor: Executor | None = None,
              on_run: Callable[[Run, str], None] | None = None,
              on_start: Callable[[list[Run]], None] | None = None,
              report: Callable[[Progress], None] = lambda progress: None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Train what `prepared` plans and the file does not hold yet; return the planned runs'
    rows and per-class rows. `on_start(runs to train)` is called once the file is open;
    `report` is given the executor's progress events."""
    p = prepared
    order = {r.run_id: i for i, r in enumerate(p.runs)}  # the table's order, whatever order runs end in
    with StudyFile(p.out, p.schema, resume=p.resume, force=p.force, save_models=p.save_models, order=order) as store:
        check_resumable(store.runs, p.runs, p.out, p.study.factors, p.settings)  # a writer may have finished since
        results_schema(p.runs, store.runs, p.out)
        if on_start is not None:
            on_start(p.todo(store.done()))
        try:
            execute(p.runs, p.data, p.device, store, metadata, executor, on_run, p.other_test, p.pack, report)
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
            task.loss(model(task.inputs(x, torch.Generator(device).manual_seed(0))), x, y).backward()
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


def data_spec(prepared: Prepared, data_dir: Path | None):
    """How a worker loads the study's dataset itself (a cluster sends it only to workers that
    cannot)."""
    from ablate.cluster import DataSpec

    config = prepared.runs[0].config
    return DataSpec(config.dataset, str(data_dir) if data_dir else None, config.limit_train, config.limit_test,
                    config.image_size, config.test_fraction or 0.2)
