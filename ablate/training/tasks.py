"""What a run learns and reports: a task is one object, and `_train`, evaluation and the dry
run call it without knowing its name."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from ablate import arch, metrics, schema
from ablate.data.datasets import Dataset
from ablate.errors import UsageError
from ablate.metrics import Metric
from ablate.registry import Registry


@dataclass(frozen=True)
class Task:
    """A run's loss on a batch, what the model sees of it, what it reports beside the loss, and
    what the model must output. `x` is the batch's images as the run prepares them (normalised,
    augmented, permuted) and `y` their labels: each function scores the output against either."""

    name: str
    loss: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]  # (output, x, y) -> mean
    # outputs are class scores: the test split's accuracy per class is measured too (the
    # per-class file); None: the task's metrics decide (it classifies when it reports accuracy)
    classifies: bool | None = None
    # (a model's output on a batch x of the data, the data) -> None, or what is wrong, as
    # "gives <what it gave> for a batch of N; task T needs <what it takes>"
    check_output: Callable[[object, torch.Tensor, Dataset], str | None] = lambda output, x, data: None
    # what the model sees of a batch x (its loss is scored against x and the labels), drawing any
    # randomness from the run's own generator: a denoising task adds noise here
    inputs: Callable[[torch.Tensor, torch.Generator], torch.Tensor] = lambda x, generator: x
    measures_code: bool = False  # after training, the model's encode() is measured (latent_corr)
    # beside the loss, each a column of the results measured on every split and epoch, the first
    # the one `report --best` goes by; None: accuracy for a task that classifies, none otherwise
    metrics: tuple[Metric, ...] | None = None

    def __post_init__(self):
        if self.metrics is None:
            object.__setattr__(self, "metrics", (metrics.accuracy,) if self.classifies else ())
        if self.classifies is None:
            object.__setattr__(self, "classifies", metrics.accuracy in self.metrics)
        object.__setattr__(self, "metrics", tuple(self.metrics))

    def measure(self, out: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Each metric's sum over the batch, as one tensor (empty for a task with none)."""
        if not self.metrics:
            return torch.zeros(0, device=out.device)
        return torch.stack([m.batch(out, x, y).float() for m in self.metrics])

    def finish(self, sums: list[float], images: int) -> dict[str, float]:
        """The metrics of a split from their sums over its `images`."""
        return {m.name: m.finish(total / images) for m, total in zip(self.metrics, sums)}


def output_check(task: str, need: Callable[[torch.Tensor, Dataset], tuple], why: Callable[[Dataset], str]):
    """A task's `check_output`: a floating-point tensor of the shape `need(x, data)`, any values
    (NaN too: a run that diverges says so itself)."""

    def check(output, x: torch.Tensor, data: Dataset) -> str | None:
        shape = need(x, data)
        tensor = isinstance(output, torch.Tensor) and output.is_floating_point()
        if tensor and tuple(output.shape) == shape:
            return None
        wanted = str(shape) if tensor else f"a floating-point tensor of shape {shape}"
        return (f"gives {arch.describe_output(output)} for a batch of {len(x)}; task {task} needs {wanted}: "
                f"{why(data)}")

    return check


TASKS: Registry[Task] = Registry("task")


def register_task(task: Task) -> Task:
    """Add `task` under its name (a plugin's, or ablate's own), and its metrics. A metric's name
    is a column: it may not be one a run's settings or results already fill (the schema's), nor
    an argument of ablate's own models (a column of every file)."""
    if not isinstance(task, Task):
        raise UsageError(f"register_task takes an ablate.Task, got {type(task).__name__}")
    for metric in task.metrics:
        if metric.name not in metrics.METRICS and (metric.name in schema.reserved_names()
                                                   or metric.name in arch.registry_knobs()):
            raise UsageError(f"metric {metric.name!r} is named like a column ablate fills; name it otherwise")
    for metric in task.metrics:
        metrics.register(metric)
    TASKS.register(task.name, task)
    metrics.TASK_METRICS[task.name] = [m.name for m in task.metrics]
    return task


register_task(Task(
    "classify", lambda out, x, y: F.cross_entropy(out, y), True,
    output_check("classify", lambda x, data: (len(x), len(data.classes)),
                 lambda data: f"one score per class of {data.name}"), metrics=(metrics.accuracy,)))
# the output against the input, in the normalised space the run states (normalization none: [0, 1])
register_task(Task(
    "reconstruct", lambda out, x, y: F.mse_loss(out, x), False,
    output_check("reconstruct", lambda x, data: tuple(x.shape),
                 lambda data: f"each image rebuilt, the shape of the input ({data.name})"), measures_code=True,
    metrics=(metrics.psnr,)))
