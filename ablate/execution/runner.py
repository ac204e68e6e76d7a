"""A study's execution: skip what is done, train the rest through an executor, save each run
as it returns."""

from __future__ import annotations

import contextlib
import functools
import math
import re
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Callable, Iterator, Protocol

import pandas as pd
import pyarrow as pa
import torch

from ablate.execution import autopack
from ablate.results import files as results
from ablate.execution.checks import (check_memory, check_model, check_outputs, check_weights, model_size, pack_size,
                                     trainable_params, training_flops)
from ablate.data.datasets import Dataset, deferred_cache_writes, load_dataset, load_test_dataset
from ablate.errors import UsageError, one_line
from ablate.execution.executors import InProcess
from ablate.study.planning import (RUN_COLUMNS, Run, check_resumable, configurations, overridden_options, plan,
                             results_schema, run_columns, study_settings, typed_columns, unused_options)
from ablate.execution.progress import Progress
from ablate.results.files import StudyFile
from ablate.study.sequential import AutoRecord, AutoSeeds, Rule
from ablate.study.studies import Study
from ablate.training.train import RunResult, share_key, train_members


# ---------------------------------------------------------------- rows


def run_rows(run: Run, result: RunResult, device: str, data: Dataset,
             columns: dict = RUN_COLUMNS) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The tidy rows of one run: (variant, seed, epoch, split) rows, and per-class rows."""
    head = {"study": run.study, "variant": run.variant, "seed": run.seed}
    ids = {"run_id": run.run_id, "config_id": run.config_id}
    size = model_size(run.config, data.shape, len(data.classes))
    per_image = training_flops(run.config, data.shape, len(data.classes))
    common = {**head, "status": result.status, "error": result.error, **ids,
              **typed_columns(run.config.columns(), columns),
              "params": size.params, "trainable_params": trainable_params(run.config, data.shape, len(data.classes)),
              "flops": size.flops, "input_shape": "x".join(map(str, data.shape)), "device": device,
              "packed": result.packed}
    rows = pd.DataFrame([
        {**common, "epoch": r.epoch, "split": r.split, "loss": r.loss, **r.metrics, "lr": r.lr,
         "train_flops": None if per_image is None else per_image * result.train_images * r.epoch,
         "seconds": r.seconds, "latent_corr": result.latent_corr if r.epoch == result.last_epoch else None}
        for r in result.epochs
    ] or [common], columns=list(columns))  # a failed run: one row that says why
    images = torch.bincount(data.test_y, minlength=len(data.classes)).tolist()
    per_class = pd.DataFrame([
        {**head, **ids, "class_index": i, "class_name": name, "images": n, "accuracy": accuracy}
        for i, (name, n, accuracy) in enumerate(zip(data.classes, images, result.class_accuracy))
    ], columns=results.PER_CLASS_SCHEMA.names)
    return rows, per_class


# ---------------------------------------------------------------- executors


Pack = tuple[Run, ...]  # runs that train together: seeds of one configuration, or of several that share a network
Work = Callable[[Pack, Dataset], list[RunResult]]


def packs(runs: list[Run], data: Dataset, device: torch.device, pack: bool | dict[str, int] = True) -> list[Pack]:
    """The runs in the groups they train in. Runs whose configurations may share a packed model
    (train.share_key: the same network and settings, each its own learning rate, schedule,
    data, ...) train together, `pack[config_id]` members at a time (True: as many as fit in
    memory at once; ablate.training.pack trains them as one model when it can); a configuration
    whose size is 1 (`pack` False) trains each run alone."""
    groups: dict[tuple, list[Run]] = {}  # in the study's order: each run alone, or runs that may share packs
    for config_id, group in configurations(runs).items():
        if not (pack if isinstance(pack, bool) else pack.get(config_id, 1) > 1):
            groups.update({(run.run_id, 1): [run] for run in group})
            continue
        size = None if isinstance(pack, bool) else pack[config_id]  # None: as many as fit in memory
        groups.setdefault((share_key(group[0].config, data.shape, len(data.classes)), size), []).extend(group)
    out = []
    for (_, size), group in groups.items():
        size = size or pack_size(group, data, device)
        out += [tuple(group[i:i + size]) for i in range(0, len(group), size)]
    return out


class Executor(Protocol):
    """Maps `work` over picklable packs of runs, yielding (pack, results) as each finishes and
    telling `report` how it goes (ablate.execution.executors: the registry and the contract)."""

    def map(self, work: Work, packs: list[Pack], data: Dataset,
            report: Callable[[Progress], None]) -> Iterator[tuple[Pack, list[RunResult]]]: ...


def train_pack(pack: Pack, data: Dataset, device: torch.device, on_batch=None, other_test=None,
               keep_model: bool = False, made_weights: tuple = ()) -> list[RunResult]:
    """The runs of one pack with their thread count; an exception of their own (a user's model
    that raises) is their result, status `failed`, and the study goes on. `made_weights`: the
    --weights the driver read (ablate.models.weights.Weights), which the runs start from wherever
    they train."""
    from ablate.models import weights

    weights.provide(made_weights)
    threads = torch.get_num_threads()
    torch.set_num_threads(pack[0].config.threads or threads)
    try:
        return train_members([(r.config, r.seed) for r in pack], data, device, on_batch, other_test, keep_model)
    except Exception as error:  # noqa: BLE001 - any error of the runs is recorded, not raised
        if len(pack) > 1:  # one run's error, or a pack too big for the device: each run on its own
            return [result for run in pack for result in train_pack((run,), data, device, on_batch, other_test,
                                                                    keep_model, made_weights)]
        return [RunResult([], [], "failed", error=one_line(error))]
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
    pack: bool | dict[str, int] = True,
    report: Callable[[Progress], None] = lambda progress: None,
    only: list[Run] | None = None,
) -> list[list[str]]:
    """Train the runs (`only` these of them) not yet in `store`, saving each one as soon as its
    pack finishes (then its weights, when the store keeps models). The runs that trained as one
    packed model (their run_ids) are added to the metadata's `packs` as they are saved, and
    returned."""
    done = store.done()
    todo = packs([r for r in (runs if only is None else only) if r.run_id not in done], data, device, pack)
    grouped: list[list[str]] = []
    from ablate.models import weights

    made = tuple({(c.model, c.weights): weights.get(c.model, c.weights) for c in {r.config for r in runs}
                  if c.weights is not None}.values())
    work = functools.partial(train_pack, device=device, other_test=other_test, keep_model=store.models is not None,
                             made_weights=made)
    columns = run_columns(runs)
    for finished, results_ in (executor or InProcess()).map(work, todo, data, report):
        if len(finished) > 1 and all(r.packed == len(finished) for r in results_):  # not: a model that does not pack
            grouped.append([run.run_id for run in finished])
            metadata = {**metadata, "packs": [*metadata.get("packs", []), grouped[-1]]}
        for run, result in zip(finished, results_):  # the pack's rows first: nothing after training loses them
            store.add(*run_rows(run, result, device.type, data, columns), metadata, run.label)
        for run, result in zip(finished, results_):
            if result.state is not None:
                store.save_model(run.run_id, result.state, run.label)
            if on_run is not None:
                on_run(run, result.status)
    return grouped


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
    pack: bool | None = None  # --pack/--no-pack: the seeds of a variant train together (ablate.training.pack); None: auto
    other_test: tuple | None = None  # (name, images, labels) of --test-dataset
    notes: list[str] = field(default_factory=list)  # what the user should know before training
    schema: pa.Schema | None = None  # the results file's columns: the planned runs' and the file's
    settings: dict | None = None  # the study's own settings (study_settings), for check_resumable
    weights: dict = field(default_factory=dict)  # each --weights: what it was (weights_record)
    auto: Rule | None = None  # --seeds auto: when each variant stops (`runs` are those of MAX seeds)
    existing: pd.DataFrame = field(default_factory=pd.DataFrame)  # the runs --out holds that the study keeps

    def todo(self, done: set[str]) -> list[Run]:
        return [r for r in self.runs if r.run_id not in done]


@dataclass(frozen=True)
class Trained:
    """What a study's command shows once it has trained: the planned runs' rows, their per-class
    rows, and --seeds auto's decisions (None without)."""

    runs: pd.DataFrame
    class_rows: pd.DataFrame
    auto: AutoRecord | None = None


