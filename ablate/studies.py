"""The reference studies: each a base configuration plus named variants.

A study is looked up by name; studies with a sweep take its values (`get_study("conv1",
channels=[6, 36])`), and bad values are usage errors that list what is allowed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from ablate import transforms, train
from ablate.errors import UsageError, unknown_name
from ablate.registry import Registry


@dataclass(frozen=True)
class Study:
    name: str
    description: str
    variants: dict[str, dict]  # variant name -> the RunConfig fields it sets
    factors: tuple[str, ...]  # the fields the variants vary: the summary's columns
    base: dict = field(default_factory=dict)  # RunConfig fields every variant of the study sets
    per_class: bool = False  # the summary shows per-class test accuracy side by side
    plot: str = "curves"  # its natural figure: curves, sweep or classes

    def metadata(self) -> dict:
        """What `ablate report` and `ablate plot` need to know of the study, kept in its file."""
        return {"name": self.name, "description": self.description, "factors": list(self.factors),
                "plot": self.plot, "per_class": self.per_class}


@dataclass(frozen=True)
class StudyEntry:
    build: Callable[..., Study]  # keywords: its own options, and any shared option it names
    options: dict[str, str]  # its own options: name -> help; the default is the keyword's


STUDIES: Registry[StudyEntry] = Registry("study")


def register_study(name: str, **options: str):
    """Register `build` as study `name`; `options` are its own command-line options, with
    their help. The command `ablate NAME` is made from this: nothing else needs to know it."""

    def decorator(build: Callable[..., Study]) -> Callable[..., Study]:
        STUDIES.register(name, StudyEntry(build, options))
        return build

    return decorator


def get_study(name: str, **values) -> Study:
    return STUDIES.get(name).build(**values)


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


@register_study("linearity")
def linearity() -> Study:
    return Study(
        "linearity",
        "The tutorial net with its ReLUs, without them (max-pools kept), and without them with fc1 doubled.",
        variants={
            "relu": {"activation": "relu", "fc1_features": 120},
            "linear": {"activation": "none", "fc1_features": 120},
            "linear-wide": {"activation": "none", "fc1_features": 240},
        },
        factors=("activation", "fc1_features"),
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
                + ", ".join(transforms.augmentation_names()) + ", or a+b combinations.")
def augment(sets: str = AUGMENT_SETS) -> Study:
    names = parse_list(sets, "augmentation set")
    for name in names:
        transforms.augmentation(name)  # rejects unknown names, listing the allowed ones
    return Study(
        "augment",
        "Augmentation sets on the train split (random per image): "
        + ", ".join(transforms.augmentation_names()) + ", and combinations written a+b.",
        variants={name: {"augment": name} for name in names},
        factors=("augment",),
    )


def scheduler_fields(name: str, epochs: int, lr: float) -> dict:
    """Each scheduler's hyper-parameters, stated so they land in the results as columns."""
    return {
        "none": {},
        "step": {"lr_step_size": max(1, epochs // 3), "lr_gamma": 0.1},
        "exponential": {"lr_gamma": 0.8},
        "cosine": {},
        "onecycle": {"lr_max": 4 * lr},
    }[name]


SCHEDULER_HELP = ("none; step: x0.1 every epochs/3 epochs; exponential: x0.8 per epoch; cosine: to 0 over "
                  "the epochs; onecycle: up to 4 x lr and down, per batch")


@register_study("scheduler", schedulers=f"Schedulers, comma-separated ({SCHEDULER_HELP}).")
def scheduler(schedulers: str = ",".join(train.SCHEDULERS), epochs: int = train.RunConfig.epochs,
              lr: float | None = None) -> Study:
    names = parse_list(schedulers, "scheduler", train.SCHEDULERS.names())
    lr = lr or train.RunConfig.lr
    return Study(
        "scheduler",
        f"Learning-rate schedulers ({SCHEDULER_HELP}).",
        variants={n: {"scheduler": n, **scheduler_fields(n, epochs, lr)} for n in names},
        factors=("scheduler", "lr_step_size", "lr_gamma", "lr_max"),
    )


def optimizer_defaults(name: str) -> dict:
    """An optimiser's own learning rate, momentum and weight decay, as RunConfig fields."""
    entry = train.OPTIMIZERS.get(name)
    return {"lr": entry.lr, "momentum": entry.momentum, "weight_decay": entry.weight_decay}


OPTIMIZER_HELP = "; ".join(
    f"{n}: lr {o.lr}" + (f", momentum {o.momentum}" if o.momentum else "")
    + (f", weight decay {o.weight_decay}" if o.weight_decay else "")
    for n, o in train.OPTIMIZERS.items())


@register_study("optimizer", optimizers=f"Optimisers, comma-separated ({OPTIMIZER_HELP}).")
def optimizer(optimizers: str = ",".join(train.OPTIMIZERS), lr: float | None = None) -> Study:
    names = parse_list(optimizers, "optimizer", train.OPTIMIZERS.names())
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
