"""Before anything trains: each model is built, counted and run once on real images, and what
training needs is held against the memory there is."""

from __future__ import annotations

import functools
import math

import torch

from ablate import arch, count, machine
from ablate.data.datasets import Dataset, data_bytes
from ablate.errors import UsageError
from ablate.study.planning import Run
from ablate.training.tasks import TASKS
from ablate.training.train import RunConfig, build_model


@functools.cache  # every seed of a variant has the same model
def model_size(config: RunConfig, shape: tuple[int, ...], classes: int) -> count.Counts:
    """The run's model counted on the meta device: nothing is allocated."""
    try:
        return count.count_meta(lambda: build_model(config, shape[0], classes, shape[1]), shape,
                                real_below=count.real_below())
    except UsageError:
        raise
    except Exception as error:  # a user's model that fails to build or to run once
        raise UsageError(f"model {config.model!r} failed before training: {arch.describe_error(error)}") from None


@functools.cache
def training_flops(config: RunConfig, shape: tuple[int, ...], classes: int) -> int | None:
    """FLOPs of one training image, forward and backward, of the run's model with what it does
    not train frozen (counted on the meta device); None where the backward cannot be counted."""
    from ablate.training.train import freeze

    def build():
        return freeze(build_model(config, shape[0], classes, shape[1]), config, shape, classes)

    try:
        counts = count.count_meta(build, shape, training=True, real_below=count.real_below())
    except Exception:  # noqa: BLE001 - a model the counter cannot follow backward: no cost, the run trains
        return None
    return counts.flops + counts.backward_flops


