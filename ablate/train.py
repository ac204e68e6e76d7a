"""One training run: a model, in-memory data, an optimiser, a seed; per-epoch records out."""

from __future__ import annotations

import inspect
import math
import os
import time
import typing
from dataclasses import asdict, dataclass, replace
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ablate import arch, transforms
from ablate.data import Dataset
from ablate.errors import UsageError, unknown_name
from ablate.registry import Registry


@dataclass(frozen=True)
class RunConfig:
    """Everything that decides a run's numbers, except the seed. Every field is a column.

    The model's constructor arguments (MODEL_FIELDS) are None where the model does not take
    them; `resolve` fills in the model's own default where it does.
    """

    task: str = "classify"
    dataset: str = "cifar10"
    model: str = "tutorial"
    conv1_channels: int | None = None
    activation: str | None = None
    fc1_features: int | None = None
    dropout: float | None = None
    batchnorm: bool | None = None
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

    def columns(self) -> dict:
        """The fields as result columns; `lr` is `base_lr` there, `lr` being each epoch's."""
        return {("base_lr" if k == "lr" else k): v for k, v in asdict(self).items()}


MODEL_FIELDS = ("conv1_channels", "activation", "fc1_features", "dropout", "batchnorm")


def column_types() -> dict[str, type]:
    """Each config column's Python type (int, float, str or bool); every one may be null."""
    hints = typing.get_type_hints(RunConfig)
    types = {}
    for name in RunConfig.__dataclass_fields__:
        kind = hints[name]
        args = [a for a in typing.get_args(kind) if a is not type(None)]
        types["base_lr" if name == "lr" else name] = args[0] if args else kind
    return types


@dataclass
class EpochRecord:
    epoch: int
    split: str  # "train" or "test"
    loss: float
    accuracy: float | None  # None where the task has no accuracy
    lr: float
    seconds: float  # wall time of this epoch's training (train) or evaluation (test)


@dataclass
class RunResult:
    epochs: list[EpochRecord]
    class_accuracy: list[float | None]  # test split, per class, after the last epoch; None: no image
    status: str  # "ok", or "diverged" when the loss became NaN or infinite


# ---------------------------------------------------------------- tasks


@dataclass(frozen=True)
class Task:
    """What a run learns: its loss on a batch, and whether outputs are class scores."""

    name: str
    loss: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]  # (output, x, y) -> mean
    classifies: bool  # outputs are class scores: accuracy and per-class accuracy are measured


TASKS: Registry[Task] = Registry("task")
TASKS.register("classify", Task("classify", lambda out, x, y: F.cross_entropy(out, y), True))


# ---------------------------------------------------------------- models


def _model_builder(name: str) -> Callable[..., nn.Module]:
    return arch.MODELS.get(name).build


def resolve(config: RunConfig) -> RunConfig:
    """`config` checked, with the model's own defaults in the model fields it takes.

    Every named choice must exist, and a model field set for a model that does not take it
    is a usage error: a row records only what decided the run.
    """
    for registry, name in ((TASKS, config.task), (OPTIMIZERS, config.optimizer),
                           (SCHEDULERS, config.scheduler), (transforms.NORMALIZATIONS, config.normalization),
                           (transforms.PERMUTATIONS, config.permutation)):
        registry.get(name)
    transforms.augmentation(config.augment)
    if not (math.isfinite(config.lr) and config.lr > 0):
        raise UsageError(f"--lr must be a finite number > 0, got {config.lr}")
    if config.dropout is not None and not 0 <= config.dropout < 1:
        raise UsageError(f"dropout must be in [0, 1), got {config.dropout}")
    accepted = inspect.signature(_model_builder(config.model)).parameters
    filled = {}
    for name in MODEL_FIELDS:
        value = getattr(config, name)
        if name in accepted:
            filled[name] = accepted[name].default if value is None else value
        elif value is not None:
            takes = [f for f in MODEL_FIELDS if f in accepted]
            raise UsageError(f"model {config.model!r} does not take {name} (set to {value!r}); it takes "
                             + (", ".join(takes) if takes else "none of " + ", ".join(MODEL_FIELDS)))
    return replace(config, **filled)


def build_model(config: RunConfig, in_channels: int, num_classes: int) -> nn.Module:
    """The registry model named by `config.model`, given the model fields that are set."""
    kwargs = {name: getattr(config, name) for name in MODEL_FIELDS if getattr(config, name) is not None}
    return _model_builder(config.model)(in_channels=in_channels, num_classes=num_classes, **kwargs)


# ---------------------------------------------------------------- optimisers and schedulers


@dataclass(frozen=True)
class Optimizer:
    make: Callable  # (parameters, config) -> torch.optim.Optimizer
    lr: float  # defaults, sensible for these small nets; the optimizer study uses them
    momentum: float | None
    weight_decay: float


