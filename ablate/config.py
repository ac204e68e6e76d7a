"""What decides a run, as plain data: `RunConfig`, the optimisers and schedulers by name, and
the augmentations' names.

Nothing here imports torch: the command line's help and listings read these without paying
for it. `ablate.training.train` and `ablate.transforms` turn them into torch objects.
"""

from __future__ import annotations

import math
import typing
from dataclasses import asdict, dataclass, fields, replace
from typing import Callable

from ablate.errors import UsageError, unknown_name
from ablate.registry import Registry


@dataclass(frozen=True)
class RunConfig:
    """Everything that decides a run's numbers, except the seed. Every field is a column, and
    so is every constructor argument of the model (`model_args`, filled in by `resolve`).

    A field added later must default to the old behaviour, and does not join `ID_FIELDS`:
    then every run_id written before it existed stays the same (see `identity`)."""

    task: str = "classify"
    dataset: str = "cifar10"
    image_size: int | None = None  # None: the dataset's own
    test_fraction: float | None = None  # a folder without train/ and test/: the part held out
    test_dataset: str | None = None  # evaluated too, as split "test:NAME"
    model: str = "tutorial"
    model_args: tuple = ()  # (name, value) pairs, sorted: the model's constructor arguments
    strip_activations: bool = False  # every activation module replaced by identity
    labels: int | None = None  # train on this many class-balanced labelled images (the rest: pretraining only)
    pretrain_epochs: int | None = None  # first train an autoencoder on the train split, unlabelled; take its encoder
    freeze_encoder: bool | None = None  # with pretraining: the encoder's weights stay as pretrained
    weights: str | None = None  # pretrained weights (ablate.models.weights): a torchvision name or a file; the head is new
    trainable: str = "all"  # all, or head: only the class-dependent head trains (a probe); the rest in eval mode
    epochs: int = 10
    batch_size: int = 128
    lr: float = 0.02
    optimizer: str = "momentum"
    momentum: float | None = 0.9  # SGD's momentum; None for the optimisers without one
    weight_decay: float = 0.0
    scheduler: str = "none"
    lr_step_size: int | None = None  # step: epochs between decays
    lr_gamma: float | None = None  # step, exponential: factor per decay
    lr_max: float | None = None  # onecycle: the peak learning rate
    cycle_momentum: bool | None = None  # onecycle: momentum cycled 0.95 -> 0.85 against the rate (torch's); off by default
    normalization: str = "half"
    augment: str = "none"
    permutation: str = "none"
    limit_train: int | None = None
    limit_test: int | None = None
    deterministic: bool = False  # torch's deterministic algorithms (matters on GPUs)
    threads: int | None = None  # torch's CPU threads (sums add up in another order with another count)
    amp: str = "none"  # bf16: forward and loss under torch.autocast in bfloat16
    compile: bool = False  # torch.compile the model (a cold compile costs seconds)
    seed_source: str = "all"  # the randomness the seed varies: all, or one of SEED_SOURCES, the others fixed

    def columns(self) -> dict:
        """The fields and the model's arguments as result columns; `lr` is `base_lr` there,
        `lr` being each epoch's."""
        fields = {column(k): v for k, v in asdict(self).items() if k != "model_args"}
        return {**fields, **{k: v if v is None or isinstance(v, (bool, int, float, str)) else str(v)
                             for k, v in self.model_args}}

    def identity(self) -> dict:
        """What a run_id hashes: `columns()`, less the fields added after `ID_FIELDS` that are
        at their default (a new field that keeps the old behaviour keeps the old run_ids)."""
        later = {column(f.name) for f in fields(self)
                 if f.name not in ID_FIELDS | {"model_args"} and getattr(self, f.name) == f.default}
        args = {k: "None" if v is None else v for k, v in self.model_args}  # as ablate 0.1 hashed a None
        return {k: args.get(k, v) for k, v in self.columns().items() if k not in later}

    def with_fields(self, **values) -> RunConfig:
        """A copy with `values` set: RunConfig fields by name, anything else as a model argument."""
        fields = {setting_of(k): v for k, v in values.items() if setting_of(k)}
        args = {**dict(self.model_args), **{k: v for k, v in values.items() if not setting_of(k)}}
        return replace(self, **fields, model_args=tuple(sorted(args.items())))


