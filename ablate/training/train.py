"""One training run: a model, in-memory data, an optimiser, a seed; per-epoch records out."""

from __future__ import annotations

import copy
import functools
import math
import os
import time
from dataclasses import dataclass, replace
from typing import Callable

import torch
from torch import nn

from ablate import arch, transforms
from ablate.config import OPTIMIZERS, SCHEDULERS, RunConfig, used_settings
from ablate.data.datasets import Dataset, balanced_subset
from ablate.errors import UsageError, unknown_name
from ablate.models import weights
from ablate.training import pack as packing
from ablate.training.tasks import TASKS, Task


@dataclass
class EpochRecord:
    epoch: int
    split: str  # "train" or "test"
    loss: float
    metrics: dict[str, float]  # the task's metrics (Task.metrics): {"accuracy": 0.89}
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
    packed: int = 1  # how many seeds trained together in one packed model (ablate.training.pack)
    train_images: int = 0  # the images one epoch trains on (with --labels, the labelled few)

    @property
    def last_epoch(self) -> int:
        return self.epochs[-1].epoch


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


def _forward(model: nn.Module, xs: list[torch.Tensor], amp: bool) -> list[torch.Tensor]:
    """`model` on the K copies' inputs side by side (K = 1: a model that is not packed), and
    each copy's output, in float32."""
    x = xs[0] if len(xs) == 1 else torch.cat(xs, 1)
    with torch.autocast(x.device.type, torch.bfloat16, enabled=amp):
        out = model(x)
    return [o.float() for o in out.chunk(len(xs), 1)]


def _channels_last(x: torch.Tensor) -> torch.Tensor:
    # 1.12-1.18x on this CPU for these nets (measured in benchmarks/speed.py)
    return x.contiguous(memory_format=torch.channels_last)


