"""The `ablate` command line: options in, library calls, errors out as one line and exit 2.

torch, pandas and matplotlib take seconds to import: each command imports the modules it
calls, so that `ablate --help`, `ablate COMMAND --help` and `ablate list` need none of them
(tests/test_startup.py checks).
"""

from __future__ import annotations

import contextlib
import copy
import inspect
import json
import sys
import time
import typing
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
from typer.core import TyperGroup

from ablate import plugins
from ablate.config import OPTIMIZERS, SCHEDULERS, RunConfig
from ablate.counting.convention import CONVENTION
from ablate.errors import EnvironmentFailure, UsageError, describe_error, one_line
from ablate.execution.progress import HERE
from ablate.reporting import report
from ablate.study import studies

if TYPE_CHECKING:
    from ablate.execution import runner

stdout = Console()
stderr = Console(stderr=True, soft_wrap=True)  # one message, one line, however narrow the terminal
ARGV: list[str] = []  # the arguments of this invocation, for the files' provenance


def _pack_auto(args: list[str]) -> list[str]:
    """`--pack auto` (and `--pack=auto`), the default said out loud: the flag pair --pack /
    --no-pack forces packing either way, and without either ablate measures."""
    out, i = [], 0
    while i < len(args):
        if args[i] == "--":
            return out + args[i:]
        if args[i] == "--pack=auto" or (args[i] == "--pack" and i + 1 < len(args) and args[i + 1] == "auto"):
            i += 1 if args[i] == "--pack=auto" else 2
            continue
        out.append(args[i])
        i += 1
    return out


class _OneLineErrors(TyperGroup):
    """Usage errors print one line, `ablate params: error: ...`, and exit 2, no traceback;
    failures of the machine (a full disk) print one line and exit 1.

    Library functions raise `ablate.errors.UsageError` or `EnvironmentFailure`; they are
    turned into that line here.
    """

    def main(self, args=None, prog_name=None, standalone_mode=True, **extra):
        if not standalone_mode:
            return super().main(args, prog_name, standalone_mode=False, **extra)
        args = sys.argv[1:] if args is None else list(args)
        try:
            code = self.run_args(args, prog_name, **extra)
        except (UsageError, EnvironmentFailure) as error:
            command = next((a for a in args if a in self.commands), "")
            typer.echo(f"ablate {command}: error: {error}".replace(" :", ":"), err=True)
            sys.exit(2 if isinstance(error, UsageError) else 1)
        except typer.TyperException as error:
            if type(error).__name__ == "NoArgsIsHelpError":
                typer.echo(error.format_message())
                sys.exit(2)
            ctx = getattr(error, "ctx", None)
            where = ctx.command_path if ctx is not None else "ablate"
            typer.echo(f"{where}: error: {error.format_message()}{_argument_hint(error, ctx)}", err=True)
            sys.exit(getattr(error, "exit_code", 2))
        except (typer.Abort, KeyboardInterrupt):  # Ctrl-C outside a study's training (which says what is saved)
            typer.echo("interrupted", err=True)
            sys.exit(130)
        sys.exit(code if isinstance(code, int) else 0)

    def run_args(self, args: list[str], prog_name=None, **extra):
        """The command `args` names, with the plugins loaded; what it returns (a study: its
        file), and its errors raised as they are (the Python API's path, and main's)."""
        ARGV[:] = args
        args, named = plugins.split_arguments(args)
        args = _pack_auto(args)
        self.load_plugins(named)
        return super().main(args, prog_name, standalone_mode=False, **extra)

    def load_plugins(self, named: list[str]) -> None:
        """The plugins (entry points, $ABLATE_PLUGINS, --plugin), each failure one warning
        line; the studies they add become commands."""
        for plugin in plugins.discover(named):
            typer.echo(f"warning: plugin {plugin.name!r} ({plugin.source}) did not load: {plugin.error}", err=True)
        for name, entry in studies.STUDIES.items():
            if name not in self.commands:
                reason = _study_command(name, entry)
                if reason is not None:
                    typer.echo(f"warning: {reason}; every other command works", err=True)
                self.add_command(typer.main.get_command(app).commands[name], name)


def _argument_hint(error, ctx) -> str:
    """An option a study command does not take that is not a setting is most likely a model's
    constructor argument: say how those are set."""
    name = (getattr(error, "option_name", None) or "").lstrip("-").replace("-", "_")
    if type(error).__name__ != "NoSuchOption" or not name or ctx is None or ctx.info_name not in studies.STUDIES:
        return ""
    return (f"; a model's constructor argument ({name}?) is set with `ablate sweep --vary {name}=V1,V2` or in a "
            "study file's [base]; `ablate params MODEL` shows the model")


app = typer.Typer(
    cls=_OneLineErrors,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    help="Architecture ablations of small image CNNs: one command per study, tidy Parquet out. Plugins add "
         "studies, models, tasks, datasets and executors: installed ones (entry-point group ablate.plugins), "
         "ABLATE_PLUGINS=mod1,mod2, or --plugin MODULE on any command; `ablate list plugins` shows them.",
)


class OutputFormat(str, Enum):
    table = "table"
    csv = "csv"
    json = "json"


