"""The `ablate` command line: options in, library calls, errors out as one line and exit 2."""

from __future__ import annotations

import json
import sys
from enum import Enum
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from typer.core import TyperGroup

from ablate import arch, count, report, results
from ablate.errors import UsageError

stdout = Console()
stderr = Console(stderr=True)


class _OneLineErrors(TyperGroup):
    """Usage errors print one line, `ablate params: error: ...`, and exit 2, no traceback.

    Library functions raise `ablate.errors.UsageError`; it is turned into that line here.
    """

    def main(self, args=None, prog_name=None, standalone_mode=True, **extra):
        if not standalone_mode:
            return super().main(args, prog_name, standalone_mode=False, **extra)
        args = sys.argv[1:] if args is None else list(args)
        try:
            code = super().main(args, prog_name, standalone_mode=False, **extra)
        except UsageError as error:
            command = next((a for a in args if a in self.commands), "")
            typer.echo(f"ablate {command}: error: {error}".replace(" :", ":"), err=True)
            sys.exit(2)
        except typer.TyperException as error:
            if type(error).__name__ == "NoArgsIsHelpError":
                typer.echo(error.format_message())
                sys.exit(2)
            ctx = getattr(error, "ctx", None)
            where = ctx.command_path if ctx is not None else "ablate"
            typer.echo(f"{where}: error: {error.format_message()}", err=True)
            sys.exit(getattr(error, "exit_code", 2))
        except typer.Abort:
            typer.echo("Aborted.", err=True)
            sys.exit(130)
        sys.exit(code if isinstance(code, int) else 0)


app = typer.Typer(
    cls=_OneLineErrors,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    help="Architecture ablations of small image CNNs: one command per study, tidy Parquet out.",
)


class OutputFormat(str, Enum):
    table = "table"
    csv = "csv"
    json = "json"


PARAMS_HELP = f"""Per-layer input and output shapes, parameters, MACs and FLOPs of MODEL.

MODEL is one of ablate's models (lenet5, tutorial, threeconv), a torchvision classifier
(vgg16, resnet18, vit_b_16, ...; built without weights), package.module:attr (your nn.Module
class or zero-argument factory), or a layer stack whose input sizes are inferred, such as
"Conv2d(20, 4, stride=2, padding=1), MaxPool2d(3, stride=1)" --input 50x12x12.

\b
{count.CONVENTION}
"""


@app.command(help=PARAMS_HELP)
def params(
    model: Optional[str] = typer.Argument(None, help="Model name, package.module:attr, or a layer-stack spec."),
    input: Optional[str] = typer.Option(None, "--input", help="Input shape CxHxW, without batch (default: the model's own)."),
    batch: int = typer.Option(1, "--batch", min=1, help="Count for a batch of N images."),
    out: Optional[Path] = typer.Option(None, "--out", help="Also write the rows to FILE (.parquet or .csv)."),
    format: OutputFormat = typer.Option(OutputFormat.table, "--format", help="How to print the rows on stdout."),
    list_models: bool = typer.Option(False, "--list", help="List the model names and exit."),
):
    if list_models:
        return list_command(Topic.models, json_output=format == OutputFormat.json)
    if model is None:
        raise UsageError("give a MODEL (see `ablate params --list`)")
    if out is not None:
        results.check_writable(out)
    net, natural = arch.load_model(model)
    if input is not None:
        shape = arch.parse_shape(input)
    elif natural is not None:
        shape = natural
    else:
        raise UsageError(f"{model!r} has no natural input shape: give one with --input CxHxW")
    counts = count.count_model(net, shape, batch)
    for op, calls in sorted(counts.uncounted.items()):
        stderr.print(f"warning: no FLOP rule for {op} ({calls} calls): counted as 0", highlight=False)
    frame = counts.frame()
    if out is not None:
        results.write_frame(frame, out, {**results.provenance(), "model": model,
                                         "input_shape": "x".join(map(str, shape)), "batch": str(batch)})
    if format == OutputFormat.csv:
        sys.stdout.write(frame.to_csv(index=False))
    elif format == OutputFormat.json:
        sys.stdout.write(frame.to_json(orient="records", indent=1) + "\n")
    else:
        report.print_wide(stdout, report.params_table(counts, model))


class Topic(str, Enum):
    models = "models"


@app.command("list")
def list_command(
    topic: Topic = typer.Argument(Topic.models, help="What to list."),
    json_output: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
):
    """List the names ablate knows."""
    registry = [
        {"name": e.name, "input": "x".join(map(str, e.input_shape)), "description": e.description}
        for e in arch.registered_models()
    ]
    torchvision_names = arch.torchvision_models()
    if json_output:
        typer.echo(json.dumps({"ablate": registry, "torchvision": torchvision_names}, indent=1))
    else:
        stdout.print(report.models_table(registry, torchvision_names))


def main() -> None:
    app()