@torch.no_grad()
def evaluate_copies(model, x_all, y_all, prepares: list, task: Task, num_classes: int, batch_size=None,
                    amp: bool = False, generators: list | None = None) -> list[dict]:
    """For each of the K copies of a packed model (K = 1: one model), its mean loss over the
    split, its task's metrics and, for a task that classifies, its accuracy per class (None for
    a class with no image in the split). Copy k's images are `x_all` (or `x_all[k]`, one tensor
    per copy) made by `prepares[k]` and shown to it through `task.inputs` with `generators[k]`,
    in batches of 1000 images in all."""
    model.eval()
    k = len(prepares)
    xs_all = x_all if isinstance(x_all, (list, tuple)) else [x_all] * k
    batch_size = batch_size or max(1, 1000 // k)
    loss_sum = torch.zeros(k, device=y_all.device)
    sums = torch.zeros(k, len(task.metrics), device=y_all.device)
    correct = torch.zeros(k, num_classes, device=y_all.device)
    for i in range(0, len(y_all), batch_size):
        xs = [_channels_last(prepare(x[i:i + batch_size])) for prepare, x in zip(prepares, xs_all)]
        y = y_all[i:i + batch_size]
        feeds = [task.inputs(x, g) for x, g in zip(xs, generators or [None] * k)]
        for c, (out, x) in enumerate(zip(_forward(model, feeds, amp), xs)):
            loss_sum[c] += task.loss(out, x, y) * len(y)
            sums[c] += task.measure(out, x, y)
            if task.classifies:
                correct[c] += torch.bincount(y[out.argmax(1) == y], minlength=num_classes)
    images = torch.bincount(y_all, minlength=num_classes).tolist()
    return [{"loss": loss, "metrics": task.finish(total, len(y_all)),
             "class_accuracy": [None if n == 0 else c / n for c, n in zip(hits, images)] if task.classifies else []}
            for loss, total, hits in zip((loss_sum / len(y_all)).tolist(), sums.tolist(), correct.tolist())]


def _in_chunks(f, x, size=5000):
    return torch.cat([f(x[i:i + size]) for i in range(0, len(x), size)])


def train_run(config: RunConfig, data: Dataset, seed: int, device: torch.device,
              on_batch: Callable[[int, int, float, float], None] | None = None,
              other_test: tuple[str, torch.Tensor, torch.Tensor] | None = None,
              keep_model: bool = False) -> RunResult:
    """One run of `config` under `seed`: `train_runs` for one seed."""
    return train_runs(config, data, [seed], device, on_batch, other_test, keep_model)[0]


def train_runs(config: RunConfig, data: Dataset, seeds: list[int], device: torch.device, on_batch=None,
               other_test=None, keep_model: bool = False, pack: bool = True) -> list[RunResult]:
    """`train_members` for the seeds of one configuration."""
    return train_members([(config, seed) for seed in seeds], data, device, on_batch, other_test, keep_model, pack)


# What the members of one pack may differ in: each keeps its own optimiser settings, schedule,
# data (augmentation, permutation, normalisation), seed source and model arguments that build the
# same network (a dropout rate); everything else is the pack's.
MEMBER_FIELDS = ("lr", "momentum", "weight_decay", "scheduler", "lr_step_size", "lr_gamma", "lr_max",
                 "cycle_momentum", "normalization", "augment", "permutation", "seed_source", "model_args")


def share_key(config: RunConfig, shape: tuple[int, ...], classes: int) -> tuple:
    """Runs with equal keys can train as members of one packed model: the same network
    (`pack.network` of their models) on the same input, the same optimiser class, batch size,
    epochs, task and everything else that is not a member's own (MEMBER_FIELDS)."""
    shared = replace(config, **{f: RunConfig.__dataclass_fields__[f].default for f in MEMBER_FIELDS})
    return shared, _network(config, shape, classes)


@functools.cache
def _network(config: RunConfig, shape: tuple[int, ...], classes: int) -> tuple:
    return packing.network(freeze(model_for_checks(config, shape, classes), config, shape, classes))


def train_members(
    members: list[tuple[RunConfig, int]],
    data: Dataset,
    device: torch.device,
    on_batch: Callable[[int, int, float, float], None] | None = None,
    other_test: tuple[str, torch.Tensor, torch.Tensor] | None = None,
    keep_model: bool = False,
    pack: bool = True,
) -> list[RunResult]:
    """Train one model per member (a configuration and a seed), evaluating each before training
    (epoch 0) and after every epoch; the members train together as one packed model
    (ablate.training.pack) when their models pack and `pack` is set, else one after another.
    Members that train together must have equal `share_key`s. `on_batch(epoch, images trained
    so far by all the members, running loss, images per second)` reports progress;
    `other_test` (name, images, labels) is evaluated too, as split `test:NAME`. Nothing outside
    a run's seed decides its numbers: the global random state is forked and given back as it was."""
    configs, seeds = [c for c, _ in members], [s for _, s in members]
    config = configs[0]
    if pack and len(members) > 1 and len({share_key(c, data.shape, len(data.classes)) for c in configs}) > 1:
        raise ValueError("the members of a pack must build the same network and share its settings")
    was_deterministic = torch.are_deterministic_algorithms_enabled()
    if config.deterministic and device.type == "cuda":
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # cuBLAS needs it to be deterministic
    if config.deterministic != was_deterministic:  # the call imports torch._inductor (a second): only to change
        torch.use_deterministic_algorithms(config.deterministic)
    try:
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            copies = [_model(c, data, seed, device) for c, seed in members]
            packed = None
            if pack and len(members) > 1:
                dropout = [packing.seeded(seed, packing.DROPOUT, device, c.seed_source) for c, seed in members]
                packed = packing.pack(copies, dropout, _probe(data))
            if packed is not None:
                return _train(configs, data, packing.Members(seeds, packed, copies, [c.seed_source for c in configs]),
                              device, on_batch, other_test, keep_model)
            results, images = [], min(config.labels or len(data.train_y), len(data.train_y))
            for i, ((c, seed), model) in enumerate(zip(members, copies)):
                torch.manual_seed(packing.stream_seed(seed, packing.DROPOUT, c.seed_source))
                report = on_batch and functools.partial(_after, on_batch, i * config.epochs * images)
                results += _train([c], data, packing.Members([seed], model, [model], [c.seed_source]), device,
                                  report, other_test, keep_model)
            return results
    finally:
        if config.deterministic != was_deterministic:
            torch.use_deterministic_algorithms(was_deterministic)


def _after(on_batch, images_before: int, epoch: int, images: int, loss: float, speed: float) -> None:
    """`on_batch` of a seed trained after others of its pack: their images count too."""
    on_batch(epoch, images_before + images, loss, speed)


def _model(config: RunConfig, data: Dataset, seed: int, device: torch.device) -> nn.Module:
    """The run's initial model: its weights drawn from the seed's init stream (or pretrained:
    an autoencoder's encoder, or --weights with a fresh head), frozen where the run says."""
    torch.manual_seed(packing.stream_seed(seed, packing.INIT, config.seed_source))
    model = build_model(config, data.shape[0], len(data.classes), data.shape[1])
    if config.pretrain_epochs:  # pretrained from the seed's init stream: part of the initial weights
        init = packing.source_seed(seed, packing.INIT, config.seed_source)
        model.encoder.load_state_dict(pretrained_encoder(config, data, init, device))
    if config.weights is not None:
        load_weights(model, config, data.shape, len(data.classes))
    freeze(model, config, data.shape, len(data.classes))
    return model


def freeze(model: nn.Module, config: RunConfig, shape: tuple[int, ...], classes: int) -> nn.Module:
    """What of `model` the run does not train: a pretrained encoder (freeze_encoder), or all but
    the head (--trainable head)."""
    if config.pretrain_epochs and config.freeze_encoder:
        model.encoder.requires_grad_(False)
    if config.trainable == "head":
        head = set(head_entries(config, shape, classes))
        for name, parameter in model.named_parameters():
            parameter.requires_grad_(name in head)
    return model


@functools.cache
def class_dependent(config: RunConfig, shape: tuple[int, ...], classes: int) -> tuple[str, ...]:
    """The state entries of the run's model that depend on the class count (ablate.models.weights)."""
    return tuple(weights.class_dependent(lambda n: build_model(config, shape[0], n, shape[1]), classes))


def model_for_checks(config: RunConfig, shape: tuple[int, ...], classes: int) -> nn.Module:
    """The run's model, built on the meta device where it can be (nothing allocated), without
    drawing from torch's global generator."""
    from ablate.counting.fake_run import build_meta

    with torch.random.fork_rng(devices=[]):
        model = build_meta(lambda: build_model(config, shape[0], classes, shape[1]))
        return model if model is not None else build_model(config, shape[0], classes, shape[1])


@functools.cache
def head_entries(config: RunConfig, shape: tuple[int, ...], classes: int) -> tuple[str, ...]:
    """The entries --trainable head trains: the class-dependent ones, or the last layer's."""
    return tuple(weights.head_entries(model_for_checks(config, shape, classes),
                                      list(class_dependent(config, shape, classes))))


def load_weights(model: nn.Module, config: RunConfig, shape: tuple[int, ...], classes: int) -> str:
    """`config.weights` into `model` (its head kept as initialised); what was replaced, in words."""
    made = weights.get(config.model, config.weights)
    return weights.load(model, made.state(), list(class_dependent(config, shape, classes)), made.describe())


def train_mode(net: nn.Module, config: RunConfig) -> None:
    """`net` in training mode; with --trainable head, every part with no trainable parameter
    stays in eval mode (batch norm keeps its statistics, dropout is off): a probe changes
    nothing but its head."""
    net.train()
    if config.trainable != "head":
        return
    heads = [name for name, module in net.named_modules()
             if (parameters := list(module.parameters())) and all(p.requires_grad for p in parameters)]
    for name, module in net.named_modules():  # a frozen part's Dropout too: outside the head, nothing trains
        in_head = any(name == head or name.startswith(f"{head}.") or not head for head in heads)
        if not in_head and not any(p.requires_grad for p in module.parameters()):
            module.eval()


def _probe(data: Dataset) -> torch.Tensor:
    """A few images on which a packed model must agree with its copies."""
    return data.test_x[:2].float() / 255


@dataclass
class _Feed:
    """What the members of one training see: the splits on the device, per member the images it
    indexes (normalised once where it augments nothing, by its own normalisation) and how a
    batch of them is prepared."""

    train: tuple[list[torch.Tensor], torch.Tensor]  # per member its images; the labels
    tests: dict[str, tuple[list[torch.Tensor], torch.Tensor]]  # "test", and "test:NAME" for another test set
    train_prepares: list[Callable]
    test_prepares: list[Callable]


def _feed(configs: list[RunConfig], data: Dataset, members: packing.Members, device, other_test) -> _Feed:
    pixels = data.shape[1] * data.shape[2]
    train_x, train_y = data.train_x, data.train_y
    if configs[0].labels is not None:  # the labelled few; pretraining saw them all, without labels
        keep = balanced_subset(train_y, configs[0].labels)
        train_x, train_y = train_x[keep], train_y[keep]
    raw = {"train": train_x.to(device), "test": data.test_x.to(device)}
    labels = {"train": train_y.to(device), "test": data.test_y.to(device)}
    if other_test is not None:
        raw[f"test:{other_test[0]}"], labels[f"test:{other_test[0]}"] = other_test[1].to(device), \
            other_test[2].to(device)
    unit = lambda x: x.float() / 255  # noqa: E731
    normalizers: dict[str, Callable] = {}  # per normalisation: from the train split's pixels
    once: dict[str, dict[str, torch.Tensor]] = {}  # per normalisation: every split normalised once, up front
    bases: list[dict[str, torch.Tensor]] = []
    train_prepares, test_prepares = [], []
    streams = zip(configs, members.generators(packing.PERMUTE), members.generators(packing.EVAL_PERMUTE),
                  members.generators(packing.AUGMENT))
    for config, permute_gen, eval_permute_gen, augment_gen in streams:
        permute = transforms.permutation(config.permutation, pixels, permute_gen)
        # evaluation draws fresh permutations from its own stream: the test split's size must
        # not change what training sees (a fixed permutation is the same for both)
        eval_permute = transforms.permutation(config.permutation, pixels, eval_permute_gen) \
            if config.permutation == "fresh" else permute
        if config.normalization not in normalizers:
            normalizers[config.normalization] = transforms.normalizer(config.normalization, raw["train"])
        normalize = normalizers[config.normalization]
        augment = transforms.augmentation(config.augment)
        if augment is None:  # every image is the same each epoch: normalised once, up front
            if config.normalization not in once:
                once[config.normalization] = {split: _in_chunks(lambda b: normalize(unit(b)), x)
                                              for split, x in raw.items()}
            bases.append(once[config.normalization])
            train_prepares.append(permute)
            test_prepares.append(eval_permute)
        else:
            bases.append(raw)
            train_prepares.append(lambda x, p=permute, n=normalize, a=augment, g=augment_gen: p(n(a(unit(x), g))))
            test_prepares.append(lambda x, p=eval_permute, n=normalize: p(n(unit(x))))
    splits = {split: ([base[split] for base in bases], labels[split]) for split in raw}
    return _Feed(splits.pop("train"), splits, train_prepares, test_prepares)


@dataclass
class _Optimizer:
    """The optimiser and schedule of the members of one configuration (one variant's seeds)."""

    optimizer: torch.optim.Optimizer
    scheduler: object | None
    per_step: bool  # the scheduler steps after every batch (else after every epoch)
    members: list[int]


def _optimizers(configs: list[RunConfig], net: nn.Module, views: packing.MemberParameters | None,
                steps_per_epoch: int) -> list[_Optimizer]:
    """One optimiser per configuration over its members' own parameters (`views`; None: one
    model, `net`'s), with its schedule."""
    groups: dict[RunConfig, list[int]] = {}
    for c, config in enumerate(configs):
        groups.setdefault(config, []).append(c)
    out = []
    for config, which in groups.items():
        parameters = [p for p in net.parameters() if p.requires_grad] if views is None else \
            [p for c in which for p in views.of(c)]
        optimizer = make_optimizer(parameters, config)
        out.append(_Optimizer(optimizer, make_scheduler(optimizer, config, steps_per_epoch),
                              SCHEDULERS.get(config.scheduler).per_step, which))
    return out


def _train(configs: list[RunConfig], data, members: packing.Members, device, on_batch, other_test,
           keep_model) -> list[RunResult]:
    """Train `members.net`: one model (one member), or the members' copies packed into one."""
    config = configs[0]  # what the members share (train.share_key)
    task, k, amp = TASKS.get(config.task), len(members), config.amp == "bf16"
    net = members.net = members.net.to(device, memory_format=torch.channels_last)
    feed = _feed(configs, data, members, device, other_test)
    n = len(feed.train[1])  # with --labels, the labelled few
    views = members.parameters()  # after the move: views of the parameters the net trains
    optimizers = _optimizers(configs, net, views, math.ceil(n / config.batch_size))
    lrs = lambda: [next(o for o in optimizers if c in o.members).optimizer.param_groups[0]["lr"]  # noqa: E731
                   for c in range(k)]
    step = _Step(torch.compile(net) if config.compile else net, optimizers, views, task, amp,
                 functools.partial(train_mode, net, config))
    records: list[list[EpochRecord]] = [[] for _ in range(k)]
    class_accuracy: list[list] = [[] for _ in range(k)]

    def evaluations(epoch: int, lr: list[float], splits: dict) -> None:
        for split, (x, y) in splits.items():
            start = time.perf_counter()  # the same input draws at every evaluation: a fresh stream
            results = evaluate_copies(net, x, y, feed.test_prepares, task, len(data.classes), amp=amp,
                                      generators=members.generators(packing.EVAL_INPUT, device))
            for c in members.live:
                records[c].append(EpochRecord(epoch, split, results[c]["loss"], results[c]["metrics"], lr[c],
                                              time.perf_counter() - start))
                if split == "test":
                    class_accuracy[c] = results[c]["class_accuracy"]

    # epoch 0: the untrained model on every split (the train split as it is, unaugmented)
    evaluations(0, lrs(), {"train": feed.train, **feed.tests})
    orders, inputs = members.generators(packing.ORDER), members.generators(packing.INPUT, device)
    for epoch in range(1, config.epochs + 1):
        lr, start = lrs(), time.perf_counter()
        report = on_batch and functools.partial(_progress, on_batch, epoch, n, members, start)
        losses, sums = step.epoch(feed, [torch.randperm(n, generator=g).to(device) for g in orders], inputs,
                                  config.batch_size, report)
        seconds = time.perf_counter() - start
        for c in members.live:
            records[c].append(EpochRecord(epoch, "train", losses[c], task.finish(sums[c], n), lr[c], seconds))
        for o in optimizers:
            if o.scheduler is not None and not o.per_step:
                o.scheduler.step()
        evaluations(epoch, lr, feed.tests)
        if on_batch is not None:
            on_batch(epoch, k * epoch * n, sum(losses[c] for c in members.live) / len(members.live), k * n / seconds)
        for c in list(members.live):  # a copy whose loss became NaN or infinite stops; the others go on
            if not all(math.isfinite(r.loss) for r in records[c][-len(feed.tests) - 1:]):
                members.stop(c)
        if not members.live:
            break
    return [_result(task, model, records[c], class_accuracy[c], members.status[c], feed.train[0][c],
                    feed.test_prepares[c], keep_model, k, n) for c, model in enumerate(members.models())]


def _progress(on_batch, epoch: int, n: int, members: packing.Members, start: float, done: int, losses) -> None:
    """`on_batch` within an epoch: `done` images of each member trained, `losses` their sums."""
    k = len(members)
    on_batch(epoch, k * ((epoch - 1) * n + done), losses[members.live].mean().item() / done,
             k * done / (time.perf_counter() - start))


@dataclass
class _Step:
    """The optimisers' steps over the members' batches."""

    net: nn.Module
    optimizers: list[_Optimizer]
    views: packing.MemberParameters | None  # a packed net: each member's blocks (None: one model)
    task: Task
    amp: bool
    train_mode: Callable[[], None]  # puts the net in training mode (train_mode)

    def epoch(self, feed: _Feed, orders: list[torch.Tensor], inputs: list[torch.Generator], batch_size: int,
              report: Callable | None) -> tuple[list[float], list[list[float]]]:
        """One epoch of each member in its own order: each member's mean training loss and the
        sums of its task's metrics over the epoch's batches."""
        self.train_mode()
        (train_xs, train_y), k, n = feed.train, len(orders), len(orders[0])
        loss_sum = torch.zeros(k, device=train_y.device)
        sums = torch.zeros(k, len(self.task.metrics), device=train_y.device)
        for step, i in enumerate(range(0, n, batch_size)):
            idxs = [order[i:i + batch_size] for order in orders]
            xs = [_channels_last(prepare(x[idx])) for prepare, x, idx in zip(feed.train_prepares, train_xs, idxs)]
            ys = [train_y[idx] for idx in idxs]
            outs = _forward(self.net, [self.task.inputs(x, g) for x, g in zip(xs, inputs)], self.amp)
            # each copy's own mean loss; their sum gives each copy its own gradient
            losses = torch.stack([self.task.loss(out, x, y) for out, x, y in zip(outs, xs, ys)])
            if self.views is None:
                for o in self.optimizers:
                    o.optimizer.zero_grad(set_to_none=True)
            else:  # the packed gradients and every member's views of them
                self.views.zero_grad()
            losses.sum().backward()
            if self.views is not None:
                self.views.share_grads()
            for o in self.optimizers:
                o.optimizer.step()
                if o.per_step and o.scheduler is not None:
                    o.scheduler.step()
            loss_sum += losses.detach() * len(ys[0])
            with torch.no_grad():
                sums += torch.stack([self.task.measure(out, x, y) for out, x, y in zip(outs, xs, ys)])
            if report is not None and step % 10 == 9:  # .item() is a sync point on a GPU
                report(i + len(ys[0]), loss_sum)
        return [v / n for v in loss_sum.tolist()], sums.tolist()


def packing_speedup(config: RunConfig, data: Dataset, k: int, device: torch.device, steps: int = 3) -> float | None:
    """How many times faster `k` seeds of `config` train packed into one model than one after
    another: `steps` training steps of the packed model on real batches against as many of one
    copy (times k), interleaved, each after one untimed step (allocation, first calls), the
    fastest of each. None where the model does not pack. No run sees any of it: the global
    random state is forked and the models are thrown away."""
    task, amp = TASKS.get(config.task), config.amp == "bf16"
    threads = torch.get_num_threads()
    torch.set_num_threads(config.threads or threads)
    try:
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            copies = [_model(config, data, seed, device) for seed in range(k)]
            packed = packing.pack([copy.deepcopy(c) for c in copies], [packing.seeded(s, packing.DROPOUT, device)
                                                                       for s in range(k)], _probe(data))
            if packed is None:
                return None
            x = (data.train_x[:config.batch_size].float() / 255).to(device)
            y = data.train_y[:config.batch_size].to(device)
            nets = {1: copies[0].to(device, memory_format=torch.channels_last),
                    k: packed.to(device, memory_format=torch.channels_last)}
            timings: dict[int, list[float]] = {1: [], k: []}
            views = packing.MemberParameters(packed, copies[0], k)  # as training steps a pack: per member
            optimizers = {1: make_optimizer([p for p in nets[1].parameters() if p.requires_grad], config),
                          k: make_optimizer([p for c in range(k) for p in views.of(c)], config)}
            for _ in range(steps + 1):
                for n, net in nets.items():
                    start = time.perf_counter()
                    outs = _forward(net, [_channels_last(x)] * n, amp)
                    optimizers[n].zero_grad(set_to_none=True)
                    if n > 1:
                        views.zero_grad()
                    torch.stack([task.loss(out, x, y) for out in outs]).sum().backward()
                    if n > 1:
                        views.share_grads()
                    optimizers[n].step()
                    if device.type == "cuda":
                        torch.cuda.synchronize(device)
                    timings[n].append(time.perf_counter() - start)
            return k * min(timings[1][1:]) / min(timings[k][1:])
    finally:
        torch.set_num_threads(threads)


def _result(task, model, records, class_accuracy, status, train_x, prepare, keep_model, packed,
            images: int) -> RunResult:
    model = model.to(train_x.device, memory_format=torch.channels_last)
    latent_corr = latent_correlation(model, train_x[:LATENT_CORR_IMAGES], prepare) \
        if task.measures_code and status == "ok" else None
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()} if keep_model else None
    return RunResult(records, class_accuracy, status, latent_corr, state, packed=packed, train_images=images)