PARAMS_HELP = f"""Per-layer shapes, parameters, activations, receptive fields, MACs and FLOPs of MODEL.

MODEL is one of ablate's models (lenet5, tutorial, threeconv), a torchvision classifier
(vgg16, resnet18, vit_b_16, ...; built without weights), package.module:attr (your nn.Module
class or zero-argument factory), or a layer stack whose input sizes are inferred, such as
"Conv2d(20, 4, stride=2, padding=1), MaxPool2d(3, stride=1)" --input 50x12x12.

The model is built with its parameters on the meta device and counted on fake tensors: no
weights or activations are allocated, so any size of model or input counts in seconds. A model
whose forward needs real values falls back to a real forward pass (exit 2 if it cannot fit).
--training adds the backward pass; --compare adds fvcore's and torch's FlopCounterMode's FLOPs.

\b
{CONVENTION}
"""


@app.command(help=PARAMS_HELP)
def params(
    model: Optional[str] = typer.Argument(None, help="Model name, package.module:attr, or a layer-stack spec."),
    input: Optional[str] = typer.Option(None, "--input", help="Input shape CxHxW, without batch (default: the model's own)."),
    batch: int = typer.Option(1, "--batch", min=1, help="Count for a batch of N images."),
    training: bool = typer.Option(False, "--training", help="Also count the backward pass (a backward_flops "
                                  "column) and give forward, backward and training-step FLOPs per image."),
    compare: bool = typer.Option(False, "--compare", help="Add what fvcore and torch's FlopCounterMode count, "
                                 "per row and in all (runs a real forward: builds the weights)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Also write the rows to FILE (.parquet or .csv)."),
    format: OutputFormat = typer.Option(OutputFormat.table, "--format", help="How to print the rows on stdout."),
    wide: bool = typer.Option(False, "--wide", help="Print every column, however wide the table (output that is "
                                                    "not a terminal always has them all)."),
    list_models: bool = typer.Option(False, "--list", help="List the model names and exit."),
):
    from ablate import arch, count
    from ablate.results import files as results

    if list_models:
        return list_command(Topic.models, json_output=format == OutputFormat.json)
    if model is None:
        raise UsageError("give a MODEL (see `ablate params --list`)")
    if out is not None:
        results.check_writable(out)
    given = arch.parse_shape(input) if input is not None else None
    on_meta = count.build_meta(lambda: arch.load_model(model, given))  # cheap: no weights allocated
    natural = on_meta[1] if on_meta is not None else None
    if given is not None:
        shape = given
    elif natural is not None:
        shape = natural
    else:
        raise UsageError(f"{model!r} has no natural input shape (a model of yours gets one from the defaults of "
                         "its in_channels and image_size arguments): give one with --input CxHxW")
    if compare:  # fvcore traces a real forward pass: real weights
        counts = count.count_model(arch.load_model(model, shape)[0], shape, batch, training, compare=True)
    else:
        counts = count.count_meta(lambda: arch.load_model(model, shape)[0], shape, batch, training,
                                  real_below=count.real_below())
    for op, calls in sorted(counts.uncounted.items()):
        stderr.print(f"warning: no FLOP rule for {op} ({calls} calls): counted as 0", highlight=False)
    frame = counts.frame()
    if out is not None:
        results.write_frame(frame, out, {**results.provenance(ARGV), "model": model,
                                         "input_shape": "x".join(map(str, shape)), "batch": str(batch),
                                         "training": str(training)})
    if format == OutputFormat.csv:
        sys.stdout.write(frame.to_csv(index=False))
    elif format == OutputFormat.json:
        sys.stdout.write(frame.to_json(orient="records", indent=1) + "\n")
    else:
        report.print_wide(stdout, report.params_table(counts, model), wide)


class Topic(str, Enum):
    models = "models"
    studies = "studies"
    datasets = "datasets"
    augmentations = "augmentations"
    normalizations = "normalizations"
    permutations = "permutations"
    schedulers = "schedulers"
    optimizers = "optimizers"
    tasks = "tasks"
    executors = "executors"
    plugins = "plugins"


def _first_line(function) -> str:
    return (function.__doc__ or "").strip().splitlines()[0] if function.__doc__ else ""


def _study_row(name: str, entry: studies.StudyEntry) -> dict:
    if entry.build.__doc__:  # a study made from its options (sweep): no variants of its own
        return {"name": name, "variants": "given by its options", "description": _first_line(entry.build)}
    try:
        study = studies.get_study(name)
    except UsageError as error:  # a plugin's broken study: listed as such, the others as they are
        return {"name": name, "variants": "", "description": f"broken: {error}"}
    return {"name": name, "variants": ", ".join(study.variants), "description": study.description}


