"""Rich tables: every table the tool prints is built here, from plain records."""

from __future__ import annotations

from dataclasses import astuple

from rich import box
from rich.console import Console
from rich.measure import Measurement
from rich.table import Table

from ablate.count import COLUMNS, Counts

NUMERIC = {"weights", "biases", "params", "trainable", "macs", "flops"}


def human(n: float) -> str:
    """1234567 -> '1.23 M'."""
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.3g} {unit}"
    return f"{n:g}"


def params_table(counts: Counts, title: str) -> Table:
    shape = "x".join(map(str, counts.input_shape))
    per = "per image" if counts.batch == 1 else f"for a batch of {counts.batch}"
    table = Table(
        title=f"{title}  (input {shape}, {per})",
        show_footer=True,
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        caption=(
            f"{counts.params:,} parameters ({human(counts.params)}), {counts.trainable:,} trainable, "
            f"{counts.param_bytes / 1e6:.2f} MB; {human(counts.macs)}MACs, {human(counts.flops)}FLOPs"
        ),
    )
    totals = {
        "layer": "total",
        "params": f"{counts.params:,}",
        "trainable": f"{counts.trainable:,}",
        "macs": f"{counts.macs:,}",
        "flops": f"{counts.flops:,}",
    }
    cells = [[f"{v:,}" if isinstance(v, int) else v for v in astuple(row)] for row in counts.rows]
    for i, column in enumerate(COLUMNS):
        widest = max([len(column), len(totals.get(column, ""))] + [len(r[i]) for r in cells])
        table.add_column(  # never cut or wrapped: a narrow terminal folds whole lines instead
            column, footer=totals.get(column, ""), justify="right" if column in NUMERIC else "left",
            no_wrap=True, min_width=widest,
        )
    for row in cells:
        table.add_row(*row)
    return table


def models_table(registry: list[dict], torchvision_names: list[str]) -> Table:
    table = Table(title="models", caption=f"and {len(torchvision_names)} torchvision classifiers: "
                  + ", ".join(torchvision_names))
    for column in ("name", "input", "description"):
        table.add_column(column)
    for entry in registry:
        table.add_row(entry["name"], entry["input"], entry["description"])
    return table


def print_wide(console: Console, table: Table) -> None:
    """Print without cutting columns: a table wider than the terminal keeps its full width."""
    needed = Measurement.get(console, console.options.update(width=10_000), table).maximum
    console.print(table, width=max(console.width, needed), crop=False)
