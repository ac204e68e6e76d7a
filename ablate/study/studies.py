"""The reference studies: each a base configuration plus named variants.

A study is looked up by name; studies with a sweep take its values (`get_study("conv1",
channels=[6, 36])`), and bad values are usage errors that list what is allowed.

Building a study with its defaults imports no torch: the command line's help is made from
these. Only a model named by the user is looked at (`ablate.arch`, which imports torch).
"""

from __future__ import annotations

import ast
import itertools
import math
import string
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

from ablate.config import (AUGMENTATION_NAMES, DATA_FIELDS, FIELDS, OPTIMIZERS, SCHEDULERS, SEED_SOURCES, SETTINGS,
                           RunConfig, Setting, augmentation_parts, column, setting_of)
from ablate.errors import UsageError, describe_error, unknown_name
from ablate.registry import Registry
from ablate.study import designs
from ablate.study.designs import MAX_COMPONENTS


@dataclass(frozen=True)
class Study:
    name: str
    description: str
    variants: dict[str, dict]  # variant name -> the RunConfig fields it sets
    factors: tuple[str, ...]  # the fields the variants vary: the summary's columns
    base: dict = field(default_factory=dict)  # RunConfig fields every variant of the study sets
    per_class: bool = False  # the summary shows per-class test accuracy side by side
    plot: str = "curves"  # its natural figure: curves, sweep or classes
    design: dict | None = None  # a component study's design (designs.Design.to_metadata): its effects

    def __post_init__(self):
        check_name(self.name)
        if not isinstance(self.variants, dict) or not self.variants or not all(
                isinstance(v, str) and isinstance(f, dict) for v, f in self.variants.items()):
            raise UsageError(f"study {self.name!r} must have variants: a dict of variant names to the settings "
                             f"each sets, like {{'a': {{'lr': 0.1}}}}; got {self.variants!r:.80}")
        if not isinstance(self.base, dict):
            raise UsageError(f"study {self.name!r}: base must be a dict of settings, got {self.base!r:.80}")
        object.__setattr__(self, "factors", tuple(self.factors))

    def metadata(self) -> dict:
        """What `ablate report` and `ablate plot` need to know of the study, kept in its file."""
        return {"name": self.name, "description": self.description, "factors": list(self.factors),
                "plot": self.plot, "per_class": self.per_class, **({"components": self.design} if self.design else {})}


NAME_CHARACTERS = frozenset(string.ascii_letters + string.digits + "-_.")
MAX_NAME_LENGTH = 100


def check_name(name, what: str = "study name") -> str:
    """A study's name is an identifier: it names the default results file and a column, never
    a folder. Letters, digits, -, _ and ., not starting with a dot, at most 100 characters."""
    if not isinstance(name, str) or not name or len(name) > MAX_NAME_LENGTH or name.startswith(".") \
            or not set(name) <= NAME_CHARACTERS:
        shown = repr(name) if not isinstance(name, str) or len(name) <= 40 else repr(name[:40]) + f"... ({len(name)} characters)"
        raise UsageError(f"{what} {shown} is not allowed: use letters, digits, '-', '_' and '.', not starting with "
                         f"'.', at most {MAX_NAME_LENGTH} characters")
    return name


@dataclass(frozen=True)
class StudyEntry:
    build: Callable[..., Study]  # keywords: its own options, and any shared option it names
    options: dict[str, str]  # its own options: name -> help, the default is the keyword's; a shared
    # option (epochs, ...) named here keeps its type and default, with this help for this study


STUDIES: Registry[StudyEntry] = Registry("study")


def register_study(name: str, /, **options: str):
    """Register `build` as study `name`; `options` are its own command-line options, with
    their help. The command `ablate NAME` is made from this: nothing else needs to know it."""

    def decorator(build: Callable[..., Study]) -> Callable[..., Study]:
        STUDIES.register(name, StudyEntry(build, options))
        return build

    return decorator


def get_study(name: str, /, **values) -> Study:
    return build(name, STUDIES.get(name), **values)


def build(name: str, entry: StudyEntry, /, **values) -> Study:
    """The study `entry` builds from `values`, checked: a builder that fails (not with a usage
    error of its own), returns something that is not a Study, or a Study without variants is a
    usage error naming the study and who registered it; nothing else is affected."""
    who = STUDIES.owners.get(name, "ablate")
    said = f"study {name!r}" + ("" if who == "ablate" else f" of plugin {who!r}")
    try:
        study = entry.build(**values)
    except UsageError:
        raise
    except Exception as error:  # noqa: BLE001 - a plugin's bug is its own study's error
        raise UsageError(f"{said} failed to build: {describe_error(error)}") from None
    if not isinstance(study, Study):
        raise UsageError(f"{said} returned {type(study).__name__}, not an ablate.Study")
    return study