def _listing(topic: Topic) -> list[dict]:
    """The rows of `ablate list TOPIC`; studies, schedulers and optimisers without torch."""
    if topic == Topic.studies:
        return [_study_row(name, entry) for name, entry in studies.STUDIES.items()]
    if topic == Topic.plugins:
        return plugins.listing()
    if topic == Topic.executors:
        from ablate.execution import executors

        return [{"name": n, "description": e.description, "source": executors.EXECUTORS.owners[n]}
                for n, e in executors.EXECUTORS.items()]
    if topic == Topic.tasks:
        from ablate.training.tasks import TASKS

        return [{"name": n, "metrics": ", ".join(m.name for m in t.metrics) or "loss only",
                 "per-class accuracy": t.classifies, "source": TASKS.owners[n]} for n, t in TASKS.items()]
    if topic == Topic.schedulers:
        return [{"name": n, "description": s.description} for n, s in SCHEDULERS.items()]
    if topic == Topic.optimizers:
        return [{"name": n, **studies.optimizer_defaults(n)} for n in OPTIMIZERS]
    if topic == Topic.models:
        from ablate import arch

        return [{"name": e.name, "source": "ablate", "input": "x".join(map(str, e.input_shape)),
                 "description": e.description} for e in arch.registered_models()] + [
            {"name": n, "source": "torchvision", "input": "", "description": ""}
            for n in arch.torchvision_models()]
    if topic == Topic.datasets:
        from ablate.data import datasets as data

        return [{"name": n, "classes": ", ".join(d.classes), "description": d.description}
                for n, d in data.DATASETS.items()]
    from ablate import transforms

    if topic == Topic.augmentations:
        return [{"name": "none", "description": "no augmentation"}] + [
            {"name": n, "description": _first_line(f)} for n, f in transforms.AUGMENTATIONS.items()]
    registry = transforms.NORMALIZATIONS if topic == Topic.normalizations else transforms.PERMUTATIONS
    return [{"name": n, "description": _first_line(f)} for n, f in registry.items()]


@app.command("list")
def list_command(
    topic: Topic = typer.Argument(Topic.studies, help="What to list. models loads torch and torchvision "
                                  "(seconds) to list torchvision's classifiers too."),
    json_output: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
):
    """List the studies (the default), models, datasets, augmentations, normalisations,
    permutations, schedulers, optimisers, tasks, executors, or the plugins and what each added."""
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


class Amp(str, Enum):
    none = "none"
    bf16 = "bf16"


DEFAULTS = RunConfig()
# name: (type, default, option): every study command takes these; short help (docs/studies.md has the rest)
SHARED_OPTIONS = {
    "model": (Optional[str], None, typer.Option(
        help="A model name (`ablate list models`), a torchvision classifier, package.module:Class or a layer "
             "stack. Default: the study's (tutorial for most).")),
    "task": (Optional[str], None, typer.Option(
        help=f"classify, reconstruct or a plugin's (`ablate list tasks`). Default: the study's ({DEFAULTS.task}).")),
    "dataset": (Optional[str], None, typer.Option(
        help="cifar10, mnist, fashion-mnist, synthetic, or folder:PATH (your images). Default: "
             f"{DEFAULTS.dataset}.")),  # data.DATASETS, named without importing it (torch); a test checks
    "data_dir": (Optional[Path], None, typer.Option(help="Where the data is (default: $ABLATE_DATA, ~/.cache/ablate).")),
    "image_size": (Optional[int], None, typer.Option(help="Resize the images to NxN (default: the data's own; "
                                                          "folders 32).")),
    "test_fraction": (Optional[float], None, typer.Option(
        help="folder:PATH without train/ and test/: the share held out to test (0.2).")),
    "test_dataset": (Optional[str], None, typer.Option(help="Also test on this dataset (the same classes).")),
    "weights": (Optional[str], None, typer.Option(
        help="Start from pretrained weights: a torchvision name (DEFAULT) or a file; the head is new.")),
    "trainable": (Optional[str], None, typer.Option(help="all (the default) or head: train the head only (a probe).")),
    "epochs": (Optional[int], None, typer.Option(help=f"Default: {DEFAULTS.epochs}, or the study's own.")),
    "seeds": (str, "1", typer.Option(
        help="K: seeds 0..K-1; auto or auto:MAX: rounds of seeds until each difference is decided.")),
    "resolution": (Optional[float], None, typer.Option(
        help="--seeds auto: the difference that matters (default 0.5 accuracy points, 0.1 dB, 0.01 loss).")),
    "effect": (Optional[float], None, typer.Option(
        help="--dry-run --seeds auto: state the rule's power to find a difference of E (accuracy points, dB, loss).")),
    "pilot": (Optional[Path], None, typer.Option(
        help="--effect: a study file whose paired spread plans the power (default on --resume: --out's).")),
    "batch_size": (Optional[int], None, typer.Option(help=f"Default: {DEFAULTS.batch_size}.")),
    "lr": (Optional[float], None, typer.Option(help=f"Learning rate (default {DEFAULTS.lr}, or the study's own).")),
    "device": (Device, Device.auto, typer.Option(help="auto: cuda, then mps, then cpu.")),
    "limit_train": (Optional[int], None, typer.Option(help="A class-balanced subset of N train images.")),
    "limit_test": (Optional[int], None, typer.Option(help="A class-balanced subset of N test images.")),
    "deterministic": (Optional[bool], None, typer.Option(
        "--deterministic", help="torch's deterministic algorithms (bit-identical on GPUs too).")),
    "pack": (Optional[bool], None, typer.Option(
        "--pack/--no-pack", help="Train a variant's seeds packed into one model, or one by one. Default: "
                                 "whichever a few timed steps say is faster.")),
    "amp": (Amp, Amp.none, typer.Option(help="bf16: the forward pass and loss in bfloat16.")),
    "compile": (bool, False, typer.Option("--compile", help="torch.compile the model (a cold compile takes seconds).")),
    "out": (Optional[Path], None, typer.Option(help="Results file (default: results/STUDY.parquet).")),
    "resume": (bool, False, typer.Option("--resume", help="Keep the runs in --out; train the rest.")),
    "force": (bool, False, typer.Option("--force", help="Overwrite an existing --out.")),
    "plot": (Optional[Path], None, typer.Option(help="Also draw the study's figure to FILE (.png, .svg, .pdf).")),
    "save_models": (bool, False, typer.Option("--save-models", help="Keep each run's final weights beside --out.")),
    "workers": (Optional[int], None, typer.Option(
        min=1, help="Train on a local Dask cluster of N processes (with --slurm: N SLURM jobs).")),
    "threads": (Optional[int], None, typer.Option(
        help="torch threads per run, a column (default: the cores, or cores / --workers).")),
    "dask_scheduler": (Optional[str], None, typer.Option(
        "--dask-scheduler", help="Train on a running Dask scheduler, tcp://HOST:8786.")),
    "executor": (Optional[str], None, typer.Option(
        help="inprocess, dask or a plugin's (`ablate list executors`); default: dask for a cluster option.")),
    "slurm": (bool, False, typer.Option("--slurm", help="Train on --workers SLURM jobs (dask-jobqueue).")),
    "slurm_opts": (Optional[str], None, typer.Option(help='SLURM settings, like "partition=gpu time=02:00:00".')),
    "wide": (bool, False, typer.Option("--wide", help="Print every column of the tables, however wide.")),
    "dry_run": (bool, False, typer.Option("--dry-run", help="Print the plan and its time; train and write nothing.")),
}