class Interrupted(KeyboardInterrupt):
    """Ctrl-C during a study: `saved` are the planned runs that are in the file."""

    def __init__(self, saved: list[Run], planned: int):
        super().__init__()
        self.saved, self.planned = saved, planned


@dataclass(frozen=True)
class StudyOptions:
    """A study command's options, each typed once and their combinations checked (`of`): what
    `prepare` and the executors take; nothing downstream sees the command line's text."""

    training: dict  # the RunConfig settings given (None: not given, the study's or RunConfig's own)
    seeds: int | AutoSeeds
    device: torch.device
    out: Path | None  # None: results/STUDY.parquet
    data_dir: Path | None = None
    resume: bool = False
    force: bool = False
    save_models: bool = False
    pack: bool | None = None  # --pack/--no-pack; None: measured (ablate.execution.autopack)
    plot: Path | None = None
    dry_run: bool = False
    executor: str = "inprocess"
    executor_options: dict = field(default_factory=dict)  # what its `make` reads (workers, threads, ...)
    argv: tuple[str, ...] = ()  # the command line, for the files' provenance
    taken: frozenset = frozenset()  # the options the study's builder took itself
    notes: tuple[str, ...] = ()
    stated: frozenset = frozenset()  # the settings in `training` the user gave (threads may be ablate's choice)
    effect: float | None = None  # --dry-run --seeds auto: the difference whose power the plan states
    pilot: Path | None = None  # the study file that gives the spread for it (None: --out's, on --resume)

    @classmethod
    def of(cls, options: dict, argv=(), taken: frozenset = frozenset()) -> StudyOptions:
        """The options of a study command (Typer's values, by option name) typed and checked."""
        from ablate.config import SETTINGS, setting_of
        from ablate.execution import cluster, executors
        from ablate.study import sequential
        from ablate.training.train import resolve_device

        given = {k: v.value if isinstance(v, Enum) else v for k, v in options.items()}
        if given.get("plot") is not None:
            results.check_writable(given["plot"], results.FIGURE_SUFFIXES)
        if given.get("slurm_opts") is not None and not given.get("slurm"):
            raise UsageError("--slurm-opts sets the SLURM jobs of --slurm: give --slurm too, or leave it out")
        cluster.check_options(given.get("workers"), given.get("threads"), given.get("dask_scheduler"),
                              bool(given.get("slurm")))
        executor = executors.choose(given.get("executor"), given)
        stated = frozenset(k for k, v in given.items() if setting_of(k) == k and v is not None and v is not False
                           and v != "none")
        given["threads"] = cluster.run_threads(given.get("threads"), given.get("workers"),
                                               given.get("dask_scheduler"), bool(given.get("slurm")))
        training = {k: v for k, v in given.items() if setting_of(k) == k}
        for name, value in training.items():  # the schema every setting is checked by, named as typed
            if value is not None:
                training[name] = SETTINGS[name].check(value, label=f"--{name.replace('_', '-')}")
        training["amp"] = None if training.get("amp") == "none" else training.get("amp")  # None: the study's own
        training["compile"] = training.get("compile") or None
        if re.search(r"://|:\d+$", training.get("scheduler") or ""):  # the old name of --dask-scheduler
            raise UsageError(f"--scheduler {training['scheduler']}: --scheduler is the learning-rate schedule "
                             "(none, step, exponential, cosine, onecycle); a Dask scheduler's address is "
                             "--dask-scheduler")
        seeds = sequential.seeds_option(given.get("seeds", "1"), given.get("resolution"))
        effect, pilot = given.get("effect"), given.get("pilot")
        if (effect is not None or pilot is not None) and not (given.get("dry_run") and
                                                              isinstance(seeds, sequential.AutoSeeds)):
            raise UsageError("--effect and --pilot plan the power of --seeds auto in a --dry-run: give --seeds auto "
                             "and --dry-run too, or leave them out")
        if effect is not None and not (math.isfinite(effect) and effect > 0):
            raise UsageError(f"--effect must be a finite number > 0 (in the metric's units, like 1.0 accuracy "
                             f"points), got {effect}")
        if pilot is not None and not Path(pilot).exists():
            raise UsageError(f"--pilot: no such file or folder: {str(pilot)!r}")
        if pilot is not None and effect is None:
            raise UsageError("--pilot gives the spread to plan the power to detect --effect E: give --effect too")
        if effect is not None and pilot is None and not given.get("resume"):
            raise UsageError("--effect: the power is planned at the spread of a pilot study: give --pilot FILE, or "
                             "--resume to take it from --out")
        return cls(training, seeds,
                   resolve_device(given.get("device", "auto")), given.get("out"), given.get("data_dir"),
                   bool(given.get("resume")), bool(given.get("force")), bool(given.get("save_models")),
                   given.get("pack"), given.get("plot"), bool(given.get("dry_run")), executor, given,
                   tuple(argv), frozenset(taken), (), stated, effect, pilot)