def parse_list(text: str | list, kind: str, allowed=None) -> list[str]:
    """'a,b, c' -> ['a', 'b', 'c'], each checked against `allowed` when given."""
    names = [t.strip() for t in text.split(",")] if isinstance(text, str) else list(text)
    names = [n for n in names if n]
    if not names:
        raise UsageError(f"give at least one {kind}" + (f"; allowed: {', '.join(allowed)}" if allowed else ""))
    if len(set(names)) < len(names):
        raise UsageError(f"a {kind} is listed twice in {text!r}")
    for name in names:
        if allowed is not None and name not in allowed:
            raise unknown_name(kind, name, list(allowed))
    return names


TUTORIAL_FC1 = 120  # arch.tutorial's fc1_features, written here so that the help needs no torch (a test checks)


@register_study("linearity")
def linearity(model: str | None = None) -> Study:
    if model:
        from ablate import arch  # imports torch: only for a model the user names

        knobs = arch.model_source(model).knobs
    else:  # RunConfig's model, the tutorial net
        knobs = {"activation": "relu", "fc1_features": TUTORIAL_FC1}
    if {"activation", "fc1_features"} <= set(knobs):
        fc1 = knobs["fc1_features"]
        return Study(
            "linearity",
            "The net with its activations, without them (max-pools kept), and without them with fc1 doubled "
            "(any other model: with and without its activation modules).",
            variants={
                "relu": {"activation": "relu", "fc1_features": fc1},
                "linear": {"activation": "none", "fc1_features": fc1},
                "linear-wide": {"activation": "none", "fc1_features": 2 * fc1},
            },
            factors=("activation", "fc1_features"),
        )
    return Study(
        "linearity",
        "The model as it is, and with every activation module (ReLU, GELU, SiLU, ...) replaced by identity.",
        variants={"original": {"strip_activations": False}, "linear": {"strip_activations": True}},
        factors=("strip_activations",),
    )


CONV1_CHANNELS = (2, 4, 6, 8, 12, 16, 20, 28, 36, 44)


@register_study("conv1", channels="conv1 widths to train, comma-separated.")
def conv1(channels: str = ",".join(map(str, CONV1_CHANNELS))) -> Study:
    widths = []
    for text in parse_list(channels, "channel count"):
        if not text.isdigit() or int(text) < 1:
            raise UsageError(f"--channels takes whole numbers >= 1 separated by commas, got {text!r}")
        widths.append(int(text))
    return Study(
        "conv1",
        "The tutorial net with conv1's out_channels swept: train and test loss against width.",
        variants={str(c): {"conv1_channels": c} for c in widths},
        factors=("conv1_channels", "params", "flops"),
        plot="sweep",
    )


@register_study("permutation")
def permutation() -> Study:
    return Study(
        "permutation",
        "Original images; pixels shuffled by one fixed permutation (drawn from the seed, the same for "
        "every image, train and test); a fresh permutation for every image every time it is seen.",
        variants={"original": {"permutation": "none"}, "fixed": {"permutation": "fixed"},
                  "fresh": {"permutation": "fresh"}},
        factors=("permutation",),
        per_class=True,
        plot="classes",
    )


AUGMENT_SETS = "none,flip,crop-flip,crop-flip+perspective"


@register_study("augment", sets="Augmentation sets, comma-separated: "
                + ", ".join(["none", *AUGMENTATION_NAMES]) + ", or a+b combinations.")
def augment(sets: str = AUGMENT_SETS) -> Study:
    names = parse_list(sets, "augmentation set")
    for name in names:
        augmentation_parts(name)  # rejects unknown names, listing the allowed ones
    return Study(
        "augment",
        "Augmentation sets on the train split (random per image): "
        + ", ".join(["none", *AUGMENTATION_NAMES]) + ", and combinations written a+b.",
        variants={name: {"augment": name} for name in names},
        factors=("augment",),
    )


SCHEDULER_HELP = "; ".join(f"{n}: {s.description}" for n, s in SCHEDULERS.items())


@register_study("scheduler", schedulers=f"Schedulers, comma-separated ({SCHEDULER_HELP}).")
def scheduler(schedulers: str = ",".join(SCHEDULERS)) -> Study:
    names = parse_list(schedulers, "scheduler", SCHEDULERS.names())
    return Study(  # each scheduler's hyper-parameters are its defaults (config.SCHEDULERS): columns
        "scheduler",
        f"Learning-rate schedulers ({SCHEDULER_HELP}).",
        variants={n: {"scheduler": n} for n in names},
        factors=("scheduler", "lr_step_size", "lr_gamma", "lr_max"),
    )


def optimizer_defaults(name: str) -> dict:
    """An optimiser's own learning rate, momentum and weight decay, as RunConfig fields."""
    entry = OPTIMIZERS.get(name)
    return {"lr": entry.lr, "momentum": entry.momentum, "weight_decay": entry.weight_decay}


OPTIMIZER_HELP = "; ".join(
    f"{n}: lr {o.lr}" + (f", momentum {o.momentum}" if o.momentum else "")
    + (f", weight decay {o.weight_decay}" if o.weight_decay else "")
    for n, o in OPTIMIZERS.items())


