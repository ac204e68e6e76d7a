"""The `ablate` command line: options in, library calls, errors out as one line and exit 2."""

from __future__ import annotations

import inspect
import json
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import pandas as pd
import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
from typer.core import TyperGroup

from ablate import arch, compare, count, data, plot, report, results, runner, studies, train, transforms
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
    studies = "studies"
    datasets = "datasets"
    augmentations = "augmentations"
    schedulers = "schedulers"
    optimizers = "optimizers"


def _listing(topic: Topic) -> list[dict]:
    if topic == Topic.models:
        return [{"name": e.name, "source": "ablate", "input": "x".join(map(str, e.input_shape)),
                 "description": e.description} for e in arch.registered_models()] + [
            {"name": n, "source": "torchvision", "input": "", "description": ""}
            for n in arch.torchvision_models()]
    if topic == Topic.studies:
        return [{"name": s.name, "variants": ", ".join(s.variants), "description": s.description}
                for s in map(studies.get_study, studies.STUDIES)]
    if topic == Topic.datasets:
        return [{"name": d.value, "classes": ", ".join(data.CLASSES[d.value])} for d in data.DatasetName]
    if topic == Topic.augmentations:
        return [{"name": "none", "description": "no augmentation"}] + [
            {"name": n, "description": (f.__doc__ or "").strip().splitlines()[0] if f.__doc__ else ""}
            for n, f in transforms.AUGMENTATIONS.items()]
    if topic == Topic.schedulers:
        return [{"name": n} for n in train.SCHEDULERS]
    return [{"name": n, **studies.OPTIMIZER_DEFAULTS[n]} for n in train.OPTIMIZERS]


@app.command("list")
def list_command(
    topic: Topic = typer.Argument(Topic.models, help="What to list."),
    json_output: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
):
    """List the models, studies, datasets, augmentations, schedulers or optimisers."""
    rows = _listing(topic)
    if json_output:
        typer.echo(json.dumps(rows, indent=1))
    else:
        stdout.print(report.listing_table(topic.value, rows))


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
    "lr": (Optional[float], None, typer.Option(
        help=f"Learning rate (default: {DEFAULTS.lr} for SGD with momentum 0.9, or the study's own; "
             "--batch-size 4 --lr 0.001 is the PyTorch tutorial's).")),
    "device": (Device, Device.auto, typer.Option(help="auto: cuda, then mps, then cpu.")),
    "limit_train": (Optional[int], None, typer.Option(min=1, help="A class-balanced subset of N train images.")),
    "limit_test": (Optional[int], None, typer.Option(min=1, help="A class-balanced subset of N test images.")),
    "deterministic": (bool, False, typer.Option(
        "--deterministic", help="Use torch's deterministic algorithms (bit-identical reruns on GPUs too).")),
    "out": (Optional[Path], None, typer.Option(help="Results file (default: results/STUDY.parquet).")),
    "resume": (bool, False, typer.Option("--resume", help="Keep the runs already in --out and train the rest.")),
    "force": (bool, False, typer.Option("--force", help="Overwrite an existing --out.")),
    "plot": (Optional[Path], None, typer.Option(
        help="Also draw the study's natural figure to FILE (.png, .svg or .pdf).")),
}
TRAINING_OPTIONS = ("dataset", "epochs", "batch_size", "lr", "limit_train", "limit_test", "deterministic")


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[status]}"),
        TimeRemainingColumn(), console=stderr, transient=False,
    )


def run_study(name: str, options: dict, study_values: dict) -> None:
    """Shared by every study command: validate everything, then train and summarise."""
    if options["lr"] is not None and not options["lr"] > 0:
        raise UsageError(f"--lr must be > 0, got {options['lr']}")
    study = studies.get_study(name, **study_values)
    out = options["out"] or Path("results") / f"{study.name}.parquet"
    if options["plot"] is not None:
        results.check_writable(options["plot"], plot.FORMATS)
    device = train.resolve_device(options["device"].value)
    config = {k: getattr(options[k], "value", options[k]) for k in TRAINING_OPTIONS}
    with results.StudyFile(out, resume=options["resume"], force=options["force"]) as store:
        dataset = data.load_dataset(config["dataset"], options["data_dir"], config["limit_train"],
                                    config["limit_test"])
        runs = runner.plan(study, config, options["seeds"])
        metadata = {**results.provenance(ARGV), "device": device.type}
        _train(study, runs, dataset, device, store, metadata, out)
        planned = {r.run_id for r in runs}
        frame = store.runs[store.runs["run_id"].isin(planned)]
        per_class = store.class_rows[store.class_rows["run_id"].isin(planned)]
    report.print_wide(stdout, report.study_summary(frame, study.factors))
    if study.per_class:
        report.print_wide(stdout, report.class_table(per_class))
    stderr.print(f"results: {out} and {results.classes_path(out)}", highlight=False)
    if options["plot"] is not None:
        plot.draw(out, options["plot"], study.plot, run_ids=planned)
        stderr.print(f"figure: {options['plot']}", highlight=False)