# Every other setting of a run is an option of every study too (`--optimizer adam`): its type
# and range are config.SETTINGS', its help here. A study's variants that set it keep their own
# (planning.overridden_options says so, or refuses where every variant does).
SETTING_HELP = {
    "optimizer": "sgd, momentum (the default: SGD, 0.9), nesterov, rmsprop, adam or adamw.",
    "momentum": "SGD's momentum (default 0.9).",
    "weight_decay": "L2 weight decay (default 0; adamw's 0.01).",
    "scheduler": "The learning-rate schedule: none, step, exponential, cosine or onecycle.",
    "lr_step_size": "--scheduler step: epochs between decays.",
    "lr_gamma": "--scheduler step or exponential: the factor of a decay.",
    "lr_max": "--scheduler onecycle: the peak learning rate.",
    "cycle_momentum": "--scheduler onecycle: cycle the momentum against the rate.",
    "normalization": "How pixels are scaled: half (the default), standard, none, ...",
    "augment": "Augmentations joined by +, like crop+flip (default none).",
    "permutation": "none, fixed or fresh: pixels shuffled by one permutation or a new one per batch.",
    "strip_activations": "Replace every activation of the model by the identity.",
    "labels": "Train on N class-balanced labelled images.",
    "pretrain_epochs": "First pretrain an autoencoder for N epochs; start from its encoder.",
    "freeze_encoder": "With --pretrain-epochs: keep the encoder as pretrained.",
    "seed_source": "What the seed varies: all (the default), or init, order, augment or dropout, the rest fixed.",
}
PANELS = {  # --help groups the options: each shared option's panel ("Study" for a study's own)
    "Data": ("task", "dataset", "data_dir", "image_size", "test_fraction", "test_dataset", "limit_train",
             "limit_test", "normalization", "augment", "permutation"),
    "Model": ("model", "weights", "trainable", "strip_activations", "labels", "pretrain_epochs", "freeze_encoder"),
    "Training": ("epochs", "batch_size", "lr", "optimizer", "momentum", "weight_decay", "scheduler", "lr_step_size",
                 "lr_gamma", "lr_max", "cycle_momentum", "device", "deterministic", "amp", "compile", "pack"),
    "Seeds": ("seeds", "resolution", "effect", "pilot", "seed_source"),
    "Output": ("out", "resume", "force", "plot", "save_models", "dry_run", "wide"),
    "Cluster": ("workers", "threads", "dask_scheduler", "executor", "slurm", "slurm_opts"),
}


def _setting_options() -> dict:
    from ablate.config import SETTINGS

    options = {}
    for name, help in SETTING_HELP.items():
        setting = SETTINGS[name]
        flag = f"--{name.replace('_', '-')}"
        declared = (flag,) if setting.kind is bool else ()  # a flag: its default is off
        options[name] = (Optional[setting.kind], None, typer.Option(*declared, help=help))
    return options


SHARED_OPTIONS.update(_setting_options())
for _panel, _names in PANELS.items():
    for _option in _names:
        SHARED_OPTIONS[_option][2].rich_help_panel = _panel
assert set(SHARED_OPTIONS) == {n for names in PANELS.values() for n in names}, "an option without a panel"


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[status]}"),
        TimeRemainingColumn(), console=stderr, transient=False,
    )


