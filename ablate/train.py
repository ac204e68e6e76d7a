"""One training run: a model, in-memory data, an optimiser, a seed; per-epoch records out."""

from __future__ import annotations

import math
import os
import time
import typing
from dataclasses import dataclass, replace
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ablate import arch, transforms
from ablate.config import AMP, FIELDS, OPTIMIZERS, SCHEDULERS, RunConfig  # noqa: F401 - the config's names, here too
from ablate.data import Dataset, balanced_subset
from ablate.errors import UsageError, unknown_name
from ablate.registry import Registry




def column_types() -> dict[str, type]:
    """Each config column's Python type (int, float, str or bool); every one may be null. The
    constructor arguments of ablate's own models are columns of every study."""
    hints = typing.get_type_hints(RunConfig)
    types = {}
    for name in RunConfig.__dataclass_fields__:
        if name == "model_args":
            continue
        args = [a for a in typing.get_args(hints[name]) if a is not type(None)]
        types["base_lr" if name == "lr" else name] = args[0] if args else hints[name]
    return {**types, **{k: v for k, v in arch.registry_knobs().items() if k not in types}}


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
    latent_corr: float | None = None  # a model with encode(): mean |Pearson r| of its code's coordinates
    state: dict | None = None  # the final weights, when asked for (keep_model)
    error: str | None = None  # status "failed": the first line of the exception the run raised


# ---------------------------------------------------------------- tasks


@dataclass(frozen=True)
class Task:
    """What a run learns: its loss on a batch, and whether outputs are class scores."""

    name: str
    loss: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]  # (output, x, y) -> mean
    classifies: bool  # outputs are class scores: accuracy and per-class accuracy are measured


TASKS: Registry[Task] = Registry("task")
TASKS.register("classify", Task("classify", lambda out, x, y: F.cross_entropy(out, y), True))
# the output against the input, in the normalised space the run states (normalization none: [0, 1])
TASKS.register("reconstruct", Task("reconstruct", lambda out, x, y: F.mse_loss(out, x), False))

LATENT_CORR_IMAGES = 4000  # report 001, Q3


@torch.no_grad()
def latent_correlation(model: nn.Module, x: torch.Tensor, prepare) -> float | None:
    """Mean absolute Pearson correlation between pairs of the model's latent coordinates
    (`model.encode`) over `x`; None for a model without `encode` or a code of one coordinate."""
    if not callable(getattr(model, "encode", None)):
        return None
    model.eval()
    codes = torch.cat([model.encode(prepare(x[i:i + 1000]).contiguous(memory_format=torch.channels_last))
                       for i in range(0, len(x), 1000)]).double()
    if codes.shape[1] < 2:
        return None
    r = torch.corrcoef(codes.T)
    pairs = r[~torch.eye(len(r), dtype=torch.bool, device=r.device)]
    return pairs.abs().nanmean().item()  # a constant coordinate has no correlation: left out


# ---------------------------------------------------------------- models


def resolve(config: RunConfig) -> RunConfig:
    """`config` checked, with every constructor argument of its model in `model_args` (the
    model's own default where none is given). Every named choice must exist, and an argument
    the model does not take is a usage error: a row records only what decided the run."""
    for registry, name in ((TASKS, config.task), (OPTIMIZERS, config.optimizer),
                           (SCHEDULERS, config.scheduler), (transforms.NORMALIZATIONS, config.normalization),
                           (transforms.PERMUTATIONS, config.permutation)):
        registry.get(name)
    transforms.augmentation(config.augment)
    if config.amp not in AMP:
        raise unknown_name("amp", config.amp, AMP)
    if not (math.isfinite(config.lr) and config.lr > 0):
        raise UsageError(f"--lr must be a finite number > 0, got {config.lr}")
    if config.epochs < 1 or config.batch_size < 1:
        raise UsageError(f"epochs and batch_size must be >= 1, got {config.epochs} and {config.batch_size}")
    source = arch.model_source(config.model)
    unknown = [k for k, _ in config.model_args if k not in source.knobs]
    if unknown:
        takes = ", ".join(source.knobs) or "no constructor arguments"
        raise UsageError(f"model {config.model!r} does not take {', '.join(unknown)}; it takes {takes}")
    return replace(config, model_args=tuple(sorted({**source.knobs, **dict(config.model_args)}.items())))