_PRETRAINED: dict = {}  # (autoencoder config, seed, data) -> encoder weights: frozen and finetune share one


def pretraining(config: RunConfig) -> RunConfig:
    """The autoencoder a run with `pretrain_epochs` takes its encoder from: trained for
    `config.pretrain_epochs` on the whole train split without labels, with report 001's setting
    (AdamW, lr 0.001, batch 32, pixels in [0, 1])."""
    knobs = {k: v for k, v in config.model_args if k in ("latent_dim", "depth", "width")}
    args = arch.model_source("autoencoder").typed_args(knobs)  # as planning.resolve fills them in
    return used_settings(RunConfig(task="reconstruct", dataset=config.dataset, model="autoencoder",
                                   epochs=config.pretrain_epochs, batch_size=32, lr=0.001, optimizer="adamw",
                                   momentum=None, weight_decay=OPTIMIZERS.get("adamw").weight_decay,
                                   normalization="none", image_size=config.image_size,
                                   limit_train=config.limit_train, limit_test=config.limit_test,
                                   deterministic=config.deterministic, model_args=tuple(sorted(args.items()))))


def pretrained_encoder(config: RunConfig, data: Dataset, seed: int, device: torch.device) -> dict:
    """The encoder of the run's `pretraining` autoencoder, from the run's seed; the same
    weights for every run that asks with this seed."""
    autoencoder = pretraining(config)
    key = (autoencoder, seed, data.name, len(data.train_y), str(device))
    if key not in _PRETRAINED:
        state = train_run(autoencoder, data, seed, device, keep_model=True).state
        _PRETRAINED[key] = {k.removeprefix("encoder."): v for k, v in state.items() if k.startswith("encoder.")}
    return _PRETRAINED[key]