def run_study(study: studies.Study, options: dict, taken: frozenset = frozenset()) -> Path | None:
    """Shared by every study command: the runner checks everything and creates nothing until
    then, trains, and gives back the rows this prints. Returns the study's file (None: a dry
    run)."""
    from ablate.execution import cluster, estimate, runner
    from ablate.results import files as results

    typed = runner.StudyOptions.of(options, ARGV, taken)  # every option typed, every combination checked
    wide = bool(options.get("wide"))
    prepared = runner.prepare(study, typed)
    for note in prepared.notes:
        stderr.print(note, highlight=False)
    out = prepared.out
    if typed.dry_run:
        if study.design:
            from ablate.study.designs import Design

            report.print_wide(stdout, report.design_table(Design.from_metadata(study.design)), wide)
        rows, start = estimate.dry_run(prepared)
        report.print_wide(stdout, report.dry_run_table(rows, study.name, out, prepared.auto and
                                                       prepared.auto.auto.spec(), start), wide)
        if typed.effect is not None:
            stdout.print(_power_said(prepared, typed), highlight=False)
        chosen = typed.executor_options
        if chosen.get("slurm"):
            stdout.print(f"each of the {chosen.get('workers') or 1} SLURM jobs would run:", highlight=False)
            sys.stdout.write(cluster.slurm_job_script(chosen["threads"], chosen.get("slurm_opts")))
        return
    metadata = {**results.provenance(typed.argv), "device": typed.device.type, "study": study.metadata()}
    trained = _train(prepared, metadata, typed.executor, typed.executor_options)
    frame = trained.runs
    report.print_wide(stdout, report.study_summary(frame, study.factors), wide)
    if trained.auto is not None:
        report.print_wide(stdout, report.auto_table(study.name, trained.auto), wide)
    if study.per_class:
        report.print_wide(stdout, report.class_table(trained.class_rows), wide)
    _analyses(study, out, wide)
    stderr.print(f"results: {out} (per-class rows: {results.per_class_path(out)})", highlight=False)
    if typed.plot is not None:
        from ablate.reporting import plot

        plot.draw(out, typed.plot, study.plot, run_ids=set(frame["run_id"]))
        stderr.print(f"figure: {typed.plot}", highlight=False)
    return out


def _power_said(prepared, typed) -> str:
    """--dry-run --seeds auto --effect E: the rule's power for E at MAX, at the spread of the
    pilot's paired differences (--pilot, or --out's on --resume), simulated through its rules."""
    from ablate.reporting import compare
    from ablate.results import folder
    from ablate.study import sequential

    rule, source = prepared.auto, typed.pilot or prepared.out
    if not Path(source).exists() and not typed.pilot:
        raise UsageError(f"--effect on --resume: {str(source)!r} holds no runs yet to give the spread; give --pilot FILE")
    frame, _, _ = folder.read_studies(Path(source))
    spread, seeds, metric = compare.paired_spread(frame)
    if metric != rule.metric:
        raise UsageError(f"--pilot {str(source)!r} is decided by {metric}, this study by {rule.metric}: give a pilot "
                         "of the same task")
    comparisons = len({r.variant for r in prepared.runs}) - 1
    power = sequential.rule_power(typed.effect / rule.scale, spread, rule.auto.most, rule.resolution / rule.scale,
                                  comparisons)
    return (f"power: with the paired spread of {str(source)!r} ({spread * rule.scale:.3g} over {seeds} seeds), "
            f"--seeds {rule.auto.spec()} decides a true Δ of {typed.effect:g} 'different' in {power['different']:.0%} "
            f"of studies ('equal' {power['equal']:.0%}, undecided at MAX {power['max']:.0%}; {power['seeds']:.1f} "
            f"seeds on average), its {comparisons} comparison{'s' * (comparisons != 1)} a family "
            f"({sequential.power_studies(comparisons, rule.auto.most):,} simulated studies through the rule, normal "
            "noise)")


def _analyses(study: studies.Study, out: Path, wide: bool) -> None:
    """After a component study its effects, after a study of the noise by source its table."""
    if study.design is None and "seed_source" not in study.factors:
        return
    from ablate.reporting import compare

    compared = compare.compare_studies([out])
    if study.name in compared.designs and study.name in set(compared.effects["study"]):
        report.print_wide(stdout, report.effects_table(compared.effects, study.name, compared.designs[study.name]),
                          wide)
    if study.name in set(compared.variance["study"]):
        report.print_wide(stdout, report.variance_table(compared.variance, study.name), wide)


def _train(prepared: runner.Prepared, metadata: dict, executor_name: str, options: dict):
    """Run the study under a progress display on stderr, on the executor chosen (a cluster is
    started, or refused in one line, before the display starts); Ctrl-C says what is saved,
    whenever it comes."""
    from ablate.execution import executors, runner
    from ablate.results import files as results

    progress = _progress()
    task = progress.add_task(prepared.study.name, total=0, status="")
    draw = _Drawing(progress, task, prepared)
    make = executors.EXECUTORS.get(executor_name).make
    try:
        with make({**options, "data_spec": runner.data_spec(prepared, options["data_dir"])}) as executor:
            with progress:
                return runner.run_study(prepared, metadata, executor, draw.on_run, draw.on_start, draw.on_progress)
    except KeyboardInterrupt as interrupted:  # runner.Interrupted while training; else before or after it
        if isinstance(interrupted, runner.Interrupted):
            saved, planned = interrupted.saved, interrupted.planned
        else:  # while a cluster started or stopped: what the file holds
            done = set(results.read_results(prepared.out)["run_id"]) if results.study_exists(prepared.out) else set()
            saved, planned = [r for r in prepared.runs if r.run_id in done], len(prepared.runs)
        listed = ", ".join(f"{r.variant}/{r.seed}" for r in saved) or "none"
        stderr.print(f"interrupted: {len(saved)} of {planned} runs are saved in "
                     f"{prepared.out} ({listed}); run the same command with --resume to finish",
                     highlight=False)
        raise typer.Exit(130)