OPTIMIZERS: Registry[Optimizer] = Registry("optimizer")
for _name, _optimizer in {
    "sgd": Optimizer(lambda p, c: torch.optim.SGD(p, lr=c.lr, weight_decay=c.weight_decay), 0.1, None, 0.0),
    "momentum": Optimizer(lambda p, c: torch.optim.SGD(
        p, lr=c.lr, momentum=c.momentum, weight_decay=c.weight_decay), 0.02, 0.9, 0.0),
    "nesterov": Optimizer(lambda p, c: torch.optim.SGD(
        p, lr=c.lr, momentum=c.momentum, nesterov=True, weight_decay=c.weight_decay), 0.02, 0.9, 0.0),
    "rmsprop": Optimizer(lambda p, c: torch.optim.RMSprop(
        p, lr=c.lr, momentum=c.momentum or 0, weight_decay=c.weight_decay), 0.001, None, 0.0),
    "adam": Optimizer(lambda p, c: torch.optim.Adam(p, lr=c.lr, weight_decay=c.weight_decay), 0.001, None, 0.0),
    "adamw": Optimizer(lambda p, c: torch.optim.AdamW(p, lr=c.lr, weight_decay=c.weight_decay), 0.001, None, 0.01),
}.items():
    OPTIMIZERS.register(_name, _optimizer)


@dataclass(frozen=True)
class Scheduler:
    make: Callable  # (optimizer, config, steps per epoch) -> scheduler or None
    per_step: bool  # stepped after every batch, not every epoch
    description: str


SCHEDULERS: Registry[Scheduler] = Registry("scheduler")
for _name, _scheduler in {
    "none": Scheduler(lambda opt, c, steps: None, False, "a constant learning rate"),
    "step": Scheduler(lambda opt, c, steps: torch.optim.lr_scheduler.StepLR(opt, c.lr_step_size, c.lr_gamma),
                      False, "x lr_gamma every lr_step_size epochs"),
    "exponential": Scheduler(lambda opt, c, steps: torch.optim.lr_scheduler.ExponentialLR(opt, c.lr_gamma),
                             False, "x lr_gamma per epoch"),
    "cosine": Scheduler(lambda opt, c, steps: torch.optim.lr_scheduler.CosineAnnealingLR(opt, c.epochs),
                        False, "to 0 over the epochs"),
    "onecycle": Scheduler(lambda opt, c, steps: torch.optim.lr_scheduler.OneCycleLR(
        opt, c.lr_max, total_steps=c.epochs * steps), True, "up to lr_max and down, per batch"),
}.items():
    SCHEDULERS.register(_name, _scheduler)


def resolve_device(name: str) -> torch.device:
    """auto: cuda, then mps, then cpu. Asking for one that is not there is a usage error."""
    available = {"cpu": True, "cuda": torch.cuda.is_available(),
                 "mps": getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()}
    if name == "auto":
        name = next(d for d in ("cuda", "mps", "cpu") if available[d])
    if name not in available:
        raise unknown_name("device", name, ["auto", *available])
    if not available[name]:
        raise UsageError(f"device {name!r} is not available here; use --device cpu or auto")
    return torch.device(name)


# Independent random streams of a run, each seeded from the run's seed: the initial weights
# and then dropout draw from torch's global generator, forked for the run and re-seeded.
INIT, ORDER, AUGMENT, PERMUTE, EVAL_PERMUTE, DROPOUT = range(6)


def seeded(seed: int, stream: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 1_000_003 + stream)


@torch.no_grad()
def evaluate(model, x_all, y_all, prepare, task: Task, num_classes: int, batch_size=1000) -> dict:
    """Mean loss over the split and, for a classifier, accuracy and per-class accuracy (None
    for a class with no image in the split)."""
    model.eval()
    loss_sum = torch.zeros((), device=x_all.device)
    correct = torch.zeros(num_classes, device=x_all.device)
    for i in range(0, len(y_all), batch_size):
        x = prepare(x_all[i:i + batch_size]).contiguous(memory_format=torch.channels_last)
        y = y_all[i:i + batch_size]
        out = model(x)
        loss_sum += task.loss(out, x, y) * len(y)
        if task.classifies:
            correct += torch.bincount(y[out.argmax(1) == y], minlength=num_classes)
    metrics = {"loss": (loss_sum / len(y_all)).item(), "accuracy": None, "class_accuracy": []}
    if task.classifies:
        images = torch.bincount(y_all, minlength=num_classes)
        metrics["accuracy"] = (correct.sum() / len(y_all)).item()
        metrics["class_accuracy"] = [None if n == 0 else c / n for c, n in zip(correct.tolist(), images.tolist())]
    return metrics