def build_model(config: RunConfig, in_channels: int, num_classes: int, image_size: int = 32) -> nn.Module:
    """A fresh model of `config` (resolved), for data of `in_channels` x `image_size`^2."""
    model = arch.model_source(config.model).build(in_channels, num_classes, image_size, **dict(config.model_args))
    if any(isinstance(m, nn.modules.lazy.LazyModuleMixin) for m in model.modules()):
        model.eval()  # a layer spec's Lazy layers take their sizes from a first batch
        with torch.no_grad():
            model(torch.zeros(1, in_channels, image_size, image_size))
        model.train()
    if config.strip_activations:
        arch.strip_activations(model)
    return model


# ---------------------------------------------------------------- optimisers and schedulers


def make_optimizer(parameters, config: RunConfig) -> torch.optim.Optimizer:
    entry = OPTIMIZERS.get(config.optimizer)
    return getattr(torch.optim, entry.torch_class)(parameters, **entry.options(config))


def make_scheduler(optimizer: torch.optim.Optimizer, config: RunConfig, steps_per_epoch: int):
    """The run's learning-rate scheduler, or None for a constant rate."""
    entry = SCHEDULERS.get(config.scheduler)
    if entry.torch_class is None:
        return None
    return getattr(torch.optim.lr_scheduler, entry.torch_class)(optimizer, **entry.options(config, steps_per_epoch))


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
    other_test: tuple[str, torch.Tensor, torch.Tensor] | None = None,
    keep_model: bool = False,
) -> RunResult:
    """Train one model, evaluating it before training (epoch 0) and after every epoch.
    `on_batch(epoch, images done this epoch, running loss, seconds since the epoch began)`
    reports progress; `other_test` (name, images, labels) is evaluated too, as split
    `test:NAME`. Nothing outside the run's seed decides its numbers: the global random state
    is forked for the run and given back as it was."""
    was_deterministic = torch.are_deterministic_algorithms_enabled()
    if config.deterministic and device.type == "cuda":
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # cuBLAS needs it to be deterministic
    torch.use_deterministic_algorithms(config.deterministic)
    try:
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            return _train(config, data, seed, device, on_batch, other_test, keep_model)
    finally:
        torch.use_deterministic_algorithms(was_deterministic)