def prepare(study: Study, options: StudyOptions) -> Prepared:
    """Check everything a study needs, the cheap checks first; raise UsageError on the first
    problem. Creates no file or folder."""
    from ablate.models import weights

    o = options
    out = Path(o.out) if o.out is not None else Path("results") / f"{study.name}.parquet"
    seeds, device, data_dir, resume, force, save_models, pack = (o.seeds, o.device, o.data_dir, o.resume, o.force,
                                                                 o.save_models, o.pack)
    # an option the study's builder took and gave to some of its variants is theirs (transfer's
    # --pretrain-epochs: not the scratch variant's); one it took for itself holds for every run
    from ablate.config import setting_of

    placed = {setting_of(name) for fields in study.variants.values() for name in fields}
    options = {k: None if k in o.taken and k in placed else v for k, v in o.training.items()}

    weights.forget()  # each --weights read afresh for this study, once (then the same tensors to its end)
    # a dry run on an existing --out reads it as --resume would, and says what the file holds
    looking = o.dry_run and not resume and not force and results.study_exists(out)
    existing = results.existing_runs(out, resume or looking, force)
    auto = seeds if isinstance(seeds, AutoSeeds) else None
    runs = plan(study, options, auto.most if auto else seeds)
    rule = Rule.of(auto, runs) if auto else None
    stated = {k: v for k, v in options.items() if k in o.stated}  # not ablate's own choice of threads
    unused_options(runs, stated)
    notes = [*o.notes, *overridden_options(study, stated, o.taken)]  # taken: those the study's builder took
    if rule is not None and resume and not existing.empty:
        before = None
        with contextlib.suppress(ValueError, OSError):  # metadata not of this version's: nothing to compare
            before = AutoRecord.from_metadata(results.read_metadata(out).get("auto_seeds"))
        rule, said = rule.resumed(before)
        notes += said
    settings = study_settings(study, options)
    if looking:
        try:
            check_resumable(existing, runs, out, study.factors, settings)
            kept = existing["run_id"].nunique() if len(existing) else 0
            notes.append(f"note: {str(out)!r} exists and holds {kept} runs: this is what --resume would train; "
                         "without --resume or --force the study is refused")
        except UsageError as error:
            notes.append(f"note: {error}; this is what --force would train")
            existing = existing.iloc[:0]
    else:
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
        variants = list({r.variant: r for r in runs}.values())
        notes += [note for run in variants for note in check_model(run, data)]
        said: dict[str, list[str]] = {}  # the same note of several variants is said once
        for run in variants:
            for note in check_weights(run, data):
                said.setdefault(note, []).append(run.variant)
        notes += [f"{_which(names, len(variants))}: {note}" for note, names in said.items()]
        check_outputs(runs, data)  # one real batch through each model: it runs, and gives what the task needs
        check_memory(runs, data, device)
    weights = weights_record(runs, out if resume and not existing.empty else None)  # each file read: check_weights
    return Prepared(study, runs, data, device, Path(out), resume, force, save_models, pack, other_test, notes,
                    schema, settings, weights, rule, existing)