@register_study("optimizer", optimizers=f"Optimisers, comma-separated ({OPTIMIZER_HELP}).")
def optimizer(optimizers: str = ",".join(OPTIMIZERS), lr: float | None = None) -> Study:
    names = parse_list(optimizers, "optimizer", OPTIMIZERS.names())
    variants = {}
    for name in names:
        fields = {"optimizer": name, **optimizer_defaults(name)}
        if lr is not None:  # --lr given: the same learning rate for every optimiser
            fields["lr"] = lr
        variants[name] = fields
    return Study(
        "optimizer",
        f"Optimisers, each with its own defaults unless --lr is given ({OPTIMIZER_HELP}).",
        variants=variants,
        factors=("optimizer", "base_lr", "momentum", "weight_decay"),
    )


@register_study("normalization")
def normalization() -> Study:
    return Study(
        "normalization",
        "Pixels in [0, 1]; per-channel mean and std of the train split; ZCA whitening fitted on the "
        "train split.",
        variants={"none": {"normalization": "none"}, "standard": {"normalization": "standard"},
                  "zca": {"normalization": "zca"}},
        factors=("normalization",),
    )


@register_study("regularization", dropout="Dropout probability of the dropout variants, in [0, 1).")
def regularization(dropout: float = 0.5) -> Study:
    if not 0 <= dropout < 1:
        raise UsageError(f"--dropout must be in [0, 1), got {dropout}")
    return Study(
        "regularization",
        "The three-conv net (report 002): base, dropout before the last fc, batch norm after "
        "every conv, and both.",
        variants={
            "base": {"dropout": 0.0, "batchnorm": False},
            "dropout": {"dropout": dropout, "batchnorm": False},
            "batchnorm": {"dropout": 0.0, "batchnorm": True},
            "dropout+batchnorm": {"dropout": dropout, "batchnorm": True},
        },
        factors=("dropout", "batchnorm"),
        base={"model": "threeconv"},
    )


@register_study("variance", sources="Sources of randomness, each varied alone by the seed while the others stay "
                "fixed, comma-separated: " + ", ".join(SEED_SOURCES) + "; all of them together is trained too.")
def variance(sources: str = ",".join(SEED_SOURCES)) -> Study:
    names = parse_list(sources, "seed source", list(SEED_SOURCES))
    return Study(
        "variance",
        "Noise by source: one configuration (any study's options) trained with one source of randomness varied by "
        "the seed at a time, the others fixed (init: the initial weights; order: the batches' order; augment: the "
        "augmentation, input noise and pixel permutations; dropout: its masks), and with all of them: each "
        "source's standard deviation over the seeds and its share of the run-to-run variance, and the test set's "
        "own sampling error (a bootstrap over its images).",
        variants={**{n: {"seed_source": n} for n in names}, "all": {"seed_source": "all"}},
        factors=("seed_source",), plot="variants")


# ---------------------------------------------------------------- the reports' sweeps


def parse_numbers(text: str, option: str, kind: type = float, low: float = 0) -> list:
    """'0.1,0.01' -> [0.1, 0.01]: each a number of `kind` >= `low`, none twice."""
    values = []
    for item in parse_list(text, f"value of {option}"):
        try:
            value = kind(item)
        except ValueError:
            value = None
        if value is None or not math.isfinite(value) or value < low:
            what = "whole numbers" if kind is int else "numbers"
            raise UsageError(f"{option} takes {what} >= {low} separated by commas, got {item!r}")
        values.append(value)
    return values


@register_study("lr", values="Learning rates, comma-separated.")
def lr(values: str = "0.001,0.01,0.1,1") -> Study:
    rates = parse_numbers(values, "--values")
    if 0 in rates:
        raise UsageError("--values: a learning rate must be > 0")
    return Study("lr", "Learning rates, everything else fixed: final loss against the rate.",
                 variants={f"{r:g}": {"lr": r} for r in rates}, factors=("base_lr",), plot="sweep")


@register_study("batch-size", values="Batch sizes, comma-separated.",
                scale_lr="Scale the learning rate with the batch size: lr x batch / --batch-size.")
def batch_size(values: str = "32,128,512", scale_lr: bool = False, batch_size: int | None = None,
               lr: float | None = None) -> Study:
    sizes = parse_numbers(values, "--values", int, 1)
    base_batch, base_lr = batch_size or RunConfig.batch_size, lr or RunConfig.lr
    variants = {str(b): {"batch_size": b, **({"lr": base_lr * b / base_batch} if scale_lr else {})} for b in sizes}
    rule = f", the learning rate scaled as {base_lr:g} x batch / {base_batch}" if scale_lr else ""
    return Study("batch-size", f"Batch sizes{rule}: final loss against the batch size.",
                 variants=variants, factors=("batch_size", "base_lr"), plot="sweep")