def _in_chunks(f, x, size=5000):
    return torch.cat([f(x[i:i + size]) for i in range(0, len(x), size)])


def train_run(
    config: RunConfig,
    data: Dataset,
    seed: int,
    device: torch.device,
    on_batch: Callable[[int, int, float, float], None] | None = None,
) -> RunResult:
    """Train one model. `on_batch(epoch, images done this epoch, running loss, seconds since
    the epoch began)` reports progress. Nothing outside the run's seed decides its numbers:
    the global random state is forked for the run and given back as it was."""
    was_deterministic = torch.are_deterministic_algorithms_enabled()
    if config.deterministic and device.type == "cuda":
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # cuBLAS needs it to be deterministic
    torch.use_deterministic_algorithms(config.deterministic)
    try:
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            return _train(config, data, seed, device, on_batch)
    finally:
        torch.use_deterministic_algorithms(was_deterministic)


def _train(config, data, seed, device, on_batch) -> RunResult:
    task = TASKS.get(config.task)
    torch.manual_seed(seed * 1_000_003 + INIT)
    model = build_model(config, data.shape[0], len(data.classes))
    torch.manual_seed(seed * 1_000_003 + DROPOUT)
    # channels_last: 1.12-1.18x on this CPU for these nets (measured in benchmarks/speed.py)
    model = model.to(device, memory_format=torch.channels_last)
    optimizer = OPTIMIZERS.get(config.optimizer).make(model.parameters(), config)
    schedule = SCHEDULERS.get(config.scheduler)
    scheduler = schedule.make(optimizer, config, math.ceil(len(data.train_y) / config.batch_size))
    order_gen, augment_gen = seeded(seed, ORDER), seeded(seed, AUGMENT)
    pixels = data.shape[1] * data.shape[2]
    permute = transforms.permutation(config.permutation, pixels, seeded(seed, PERMUTE))
    # evaluation draws fresh permutations from its own stream: the test split's size must
    # not change what training sees (a fixed permutation is the same for both)
    eval_permute = (transforms.permutation(config.permutation, pixels, seeded(seed, EVAL_PERMUTE))
                    if config.permutation == "fresh" else permute)
    augment = transforms.augmentation(config.augment)
    train_x, train_y = data.train_x.to(device), data.train_y.to(device)
    test_x, test_y = data.test_x.to(device), data.test_y.to(device)
    normalize = transforms.normalizer(config.normalization, train_x)
    unit = lambda x: x.float() / 255  # noqa: E731
    if augment is None:  # every image is the same each epoch: normalise once, up front
        train_x = _in_chunks(lambda x: normalize(unit(x)), train_x)
        test_x = _in_chunks(lambda x: normalize(unit(x)), test_x)
        train_prepare, test_prepare = permute, eval_permute
    else:
        train_prepare = lambda x: permute(normalize(augment(unit(x), augment_gen)))  # noqa: E731
        test_prepare = lambda x: eval_permute(normalize(unit(x)))  # noqa: E731

    records, status, n = [], "ok", len(train_y)
    for epoch in range(1, config.epochs + 1):
        model.train()
        start = time.perf_counter()
        lr = optimizer.param_groups[0]["lr"]
        order = torch.randperm(n, generator=order_gen).to(device)
        loss_sum = torch.zeros((), device=device)
        correct = torch.zeros((), device=device)
        for step, i in enumerate(range(0, n, config.batch_size)):
            idx = order[i:i + config.batch_size]
            x = train_prepare(train_x[idx]).contiguous(memory_format=torch.channels_last)
            y = train_y[idx]
            out = model(x)
            loss = task.loss(out, x, y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if scheduler is not None and schedule.per_step:
                scheduler.step()
            loss_sum += loss.detach() * len(idx)
            if task.classifies:
                correct += (out.argmax(1) == y).sum()
            if on_batch is not None and step % 10 == 9:  # .item() is a sync point on a GPU
                on_batch(epoch, i + len(idx), loss_sum.item() / (i + len(idx)), time.perf_counter() - start)
        train_loss = loss_sum.item() / n
        train_seconds = time.perf_counter() - start
        train_accuracy = correct.item() / n if task.classifies else None
        records.append(EpochRecord(epoch, "train", train_loss, train_accuracy, lr, train_seconds))
        if scheduler is not None and not schedule.per_step:
            scheduler.step()
        start = time.perf_counter()
        test = evaluate(model, test_x, test_y, test_prepare, task, len(data.classes))
        records.append(EpochRecord(epoch, "test", test["loss"], test["accuracy"], lr, time.perf_counter() - start))
        if on_batch is not None:
            on_batch(epoch, n, train_loss, train_seconds)
        if not (math.isfinite(train_loss) and math.isfinite(test["loss"])):
            status = "diverged"
            break
    return RunResult(records, test["class_accuracy"], status)
