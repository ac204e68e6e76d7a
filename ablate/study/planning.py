"""A study's plan: the variant x seed matrix of runs, their ids, the columns of its file, and
whether a file's runs can be resumed with it. Nothing here trains or loads data."""

from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import dataclass, replace
from pathlib import Path

import pandas as pd
import pyarrow as pa

from ablate import arch, schema, transforms
from ablate.config import (AMP, DATA_FIELDS, OPTIMIZERS, SCHEDULERS, SEED_SOURCES, TRAINABLE, RunConfig, checked,
                           cross_checked,
                           setting_of, used_settings, why_unused)
from ablate.errors import UsageError, unknown_name
from ablate.models import weights
from ablate.results import files as results
from ablate.study.studies import MAX_VARIANTS, Study
from ablate.training.tasks import TASKS


RUN_COLUMNS = schema.types(schema.table(arch.registry_knobs()))  # every study file's: ablate's own models' arguments


def resolve(config: RunConfig, whole: bool = True) -> RunConfig:
    """`config` checked, with every constructor argument of its model in `model_args` (the
    model's own default where none is given). Every named choice must exist, and an argument
    the model does not take is a usage error: a row records only what decided the run.
    `whole`: a run's configuration, whose settings must also agree with each other (not a
    study's base before its variants)."""
    config = checked(config)  # every field's type and range (config.SETTINGS)
    for registry, name in ((TASKS, config.task), (OPTIMIZERS, config.optimizer),
                           (SCHEDULERS, config.scheduler), (transforms.NORMALIZATIONS, config.normalization),
                           (transforms.PERMUTATIONS, config.permutation)):
        registry.get(name)
    config = checked(used_settings(config))  # the defaults filled in are checked too (lr_max = 4 x lr)
    if whole:
        cross_checked(config)
    transforms.augmentation(config.augment)
    if config.amp not in AMP:
        raise unknown_name("amp", config.amp, AMP)
    if config.trainable not in TRAINABLE:
        raise unknown_name("trainable", config.trainable, TRAINABLE)
    if config.seed_source not in ("all", *SEED_SOURCES):
        raise unknown_name("seed source", config.seed_source, ["all", *SEED_SOURCES])
    if config.weights is not None:
        weights.get(config.model, config.weights)  # made once: the file read, or the name looked up
    args = arch.model_source(config.model).typed_args(dict(config.model_args))
    return replace(config, model_args=tuple(sorted(args.items())))



def run_columns(runs: list[Run]) -> dict[str, type]:
    """RUN_COLUMNS, a column for each metric of the runs' tasks, and one for each constructor
    argument of the runs' models. A model
    argument's column is typed by the values the study's runs give it (an int `activation`
    of your model is an int column, whatever type ablate's own models give that name); where
    two of its models give one name values of two types, the column holds their text."""
    kinds: dict[str, set] = {}
    configs = {r.config for r in runs}
    measured = {m.name: float for config in configs for m in TASKS.get(config.task).metrics}  # a plugin's too
    for config in configs:
        defaults = arch.model_source(config.model).knobs  # the default's type too: 0 for a float dropout
        for name, value in config.model_args:
            kinds.setdefault(name, set()).update(
                arch.knob_type(v) for v in (value, defaults.get(name)) if v is not None)
    return {**RUN_COLUMNS, **measured, **{name: _common_type(types) for name, types in kinds.items() if types}}


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


def _config_id(study: str, variant: str, config: RunConfig) -> str:
    return _hashed(study, variant, None, repr(config), config)


def _run_id(study: str, variant: str, seed: int, config: RunConfig) -> str:
    return _hashed(study, variant, seed, repr(config), config)


@functools.lru_cache(maxsize=2 ** 16)  # a study asks for every id many times: planning, resuming, saving
def _hashed(study: str, variant: str, seed: int | None, shown: str, config: RunConfig) -> str:
    """The id; `shown` (the config's repr) is in the key because configs that compare equal
    may hash apart (a value of 1, 1.0 or True)."""
    return _digest({"study": study, "variant": variant, **({} if seed is None else {"seed": seed}),
                    **config.identity()})


@dataclass(frozen=True)
class Run:
    study: str
    variant: str
    seed: int
    config: RunConfig

    @property
    def config_id(self) -> str:
        """A hash of everything that decides the run's numbers but the seed."""
        return _config_id(self.study, self.variant, self.config)

    @property
    def run_id(self) -> str:
        """A hash of everything that decides the run's numbers."""
        return _run_id(self.study, self.variant, self.seed, self.config)

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
    base = {**weights_preprocessing(study, {**study.base, **given}), **study.base}
    runs, seen = [], {}
    for variant, fields in study.variants.items():
        try:
            config = resolve(RunConfig().with_fields(**{**base, **given, **fields}))
        except UsageError as error:
            raise UsageError(f"variant {variant!r}: {error}") from None
        if config in seen:
            raise UsageError(f"variants {seen[config]!r} and {variant!r} would train the same runs: "
                             + _unused(study.variants[seen[config]], fields, config))
        seen[config] = variant
        changed = [f for f in DATA_FIELDS if runs and getattr(config, f) != getattr(runs[0].config, f)]
        if changed:
            raise UsageError(f"variants {runs[0].variant!r} and {variant!r} differ in {', '.join(changed)}: every "
                             "variant of a study trains on the same data; give the data settings once, for the "
                             "whole study")
        runs += [Run(study.name, variant, seed, config) for seed in range(seeds)]
    return runs