@register_study("dropout", values="Dropout probabilities before the last fc layer, in [0, 1), comma-separated.")
def dropout(values: str = "0,0.25,0.5,0.75") -> Study:
    rates = parse_numbers(values, "--values")
    if any(r >= 1 for r in rates):
        raise UsageError(f"--values: dropout probabilities must be in [0, 1), got {values!r}")
    return Study("dropout", "Dropout rates before the last fc layer (report 002's three-conv net by default).",
                 variants={f"{r:g}": {"dropout": r} for r in rates}, factors=("dropout",),
                 base={"model": "threeconv"}, plot="sweep")


LADDER_STEPS = {  # report 002, part 2: each step on top of the ones before it
    "standardize": {"normalization": "standard"},
    "crop-flip": {"augment": "crop-flip"},
    "exponential": {"scheduler": "exponential", "lr_gamma": 0.8},
    "adam": {"optimizer": "adam", **optimizer_defaults("adam")},
    "dropout": {"dropout": 0.5},
    "batchnorm": {"batchnorm": True},
}


@register_study("ladder", steps="The steps, in order, each on top of those before it: "
                + ", ".join(LADDER_STEPS) + ".")
def ladder(steps: str = "standardize,crop-flip,exponential,dropout,batchnorm") -> Study:
    names = parse_list(steps, "ladder step", list(LADDER_STEPS))
    variants, fields = {"baseline": {}}, {}
    for name in names:
        fields = {**fields, **LADDER_STEPS[name]}
        variants[f"+{name}"] = dict(fields)
    return Study(
        "ladder",
        "Report 002's cumulative protocol on the three-conv net: baseline, then each step on top of the "
        "previous ones (standardize: per-channel mean/std; crop-flip; exponential: lr x0.8 per epoch; "
        "adam: Adam, lr 0.001; dropout 0.5 before the last fc; batchnorm after every conv).",
        variants=variants,
        factors=("normalization", "augment", "scheduler", "optimizer", "dropout", "batchnorm"),
        base={"model": "threeconv"},
        plot="variants",
    )


# ---------------------------------------------------------------- any knob


FIXED_PER_STUDY = {*DATA_FIELDS, "task"}  # the same for every variant: set once, for the whole study
MAX_VARIANTS = 1_000  # more is a typo, not a plan (and each variant is planned, counted and checked)


def _settings_help(model: str | None, knobs) -> str:
    return ("allowed: the training settings " + ", ".join(sorted(FIELDS - FIXED_PER_STUDY))
            + f"; the constructor arguments of {model or RunConfig.model!r}: " + (", ".join(knobs) or "none"))


def parse_values(name: str, text: str, model: str | None, option: str = "--vary") -> list:
    """The values of `--vary NAME=TEXT`: typed as the RunConfig field, or, for a constructor
    argument of the model, Python literals (strings may be bare)."""
    from ablate import arch  # imports torch: only a sweep being made needs it

    field = setting_of(name)
    if field in FIXED_PER_STUDY:
        raise UsageError(f"{option} {name}: the data settings ({', '.join(sorted(FIXED_PER_STUDY))}) are the same "
                         f"for every variant of a study; give --{field.replace('_', '-')} once")
    if field is not None:
        items = parse_list(text, f"value of {name}")
        return [_typed(name, item, SETTINGS[field], option) for item in items]  # factorial refuses equal values
    source = arch.model_source(model or RunConfig.model)
    if name not in source.knobs:
        allowed = sorted(FIELDS - FIXED_PER_STUDY) + list(source.knobs)
        raise unknown_name("setting to vary", name, allowed, hint=_settings_help(model, source.knobs))
    try:
        values = ast.literal_eval(f"[{text}]")
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        values = [_literal(item) for item in parse_list(text, f"value of {name}")]
    values = [source.typed(name, v) for v in values]  # typed once: 0 and 0.0 of a float are one value
    if not values or len(set(values)) < len(values):
        raise UsageError(f"{option} {name}: give distinct values separated by commas, got {text!r}")
    return values


def _literal(text: str):
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return text  # a bare word: a string


def _typed(name: str, text: str, setting: Setting, option: str = "--vary"):
    """`text` as `setting` takes it: 'none' for None (a setting that takes the string 'none',
    like scheduler, keeps it), true/false, or a number."""
    kind, value = setting.kind, text
    if text.lower() == "none" and (setting.optional or kind is not str):
        value = None
    elif kind is bool:
        value = {"true": True, "false": False}.get(text.lower(), text)
    elif kind in (int, float):
        try:
            value = kind(text)
        except ValueError:
            pass
    return setting.check(value, f"{option} {name}: ")


def _label(value) -> str:
    """A value in a variant name: 0.001, not 0.0010000; never two values under one name."""
    if isinstance(value, float) and float(f"{value:g}") == value:
        return f"{value:g}"
    return repr(value) if isinstance(value, float) else str(value)