class _Drawing:
    """The progress display, drawn from the executors' one contract (ablate.execution.progress.Progress),
    whichever executor trains: the images trained of all planned, the packs running and where,
    the last loss, and the images per second."""

    def __init__(self, progress, task, prepared):
        self.progress, self.task, self.name = progress, task, prepared.study.name
        self.images = len(prepared.data.train_y)
        self.running: dict[str, object] = {}  # pack key -> its last Progress
        self.finished: list = []
        self.planned = 0
        self.start = time.perf_counter()

    def on_start(self, todo) -> None:
        self.planned = len(todo)
        self.progress.update(self.task, total=sum(r.config.epochs for r in todo) * self.images)

    def on_progress(self, event) -> None:
        self.running[event.key] = event
        self.redraw()

    def on_run(self, run, status) -> None:
        self.finished.append(run)
        self.running.pop(run.run_id, None)
        if status == "diverged":
            self.progress.console.print(f"{run.label}: the loss became NaN or infinite; "
                                        "recorded as diverged, going on", highlight=False)
        if status == "failed":
            self.progress.console.print(f"{run.label} failed; recorded with its error, going on", highlight=False)
        self.redraw()

    def redraw(self) -> None:
        done = sum(r.config.epochs for r in self.finished) * self.images
        completed = done + sum(e.images for e in self.running.values())
        events = list(self.running.values())
        if len(events) == 1:
            e = events[0]
            description = f"{self.name} {e.label} epoch {e.epoch or 1}/{e.epochs}" + (
                "" if e.where == HERE else f" on {e.where.rsplit(':', 1)[-1]}")
        else:
            where = ", ".join(f"{e.label} on {e.where.rsplit(':', 1)[-1]}" for e in events)
            queued = self.planned - len(self.finished) - len(events)
            description = f"{self.name}: {max(queued, 0)} queued, {len(events)} running ({where}), " \
                          f"{len(self.finished)} done"
        losses = [e.loss for e in events if e.loss is not None]
        speed = completed / max(time.perf_counter() - self.start, 1e-9)
        self.progress.update(self.task, completed=completed, description=description,
                             status=(f"loss {losses[-1]:.3f}  " if losses else "") + f"{speed:,.0f} img/s")


def _command(name: str, help: str, build, own: dict, shared_help: dict | None = None) -> None:
    """Register `ablate NAME`: the shared options and `own` ({name: (type, default, typer
    option or argument)}); `build(own values, shared values)` makes the study to run.
    `shared_help` replaces the help of shared options where this study gives them a meaning
    of its own."""

    def command(**values):
        shared = {k: values[k] for k in SHARED_OPTIONS}
        built = build({k: values[k] for k in own}, shared)
        study, taken = built if isinstance(built, tuple) else (built, frozenset())
        return run_study(study, shared, taken)

    shared_options = dict(SHARED_OPTIONS)
    for option, text in (shared_help or {}).items():
        kind, default, typer_option = shared_options[option]
        typer_option = copy.copy(typer_option)
        typer_option.help = text
        shared_options[option] = (kind, default, typer_option)
    command.__signature__ = inspect.Signature([
        inspect.Parameter(option, inspect.Parameter.KEYWORD_ONLY, default=default,
                          annotation=Annotated[kind, typer_option])
        for option, (kind, default, typer_option) in {**own, **shared_options}.items()
    ])
    app.command(name, help=help)(command)


def _study_command(name: str, entry: studies.StudyEntry) -> str | None:
    """`ablate NAME` for a registered study, or, for one whose command cannot be made (a
    plugin's builder that fails, returns no Study, options it does not take), a command that
    says why in one line; returns that reason (None: the study is sound)."""
    try:
        _sound_study_command(name, entry)
        return None
    except Exception as error:  # noqa: BLE001 - a broken entry spoils only its own command
        reason = str(error) if isinstance(error, UsageError) else \
            f"study {name!r} cannot be made a command: {describe_error(error)}"
        who = studies.STUDIES.owners.get(name, "ablate")
        if who != "ablate" and f"plugin {who!r}" not in reason:
            reason = f"plugin {who!r}: {reason}"

        def broken(ctx: typer.Context):
            raise UsageError(reason)

        app.command(name, help=f"(broken: {reason})", context_settings={
            "ignore_unknown_options": True, "allow_extra_args": True, "help_option_names": []})(broken)
        return reason


def _untyped(default) -> type:
    """An option's type where its function does not annotate it: its default's, else text."""
    return type(default) if isinstance(default, (bool, int, float, str)) else str


def _sound_study_command(name: str, entry: studies.StudyEntry) -> None:
    """`ablate NAME` for a registered study: its own options (their types and defaults are its
    builder's), and any shared option the builder names is passed to it too, when given (left
    out, the builder's own default holds)."""
    signature = inspect.signature(entry.build).parameters
    if not isinstance(entry.options, dict) or not all(isinstance(h, str) for h in entry.options.values()):
        raise UsageError(f"study {name!r}: its options must be name=help text, got {entry.options!r:.80}")
    missing = [o for o in entry.options if o not in signature and o not in SHARED_OPTIONS]  # a shared one: its help
    if missing:
        raise UsageError(f"study {name!r} names option {missing[0]!r}, which its function does not take")
    hints = typing.get_type_hints(entry.build)
    own = {}
    for option, help in entry.options.items():
        if option in SHARED_OPTIONS:
            continue
        kind, default = hints.get(option, _untyped(signature[option].default)), signature[option].default
        flag = (f"--{option.replace('_', '-')}",) if kind is bool and default is False else ()  # off unless given
        own[option] = (kind, default, typer.Option(*flag, help=help, rich_help_panel="Study"))
    shared_help = {option: help for option, help in entry.options.items() if option in SHARED_OPTIONS}
    passes = [p for p in signature if p in SHARED_OPTIONS]
    built = None if entry.build.__doc__ else studies.get_study(name)  # its base and description, for the help
    base = {} if built is None else built.base  # a study made from options has none
    for option in ("epochs", "batch_size", "model", "dataset"):
        if option in base and option not in shared_help:
            shared_help[option] = f"{SHARED_OPTIONS[option][2].help} This study's own: {base[option]}."
    help = entry.build.__doc__ or built.description

    def build(own_values, shared):  # the study, and the shared options its builder took
        taken = {k: shared[k] for k in passes if shared[k] is not None}
        return studies.build(name, entry, **own_values, **taken), frozenset(taken)

    _command(name, help, build, own, shared_help)