AMP = ("none", "bf16")  # the autocast dtypes a run may train in
TRAINABLE = ("all", "head")  # what of the model trains
# The sources of a run's randomness (ablate.training.pack's streams): its initial weights (and an
# autoencoder's pretraining), the order of its batches, its augmentation (a task's input noise and
# pixel permutations too), its dropout masks. A run varies all of them with its seed, or one.
SEED_SOURCES = ("init", "order", "augment", "dropout")

FIELDS = set(RunConfig.__dataclass_fields__) - {"model_args"}
# The fields every run_id hashes, whatever their value: those of ablate 0.1 (amp and compile
# included). Never add to this: a field added later is hashed only where it is not at its default.
ID_FIELDS = frozenset({
    "task", "dataset", "image_size", "test_fraction", "test_dataset", "model", "strip_activations", "labels",
    "pretrain_epochs", "freeze_encoder", "epochs", "batch_size", "lr", "optimizer", "momentum", "weight_decay",
    "scheduler", "lr_step_size", "lr_gamma", "lr_max", "normalization", "augment", "permutation", "limit_train",
    "limit_test", "deterministic", "threads", "amp", "compile"})
# The data settings: one dataset per study, loaded once for all its runs.
DATA_FIELDS = ("dataset", "image_size", "test_fraction", "test_dataset", "limit_train", "limit_test")


def column(field_name: str) -> str:
    """A field's result column: `lr` is `base_lr` there (`lr` is each epoch's rate)."""
    return "base_lr" if field_name == "lr" else field_name


FIELD_OF_COLUMN = {"base_lr": "lr"}  # the one column named apart from its field



# ---------------------------------------------------------------- the schema of the settings


@dataclass(frozen=True)
class Setting:
    """One RunConfig field's Python type and range: the CLI, `--vary`, study files and the
    results' columns all check through it."""

    name: str
    kind: type  # int, float, str or bool
    optional: bool  # None allowed: the dataset's or the model's own
    low: float | None = None
    high: float | None = None
    low_open: bool = False  # low itself is not allowed
    high_open: bool = False

    def check(self, value, where: str = "", label: str | None = None):
        """`value` as this setting takes it (an int for a float is made a float), or a usage
        error that says what is allowed (`label`, say "--lr", names the setting there)."""
        if value is None and self.optional:
            return None
        kind = self.kind
        fits = (isinstance(value, kind) and not (kind is int and isinstance(value, bool))) or \
            (kind is float and isinstance(value, int) and not isinstance(value, bool))
        if fits and kind is float:
            value = float(value)
            fits = math.isfinite(value)
        if fits and kind is int and abs(value) > MAX_INT:
            raise UsageError(f"{where}{label or self.name} must be at most 2^53 ({MAX_INT:,}), got {value!r}")
        if fits and self.low is not None and (value < self.low or (self.low_open and value == self.low)):
            fits = False
        if fits and self.high is not None and (value > self.high or (self.high_open and value == self.high)):
            fits = False
        if not fits:
            option = (label or "").startswith("--")  # a command-line option: left out, it is none
            raise UsageError(f"{where}{label or self.name} must be {self.allowed(not option)}, got {value!r}")
        return value

    def allowed(self, say_none: bool = True) -> str:
        words = {int: "a whole number", float: "a finite number", str: "a string", bool: "true or false"}
        text = words[self.kind]
        if self.low is not None and self.high is not None:
            text += f" in {'(' if self.low_open else '['}{self.low:g}, {self.high:g}{')' if self.high_open else ']'}"
        elif self.low is not None:
            text += f" {'>' if self.low_open else '>='} {self.low:g}"
        return text + (" (or none)" if self.optional and say_none else "")


MAX_INT = 2 ** 53  # a whole number a float64 and a Parquet int64 both hold exactly
RANGES = {  # name: (low, high, low_open, high_open)
    "image_size": (8, 1024, False, False), "test_fraction": (0, 1, True, True), "labels": (1, None, False, False),
    "pretrain_epochs": (1, None, False, False), "epochs": (1, None, False, False),
    "batch_size": (1, None, False, False), "lr": (0, None, True, False), "momentum": (0, None, False, False),
    "weight_decay": (0, None, False, False), "lr_step_size": (1, None, False, False),
    "lr_gamma": (0, None, True, False), "lr_max": (0, None, True, False), "limit_train": (1, None, False, False),
    "limit_test": (1, None, False, False), "threads": (1, None, False, False),
}