def factorial(factors: dict[str, list], grid: bool) -> dict[str, dict]:
    """Variants from factor values: with `grid`, every combination; without, one factor at a
    time around the base (the first value of every factor). Counted before any is made: more
    than MAX_VARIANTS is refused."""
    names = list(factors)
    for name, values in factors.items():  # 0.1 and 0.10, 1 and 1.0: one value, one variant name
        labels = [_label(v) for v in values]
        twice = next((v for i, v in enumerate(labels) if v in labels[:i]), None)
        if twice is not None:
            raise UsageError(f"{name}: the value {twice} is given twice ({', '.join(map(repr, values))}); "
                             "give distinct values")
    count = math.prod(len(v) for v in factors.values()) if grid else 1 + sum(len(v) - 1 for v in factors.values())
    if count > MAX_VARIANTS:
        sizes = " x ".join(str(len(v)) for v in factors.values()) if grid else "one factor at a time"
        raise UsageError(f"{count:,} variants ({sizes}); a study takes at most {MAX_VARIANTS:,}: give fewer values")
    if grid:
        combos = itertools.product(*factors.values())
        return {" ".join(f"{n}={_label(v)}" for n, v in zip(names, combo)): dict(zip(names, combo))
                for combo in combos}
    base = {n: values[0] for n, values in factors.items()}
    variants = {"base": base}
    for name, values in factors.items():
        for value in values[1:]:
            variants[f"{name}={_label(value)}"] = {**base, name: value}
    return variants


@register_study("sweep", vary="NAME=V1,V2,...: a training setting (lr, batch_size, optimizer, ...) or a "
                "constructor argument of --model, and its values; give --vary once per factor.",
                grid="Every combination of the factors' values (default: one factor at a time around the base, "
                "the first value of each).",
                name="The study's name, its rows' `study` column (letters, digits, -, _, .). Default: --out's "
                "file name, else sweep.")
def sweep(vary: list[str] | None = None, grid: bool = False, model: str | None = None, name: str | None = None,
          out: Path | None = None) -> Study:
    """Any knob: each --vary NAME=V1,V2,... is a training setting or a constructor argument of
    --model, e.g. `ablate sweep --model mynets:Net --vary width=16,32,64 --vary lr=0.01,0.1`.
    One factor at a time around the base (the first value of each), or --grid for every
    combination. Each varied name is a column of the results."""
    if not vary:
        raise UsageError("give at least one --vary NAME=V1,V2,... (a training setting or a constructor argument)")
    factors = parse_knobs(vary, "--vary", "NAME=V1,V2,...", model)
    kind = "every combination" if grid else "one factor at a time around the base"
    columns = tuple(column(n) for n in factors)
    numeric = any(isinstance(v, (int, float)) and not isinstance(v, bool) for vs in factors.values() for v in vs)
    return Study(study_name(name, out, "sweep"), f"A sweep of {', '.join(factors)}: {kind}.", variants=factorial(factors, grid),
                 factors=columns, plot="sweep" if len(factors) == 1 and numeric else "curves")


def parse_knobs(items: list[str], option: str, form: str, model: str | None) -> dict[str, list]:
    """Each `option NAME=V1,V2` of `items`: NAME (a setting or a constructor argument of
    `model`) -> its values, typed (parse_values); a name given twice or no `=` is refused."""
    knobs = {}
    for item in items:
        knob, sep, text = item.partition("=")
        knob = knob.strip().replace("-", "_")
        if not sep or not knob:
            raise UsageError(f"{option} {item!r}: write {form}")
        if knob in knobs:
            raise UsageError(f"{option} {knob} is given twice")
        knobs[knob] = parse_values(knob, text, model, option)
    return knobs


def component_design(components: dict[str, list], kind: str, lr: float | None = None,
                     fixed: frozenset = frozenset()) -> Study:
    """The variants of a component study: `components` maps each name (a setting or a
    constructor argument) to its [off, on] values, typed; `kind` is a design of
    ablate.study.designs. An `optimizer` component brings each optimiser's own learning rate,
    momentum and weight decay (as `ablate optimizer` does), but for those given (`lr`) or
    varied as components themselves, or `fixed` (set for the whole study: a study file's [base])."""
    parts = []
    for name, values in components.items():
        if len(values) != 2:
            raise UsageError(f"component {name}: give two values, OFF,ON (like dropout=0,0.5); got {len(values)}")
        if _label(values[0]) == _label(values[1]):
            raise UsageError(f"component {name}: its two values are equal ({values[0]!r}); give OFF,ON that differ")
        parts.append(designs.Component(name, *values))
    design = designs.make(kind, parts)
    count = len(design.rows)
    if count > MAX_VARIANTS:
        raise UsageError(f"the {kind} design of {len(parts)} components has {count:,} variants; a study takes at most "
                         f"{MAX_VARIANTS:,}: use --design fractional, leave-one-out or add-one-in")
    variants = design.variants()
    if "optimizer" in components:
        for fields in variants.values():
            own = {k: v for k, v in optimizer_defaults(fields["optimizer"]).items()
                   if setting_of(k) not in components and k not in fixed}
            fields.update({**own, **({"lr": lr} if lr is not None else {})})
    said = {"full": "every combination", "fractional": f"a fraction of resolution {design.resolution}",
            "leave-one-out": "everything on, then each off", "add-one-in": "everything off, then each on"}[design.kind]
    return Study("components", f"What each of {', '.join(components)} contributes: {said} "
                 f"({count} variants).", variants=variants, factors=tuple(column(n) for n in components),
                 plot="effects", design=design.to_metadata())