def _train(config, data, seed, device, on_batch, other_test, keep_model) -> RunResult:
    task = TASKS.get(config.task)
    torch.manual_seed(seed * 1_000_003 + INIT)
    model = build_model(config, data.shape[0], len(data.classes), data.shape[1])
    if config.pretrain_epochs:
        model.encoder.load_state_dict(pretrained_encoder(config, data, seed, device))
        if config.freeze_encoder:
            model.encoder.requires_grad_(False)
    torch.manual_seed(seed * 1_000_003 + DROPOUT)
    # channels_last: 1.12-1.18x on this CPU for these nets (measured in benchmarks/speed.py)
    model = model.to(device, memory_format=torch.channels_last)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = make_optimizer(trainable, config)
    schedule = SCHEDULERS.get(config.scheduler)
    scheduler = make_scheduler(optimizer, config, math.ceil(len(data.train_y) / config.batch_size))
    order_gen, augment_gen = seeded(seed, ORDER), seeded(seed, AUGMENT)
    pixels = data.shape[1] * data.shape[2]
    permute = transforms.permutation(config.permutation, pixels, seeded(seed, PERMUTE))
    # evaluation draws fresh permutations from its own stream: the test split's size must
    # not change what training sees (a fixed permutation is the same for both)
    eval_permute = (transforms.permutation(config.permutation, pixels, seeded(seed, EVAL_PERMUTE))
                    if config.permutation == "fresh" else permute)
    augment = transforms.augmentation(config.augment)
    train_x, train_y = data.train_x, data.train_y
    if config.labels is not None:  # the labelled few; pretraining saw them all, without labels
        keep = balanced_subset(train_y, config.labels)
        train_x, train_y = train_x[keep], train_y[keep]
    train_x, train_y = train_x.to(device), train_y.to(device)
    tests = {"test": (data.test_x.to(device), data.test_y.to(device))}
    if other_test is not None:
        tests[f"test:{other_test[0]}"] = (other_test[1].to(device), other_test[2].to(device))
    normalize = transforms.normalizer(config.normalization, train_x)
    unit = lambda x: x.float() / 255  # noqa: E731
    if augment is None:  # every image is the same each epoch: normalise once, up front
        train_x = _in_chunks(lambda x: normalize(unit(x)), train_x)
        tests = {split: (_in_chunks(lambda x: normalize(unit(x)), x), y) for split, (x, y) in tests.items()}
        train_prepare, test_prepare = permute, eval_permute
    else:
        train_prepare = lambda x: permute(normalize(augment(unit(x), augment_gen)))  # noqa: E731
        test_prepare = lambda x: eval_permute(normalize(unit(x)))  # noqa: E731
    classes, class_accuracy = len(data.classes), []

    def evaluations(epoch: int, lr: float) -> list[EpochRecord]:
        nonlocal class_accuracy
        records = []
        for split, (x, y) in tests.items():
            start = time.perf_counter()
            metrics = evaluate(model, x, y, test_prepare, task, classes)
            records.append(EpochRecord(epoch, split, metrics["loss"], metrics["accuracy"], lr,
                                       time.perf_counter() - start))
            if split == "test":
                class_accuracy = metrics["class_accuracy"]
        return records

    # epoch 0: the untrained model on both splits (the train split as it is, unaugmented)
    lr = optimizer.param_groups[0]["lr"]
    start = time.perf_counter()
    untrained = evaluate(model, train_x, train_y, test_prepare, task, classes)
    records = [EpochRecord(0, "train", untrained["loss"], untrained["accuracy"], lr, time.perf_counter() - start),
               *evaluations(0, lr)]
    status, n = "ok", len(train_y)
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
        records += evaluations(epoch, lr)
        if on_batch is not None:
            on_batch(epoch, n, train_loss, train_seconds)
        if not all(math.isfinite(r.loss) for r in records[-len(tests) - 1:]):
            status = "diverged"
            break
    latent_corr = latent_correlation(model, train_x[:LATENT_CORR_IMAGES], test_prepare) \
        if task.name == "reconstruct" and status == "ok" else None
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()} if keep_model else None
    return RunResult(records, class_accuracy, status, latent_corr, state)


_PRETRAINED: dict = {}  # (autoencoder config, seed, data) -> encoder weights: frozen and finetune share one


def pretrained_encoder(config: RunConfig, data: Dataset, seed: int, device: torch.device) -> dict:
    """The encoder of an autoencoder trained for `config.pretrain_epochs` on the whole train
    split without labels, from the run's seed, with report 001's setting (AdamW, lr 0.001,
    batch 32, pixels in [0, 1]); the same weights for every run that asks with this seed."""
    knobs = {k: v for k, v in config.model_args if k in ("latent_dim", "depth", "width")}
    autoencoder = resolve(RunConfig(task="reconstruct", dataset=config.dataset, model="autoencoder",
                                    epochs=config.pretrain_epochs, batch_size=32, lr=0.001, optimizer="adamw",
                                    momentum=None, weight_decay=OPTIMIZERS.get("adamw").weight_decay,
                                    normalization="none", image_size=config.image_size,
                                    limit_train=config.limit_train, limit_test=config.limit_test,
                                    deterministic=config.deterministic).with_fields(**knobs))
    key = (autoencoder, seed, data.name, len(data.train_y), str(device))
    if key not in _PRETRAINED:
        state = train_run(autoencoder, data, seed, device, keep_model=True).state
        _PRETRAINED[key] = {k.removeprefix("encoder."): v for k, v in state.items() if k.startswith("encoder.")}
    return _PRETRAINED[key]