for _name, _entry in studies.STUDIES.items():
    _study_command(_name, _entry)

_command(
    "run", r"Run the study kept in FILE.toml: name, description, \[base], and \[variants.NAME] tables or a \[vary] "
           r"or \[grid] table of NAME = \[values], or a \[components] table of NAME = \[OFF, ON] with design = "
           r"full, fractional, leave-one-out or add-one-in (`ablate components`). Options given "
           r"here override the file's \[base].",
    lambda own, shared: studies.from_toml(own["file"], shared["model"], own["name"], shared["out"]),
    {"file": (Path, ..., typer.Argument(help="The study file (.toml).")),
     "name": (Optional[str], None, typer.Option(help="The study's name (letters, digits, -, _, .). Default: the "
                                                    "file's `name`, else --out's file name, else the file's."))},
)


# ---------------------------------------------------------------- report and plot


class PlotKind(str, Enum):
    curves = "curves"
    sweep = "sweep"
    classes = "classes"
    variants = "variants"
    effects = "effects"
    cost = "cost"
    reconstructions = "reconstructions"
    interpolation = "interpolation"


class CostAxis(str, Enum):
    flops = "flops"
    seconds = "seconds"


class ReportTable(str, Enum):
    summary = "summary"
    effects = "effects"
    variance = "variance"


@app.command("report")
def report_command(
    paths: list[Path] = typer.Argument(..., help="Study files (.parquet) written by ablate, or folders of them."),
    epoch: Optional[int] = typer.Option(None, "--epoch", min=1, help="Compare at this epoch (default: the last)."),
    best: bool = typer.Option(False, "--best", help="Compare each run at its epoch of the best test value of its task's first metric (accuracy, PSNR; the lowest loss for a task with none)."),
    baseline: Optional[str] = typer.Option(None, "--baseline", help="Variant to compare with (default: the first)."),
    format: OutputFormat = typer.Option(OutputFormat.table, "--format"),
    correction: str = typer.Option("holm", "--correction", help="holm: a difference is marked * at a family-wise "
                                   "5 % over the study's comparisons (Holm's step-down); none: each at 5 %."),
    effect: Optional[float] = typer.Option(None, "--effect", help="Also the seeds for 80 % power to detect a "
                                           "difference of E (accuracy points, dB, loss) at the spread seen."),
    wide: bool = typer.Option(False, "--wide", help="Print every column, however wide the table (output that is "
                                                    "not a terminal always has them all)."),
    html: Optional[Path] = typer.Option(None, "--html", help="Also write the report as one self-contained page "
                                        "(.html): what was compared, the summary, the figures, the provenance."),
    table: ReportTable = typer.Option(ReportTable.summary, "--table", help="--format csv or json: the summary, or "
                                      "the effects of component studies (main effects, interactions, Shapley "
                                      "shares), or the noise by source of `ablate variance`."),
):
    """Mean, std and 95 % t-interval over seeds of the test loss and the task's metrics
    (accuracy, PSNR) per variant, and the paired difference to a baseline variant with its
    interval."""
    from ablate.reporting import compare
    from ablate.results import files as results
    from ablate.study import sequential

    if html is not None:
        results.check_writable(html, (".html", ".htm"))
    if table != ReportTable.summary and format == OutputFormat.table:
        raise UsageError(f"--table {table.value} chooses what --format csv or json writes; the terminal's report "
                         "prints every table")
    compared = compare.compare_studies(paths, epoch, best, baseline, correction, effect)
    for note in compared.notes:
        stderr.print(f"note: {note}", highlight=False)
    frame, summary, paths, label = compared.frame, compared.summary, compared.files, compared.label
    written = {ReportTable.effects: compared.effects, ReportTable.variance: compared.variance}.get(table, summary)
    if format == OutputFormat.csv:
        sys.stdout.write(written.to_csv(index=False))
    elif format == OutputFormat.json:
        sys.stdout.write(written.to_json(orient="records", indent=1) + "\n")
    if format == OutputFormat.table:
        auto = {}  # study -> its --seeds auto record: each variant's seeds and why
        for path in paths:
            with contextlib.suppress(ValueError, OSError):  # metadata not of this version's: none to show
                meta = results.read_metadata(path)
                record = sequential.AutoRecord.from_metadata(meta.get("auto_seeds"))
                name = results.study_metadata(meta)["name"]
                if record is not None and name is not None:
                    auto[name] = record
        for study in summary["study"].unique():
            report.print_wide(stdout, report.comparison_table(summary, study, label, auto=study in auto), wide)
            if study in auto:
                report.print_wide(stdout, report.auto_table(study, auto[study]), wide)
            if study in set(compared.effects["study"]):
                report.print_wide(stdout, report.effects_table(compared.effects, study, compared.designs[study]), wide)
            if study in set(compared.variance["study"]):
                report.print_wide(stdout, report.variance_table(compared.variance, study), wide)
    if html is not None:
        from ablate.reporting import html_report

        html_report.write(paths, frame, summary, label, html, compared.effects, compared.designs, compared.variance)
        stderr.print(f"report: {html}", highlight=False)