@register_study("components", component="NAME=OFF,ON: a training setting or a constructor argument of --model, and "
                "the values it has off and on (like dropout=0,0.5); give --component once per component, at most 12.",
                design="full (every combination), fractional (the smallest of resolution IV: no main effect aliased "
                "with another or a two-factor interaction), leave-one-out or add-one-in.",
                name="The study's name (letters, digits, -, _, .). Default: --out's file name, else components.")
def components(component: list[str] | None = None, design: str = "full", model: str | None = None,
               name: str | None = None, out: Path | None = None, lr: float | None = None) -> Study:
    """What each component contributes: `ablate components --component normalization=none,standard
    --component augment=none,crop-flip --component dropout=0,0.5 --design full`. `ablate report`
    gives each component's main effect and the interactions with intervals, and, in a full design,
    each one's Shapley share beside what the ladder in the given order attributes."""
    if not component:
        raise UsageError("give at least one --component NAME=OFF,ON (a training setting or a constructor argument)")
    if len(component) > MAX_COMPONENTS:
        raise UsageError(f"{len(component)} components; a component study takes at most {MAX_COMPONENTS} (a design "
                         "of more is too large to train or to read)")
    study = component_design(parse_knobs(component, "--component", "NAME=OFF,ON", model), design, lr)
    return replace(study, name=study_name(name, out, "components"))


def study_name(name: str | None, out: Path | None, default: str) -> str:
    """--name, else --out's file name (made an identifier), else `default`: two studies written
    to two files of one folder are two studies."""
    if name is not None:
        return check_name(name, "--name")
    return _name_of(Path(out)) if out is not None else default


TABLES = ("base", "variants", "vary", "grid", "components")  # a study file's tables; its other keys are top-level


def from_toml(path: Path, model: str | None = None, name: str | None = None, out: Path | None = None) -> Study:
    """A study kept in a file: name, description, [base], and [variants.NAME] tables or a
    [vary] / [grid] table of NAME = [values]. Data settings go in [base] only; the values'
    types and ranges are checked with every other run's (planning.plan)."""
    from ablate import arch  # imports torch: only a study file being read needs it

    text = _read(path)
    try:
        spec = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise UsageError(f"{path}: malformed TOML: {error}") from None
    allowed = {"name", "description", "base", "variants", "vary", "grid", "components", "design"}
    for key in spec:
        if key not in allowed:
            raise UsageError(f"{path}, {_line(text, key)}: unknown field {key!r}; allowed: {', '.join(sorted(allowed))}")
    for key in ("name", "description"):
        if key in spec and not (isinstance(spec[key], str) and spec[key].strip()):
            raise UsageError(f"{path}, {_line(text, key)}: {key} must be a non-empty string, got {spec[key]!r}")
    if sum(k in spec for k in ("variants", "vary", "grid", "components")) != 1:
        raise UsageError(f"{path}: give exactly one of [variants.NAME], [vary], [grid] or [components]")
    kind = next(k for k in ("variants", "vary", "grid", "components") if k in spec)
    if "design" in spec and (kind != "components" or not isinstance(spec["design"], str)):
        raise UsageError(f"{path}, {_line(text, 'design')}: design is the design of a [components] table: one of "
                         f"{', '.join(designs.DESIGNS)}, like design = \"fractional\"; got {spec['design']!r}")
    for key in ("base", kind):
        if not isinstance(spec.get(key, {}), dict):
            raise UsageError(f"{path}, {_line(text, key)}: {key} must be a table ([{key}]), got {spec[key]!r}")
    base = spec.get("base", {})
    if not spec[kind]:
        raise UsageError(f"{path}, {_line(text, kind)}: [{kind}] is empty: give at least one "
                         + ("[variants.NAME] table" if kind == "variants" else "NAME = [values]"))
    if kind == "variants":
        for variant, fields in spec["variants"].items():
            if not isinstance(fields, dict):
                raise UsageError(f"{path}, {_line(text, variant)}: variant {variant!r} must be a table "
                                 f"([variants.{variant}]) of settings, got {fields!r}")
    model = model or base.get("model")
    if model is not None and not isinstance(model, str):
        raise UsageError(f"{path}, {_line(text, 'model')}: model must be a string, got {model!r}")
    source = arch.model_source(model or RunConfig.model)
    knobs = source.knobs
    settings = sorted(FIELDS - FIXED_PER_STUDY) + list(knobs)
    tables = [("base", base)] + ([(f"variants.{n}", f) for n, f in spec["variants"].items()]
                                 if kind == "variants" else [(kind, spec[kind])])
    for where, table in tables:
        for key in table:
            if not setting_of(key) and key not in knobs:
                if key in allowed:
                    raise UsageError(f"{path}, {_line(text, key)}: {key} is read as a setting of [{where}]: write "
                                     f"{', '.join(sorted(k for k in allowed if k not in TABLES))} before the "
                                     "first [table]")
                raise UsageError(f"{path}, {_line(text, key)}: unknown setting {key!r}; allowed: "
                                 + ", ".join(settings))
            if where != "base" and key in FIXED_PER_STUDY:
                raise UsageError(f"{path}, {_line(text, key)}: {key} is a data setting, the same for every "
                                 f"variant: set it in [base], not in [{where}]")
    def typed(key, value, own=source):  # a model argument as its declared type (TOML has no tuples)
        if setting_of(key) or key not in own.knobs:
            return value
        try:
            return own.typed(key, value)
        except UsageError as error:
            raise UsageError(f"{path}, {_line(text, key)}: {error}") from None

    base = {key: typed(key, value) for key, value in base.items()}
    design = None
    if kind == "variants":
        variants = {}
        for variant, fields in spec["variants"].items():
            own = arch.model_source(fields["model"]) if isinstance(fields.get("model"), str) else source
            variants[variant] = {key: typed(key, value, own) for key, value in fields.items()}
        factors = tuple(dict.fromkeys(k for fields in variants.values() for k in fields))
    else:
        factors_values = {}
        for key, values in spec[kind].items():
            values = [typed(key, v) for v in (values if isinstance(values, list) else [values])]
            if not values or len({repr(v) for v in values}) < len(values):
                raise UsageError(f"{path}, {_line(text, key)}: {key} takes a list of distinct values, "
                                 f"like {key} = [1, 2]; got {spec[kind][key]!r}")
            factors_values[key] = values
        if kind == "components":
            try:
                design = component_design(factors_values, spec.get("design", "full"), base.get("lr"),
                                          frozenset(setting_of(k) for k in base if setting_of(k)))
            except UsageError as error:
                raise UsageError(f"{path}, {_line(text, 'components')}: {error}") from None
            variants, factors, design = design.variants, factors_values, design.design
        else:
            variants = factorial(factors_values, kind == "grid")
            factors = tuple(factors_values)
    if name is None and "name" in spec:
        try:
            name = check_name(spec["name"])
        except UsageError as error:
            raise UsageError(f"{path}, {_line(text, 'name')}: {error}") from None
    name = study_name(name, out, _name_of(Path(path)))
    return Study(name, spec.get("description", f"the study in {path}"), variants=variants,
                 factors=tuple(column(f) for f in factors), base=base,
                 plot="effects" if design else "sweep" if len(factors) == 1 else "curves", design=design)