def _which(variants: list[str], of: int) -> str:
    if len(variants) == of:
        return "every variant"
    return ("variants " if len(variants) > 1 else "variant ") + ", ".join(map(repr, variants))


def run_study(prepared: Prepared, metadata: dict, executor: Executor | None = None,
              on_run: Callable[[Run, str], None] | None = None,
              on_start: Callable[[list[Run]], None] | None = None,
              report: Callable[[Progress], None] = lambda progress: None) -> Trained:
    """Train what `prepared` plans and the file does not hold yet; return the planned runs'
    rows, per-class rows and --seeds auto's decisions. `on_start(runs to train)` is called once
    the file is open; `report` is given the executor's progress events."""
    p = prepared
    order = {r.run_id: i for i, r in enumerate(p.runs)}  # the table's order, whatever order runs end in
    with StudyFile(p.out, p.schema, resume=p.resume, force=p.force, save_models=p.save_models, order=order) as store:
        check_resumable(store.runs, p.runs, p.out, p.study.factors, p.settings)  # a writer may have finished since
        results_schema(p.runs, store.runs, p.out)
        if p.weights:
            metadata = {**metadata, "weights": p.weights}
        choices: dict = {}
        grouping = held_packs(p)  # the packs of more than one run, as run_ids: the file's, then this command's
        tried: set[str] = set()  # this command's runs: one that failed is not tried again in the next round
        trained: list[Run] = []
        try:
            while todo := _next_round(p, store, tried):
                new = [r for r in todo if r.config_id not in choices]
                choices.update(autopack.choose(new, p.data, p.device, p.pack))  # before its seeds train
                round_metadata = {**metadata, "packing": packing_record(p, choices), "packs": grouping}
                if p.auto is not None:
                    round_metadata["auto_seeds"] = p.auto.record(store.runs, p.runs, tried).to_metadata()
                trained += todo
                tried |= {r.run_id for r in todo}
                if on_start is not None:
                    on_start(trained)
                grouping = grouping + execute(p.runs, p.data, p.device, store, round_metadata, executor, on_run,
                                              p.other_test, {c: choice.size for c, choice in choices.items()},
                                              report, only=todo)
                if p.auto is None:
                    break
        except KeyboardInterrupt:
            saved = [r for r in p.runs if r.run_id in store.done()]  # --seeds auto: of the rounds so far
            planned = len(p.runs) if p.auto is None else len({r.run_id for r in [*trained, *saved]})
            raise Interrupted(saved, planned) from None
        record = None
        if p.auto is not None:
            record = p.auto.record(store.runs, p.runs, tried)
            store.set_metadata({**metadata, "packing": packing_record(p, choices), "packs": grouping,
                                "auto_seeds": record.to_metadata()}, key="auto_seeds")
        planned = {r.run_id for r in p.runs}
        return Trained(store.runs[store.runs["run_id"].isin(planned)],
                       store.class_rows[store.class_rows["run_id"].isin(planned)], record)


