"""What decides a run, as plain data: `RunConfig`, the optimisers and schedulers by name, and
the augmentations' names.

Nothing here imports torch: the command line's help and listings read these without paying
for it. `ablate.train` and `ablate.transforms` turn them into torch objects.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Callable

from ablate.errors import unknown_name
from ablate.registry import Registry


@dataclass(frozen=True)
class RunConfig:
    """Everything that decides a run's numbers, except the seed. Every field is a column, and
    so is every constructor argument of the model (`model_args`, filled in by `resolve`)."""

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
    normalization: str = "half"
    augment: str = "none"
    permutation: str = "none"
    limit_train: int | None = None
    limit_test: int | None = None
    deterministic: bool = False  # torch's deterministic algorithms (matters on GPUs)
    threads: int | None = None  # torch's CPU threads (sums add up in another order with another count)
    amp: str = "none"  # bf16: forward and loss under torch.autocast in bfloat16
    compile: bool = False  # torch.compile the model (a cold compile costs seconds)

    def columns(self) -> dict:
        """The fields and the model's arguments as result columns; `lr` is `base_lr` there,
        `lr` being each epoch's."""
        fields = {("base_lr" if k == "lr" else k): v for k, v in asdict(self).items() if k != "model_args"}
        return {**fields, **{k: v if isinstance(v, (bool, int, float, str)) else str(v) for k, v in self.model_args}}

    def with_fields(self, **values) -> RunConfig:
        """A copy with `values` set: RunConfig fields by name, anything else as a model argument."""
        fields = {k: v for k, v in values.items() if k in FIELDS}
        args = {**dict(self.model_args), **{k: v for k, v in values.items() if k not in FIELDS}}
        return replace(self, **fields, model_args=tuple(sorted(args.items())))

    def arg(self, name: str, default=None):
        return dict(self.model_args).get(name, default)


AMP = ("none", "bf16")  # the autocast dtypes a run may train in

FIELDS = set(RunConfig.__dataclass_fields__) - {"model_args"}


# ---------------------------------------------------------------- optimisers and schedulers


@dataclass(frozen=True)
class Optimizer:
    torch_class: str  # in torch.optim
    options: Callable[[RunConfig], dict]  # its keyword arguments but the parameters
    lr: float  # defaults, sensible for these small nets; the optimizer study uses them
    momentum: float | None
    weight_decay: float


OPTIMIZERS: Registry[Optimizer] = Registry("optimizer")
for _name, _optimizer in {
    "sgd": Optimizer("SGD", lambda c: dict(lr=c.lr, weight_decay=c.weight_decay), 0.1, None, 0.0),
    "momentum": Optimizer("SGD", lambda c: dict(lr=c.lr, momentum=c.momentum, weight_decay=c.weight_decay),
                          0.02, 0.9, 0.0),
    "nesterov": Optimizer("SGD", lambda c: dict(lr=c.lr, momentum=c.momentum, nesterov=True,
                                                weight_decay=c.weight_decay), 0.02, 0.9, 0.0),
    "rmsprop": Optimizer("RMSprop", lambda c: dict(lr=c.lr, momentum=c.momentum or 0, weight_decay=c.weight_decay),
                         0.001, None, 0.0),
    "adam": Optimizer("Adam", lambda c: dict(lr=c.lr, weight_decay=c.weight_decay), 0.001, None, 0.0),
    "adamw": Optimizer("AdamW", lambda c: dict(lr=c.lr, weight_decay=c.weight_decay), 0.001, None, 0.01),
}.items():
    OPTIMIZERS.register(_name, _optimizer)


@dataclass(frozen=True)
class Scheduler:
    torch_class: str | None  # in torch.optim.lr_scheduler; None: a constant learning rate
    options: Callable[[RunConfig, int], dict]  # (config, steps per epoch) -> its keyword arguments
    per_step: bool  # stepped after every batch, not every epoch
    description: str


SCHEDULERS: Registry[Scheduler] = Registry("scheduler")
for _name, _scheduler in {
    "none": Scheduler(None, lambda c, steps: {}, False, "a constant learning rate"),
    "step": Scheduler("StepLR", lambda c, steps: dict(step_size=c.lr_step_size, gamma=c.lr_gamma),
                      False, "x lr_gamma every lr_step_size epochs"),
    "exponential": Scheduler("ExponentialLR", lambda c, steps: dict(gamma=c.lr_gamma), False, "x lr_gamma per epoch"),
    "cosine": Scheduler("CosineAnnealingLR", lambda c, steps: dict(T_max=c.epochs), False, "to 0 over the epochs"),
    "onecycle": Scheduler("OneCycleLR", lambda c, steps: dict(max_lr=c.lr_max, total_steps=c.epochs * steps),
                          True, "up to lr_max and down, per batch"),
}.items():
    SCHEDULERS.register(_name, _scheduler)


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