def _name_of(path: Path) -> str:
    """A study named after its file: the file name's stem, its other characters made '_'."""
    stem = "".join(c if c in NAME_CHARACTERS else "_" for c in path.stem)[:MAX_NAME_LENGTH].lstrip(".")
    return stem or "study"


def _read(path: Path) -> str:
    try:
        return Path(path).read_text()
    except (OSError, UnicodeDecodeError) as error:
        raise UsageError(f"cannot read {str(path)!r}: {getattr(error, 'strerror', None) or error}") from None


def _line(text: str, key: str) -> str:
    for number, line in enumerate(text.splitlines(), 1):
        if line.strip().startswith((key, f"[{key}", f"[variants.{key}")):
            return f"line {number}"
    return "somewhere"


# ---------------------------------------------------------------- autoencoders (report 001)


AUTOENCODER_BASE = {  # report 001's setting: AdamW, lr 0.001, batch 32, 20 epochs, pixels in [0, 1], MNIST
    "task": "reconstruct", "model": "autoencoder", "dataset": "mnist", "epochs": 20, "batch_size": 32,
    "optimizer": "adamw", **optimizer_defaults("adamw"), "normalization": "none",
}


@register_study("latent", dims="Latent sizes, comma-separated.")
def latent(dims: str = "4,10,40") -> Study:
    sizes = parse_numbers(dims, "--dims", int, 1)
    return Study("latent", "The conv autoencoder's latent size: reconstruction loss per epoch, and the mean "
                 "|correlation| of the latent coordinates (latent_corr).",
                 variants={str(d): {"latent_dim": d} for d in sizes}, factors=("latent_dim",),
                 base=AUTOENCODER_BASE, plot="curves")


@register_study("ae-depth", depths="Conv layers in the encoder (mirrored in the decoder), 1 to 3, comma-separated.")
def ae_depth(depths: str = "1,2,3") -> Study:
    values = parse_numbers(depths, "--depths", int, 1)
    if any(d > 3 for d in values):
        raise UsageError(f"--depths: each depth is 1, 2 or 3, got {depths!r}")
    return Study("ae-depth", "The conv autoencoder's depth at latent size 10: reconstruction loss per epoch.",
                 variants={str(d): {"depth": d} for d in values}, factors=("depth", "params"),
                 base=AUTOENCODER_BASE, plot="curves")