def _settings() -> dict[str, Setting]:
    hints = typing.get_type_hints(RunConfig)
    out = {}
    for name in RunConfig.__dataclass_fields__:
        if name == "model_args":
            continue
        args = [a for a in typing.get_args(hints[name]) if a is not type(None)]
        out[name] = Setting(name, args[0] if args else hints[name], bool(args), *RANGES.get(name, ()))
    return out


SETTINGS: dict[str, Setting] = _settings()


def setting_of(name: str) -> str | None:
    """The one answer to "is NAME a setting or a model argument?": the RunConfig field `name`
    names (a field, or its column: base_lr is lr), or None for a constructor argument."""
    field = FIELD_OF_COLUMN.get(name, name)
    return field if field in FIELDS else None


def checked(config: RunConfig, where: str = "") -> RunConfig:
    """`config` with every field checked against `SETTINGS` (ints for floats made floats)."""
    return replace(config, **{name: s.check(getattr(config, name), where) for name, s in SETTINGS.items()})


# ---------------------------------------------------------------- optimisers and schedulers


@dataclass(frozen=True)
class Optimizer:
    torch_class: str  # in torch.optim
    options: Callable[[RunConfig], dict]  # its keyword arguments but the parameters
    lr: float  # defaults, sensible for these small nets; the optimizer study uses them
    momentum: float | None
    weight_decay: float
    takes_momentum: bool = True  # False: a run's momentum is recorded as None (it is not used)


def _momentum(config: RunConfig) -> float:
    """SGD's momentum; None where a momentum cycle sets it (any positive value to start with)."""
    return 0.9 if config.momentum is None else config.momentum


OPTIMIZERS: Registry[Optimizer] = Registry("optimizer")
for _name, _optimizer in {
    "sgd": Optimizer("SGD", lambda c: dict(lr=c.lr, weight_decay=c.weight_decay), 0.1, None, 0.0, False),
    "momentum": Optimizer("SGD", lambda c: dict(lr=c.lr, momentum=_momentum(c), weight_decay=c.weight_decay),
                          0.02, 0.9, 0.0),
    "nesterov": Optimizer("SGD", lambda c: dict(lr=c.lr, momentum=_momentum(c), nesterov=True,
                                                weight_decay=c.weight_decay), 0.02, 0.9, 0.0),
    "rmsprop": Optimizer("RMSprop", lambda c: dict(lr=c.lr, momentum=c.momentum or 0, weight_decay=c.weight_decay),
                         0.001, 0.0, 0.0),
    "adam": Optimizer("Adam", lambda c: dict(lr=c.lr, weight_decay=c.weight_decay), 0.001, None, 0.0, False),
    "adamw": Optimizer("AdamW", lambda c: dict(lr=c.lr, weight_decay=c.weight_decay), 0.001, None, 0.01, False),
}.items():
    OPTIMIZERS.register(_name, _optimizer)


@dataclass(frozen=True)
class Scheduler:
    torch_class: str | None  # in torch.optim.lr_scheduler; None: a constant learning rate
    options: Callable[[RunConfig, int], dict]  # (config, steps per epoch) -> its keyword arguments
    per_step: bool  # stepped after every batch, not every epoch
    description: str
    defaults: Callable[[RunConfig], dict] = lambda c: {}  # its hyper-parameters where a run gives none
    uses: tuple[str, ...] = ()  # the SCHEDULER_SETTINGS it reads: the others are null in its runs' rows


