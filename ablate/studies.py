"""The studies of EXPERIMENTS.md A and B: each a base configuration plus named variants.

A study is looked up by name; studies with a sweep take its values (`get_study("conv1",
channels=[6, 36])`), and bad values are usage errors that list what is allowed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from ablate import transforms, train
from ablate.errors import UsageError, unknown_name


@dataclass(frozen=True)
class Study:
    name: str
    description: str
    variants: dict[str, dict]  # variant name -> the RunConfig fields it sets
    factors: tuple[str, ...]  # the fields the variants vary: the summary's columns
    base: dict = field(default_factory=dict)  # RunConfig fields every variant of the study sets
    per_class: bool = False  # the summary shows per-class test accuracy side by side
    plot: str = "curves"  # its natural figure: curves, sweep or classes


STUDIES: dict[str, Callable[..., Study]] = {}


def register_study(build: Callable[..., Study]) -> Callable[..., Study]:
    name = build().name
    if name in STUDIES:
        raise ValueError(f"study {name!r} is already registered")
    STUDIES[name] = build
    return build


def get_study(name: str, **values) -> Study:
    if name not in STUDIES:
        raise unknown_name("study", name, list(STUDIES))
    return STUDIES[name](**values)


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


@register_study
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


@register_study
def conv1(channels: str | list = CONV1_CHANNELS) -> Study:
    widths = []
    for text in parse_list([str(c) for c in channels] if not isinstance(channels, str) else channels,
                           "channel count"):
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


@register_study
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


AUGMENT_SETS = ("none", "flip", "crop-flip", "color-jitter", "affine", "perspective", "rotation", "vflip", "blur")


@register_study
def augment(sets: str | list = ("none", "flip", "crop-flip", "crop-flip+perspective")) -> Study:
    names = parse_list(sets, "augmentation set")
    for name in names:
        transforms.augmentation(name)  # rejects unknown names, listing the allowed ones
    return Study(
        "augment",
        "Augmentation sets on the train split (random per image): "
        + ", ".join(AUGMENT_SETS) + ", and combinations written a+b.",
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


SCHEDULER_HELP = ("step: x0.1 every epochs/3 epochs; exponential: x0.8 per epoch; cosine: to 0 over the "
                  "epochs; onecycle: up to 4 x lr and down, per batch")


@register_study
def scheduler(schedulers: str | list = tuple(train.SCHEDULERS), epochs: int = train.RunConfig.epochs,
              lr: float | None = None) -> Study:
    names = parse_list(schedulers, "scheduler", train.SCHEDULERS)
    lr = lr or train.RunConfig.lr
    return Study(
        "scheduler",
        f"Learning-rate schedulers ({SCHEDULER_HELP}).",
        variants={n: {"scheduler": n, **scheduler_fields(n, epochs, lr)} for n in names},
        factors=("scheduler", "lr_step_size", "lr_gamma", "lr_max"),
    )


OPTIMIZER_DEFAULTS = {  # lr, momentum, weight decay: sensible for these small nets
    "sgd": {"lr": 0.1, "momentum": None, "weight_decay": 0.0},
    "momentum": {"lr": 0.02, "momentum": 0.9, "weight_decay": 0.0},
    "nesterov": {"lr": 0.02, "momentum": 0.9, "weight_decay": 0.0},
    "rmsprop": {"lr": 0.001, "momentum": None, "weight_decay": 0.0},
    "adam": {"lr": 0.001, "momentum": None, "weight_decay": 0.0},
    "adamw": {"lr": 0.001, "momentum": None, "weight_decay": 0.01},
}
OPTIMIZER_HELP = "; ".join(
    f"{n}: lr {d['lr']}" + (f", momentum {d['momentum']}" if d["momentum"] else "")
    + (f", weight decay {d['weight_decay']}" if d["weight_decay"] else "")
    for n, d in OPTIMIZER_DEFAULTS.items())


@register_study
def optimizer(optimizers: str | list = tuple(train.OPTIMIZERS), lr: float | None = None) -> Study:
    names = parse_list(optimizers, "optimizer", train.OPTIMIZERS)
    variants = {}
    for name in names:
        fields = {"optimizer": name, **OPTIMIZER_DEFAULTS[name]}
        if lr is not None:  # --lr given: the same learning rate for every optimiser
            fields["lr"] = lr
        variants[name] = fields
    return Study(
        "optimizer",
        f"Optimisers, each with its own defaults unless --lr is given ({OPTIMIZER_HELP}).",
        variants=variants,
        factors=("optimizer", "base_lr", "momentum", "weight_decay"),
    )


@register_study
def normalization() -> Study:
    return Study(
        "normalization",
        "Pixels in [0, 1]; per-channel mean and std of the train split; ZCA whitening fitted on the "
        "train split.",
        variants={"none": {"normalization": "none"}, "standard": {"normalization": "standard"},
                  "zca": {"normalization": "zca"}},
        factors=("normalization",),
    )


@register_study
def regularization(dropout: float = 0.5) -> Study:
    if not 0 <= dropout < 1:
        raise UsageError(f"--dropout must be in [0, 1), got {dropout}")
    return Study(
        "regularization",
        "The three-conv net of EXPERIMENTS.md B: base, dropout before the last fc, batch norm after "
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