def _next_round(p: Prepared, store: StudyFile, tried: set[str]) -> list[Run]:
    """The runs to train next: what the file does not hold yet, or --seeds auto's next round."""
    if p.auto is None:
        return p.todo(store.done())
    return p.auto.next_round(store.runs, p.runs, tried, store.done())


def weights_record(runs: list[Run], resumed: Path | None) -> dict[str, str]:
    """The file's metadata `weights`: each --weights of the runs, and what it was (a file's
    SHA-256; the torchvision weights a name chose). A study resumed from other weights under
    the same name (a file overwritten since, DEFAULT meaning newer weights) is refused."""
    from ablate.models import weights

    record = {spec: weights.get(config.model, spec).identity for config in {r.config for r in runs}
              if (spec := config.weights) is not None}
    before = {}
    if resumed is not None:
        with contextlib.suppress(ValueError, OSError):  # metadata not of this version's: nothing to compare
            held = results.metadata_value(results.read_metadata(resumed), "weights", dict, {})
            before = {k: v for k, v in held.items() if isinstance(v, str)}
    for spec, now in record.items():
        if spec in before and before[spec] != now:
            raise UsageError(f"--resume: --weights {spec!r} is not what the file's runs started from "
                             f"({before[spec][:19]} then, {now[:19]} now): give another --out, or --force to "
                             "train them all again")
    return {**before, **record}


def packing_record(prepared: Prepared, choices: dict) -> dict:
    """The file's metadata `packing`: per variant, whether its runs trained packed, by how many,
    the measured speed-up and why (autopack.Choice); a variant trained before keeps its record."""
    held = _held(prepared, "packing", dict, {})
    before = {k: v for k, v in held.items() if isinstance(v, dict)}
    variants = {r.config_id: r.variant for r in prepared.runs}
    return {**before, **{variants[c]: choice.record() for c, choice in choices.items()}}


def held_packs(prepared: Prepared) -> list[list[str]]:
    """The file's metadata `packs` (the runs that trained together, by run_id), where it resumes."""
    held = _held(prepared, "packs", list, [])
    return [group for group in held
            if isinstance(group, list) and group and all(isinstance(r, str) for r in group)]


def _held(prepared: Prepared, key: str, kind: type, default):
    if prepared.resume and prepared.out.exists():
        with contextlib.suppress(ValueError, OSError):  # metadata not of this version's: none kept
            return results.metadata_value(results.read_metadata(prepared.out), key, kind, default)
    return default


def data_spec(prepared: Prepared, data_dir: Path | None):
    """How a worker loads the study's dataset itself (a cluster sends it only to workers that
    cannot)."""
    from ablate.execution.cluster import DataSpec

    config = prepared.runs[0].config
    return DataSpec(config.dataset, str(data_dir) if data_dir else None, config.limit_train, config.limit_test,
                    config.image_size, config.test_fraction or 0.2)