@app.command("plot")
def plot_command(
    path: Path = typer.Argument(..., help="A study file (.parquet) written by ablate, or a folder of them."),
    out: Path = typer.Option(..., "-o", "--out", help="Figure file: .png, .svg or .pdf (of a folder of several "
                                                       "studies: one figure each, FIG-STUDY.png)."),
    kind: Optional[PlotKind] = typer.Option(None, "--kind", help="curves (per epoch), sweep (a final metric "
                                            "against a numeric factor), classes (per-class accuracy), variants "
                                            "(the task's final test metric per variant, with intervals), effects (a component study's effects and "
                                            "Shapley shares), cost (the metric against training FLOPs or seconds, "
                                            "the Pareto front marked), reconstructions "
                                            "and interpolation (autoencoders trained with --save-models); "
                                            "default: the study's natural one."),
    factor: Optional[str] = typer.Option(None, "--factor", help="The numeric column of --kind sweep."),
    metric: str = typer.Option("loss", "--metric", help="What --kind sweep plots: loss, latent_corr or a task's metric (accuracy, psnr)."),
    pair: str = typer.Option("8,4", "--pair", help="--kind interpolation: the classes (indices) of the two "
                                                   "test images."),
    data_dir: Optional[Path] = typer.Option(None, "--data-dir", help="Where the dataset is, for the figures "
                                                                      "of saved models."),
    cost: CostAxis = typer.Option(CostAxis.flops, "--cost", help="--kind cost: training FLOPs (forward and "
                                  "backward, from the counter) or seconds per run."),
):
    """Draw a study's figure: learning curves, a sweep (the U-curve of conv1), per-class bars,
    steps with intervals, or an autoencoder's reconstructions and latent interpolation."""
    from ablate.reporting import plot
    from ablate.results import files as results
    from ablate.results import folder

    results.check_writable(out, plot.FORMATS)
    classes = studies.parse_numbers(pair, "--pair", int, 0)
    if len(classes) != 2:
        raise UsageError(f"--pair takes two class indices, like 8,4; got {pair!r}")
    files, skipped = [path], []
    if path.is_dir():
        _, files, skipped = folder.read_studies(path)
    for note in skipped:
        stderr.print(f"note: {note}", highlight=False)
    for file in files:  # a folder of several studies: one figure each, named after its file
        figure = out if len(files) == 1 else out.with_name(f"{out.stem}-{file.stem}{out.suffix}")
        for note in plot.draw(file, figure, kind and kind.value, factor, metric=metric, pair=tuple(classes),
                              data_dir=data_dir, by=cost.value):
            stderr.print(f"note: {note}", highlight=False)
        stderr.print(f"figure: {figure}", highlight=False)


class Tracker(str, Enum):
    tensorboard = "tensorboard"
    mlflow = "mlflow"


@app.command("export")
def export_command(
    path: Path = typer.Argument(..., help="A study file (.parquet) written by ablate, or a folder of them."),
    where: Optional[str] = typer.Argument(None, help="TensorBoard: the log folder (default runs/). MLflow: the "
                                                     "tracking URI, or a folder (default mlruns/)."),
    to: Tracker = typer.Option(..., "--to", help="tensorboard or mlflow."),
):
    """Export every run to a tracker: one tracked run per ablate run, its settings as parameters,
    its loss and metrics per epoch as steps, its study, variant and seed as tags. Runs exported
    before are left as they are. Needs the tracker's package: pip install 'ablate[tensorboard]'
    or 'ablate[mlflow]'."""
    from ablate.reporting import export
    from ablate.results import folder

    frame, _, skipped = folder.read_studies(path)
    for note in skipped:
        stderr.print(f"note: {note}", highlight=False)
    if to == Tracker.tensorboard:
        target = Path(where or "runs")
        if target.exists() and not target.is_dir():
            raise UsageError(f"{str(target)!r} is not a folder: give TensorBoard's log folder")
    try:
        done = export.to_tensorboard(frame, target) if to == Tracker.tensorboard else export.to_mlflow(frame, where)
    except OSError as error:
        raise EnvironmentFailure(f"exporting to {to.value} failed: {error.strerror or error}; the runs exported "
                                 "so far are there, and exporting again adds the rest") from None
    except (UsageError, EnvironmentFailure):
        raise
    except Exception as error:  # noqa: BLE001 - the tracker's own: a server that does not answer, refuses, ...
        raise EnvironmentFailure(f"exporting to {to.value} failed: {one_line(error)[:300]}; the runs exported so "
                                 "far are there, and exporting again adds the rest") from None
    said = f"exported {done.runs} run{'s' * (done.runs != 1)} to {to.value} at {done.where}"
    said += f"; {done.kept} {'were' if done.kept != 1 else 'was'} there already" if done.kept else ""
    said += f"; {done.failed} failed run{'s' * (done.failed != 1)} without epochs" if done.failed else ""
    stderr.print(said, highlight=False)


def main() -> None:
    app()
