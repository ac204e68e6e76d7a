"""The one progress contract every executor keeps: a `started` event when a pack of runs
begins, `images` events as it trains (`batch_reporter` turns the training loop's reports into
them), the same from this process and from a cluster's workers. Nothing here imports torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

HERE = "this process"


@dataclass(frozen=True)
class Progress:
    """One event of a study's progress, the same from every executor."""

    kind: str  # "start": a pack begins; "images": it has trained `images` so far
    key: str  # the pack's first run_id
    label: str  # the pack, in words: "relu seed 0", "relu seeds 0-2"
    epochs: int  # the pack's planned epochs
    where: str = HERE  # a worker's address, or this process
    epoch: int = 0
    images: int = 0  # images trained so far, all of the pack's runs together
    loss: float | None = None


def pack_label(pack) -> str:
    """"relu seed 0", "relu seeds 0-2", "0.01 seeds 0-2 + 0.1 seeds 0-2" (a pack of variants)."""
    if len(pack) == 1:
        return pack[0].label
    variants: dict[str, list[int]] = {}
    for run in pack:
        variants.setdefault(run.variant, []).append(run.seed)
    return " + ".join(f"{variant} {_seeds(seeds)}" for variant, seeds in variants.items())


def _seeds(seeds: list[int]) -> str:
    if len(seeds) == 1:
        return f"seed {seeds[0]}"
    span = f"{seeds[0]}-{seeds[-1]}" if seeds == list(range(seeds[0], seeds[-1] + 1)) else ",".join(map(str, seeds))
    return f"seeds {span}"


def started(pack, where: str = HERE) -> Progress:
    return Progress("start", pack[0].run_id, pack_label(pack), pack[0].config.epochs, where)


def batch_reporter(pack, report: Callable[[Progress], None], where: str = HERE):
    """The `on_batch` to give `work` for `pack`: each report of the training loop as a Progress."""
    key, label, epochs = pack[0].run_id, pack_label(pack), pack[0].config.epochs

    def on_batch(epoch: int, images: int, loss: float, speed: float) -> None:
        report(Progress("images", key, label, epochs, where, epoch, int(images), float(loss)))

    return on_batch
