"""ablate from Python, for notebooks: `ablate.run` runs a study as the command line does (the
same command, so the same checks, files and numbers) and returns its runs; `ablate.report`
returns the summary `ablate report` prints. `ablate.load` (results.folder) reads files."""

from __future__ import annotations

import warnings
from pathlib import Path

import pandas as pd

from ablate.errors import UsageError, unknown_name


def command_line(command: str, options: dict) -> list[str]:
    """The arguments of `ablate COMMAND` that `options` (Python names and values) stand for:
    `epochs=10` is `--epochs 10`, `save_models=True` `--save-models`, `pack=False` `--no-pack`,
    a list `2,4`, `vary={"lr": [0.1, 0.2]}` `--vary lr=0.1,0.2`. A name the command does not
    take is refused, naming the ones it does."""
    import typer

    from ablate import cli

    group = typer.main.get_command(cli.app)
    group.load_plugins([str(p) for p in _listed(options.get("plugin"))])
    if command not in group.commands:
        raise unknown_name("command", command, sorted(group.commands), "`ablate --help` lists them")
    params = {p.name: p for p in group.commands[command].params if p.name != "help"}
    args, positional = [f"--plugin={p}" for p in _listed(options.get("plugin"))], []
    for name, value in options.items():
        param = params.get(name)
        if name == "plugin":
            continue
        if param is None:
            raise unknown_name(f"option of `ablate {command}`", name, sorted(params),
                               f"`ablate {command} --help` lists them (by their Python names: limit_train)")
        if value is None:
            continue
        if param.param_type_name == "argument":
            positional += [_text(v) for v in _listed(value)]
        elif getattr(param, "is_flag", False) and not (name == "pack" and value == "auto"):  # auto: the default
            if not isinstance(value, bool):
                raise UsageError(f"{name}={value!r}: {name} is True or False")
            if value:
                args.append(param.opts[0])
            elif param.secondary_opts:
                args.append(param.secondary_opts[0])
        elif getattr(param, "multiple", False):
            items = [f"{k}={_text(v)}" for k, v in value.items()] if isinstance(value, dict) else _listed(value)
            args += [f"{param.opts[0]}={_text(item)}" for item in items]
        elif not getattr(param, "is_flag", False):
            args.append(f"{param.opts[0]}={_text(value)}")
    return [command, *args, *positional]


def _listed(value) -> list:
    return [] if value is None else list(value) if isinstance(value, (list, tuple, set)) else [value]


def _text(value) -> str:
    """A value as the command line writes it: a list joined by commas, True as true."""
    if isinstance(value, (list, tuple)):
        return ",".join(_text(v) for v in value)
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _invoke(args: list[str]):
    """`ablate ARGS` in this process; its one-line errors raised as UsageError."""
    import typer

    from ablate import cli

    try:
        return typer.main.get_command(cli.app).run_args(args, "ablate")
    except typer.TyperException as error:  # typer's own checks: a value of the wrong type, out of range
        ctx = getattr(error, "ctx", None)
        raise UsageError(f"{ctx.command_path if ctx is not None else 'ablate'}: {error.format_message()}") from None


def run(study: str, /, **options) -> pd.DataFrame | None:
    """Run `ablate STUDY` with `options` (the command's, by their Python names:
    `ablate.run("linearity", epochs=10, dataset="fashion-mnist")`) and return its runs as
    `ablate.load` reads them: the same command, so the same checks, the same files and the
    same numbers. Bad input raises `ablate.UsageError` with the command's message; Ctrl-C
    keeps what is saved (`resume=True` finishes it). `dry_run=True` prints the plan and
    returns None."""
    from ablate.results.folder import load

    done = _invoke(command_line(study, options))
    if isinstance(done, int):  # an exit code: interrupted, its line printed
        if done == 130:
            raise KeyboardInterrupt(f"ablate {study}: interrupted; run it again with resume=True to finish")
        raise UsageError(f"ablate {study} stopped with exit code {done}")
    return None if done is None else load(done)


def report(*paths, epoch: int | None = None, best: bool = False, baseline: str | None = None,
           correction: str = "holm", effect: float | None = None) -> pd.DataFrame:
    """The summary `ablate report PATHS` prints, as a DataFrame (its `--format csv` columns):
    per study and variant, mean, std and 95 % interval over seeds, and the paired difference
    to the baseline. `paths`: study files or folders of them."""
    from ablate.reporting.compare import compare_studies

    if not paths:
        raise UsageError("give at least one study file or folder")
    compared = compare_studies([Path(p) for p in paths], epoch, best, baseline, correction, effect)
    for note in compared.notes:
        warnings.warn(note, stacklevel=2)
    return compared.summary