def _train(study, runs, dataset, device, store, metadata, out) -> None:
    """Train the runs not yet in `store` under a progress display on stderr."""
    todo = [r for r in runs if r.run_id not in store.done()]
    images = len(dataset.train_y)
    finished: list[runner.Run] = []
    with _progress() as progress:
        task = progress.add_task(study.name, total=sum(r.config.epochs for r in todo) * images, status="")

        def on_batch(run, epoch, done, loss, seconds):
            completed = sum(r.config.epochs for r in finished) * images + (epoch - 1) * images + done
            progress.update(task, completed=completed, description=(
                f"{study.name} {run.variant} seed {run.seed} epoch {epoch}/{run.config.epochs}"),
                status=f"loss {loss:.3f}  {done / max(seconds, 1e-9):,.0f} img/s")

        def on_run(run, status):
            if status != "skipped":
                finished.append(run)
            if status == "diverged":
                progress.console.print(f"{run.variant} seed {run.seed}: the loss became NaN or infinite; "
                                       "recorded as diverged, going on", highlight=False)

        try:
            runner.execute(runs, dataset, device, store, metadata, on_batch, on_run)
        except KeyboardInterrupt:
            progress.stop()
            saved = [f"{r.variant}/{r.seed}" for r in runs if r.run_id in store.done()]
            stderr.print(f"interrupted: {len(saved)} of {len(runs)} runs are saved in {out} "
                         f"({', '.join(saved) or 'none'}); run the same command with --resume to finish",
                         highlight=False)
            raise typer.Exit(130)


def _study_command(name: str, extra: dict | None = None, passes: tuple[str, ...] = ()):
    """A Typer command for study `name` with the shared options and any of its own (`extra`),
    which go to the study's builder with the shared options named in `passes`."""
    extra = extra or {}
    options = {**SHARED_OPTIONS, **extra}

    def command(**values):
        shared = {k: values[k] for k in SHARED_OPTIONS}
        own = {k: values[k] for k in (*extra, *passes)}
        run_study(name, shared, own)

    command.__signature__ = inspect.Signature([
        inspect.Parameter(option, inspect.Parameter.KEYWORD_ONLY, default=default,
                          annotation=Annotated[kind, typer_option])
        for option, (kind, default, typer_option) in options.items()
    ])
    app.command(name, help=studies.get_study(name).description)(command)


_study_command("linearity")
_study_command("conv1", {"channels": (str, ",".join(map(str, studies.CONV1_CHANNELS)), typer.Option(
    help="conv1 widths to train, comma-separated."))})
_study_command("permutation")
_study_command("augment", {"sets": (str, ",".join(studies.get_study("augment").variants), typer.Option(
    help=f"Augmentation sets, comma-separated: {', '.join(studies.AUGMENT_SETS)}, or a+b combinations."))})
_study_command("scheduler", {"schedulers": (str, ",".join(train.SCHEDULERS), typer.Option(
    help=f"Schedulers, comma-separated ({studies.SCHEDULER_HELP})."))}, passes=("epochs", "lr"))
_study_command("optimizer", {"optimizers": (str, ",".join(train.OPTIMIZERS), typer.Option(
    help=f"Optimisers, comma-separated ({studies.OPTIMIZER_HELP}).",
))}, passes=("lr",))
_study_command("normalization")
_study_command("regularization", {"dropout": (float, 0.5, typer.Option(
    help="Dropout probability of the dropout variants, in [0, 1)."))})


# ---------------------------------------------------------------- report and plot


class PlotKind(str, Enum):
    curves = "curves"
    sweep = "sweep"
    classes = "classes"


@app.command("report")
def report_command(
    paths: list[Path] = typer.Argument(..., help="Study files (.parquet) written by ablate."),
    epoch: Optional[int] = typer.Option(None, "--epoch", min=1, help="Compare at this epoch (default: the last)."),
    best: bool = typer.Option(False, "--best", help="Compare each run at its epoch of best test accuracy."),
    baseline: Optional[str] = typer.Option(None, "--baseline", help="Variant to compare with (default: the first)."),
    format: OutputFormat = typer.Option(OutputFormat.table, "--format"),
):
    """Mean, std and 95 % t-interval over seeds of the test loss and accuracy per variant, and
    the paired difference to a baseline variant with its interval."""
    if epoch is not None and best:
        raise UsageError("give --epoch or --best, not both")
    frames = [results.read_results(p) for p in paths]
    chosen = compare.pick_epochs(pd.concat(frames, ignore_index=True), epoch, best)
    summary = compare.summarize(chosen, baseline)
    if format == OutputFormat.csv:
        sys.stdout.write(summary.to_csv(index=False))
    elif format == OutputFormat.json:
        sys.stdout.write(summary.to_json(orient="records", indent=1) + "\n")
    else:
        label = "each run's best epoch" if best else f"epoch {epoch}" if epoch else "the last epoch"
        for study in summary["study"].unique():
            report.print_wide(stdout, report.comparison_table(summary, study, label))


@app.command("plot")
def plot_command(
    path: Path = typer.Argument(..., help="A study file (.parquet) written by ablate."),
    out: Path = typer.Option(..., "-o", "--out", help="Figure file: .png, .svg or .pdf."),
    kind: Optional[PlotKind] = typer.Option(None, "--kind", help="curves (per epoch), sweep (final loss "
                                            "against a numeric factor), classes (per-class accuracy); "
                                            "default: the study's natural one."),
    factor: Optional[str] = typer.Option(None, "--factor", help="The numeric column of --kind sweep."),
):
    """Draw a study's figure: learning curves, a sweep (the U-curve of conv1) or per-class bars."""
    results.check_writable(out, plot.FORMATS)
    plot.draw(path, out, kind and kind.value, factor)
    stderr.print(f"figure: {out}", highlight=False)


def main() -> None:
    app()