@functools.cache
def trainable_params(config: RunConfig, shape: tuple[int, ...], classes: int) -> int:
    """How many of the run's parameters its optimiser trains (counted on the meta device)."""
    from ablate.training.train import freeze, model_for_checks

    model = freeze(model_for_checks(config, shape, classes), config, shape, classes)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def available_memory(device: torch.device) -> float:
    """Bytes free for training on `device` (infinite when the system does not say)."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    return machine.available_memory() or float("inf")


def check_model(run: Run, data: Dataset) -> list[str]:
    """With strip_activations, the model must have activation modules: say how many go."""
    config = run.config
    if not config.strip_activations:
        return []
    source = arch.model_source(config.model)

    def build():
        return source.build(data.shape[0], len(data.classes), data.shape[1], **dict(config.model_args))

    model = count.build_meta(build)  # nothing is allocated
    if model is None:  # a model that cannot be built on the meta device: with real weights, or why not
        try:
            model = build()
        except UsageError:
            raise
        except (Exception, SystemExit) as error:  # noqa: BLE001 - whatever the user's model raises is bad input
            raise UsageError(f"model {config.model!r} failed to build: {arch.describe_error(error)}") from None
    replaced = arch.strip_activations(model)
    if not replaced:
        raise UsageError(f"variant {run.variant!r}: model {config.model!r} has no activation module to remove "
                         "(activations called as functions in forward cannot be replaced)")
    said = ", ".join(f"{n} {name}" for name, n in replaced.items())
    return [f"variant {run.variant!r}: {sum(replaced.values())} activation modules replaced by identity ({said})"]


def check_weights(run: Run, data: Dataset) -> list[str]:
    """--weights: they are read (downloaded once) and fit the model but its head; say what was
    replaced, and the preprocessing taken from them (a note per variant, without its name)."""
    config = run.config
    if config.weights is None:
        return []
    from ablate.models import weights
    from ablate.training.train import load_weights, model_for_checks

    shape, classes = data.shape, len(data.classes)
    try:
        notes = [load_weights(model_for_checks(config, shape, classes), config, shape, classes)]
    except UsageError as error:
        raise UsageError(f"variant {run.variant!r}: {error}") from None
    pre = weights.preprocessing(config.model, config.weights)
    if pre is not None:
        used = config.image_size == pre.image_size and config.normalization == pre.normalization
        notes.append(f"the weights expect {pre.describe()}; "
                     + ("the data is resized and normalised so" if used else
                        f"given image size {config.image_size or 'of the data'}, normalization "
                        f"{config.normalization}"))
    return notes


PROBE_IMAGES = 2  # the real images a model's output is checked on before training
PROBE_MAX_BYTES = 2 ** 30  # a model with more weights than this is not built for the check


class _Running:
    """The modules running at each moment (global forward hooks): the innermost one when an
    exception is raised is the layer that failed."""

    def __enter__(self):
        self.stack: list[torch.nn.Module] = []
        hooks = torch.nn.modules.module
        self.handles = [hooks.register_module_forward_pre_hook(lambda module, args: self.stack.append(module)),
                        hooks.register_module_forward_hook(lambda module, args, out: self._leave(module))]
        return self

    def _leave(self, module) -> None:
        if any(m is module for m in self.stack):  # and any it called that raised and was caught
            while self.stack.pop() is not module:
                pass

    def __exit__(self, *exc) -> None:
        for handle in self.handles:
            handle.remove()

    def where(self, model: torch.nn.Module | None = None) -> str:
        """" in layer 'body.3' (Linear)": the innermost module running, if any and not `model`."""
        if not self.stack:
            return ""
        root, inner = self.stack[0], self.stack[-1]
        if isinstance(root, arch.GrayToRGB):
            root = root.model
        if model is not None and inner in (model, root):
            return ""
        name = next((n for n, m in root.named_modules() if m is inner), "")
        return f" in layer {name!r} ({type(inner).__name__})" if name else f" in a {type(inner).__name__}"


def check_outputs(runs: list[Run], data: Dataset) -> None:
    """Each model configuration of `runs`, built once with real weights on the CPU, on a batch
    of PROBE_IMAGES real images (in evaluation mode, then in training mode): it must build,
    run, give what its task needs (`Task.check_output`) and outputs that a gradient reaches. The
    global random state is given back as it was: no run's numbers change. A model of more
    than PROBE_MAX_BYTES of weights (or half the free memory) is left to check_memory."""
    configs = {}
    for run in runs:
        c = run.config
        configs.setdefault((c.model, c.model_args, c.strip_activations, c.task), run)
    x = data.train_x[:PROBE_IMAGES].float().div(255).contiguous(memory_format=torch.channels_last)
    batch = f"a batch of {len(x)} {data.name} images ({'x'.join(map(str, data.shape))})"
    for run in configs.values():
        config, task = run.config, TASKS.get(run.config.task)
        name = f"model {config.model!r}" + (f" (variant {run.variant!r})" if len(configs) > 1 else "")

        def build():
            return build_model(config, data.shape[0], len(data.classes), data.shape[1])

        meta = count.build_meta(build)
        weights = 0 if meta is None else sum(t.numel() * t.element_size() for t in (*meta.parameters(),
                                                                                     *meta.buffers()))
        if weights > min(PROBE_MAX_BYTES, (machine.available_memory() or float("inf")) / 2):
            continue  # slow to build for real, or too big: check_memory's to judge
        model, mode = None, ""
        with torch.random.fork_rng(devices=[]), _Running() as running:
            try:
                model = build()
                for training in (False, True):  # epoch 0 evaluates first
                    mode = " in training mode" if training else ""
                    model.train(training)
                    with torch.set_grad_enabled(training):
                        output = model(task.inputs(x, torch.Generator().manual_seed(0)))
                    problem = task.check_output(output, x, data)
                    if problem is not None:
                        raise UsageError(f"{name}{mode} {problem}")
                if isinstance(output, torch.Tensor) and not output.requires_grad:
                    raise UsageError(f"{name} gives outputs that depend on no trainable parameter (no gradient "
                                     "reaches them): training cannot change them")
            except UsageError:
                raise
            except (Exception, SystemExit) as error:  # noqa: BLE001 - whatever the user's model raises is bad input
                said = arch.describe_error(error)
                if model is None:
                    raise UsageError(f"{name} failed to build{running.where()}: {said}") from None
                raise UsageError(f"{name} failed{running.where(model)}{mode} on {batch}: {said}") from None


def training_bytes(config: RunConfig, data: Dataset) -> int:
    """Memory to train one model of `config`: parameters, gradients and up to two optimiser
    slots (4 x the parameters) and the activations of one batch."""
    size = model_size(config, data.shape, len(data.classes))
    return 4 * size.param_bytes + size.activation_bytes * config.batch_size


def float_data_bytes(data: Dataset) -> int:
    """What training adds to the loaded uint8 images: their normalised float copy, at its peak."""
    images = len(data.train_y) + len(data.test_y)
    return data_bytes(len(data.train_y), len(data.test_y), data.shape) - images * math.prod(data.shape)


def check_memory(runs: list[Run], data: Dataset, device: torch.device) -> None:
    """Refuse a variant whose training would not fit."""
    free = available_memory(device)
    for run in {r.variant: r for r in runs}.values():
        model, images = training_bytes(run.config, data), float_data_bytes(data)
        if model + images > free:
            size = model_size(run.config, data.shape, len(data.classes))
            raise UsageError(
                f"variant {run.variant!r} needs about {(model + images) / 1e9:,.1f} GB to train ({size.params:,} "
                f"parameters and the activations of a batch of {run.config.batch_size}: {model / 1e9:,.1f} GB; "
                f"the images as floats: {images / 1e9:,.1f} GB); {free / 1e9:,.1f} GB are free on {device.type}")


def pack_size(group: list[Run], data: Dataset, device: torch.device) -> int:
    """How many of the runs (of configurations that share a network) train together: as many as
    fit in memory at once, beside one normalised float copy of the images per normalisation
    that members without augmentation use."""
    copies = len({r.config.normalization for r in group if r.config.augment == "none"})
    free = 0.8 * available_memory(device) - max(0, copies - 1) * float_data_bytes(data)
    return max(1, min(len(group), int(free // training_bytes(group[0].config, data))))
