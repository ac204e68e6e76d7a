"""The `ablate` command line: options in, library calls, errors out as one line and exit 2."""

from __future__ import annotations

import inspect
import json
import sys
import time
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
from typer.core import TyperGroup

from ablate import arch, count, data, report, results, runner, studies, train
from ablate.errors import UsageError

stdout = Console()
stderr = Console(stderr=True)
ARGV: list[str] = []  # the arguments of this invocation, for the files' provenance


class _OneLineErrors(TyperGroup):
    """Usage errors print one line, `ablate params: error: ...`, and exit 2, no traceback.

    Library functions raise `ablate.errors.UsageError`; it is turned into that line here.
    """

    def main(self, args=None, prog_name=None, standalone_mode=True, **extra):
        if not standalone_mode:
            return super().main(args, prog_name, standalone_mode=False, **extra)
        args = sys.argv[1:] if args is None else list(args)
        ARGV[:] = args
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
        results.write_frame(frame, out, {**results.provenance(ARGV), "model": model,
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


# ---------------------------------------------------------------- studies


class Device(str, Enum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"
    mps = "mps"


DEFAULTS = train.RunConfig()
SHARED_OPTIONS = {  # name: (type, default, option); every study command takes these
    "dataset": (data.DatasetName, data.DatasetName.cifar10, typer.Option(
        help="cifar10 and mnist download once; fashion-mnist also comes from Debian's "
             "dataset-fashion-mnist; synthetic is generated.")),
    "data_dir": (Optional[Path], None, typer.Option(
        help="Where the dataset is (default: $ABLATE_DATA, then ~/.cache/ablate).")),
    "epochs": (int, DEFAULTS.epochs, typer.Option(min=1)),
    "seeds": (int, 1, typer.Option(min=1, help="Train every variant under seeds 0..K-1.")),
    "batch_size": (int, DEFAULTS.batch_size, typer.Option(min=1)),
    "lr": (float, DEFAULTS.lr, typer.Option(
        help="Learning rate of SGD with momentum 0.9 (--batch-size 4 --lr 0.001 is the PyTorch tutorial's).")),
    "device": (Device, Device.auto, typer.Option(help="auto: cuda, then mps, then cpu.")),
    "limit_train": (Optional[int], None, typer.Option(min=1, help="A class-balanced subset of N train images.")),
    "limit_test": (Optional[int], None, typer.Option(min=1, help="A class-balanced subset of N test images.")),
    "out": (Optional[Path], None, typer.Option(help="Results file (default: results/STUDY.parquet).")),
    "resume": (bool, False, typer.Option("--resume", help="Keep the runs already in --out and train the rest.")),
    "force": (bool, False, typer.Option("--force", help="Overwrite an existing --out.")),
}
TRAINING_OPTIONS = ("dataset", "epochs", "batch_size", "lr", "limit_train", "limit_test")


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[status]}"),
        TimeRemainingColumn(), console=stderr, transient=False,
    )


def run_study(study: studies.Study, options: dict) -> None:
    """Shared by every study command: validate everything, then train and summarise."""
    out = options["out"] or Path("results") / f"{study.name}.parquet"
    if not options["lr"] > 0:
        raise UsageError(f"--lr must be > 0, got {options['lr']}")
    device = train.resolve_device(options["device"].value)
    store = results.StudyFile(out, resume=options["resume"], force=options["force"])
    config = {k: getattr(options[k], "value", options[k]) for k in TRAINING_OPTIONS}
    dataset = data.load_dataset(config["dataset"], options["data_dir"], config["limit_train"], config["limit_test"])
    runs = runner.plan(study, config, options["seeds"])
    metadata = {**results.provenance(ARGV), "device": device.type}
    todo = [r for r in runs if r.run_id not in store.done()]
    images = len(dataset.train_y)
    finished: list[runner.Run] = []

    with _progress() as progress:
        task = progress.add_task(study.name, total=sum(r.config.epochs for r in todo) * images, status="")
        started = {}

        def on_batch(run, epoch, done, loss):
            key = (run.run_id, epoch)
            started.setdefault(key, time.perf_counter())
            speed = done / max(time.perf_counter() - started[key], 1e-9)
            completed = finished_images() + (epoch - 1) * images + done
            progress.update(task, completed=completed, description=(
                f"{study.name} {run.variant} seed {run.seed} epoch {epoch}/{run.config.epochs}"),
                status=f"loss {loss:.3f}  {speed:,.0f} img/s")

        def finished_images():
            return sum(r.config.epochs for r in finished) * images

        def on_run(run, status):
            if status != "skipped":
                finished.append(run)
            if status == "diverged":
                stderr.print(f"{run.variant} seed {run.seed}: the loss became NaN or infinite; recorded as diverged")

        try:
            runner.execute(runs, dataset, device, store, metadata, on_batch, on_run)
        except KeyboardInterrupt:
            progress.stop()
            saved = len(store.done())
            stderr.print(f"interrupted: {saved} of {len(runs)} runs are saved in {out}; "
                         f"run the same command with --resume to finish", highlight=False)
            raise typer.Exit(130)
    frame = store.runs[store.runs["run_id"].isin({r.run_id for r in runs})]
    report.print_wide(stdout, report.study_summary(frame, study.factors))
    stderr.print(f"results: {out} and {results.classes_path(out)}", highlight=False)


def _study_command(study: studies.Study, extra: dict | None = None):
    """A Typer command for `study` with the shared options (and any of its own)."""
    options = {**SHARED_OPTIONS, **(extra or {})}

    def command(**kwargs):
        run_study(study, kwargs)

    command.__signature__ = inspect.Signature([
        inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default,
                          annotation=Annotated[kind, option])
        for name, (kind, default, option) in options.items()
    ])
    app.command(study.name, help=study.description)(command)


_study_command(studies.get_study("linearity"))


def main() -> None:
    app()