def _unused(first: dict, second: dict, config: RunConfig) -> str:
    """Why two variants' fields make one configuration: what they set that their runs do not use."""
    differ = sorted(k for k in {*first, *second} if first.get(k) != second.get(k))
    if not differ:
        return "they set the same values; give each variant settings of its own"
    unused = [k for k in differ if setting_of(k) and getattr(config, setting_of(k)) is None]
    said = "; ".join(f"{k} ({first.get(k)!r} and {second.get(k)!r})" for k in differ)
    if unused:
        return (f"they differ only in {said}, and a run with optimizer {config.optimizer!r}, scheduler "
                f"{config.scheduler!r}{' and pretraining' if config.pretrain_epochs else ', no pretraining'} does "
                f"not use {', '.join(unused)} (docs/own-models-and-data.md: which settings a run uses); vary what "
                "the run uses")
    return f"they differ only in {said}: one gives the value the other takes by default"


def unused_options(runs: list[Run], options: dict) -> None:
    """A command-line setting that no run of the study uses (`--momentum` with Adam,
    `--lr-gamma` with no schedule) is refused, saying why, rather than ignored."""
    for name, value in options.items():
        if value is not None and value is not False and setting_of(name) == name \
                and all(getattr(r.config, name) is None for r in runs):
            option = f"--{name.replace('_', '-')}" + ("" if value is True else f" {value}")
            raise UsageError(f"{option}: no run of this study uses {name}: "
                             f"{why_unused(runs[0].config, name)}")


def overridden_options(study: Study, options: dict, taken: frozenset = frozenset()) -> list[str]:
    """A command-line option that a study's variants set too is never dropped without a word:
    refused when every variant sets its own value, a note naming the variants where only some
    do. `taken`: the options the study's builder took (`ablate optimizer --lr` sets each
    variant's rate itself)."""
    notes = []
    variants = {v: {setting_of(k) or k: x for k, x in fields.items()} for v, fields in study.variants.items()}
    for name, value in options.items():
        if value is None or name in taken:
            continue
        own = [v for v, fields in variants.items() if name in fields and fields[name] != value]
        if not own:
            continue
        option = f"--{name.replace('_', '-')} {value}"
        if len(own) == len(study.variants):
            raise UsageError(f"{option}: every variant of study {study.name!r} sets its own {name} "
                             f"({', '.join(f'{v}: {variants[v][name]}' for v in own[:4])}"
                             f"{', ...' if len(own) > 4 else ''}); leave {option.split()[0]} out")
        notes.append(f"note: {option} holds for the variants that do not set {name}; "
                     f"{', '.join(own)} keep{'s' if len(own) == 1 else ''} {'its' if len(own) == 1 else 'their'} own")
    return notes


# ---------------------------------------------------------------- against the file


def _value(v):
    return None if v is None or v is pd.NA or (isinstance(v, float) and v != v) else v


def study_settings(study: Study, options: dict) -> dict:
    """The columns of the study's own settings, before any variant: its base and the options."""
    given = {k: v for k, v in options.items() if v is not None}
    settings = {**study.base, **given}
    return {"study": study.name, **resolve(RunConfig().with_fields(**weights_preprocessing(study, settings),
                                                                   **settings), whole=False).columns()}


def weights_preprocessing(study: Study, settings: dict) -> dict:
    """The image size and normalisation the --weights of the study's variants expect, where
    they define them and the study does not set them: every variant (one trained from scratch
    too) sees the same data, so weights that expect two sizes are refused unless one is given.
    Weights whose mean and std ablate has no name for keep the study's normalisation."""
    from ablate.models import weights

    expected = {}
    for fields in study.variants.values():
        merged = {**settings, **fields}
        model = merged.get("model") or RunConfig().model
        if merged.get("weights"):
            if (pre := weights.get(model, merged["weights"]).preprocessing) is not None:
                expected.setdefault(model, pre)
    sides = {model: pre.image_size for model, pre in expected.items()}
    if len(set(sides.values())) > 1 and "image_size" not in settings:
        said = ", ".join(f"{model} {side}" for model, side in sides.items())
        raise UsageError(f"the models' weights expect images of different sizes ({said}): every variant sees the "
                         "same data; give --image-size")
    if not expected:
        return {}
    first = next(iter(expected.values()))
    defaults = {"image_size": first.image_size, "normalization": first.normalization}
    return {k: v for k, v in defaults.items() if v is not None and k not in settings}


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
                            for r in {r.config_id: r for r in runs}.values()])  # one row per configuration
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
        hint = ""
        if set(differences) == {"study"}:  # a sweep of the previous release is the study `sweep`, whatever --out
            hint = f" (a sweep or a study file: --name {differences['study'][0][0]} resumes it)"
        raise UsageError(f"--resume: {str(path)!r} holds runs made with other settings ({said}); "
                         f"give the same options (--threads too){hint}, another --out, or --force to replace it")


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


def configurations(runs: list[Run]) -> dict[str, list[Run]]:
    """The runs of each configuration (config_id), seeds apart, in the study's order."""
    groups: dict[str, list[Run]] = {}
    for run in runs:
        groups.setdefault(run.config_id, []).append(run)
    return groups
