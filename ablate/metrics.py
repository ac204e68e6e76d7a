"""What a task reports beside its loss: each metric is a column of the results, a cell of the
summaries and a choice of `ablate report --best` and `ablate plot --metric`.

Torch is not imported here: the readers (`ablate report`, `ablate plot`) know a file's
metrics without it, and a metric's `batch` receives tensors from the training loop.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

from ablate.registry import Registry


@dataclass(frozen=True)
class Metric:
    name: str  # its column in the results
    label: str  # its name in the summaries and figures
    # (the model's output on a batch, the batch's images, their labels) -> the sum over the batch's
    # images of the metric's per-image value, a 0-d tensor
    batch: Callable
    finish: Callable[[float], float] = lambda mean: mean  # the split's mean per image -> the value recorded
    scale: float = 1.0  # shown as scale x value: accuracy 100 (in %)
    unit: str = ""  # after the shown value: "%", " dB"
    higher_is_better: bool = True
    # `--seeds auto`'s default --resolution: the difference that matters, in shown units (accuracy
    # points); None: the user gives one
    resolution: float | None = None
    low: float | None = None  # the range its values can take, as recorded (accuracy 0 to 1); None: unbounded
    high: float | None = None

    @property
    def units(self) -> str:
        """The unit its summaries are in: "%", "dB", or "" (the recorded value)."""
        return self.unit.strip()

    def shown(self, value: float, digits: int = 2, delta: bool = False) -> str:
        """89.45 %; a difference +0.30 pt."""
        if delta:
            return f"{self.scale * value:+.{digits}f}{' pt' if self.unit.strip() == '%' else self.unit}"
        return f"{self.scale * value:.{digits}f}{self.unit}"


def _psnr(mse: float) -> float:
    """Peak signal-to-noise ratio of a mean squared error, the peak 1 (pixels in [0, 1])."""
    if mse != mse:  # NaN: a diverged run
        return mse
    return math.inf if mse <= 0 else -10 * math.log10(mse)


METRICS: Registry[Metric] = Registry("metric")
accuracy = METRICS.register("accuracy", Metric(
    "accuracy", "accuracy", lambda out, x, y: (out.argmax(1) == y).sum(), scale=100, unit=" %", resolution=0.5,
    low=0.0, high=1.0))
# of the split's mean squared error per pixel, peak 1: the pixels' range under normalization none
# (the autoencoder studies' default); under another normalization, relative to 1 in that space
psnr = METRICS.register("psnr", Metric(
    "psnr", "PSNR", lambda out, x, y: (out - x).square().flatten(1).mean(1).sum(), finish=_psnr, unit=" dB",
    resolution=0.1))


def register(metric: Metric) -> None:
    """Add a task's metric under its name; the same metric again is no change. (Its name is a
    column: `ablate.training.tasks.register_task` checks it against the schema first.)"""
    if metric.name in METRICS and METRICS.get(metric.name) is metric:
        return
    METRICS.register(metric.name, metric)


TASK_METRICS: dict[str, list[str]] = {}  # a registered task's name -> its metrics' names, in its order


def present(frame) -> list[Metric]:
    """The metrics a results frame holds values of: those of its runs' tasks in each task's
    order (the first is the one `report --best` goes by), then any other, as registered."""
    tasks = frame["task"].dropna().unique() if "task" in frame else []
    ordered = [*(name for task in tasks for name in TASK_METRICS.get(task, [])), *METRICS]
    return [METRICS.get(name) for name in dict.fromkeys(ordered)
            if name in METRICS and name in frame and frame[name].notna().any()]


# The loss as the metric that decides, for a task with no metric of its own (it is not registered:
# every task has a loss column).
LOSS = Metric("loss", "loss", batch=None, higher_is_better=False, resolution=0.01, low=0.0)  # cross-entropy, MSE


def of_name(name: str) -> Metric:
    """The metric of a results column: a registered one, or the loss."""
    return METRICS.get(name) if name in METRICS else LOSS


def deciding(frame) -> Metric:
    """The one answer to "which metric decides?" (`report --best`, seeds needed, --seeds auto,
    the variants figure): the first metric of the runs' tasks that `frame` holds values of,
    else the loss."""
    measured = present(frame)
    return measured[0] if measured else LOSS


def task_decides(task: str) -> Metric:
    """`deciding` for a task's runs before they have rows: its first metric, else the loss."""
    names = TASK_METRICS.get(task, [])
    return METRICS.get(names[0]) if names else LOSS


def heading(metric: Metric, delta: bool = False) -> str:
    """"accuracy (%)", "PSNR (dB)"; of a difference, "accuracy (pt)"."""
    unit = metric.unit.strip()
    unit = "pt" if delta and unit == "%" else unit
    return metric.label + (f" ({unit})" if unit else "")