PROBE_EPOCHS = 300  # full-batch Adam steps of the transfer probe: its test accuracy settles by 100 (Fashion-MNIST)


@register_study("transfer", labels="Labelled train images (class-balanced) the classifier learns from (at most "
                "the train split's size).",
                pretrain_epochs="Epochs of the autoencoder's training on the whole train split, unlabelled.",
                probe_epochs="Epochs of the probe: one linear layer on the frozen code, a logistic regression trained "
                "on all the labelled images at once (full batch, Adam lr 0.01, L2 1/labels) until its test accuracy "
                "has settled.",
                epochs="Epochs of the classifier's training on the labelled images (default 10); the "
                "autoencoder's pretraining takes --pretrain-epochs, the probe --probe-epochs.",
                batch_size="Batch size of the classifier's training (default 20); pretraining takes 32, the probe "
                "all the labelled images.",
                lr="Learning rate of the classifier's AdamW (default 0.001); pretraining takes 0.001, the probe 0.01.")
def transfer(labels: int = 80, pretrain_epochs: int = 20, probe_epochs: int = PROBE_EPOCHS) -> Study:
    if labels < 1 or pretrain_epochs < 1 or probe_epochs < 1:
        raise UsageError(f"--labels, --pretrain-epochs and --probe-epochs must be >= 1, got {labels}, "
                         f"{pretrain_epochs} and {probe_epochs}")
    pretrained = {"pretrain_epochs": pretrain_epochs, "freeze_encoder": True}
    return Study(
        "transfer",
        "Report 001, Q4: an MLP (latent -> 20 -> 30 -> 10) on the code of an autoencoder pretrained per seed without "
        "labels, trained on a few labelled images: encoder frozen, fine-tuned, or trained from scratch (random init); "
        "and a linear probe of the frozen code, trained to convergence: what the code holds.",
        variants={"frozen": pretrained,
                  "finetune": {**pretrained, "freeze_encoder": False},
                  "scratch": {},
                  # a logistic regression on the code: Adam on its loss plus the L2 penalty of scikit-learn's
                  # default (C = 1: weight decay 1 / labels on the mean loss), every labelled image in each step
                  "probe": {**pretrained, "model": "latent-linear", "epochs": probe_epochs, "batch_size": labels,
                            "optimizer": "adam", "lr": 0.01, "momentum": None, "weight_decay": 1 / labels}},
        factors=("model", "pretrain_epochs", "freeze_encoder", "epochs"),
        base={"model": "latent-mlp", "dataset": "mnist", "labels": labels, "epochs": 10, "batch_size": 20,
              "optimizer": "adamw", **optimizer_defaults("adamw"), "normalization": "none"},
        per_class=True,
    )


# ---------------------------------------------------------------- pretrained networks (report 004, task IV)


FINETUNE_MODES = {  # variant -> what it sets: the weights' own name is filled in
    "scratch": {"weights": None, "trainable": "all"},
    "probe": {"trainable": "head"},
    "finetune": {"trainable": "all"},
}


@register_study("finetune", models="Compare several pretrained networks in one study, comma-separated (report 004: "
                "resnet18,resnet34,resnext50_32x4d); default: --model.",
                model="The network (default resnet18): a torchvision classifier, or any model ablate builds when "
                "--weights is a file.",
                weights="Its pretrained weights: a torchvision weights name (default DEFAULT, the best torchvision "
                "has; downloaded once) or a file (.safetensors, .pt/.pth state dict).",
                epochs="Default: 5.", batch_size="Default: 32.", lr="SGD with momentum 0.9; default 0.001.")
def finetune(model: str | None = None, weights: str | None = None, models: str | None = None) -> Study:
    if models is not None and model:
        raise UsageError("give --model or --models, not both")
    names = parse_list(models, "model") if models is not None else [model or "resnet18"]
    spec = weights or "DEFAULT"  # checked with each model when planned (planning.weights_preprocessing)
    base = {"model": names[0], "weights": spec, "epochs": 5, "batch_size": 32, "optimizer": "momentum",
            "lr": 0.001, "momentum": 0.9}
    variants = {(f"{name}/{mode}" if len(names) > 1 else mode): {"model": name, **fields}
                for name in names for mode, fields in FINETUNE_MODES.items()}
    return Study("finetune", "Pretrained weights against none (report 004, task IV): each network trained from "
                 "scratch (the same architecture, random weights), as a probe (every layer frozen and in eval mode "
                 "but a new head) and fine-tuned (every layer trained, from the weights). The head is new in both, "
                 "for the data's classes; torchvision weights set the image size and normalisation they expect. "
                 "Each variant's trainable parameters are the column trainable_params.",
                 variants=variants, factors=(("model",) if len(names) > 1 else ()) + ("trainable", "weights",
                                                                                        "trainable_params"),
                 base=base, per_class=True)