SCHEDULERS: Registry[Scheduler] = Registry("scheduler")
for _name, _scheduler in {
    "none": Scheduler(None, lambda c, steps: {}, False, "a constant learning rate"),
    "step": Scheduler("StepLR", lambda c, steps: dict(step_size=c.lr_step_size, gamma=c.lr_gamma),
                      False, "x lr_gamma (0.1) every lr_step_size (epochs/3) epochs",
                      lambda c: {"lr_step_size": max(1, c.epochs // 3), "lr_gamma": 0.1}, ("lr_step_size", "lr_gamma")),
    "exponential": Scheduler("ExponentialLR", lambda c, steps: dict(gamma=c.lr_gamma), False,
                             "x lr_gamma (0.8) per epoch", lambda c: {"lr_gamma": 0.8}, ("lr_gamma",)),
    "cosine": Scheduler("CosineAnnealingLR", lambda c, steps: dict(T_max=c.epochs), False, "to 0 over the epochs"),
    # from lr up to lr_max and down, momentum as asked: torch's OneCycleLR would start at lr_max / 25 whatever
    # lr is, and cycle the momentum (SGD's, even plain SGD's; Adam's beta1) unless cycle_momentum is off
    "onecycle": Scheduler("OneCycleLR", lambda c, steps: dict(max_lr=c.lr_max, total_steps=c.epochs * steps,
                                                              div_factor=c.lr_max / c.lr,
                                                              cycle_momentum=c.cycle_momentum),
                          True, "from lr up to lr_max (4 x lr) and down, per batch; momentum constant unless "
                          "cycle_momentum", lambda c: {"lr_max": 4 * c.lr, "cycle_momentum": False},
                          ("lr_max", "cycle_momentum")),
}.items():
    SCHEDULERS.register(_name, _scheduler)


SCHEDULER_SETTINGS = ("lr_step_size", "lr_gamma", "lr_max", "cycle_momentum")


def used_settings(config: RunConfig) -> RunConfig:
    """The one place that says which settings a run uses: its scheduler's hyper-parameters
    (the scheduler's defaults where none is given), momentum for an optimiser that takes one
    (with a momentum cycle, what the cycle sets), freeze_encoder with pretraining. Every other
    is None: a row records what its run trained with, and two variants that differ only in
    settings their runs do not use are one run (`planning.plan` refuses them)."""
    scheduler, optimizer = SCHEDULERS.get(config.scheduler), OPTIMIZERS.get(config.optimizer)
    values = {k: None for k in SCHEDULER_SETTINGS if k not in scheduler.uses}
    values.update({k: v for k, v in scheduler.defaults(config).items() if getattr(config, k) is None})
    if not optimizer.takes_momentum or values.get("cycle_momentum", config.cycle_momentum):
        values["momentum"] = None
    elif config.momentum is None:  # what the optimiser trains with: SGD's 0.9, RMSprop's 0
        values["momentum"] = optimizer.momentum
    if not config.pretrain_epochs:
        values["freeze_encoder"] = None
    return replace(config, **values)


def why_unused(config: RunConfig, name: str) -> str:
    """Why `config`'s run leaves setting `name` unused (`used_settings` made it None)."""
    if name in SCHEDULER_SETTINGS:
        return f"the scheduler {config.scheduler!r} does not use it"
    if name == "momentum":
        return ("the momentum cycle of onecycle sets it" if OPTIMIZERS.get(config.optimizer).takes_momentum
                else f"the optimizer {config.optimizer!r} takes no momentum")
    if name == "freeze_encoder":
        return "it applies with pretrain_epochs"
    return "it does not apply"


def cross_checked(config: RunConfig) -> RunConfig:
    """`config` (its settings used) with the settings that must agree with each other checked:
    a run's whole configuration, not a study's base before its variants."""
    if config.lr_max is not None and config.lr_max < config.lr:
        raise UsageError(f"lr_max ({config.lr_max:g}) is below lr ({config.lr:g}): onecycle rises from lr to lr_max")
    return config


# ---------------------------------------------------------------- augmentations

# The augmentations `ablate.transforms` registers, in its order (a test checks that the two
# agree): the augment study's help lists them, and checks its sets against them.
AUGMENTATION_NAMES = ("flip", "vflip", "crop", "crop-flip", "color-jitter", "rotation", "affine", "perspective",
                      "blur")


def augmentation_parts(name: str, known=AUGMENTATION_NAMES) -> list[str]:
    """The augmentations of a set: "crop-flip+perspective" -> ["crop-flip", "perspective"],
    "none" -> []. A name not `known` is a usage error that lists the allowed ones."""
    if name == "none":
        return []
    parts = name.split("+")
    for part in parts:
        if part not in known:
            raise unknown_name("augmentation", part, ["none", *known])
    return parts
