"""What a task reports beside its loss: each metric is a column of the results, a cell of the
summaries and a choice of `ablate report --best` and `ablate plot --metric`.

Torch is not imported here: the readers (`ablate report`, `ablate plot`) know a file's
metrics without it, and a metric's `batch` receives tensors from the training loop.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

from ablate.errors import UsageError
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

    def shown(self, value: float, digits: int = 2) -> str:
        return f"{self.scale * value:.{digits}f}{self.unit}"


def _psnr(mse: float) -> float:
    """Peak signal-to-noise ratio of a mean squared error, the peak 1 (pixels in [0, 1])."""
    if mse != mse:  # NaN: a diverged run
        return mse
    return math.inf if mse <= 0 else -10 * math.log10(mse)


METRICS: Registry[Metric] = Registry("metric")
accuracy = METRICS.register("accuracy", Metric(
    "accuracy", "accuracy", lambda out, x, y: (out.argmax(1) == y).sum(), scale=100, unit=" %"))
# of the split's mean squared error per pixel, peak 1: the pixels' range under normalization none
# (the autoencoder studies' default); under another normalization, relative to 1 in that space
psnr = METRICS.register("psnr", Metric(
    "psnr", "PSNR", lambda out, x, y: (out - x).square().flatten(1).mean(1).sum(), finish=_psnr, unit=" dB"))


def register(metric: Metric) -> None:
    """Add a task's metric under its name; the same metric again is no change. Its name is a
    column: it may not be one a run's settings or results already fill."""
    if metric.name in METRICS and METRICS.get(metric.name) is metric:
        return
    from ablate.arch import registry_knobs  # ablate's own models' arguments: columns of every file
    from ablate.config import reserved_names

    if metric.name not in METRICS and (metric.name in reserved_names() or metric.name in registry_knobs()):
        raise UsageError(f"metric {metric.name!r} is named like a column ablate fills; name it otherwise")
    METRICS.register(metric.name, metric)


def present(frame) -> list[Metric]:
    """The metrics a results frame holds values of, in the order they were registered."""
    return [m for name, m in METRICS.items() if name in frame and frame[name].notna().any()]
