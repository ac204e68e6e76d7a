"""Rich tables: every table the tool prints is built here, from plain records."""

from __future__ import annotations

import numbers
from typing import TYPE_CHECKING

from rich import box
from rich.console import Console
from rich.cells import cell_len
from rich.table import Table

if TYPE_CHECKING:  # annotations only: `ablate list` prints its table without loading pandas or torch
    import pandas as pd

    from ablate.count import Counts

NUMERIC = {"weights", "biases", "params", "shared", "trainable", "activations", "receptive_field", "macs",
           "flops", "backward_flops", "fvcore_flops", "torch_flops"}


def human(n: float) -> str:
    """1234567 -> '1.23 M'."""
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.3g} {unit}"
    return f"{n:g}"


def _amount(n: float, unit: str) -> str:
    """416520, 'MACs' -> '417 kMACs'; 0 -> '0 MACs'."""
    for prefix, size in (("P", 1e15), ("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.3g} {prefix}{unit}"
    return f"{n:g} {unit}"


def params_caption(counts: Counts) -> str:
    """The totals under the table: parameters, memory, work; per image where training."""
    batch = "per image" if counts.batch == 1 else f"for a batch of {counts.batch}"
    lines = [
        f"{counts.params:,} parameters ({human(counts.params)}), {counts.trainable:,} trainable; "
        f"memory: parameters {_amount(counts.param_bytes, 'B')}, activations kept for a training step "
        f"{_amount(counts.activation_bytes, 'B')} {batch} ({counts.dtype})",
        f"{_amount(counts.macs, 'MACs')}, {_amount(counts.flops, 'FLOPs')} {batch}",
    ]
    if counts.training:
        forward, backward = counts.flops / counts.batch, counts.backward_flops / counts.batch
        lines.append(f"per image: forward {_amount(forward, 'FLOPs')}, backward {_amount(backward, 'FLOPs')}, "
                     f"training step {_amount(forward + backward, 'FLOPs')}")
    if counts.compared:
        ratios = ", ".join(f"{name} {_amount(flops, 'FLOPs')} ({flops / max(counts.flops, 1):.2f} x ablate's)"
                           for name, flops in counts.compared.items())
        lines.append(ratios)
        lines.append("fvcore counts a multiply-add as one flop, and besides products only norms and adaptive "
                     "average pools; FlopCounterMode counts 2 per MAC of products (conv, matmul, attention) only")
    return "\n".join(lines)


def params_table(counts: Counts, title: str) -> Table:
    shape = "x".join(map(str, counts.input_shape))
    per = "per image" if counts.batch == 1 else f"for a batch of {counts.batch}"
    table = Table(
        title=f"{title}  (input {shape}, {per})",
        show_footer=True,
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        caption=params_caption(counts),
    )
    totals = {"layer": "total", "params": f"{counts.params:,}", "trainable": f"{counts.trainable:,}"}
    for column in ("macs", "flops", "backward_flops", "fvcore_flops", "torch_flops"):
        totals[column] = f"{sum(getattr(r, column) or 0 for r in counts.rows):,}"
    columns = counts.columns
    cells = [[f"{v:,}" if isinstance(v, int) else str(v) for v in (getattr(row, c) for c in columns)]
             for row in counts.rows]
    for i, column in enumerate(columns):
        widest = max([len(column), len(totals.get(column, ""))] + [len(r[i]) for r in cells])
        table.add_column(  # never cut or wrapped: a narrow terminal folds whole lines instead
            column, footer=totals.get(column, ""), justify="right" if column in NUMERIC else "left",
            no_wrap=True, min_width=widest,
        )
    for row in cells:
        table.add_row(*row)
    table.drop_order = ("shared", "weights", "biases", "trainable", "receptive_field", "activations", "fvcore_flops",
                        "torch_flops", "input_shape", "type", "macs", "backward_flops")
    return table


def listing_table(title: str, rows: list[dict]) -> Table:
    table = Table(title=title, box=box.SIMPLE_HEAD)
    for column in rows[0]:
        table.add_column(column)
    for row in rows:
        table.add_row(*("" if v is None else str(v) for v in row.values()))
    return table


def class_table(per_class: pd.DataFrame) -> Table:
    """Per-class test accuracy (mean over seeds), one column per variant."""
    means = per_class.pivot_table(index=["class_index", "class_name"], columns="variant",
                                  values="accuracy", aggfunc="mean", sort=False)
    variants = list(dict.fromkeys(per_class["variant"]))
    seeds = per_class["seed"].nunique()
    table = Table(title="per-class test accuracy (%)", caption=f"mean over {seeds} seed{'s' if seeds > 1 else ''}",
                  box=box.SIMPLE_HEAD)
    table.add_column("class")
    for variant in variants:
        table.add_column(variant, justify="right")
    for (_, name), row in means.iterrows():
        table.add_row(name, *(f"{100 * row[v]:.1f}" for v in variants))
    return table


# Words a header may be shortened to where a table does not fit the terminal.
ABBREVIATIONS = (("test ", ""), ("accuracy", "acc"), ("resolvable", "resolv."), ("seeds needed", "needed"),
                 ("trainable", "train."), ("activations", "acts"), ("receptive_field", "rf"),
                 ("output_shape", "out"), ("input_shape", "in"), ("fc1_features", "fc1"))


def _width(console: Console, table: Table) -> int:
    """The width `table` takes when nothing limits it (rendered: rich's measurement of a table
    can be short of it by a character or two, which would cut a cell)."""
    import io

    wide = Console(file=io.StringIO(), width=10_000, color_system=None, legacy_windows=False)
    return max((cell_len("".join(segment.text for segment in line)) for line in wide.render_lines(table, pad=False)),
               default=0)


def print_wide(console: Console, table: Table, wide: bool = False) -> None:
    """Print `table` to fit the terminal: a table too wide for it first loses its padding and
    takes short headers, then its columns in the order of `table.drop_order` (least important
    first; a line after it names them and says `--wide` shows them), and any cell still too
    wide folds onto more lines. `wide`, or output that is not a terminal (a pipe, a file),
    keeps every column at its full width."""
    needed = _width(console, table)
    if needed <= console.width:
        console.print(table)
        return
    if wide or not console.is_terminal:  # Console.print clamps its width to the terminal's: a wider console
        Console(file=console.file, width=needed, force_terminal=console.is_terminal,
                color_system=console.color_system, no_color=console.no_color).print(table)
        return
    table.padding, table.pad_edge = (0, 1), False
    for column in table.columns:
        column.header = _short(str(column.header))
    hidden = []
    for name in getattr(table, "drop_order", ()):
        if _width(console, table) <= console.width:
            break
        at = next((i for i, c in enumerate(table.columns) if c.header == _short(name)), None)
        if at is not None:
            hidden.append(name)
            del table.columns[at]
            for index, column in enumerate(table.columns):  # rich finds a column's cells by its index
                column._index = index
    if _width(console, table) > console.width:
        for column in table.columns:  # what is still too wide folds, at spaces first
            column.no_wrap, column.overflow, column.min_width = False, "fold", None
    console.print(table)
    if hidden:
        console.print(f"hidden to fit {console.width} columns: {', '.join(hidden)}; --wide shows every column",
                      highlight=False)


def _short(header: str) -> str:
    for long, short in ABBREVIATIONS:
        header = header.replace(long, short)
    return header


def _mean_std(values, metric=None) -> str:
    """Mean ± std of `values`, as `metric` shows them (a loss: 4 digits)."""
    if metric is None:
        return f"{values.iloc[0]:.4f}" if len(values) == 1 else f"{values.mean():.4f} ± {values.std():.4f}"
    if len(values) == 1:
        return metric.shown(values.iloc[0])
    return f"{metric.scale * values.mean():.2f} ± {metric.shown(values.std())}"


def _cell(value) -> str:
    import pandas as pd  # cheap here: what made these rows (results, runner) has loaded it

    if value is None or (isinstance(value, float) and value != value) or value is pd.NA:
        return "—"
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):  # numpy's bool_ is not Integral
        return f"{value:,}"
    return str(value)


def study_summary(frame: pd.DataFrame, factors: tuple[str, ...]) -> Table:
    """Per variant: final train loss, test loss and the task's metrics (mean ± std over seeds),
    an autoencoder's latent correlation, and the difference of the means to the first variant.
    Failed runs (one row, no epoch) are counted, never averaged."""
    from ablate import metrics as task_metrics
    from ablate.reporting.compare import last_epochs

    failed = frame["status"] == "failed" if "status" in frame else frame["epoch"].isna()
    final = last_epochs(frame[~failed & frame["epoch"].notna()])
    study = ", ".join(map(str, frame["study"].unique()))
    runs = frame.drop_duplicates("run_id")
    failed_runs = runs[failed.loc[runs.index]]
    counts = final.groupby("variant")["seed"].nunique()
    seeds = counts.max() if len(counts) else 0
    measured = task_metrics.present(final[final.split == "test"])
    latent = "latent_corr" in final and final["latent_corr"].notna().any()
    epochs = sorted(final["epoch"].unique())
    when = f"after {epochs[0]:g} epochs" if len(epochs) == 1 else \
        f"after each run's last epoch ({', '.join(f'{e:g}' for e in epochs)})"
    said = f"{counts.min()} to {seeds}" if len(counts) and counts.min() != seeds else f"{seeds}"
    title = (f"{study}: {when}, {said} seed{'s' if seeds > 1 else ''}"
             + (" (mean ± std)" if seeds > 1 else "")) if len(final) else f"{study}: no run finished"
    caption = None
    if len(failed_runs):
        error = failed_runs["error"].dropna() if "error" in failed_runs else ()
        caption = (f"{len(failed_runs)} of {len(runs)} runs failed"
                   + (f" (the first: {error.iloc[0]})" if len(error) else "")
                   + f" and {'are' if len(failed_runs) > 1 else 'is'} left out; --resume trains failed runs again")
    table = Table(title=title, caption=caption, box=box.SIMPLE_HEAD)
    columns = ["variant", *factors, "train loss", "test loss", *(f"test {m.label}" for m in measured),
               *(["latent corr"] if latent else []), "Δ test loss", *(f"Δ test {m.label}" for m in measured)]
    for column in columns:
        table.add_column(column, justify="left" if column == "variant" else "right", no_wrap=True)
    table.drop_order = ("train loss", "Δ test loss", *factors, "latent corr", "test loss")
    baseline = None
    best = final[final.split == "test"].groupby("variant")["loss"].mean().min()
    for variant, every in frame.groupby("variant", sort=False):
        rows = final[final["variant"] == variant]
        lost = failed_runs[failed_runs["variant"] == variant]
        if rows.empty:  # every run of it failed
            name = variant + (f" (failed: {len(lost)} run{'s' if len(lost) > 1 else ''})")
            empty = len(columns) - 1 - len(factors)
            table.add_row(name, *(_cell(every[f].iloc[0]) for f in factors), *["—"] * empty)
            continue
        train_rows, test_rows = rows[rows.split == "train"], rows[rows.split == "test"]
        means = [test_rows["loss"].mean(), *(test_rows[m.name].mean() for m in measured)]
        baseline = baseline or means
        name = variant + (" (diverged)" if (rows["status"] == "diverged").any() else "")
        name += f" ({len(lost)} failed)" if len(lost) else ""
        name += "  ← best test loss" if means[0] == best else ""
        cells = [_mean_std(train_rows["loss"]), _mean_std(test_rows["loss"]),
                 *(_mean_std(test_rows[m.name], m) for m in measured)]
        if latent:
            cells.append(_mean_std(test_rows["latent_corr"].dropna()) if test_rows["latent_corr"].notna().any() else "—")
        if means is baseline:
            deltas = ["—"] * len(means)
        else:
            deltas = [f"{means[0] - baseline[0]:+.4f}"] + [
                m.shown(mean - base, delta=True) for m, mean, base in zip(measured, means[1:], baseline[1:])]
        table.add_row(name, *(_cell(rows[f].iloc[0]) for f in factors), *cells, *deltas)
    return table


CLIPPED = "†"  # an interval shown clipped to the metric's range


def _interval_cell(row, digits=4) -> str:
    """A summary row's mean ± std [interval], in its unit; † where the interval was clipped."""
    if row["mean"] != row["mean"]:  # NaN: no seed has a value (every run diverged)
        return "—"
    text = f"{row['mean']:.{digits}f}"
    if row["std"] == row["std"]:  # not NaN: more than one seed
        mark = CLIPPED if row["ci_low"] != row["ci_low_raw"] or row["ci_high"] != row["ci_high_raw"] else ""
        text += f" ± {row['std']:.{digits}f}  [{row['ci_low']:.{digits}f}, {row['ci_high']:.{digits}f}]{mark}"
    return text


def clipped_note(rows) -> str | None:
    """The line under a summary whose intervals were clipped: which range, and why."""
    if not rows["clipped"].any():
        return None
    ranges = {"%": "accuracy 0-100 %", "": "a loss >= 0"}
    named = [ranges.get(u, u) for u in dict.fromkeys(rows.loc[rows["clipped"], "unit"])]
    return (f"{CLIPPED} the 95 % t-interval crosses the range the metric can take ({', '.join(named)}) and is shown "
            "clipped to it: too few seeds for so wide a spread (the CSV keeps the interval's own bounds, *_raw)")


def comparison_table(summary: pd.DataFrame, study: str, epoch_label: str, auto: bool = False) -> Table:
    """`ablate report`: one study's variants with 95 % intervals and paired differences;
    `auto`: its seeds were chosen by --seeds auto, whose decisions these intervals are not."""
    rows = summary[summary["study"] == study]
    base = rows["baseline"].iloc[0]
    seeds = rows["seeds"].max()
    from ablate.metrics import METRICS, heading

    # the loss, then each of the task's metrics (accuracy in %, PSNR in dB) in the order summarize gives
    named = [m.removeprefix("test_") for m in dict.fromkeys(rows.metric)]
    known = [METRICS.get(name) if name in METRICS else None for name in named]
    decides = named.index(next((m for m in rows.loc[rows["decides"], "metric"]), "test_loss").removeprefix("test_"))
    said = known[decides].label if known[decides] else named[decides]
    caption = ("mean ± std [95 % t-interval over seeds]; Δ: paired difference to the baseline over "
               f"shared seeds, {significance_said(rows)}; seeds needed: the seeds at which the interval of "
               f"Δ {said} would exclude 0 at the spread seen so far; 80 % power: the seeds at which a paired t-test "
               f"finds that Δ 4 times in 5{effect_said(rows, said)}; resolvable: the smallest Δ {said} the seeds "
               "it has resolve (the interval's half-width)")
    if auto:
        caption += ("; the seeds were chosen by --seeds auto, which stops early: these plain intervals do not "
                    "allow for that, the decisions below do")
    if seeds < 2:
        caption = "one seed: no interval can be given (train with --seeds 2 or more)"
    if seeds < 1:
        caption = "no run has a test value there: every one diverged (its loss became NaN or infinite)"
    table = Table(title=f"{study}: test metrics at {epoch_label}, baseline {base!r}", caption=caption,
                  box=box.SIMPLE_HEAD)
    columns = ["variant", "seeds", *(f"test {heading(m) if m else name}" for name, m in zip(named, known)),
               *(f"Δ {heading(m, delta=True) if m else name}" for name, m in zip(named, known)),
               "seeds needed", "80 % power", *(["for Δ effect"] if rows["seeds_for_effect"].notna().any() else []),
               f"resolvable Δ {heading(known[decides], delta=True) if known[decides] else said}"]
    for column in columns:
        table.add_column(column, justify="left" if column == "variant" else "right", no_wrap=True)
    # least important first: what more seeds would tell, then the loss (the metric decides), then the seeds
    table.drop_order = (columns[-1], "for Δ effect", "seeds needed", "80 % power", columns[2 + len(named)], columns[2],
                        "seeds")
    for variant, group in rows.groupby("variant", sort=False):
        metrics = [(group[group.metric == f"test_{name}"].iloc[0], 2 if m else 4) for name, m in zip(named, known)]
        deltas = []
        for row, digits in metrics:
            if row["diff"] != row["diff"]:
                deltas.append("—")
                continue
            text = f"{row['diff']:+.{digits}f}"
            if row["diff_ci_low"] == row["diff_ci_low"]:
                text += f" [{row['diff_ci_low']:+.{digits}f}, {row['diff_ci_high']:+.{digits}f}]"
                text += CLIPPED if row["diff_ci_low"] != row["diff_ci_low_raw"] or \
                    row["diff_ci_high"] != row["diff_ci_high_raw"] else ""
                text += " *" if row["significant"] else "  "
            deltas.append(text)
        cells = [_interval_cell(r, digits) for r, digits in metrics]
        needed = needed_cells(*metrics[decides])
        if "for Δ effect" not in columns:
            needed = [c for c, name in zip(needed, NEEDED) if name != "for Δ effect"]
        table.add_row(variant, str(metrics[0][0]["seeds"]), *cells, *deltas, *needed)
    note = clipped_note(rows)
    if note is not None:
        table.caption = f"{table.caption}\n{note}"
    return table


NEEDED = ("seeds needed", "80 % power", "for Δ effect", "resolvable")  # needed_cells, in order


def needed_cells(row, digits: int) -> tuple[str, str, str, str]:
    """A summary row's seeds needed (for its interval to exclude 0, for 80 % power at what it
    shows and at --effect) and resolvable difference, as the report shows them."""
    import pandas as pd  # cheap here: what made these rows has loaded it

    if row["variant"] == row["baseline"]:
        return "—", "—", "—", "—"

    def seeds(n):
        return "not resolvable" if pd.isna(n) else f"{int(n):,}"

    resolves = row["resolvable_diff"]
    return (seeds(row["seeds_needed"]), seeds(row["seeds_power"]),
            "—" if pd.isna(row["seeds_for_effect"]) else f"{int(row['seeds_for_effect']):,}",
            "—" if resolves != resolves else f"±{resolves:.{digits}f}")


def significance_said(rows) -> str:
    """What the `*` of a summary means: Holm's family-wise 5 %, or each comparison's own."""
    family = rows[(rows["variant"] != rows["baseline"]) & rows["decides"]]
    if (rows["correction"] == "none").all():
        return "* when its interval excludes 0 (each comparison at 5 %, uncorrected: --correction none)"
    return (f"* when its paired t-test rejects 0 at a family-wise 5 % over the study's {len(family)} "
            "comparisons of each metric (Holm; the interval is each comparison's own)")


def effect_said(rows, metric: str) -> str:
    """The --effect the `for Δ effect` column plans for, if any."""
    return "" if not rows["seeds_for_effect"].notna().any() else "; for Δ effect: the same, for the --effect given"


def auto_table(study: str, record) -> Table:
    """`--seeds auto`: per variant, the seeds it got, why it stopped, and the interval that decided
    (the file's metadata `auto_seeds`, an `ablate.study.sequential.AutoRecord`)."""
    from ablate.metrics import METRICS, heading

    metric = METRICS.get(record.metric) if record.metric in METRICS else None
    unit = heading(metric, delta=True).removeprefix(metric.label).strip(" ()") if metric else ""
    shown = f"{record.resolution:g}{' ' + unit if unit else ''}"
    table = Table(title=f"{study}: --seeds {record.seeds}, each variant against {record.baseline!r} on test "
                        f"{metric.label if metric else record.metric} (resolution ±{shown})",
                  caption=f"intervals of the paired difference, valid across the planned looks: alpha "
                          f"{record.alpha:g} spent over the looks after {', '.join(map(str, record.looks))} "
                          f"seeds{holm_said(record)} (docs/seeds.md)", box=box.SIMPLE_HEAD)
    delta = f"Δ {heading(metric, delta=True) if metric else record.metric}"
    for column in ("variant", "seeds", "stopped", "at seeds", delta):
        table.add_column(column, justify="left" if column in ("variant", "stopped") else "right", no_wrap=True)
    table.drop_order = ("at seeds",)
    for row in record.rows(2 if metric else 4):
        table.add_row(*row)
    return table


EFFECT_KINDS = {  # ablate.reporting.effects's kinds, as the table names them
    "main": "main effect", "interaction": "interaction", "total": "all on − all off", "shapley": "Shapley share",
    "ladder": "ladder gain", "drop": "leave-one-out drop", "gain": "add-one-in gain"}


def effects_rows(effects: pd.DataFrame, study: str, design) -> tuple[str, list[str], list[list[str]], str]:
    """A component study's effects of the deciding metric (ablate.reporting.effects) as the
    terminal and the page show them: title, header, rows (estimate [95 % interval over the
    seeds], * where `significant`: Holm's, or its own with --correction none) and caption (what
    the marks control, a fraction's defining relation)."""
    from ablate.metrics import METRICS, heading

    rows = effects[(effects["study"] == study) & effects["decides"]]
    metric = rows["metric"].iloc[0].removeprefix("test_")
    known = METRICS.get(metric) if metric in METRICS else None
    digits = 2 if known and known.scale != 1 else 4
    seeds = int(rows["seeds"].max())
    marks = (f"* where its t-test rejects 0 at a family-wise 5 % over the table's {len(rows)} rows (Holm; "
             "--correction none marks each on its own)" if (rows["correction"] == "holm").all()
             else "* where the interval excludes 0 (each effect on its own, uncorrected: --correction none)")
    caption = [f"per seed, then the mean [95 % t-interval] over {seeds} seed{'s' * (seeds > 1)} (the seeds pair the "
               f"variants); {marks}"]
    if design.kind == "full":
        caption.append(f"Shapley share: the component's gain averaged over every order of adding the {len(design.names)}"
                       " components (the shares sum to all on − all off in every seed); ladder gain: its gain when "
                       f"added in the order given ({' → '.join(design.names)})")
    if design.generators:
        caption.append(f"a fraction of resolution {design.resolution}: each estimate is the sum of the effects "
                       "aliased with it (defining relation I = "
                       + " = ".join(("" if s > 0 else "−") + "×".join(sorted(w, key=design.names.index))
                                    for w, s in design.relation().items()) + ")")
    if seeds < 2:
        caption = ["one seed: estimates without intervals (train with --seeds 2 or more)"]
    title = (f"{study}: what each component contributes to test {heading(known, delta=True) if known else metric} "
             f"({design.kind} design)")
    cells = []
    for _, row in rows.iterrows():
        text = f"{row['estimate']:+.{digits}f}"
        if row["ci_low"] == row["ci_low"]:
            text += f" [{row['ci_low']:+.{digits}f}, {row['ci_high']:+.{digits}f}]" + (" *" if row["significant"] else "  ")
        aliases = row["aliases"] if row["aliases"] and row["aliases"] != row["term"] else ""
        cells.append([EFFECT_KINDS.get(row["kind"], row["kind"]), row["term"], text, aliases])
    return title, ["effect", "term", "estimate", "aliases"], cells, "\n".join(caption)


def effects_table(effects: pd.DataFrame, study: str, design) -> Table:
    """`ablate report`: a component study's effects (effects_rows)."""
    title, header, cells, caption = effects_rows(effects, study, design)
    table = Table(title=title, caption=caption, box=box.SIMPLE_HEAD)
    for column in header:
        table.add_column(column, justify="right" if column == "estimate" else "left", no_wrap=column != "aliases")
    table.drop_order = ("aliases",)
    for row in cells:
        table.add_row(*row)
    return table


SOURCES_SAID = {"init": "initial weights", "order": "data order", "augment": "augmentation", "dropout": "dropout",
                "all": "all of them", "test set": "test set (bootstrap)"}


def variance_rows(noise: pd.DataFrame, study: str) -> tuple[str, list[str], list[list[str]], str]:
    """A noise-by-source table (ablate.reporting.variance) as the terminal and the page show it."""
    from ablate.metrics import METRICS, heading

    rows = noise[noise["study"] == study]
    metric = rows["metric"].iloc[0].removeprefix("test_")
    known = METRICS.get(metric) if metric in METRICS else None
    digits = 2 if known and known.scale != 1 else 4
    cells = []
    for _, row in rows.iterrows():
        std = "—" if row["std"] != row["std"] else f"{row['std']:.{digits}f}"
        if row["std_low"] == row["std_low"]:
            std += f" [{row['std_low']:.{digits}f}, {row['std_high']:.{digits}f}]"
        share = "—" if row["share"] != row["share"] else f"{row['share']:.2f}"
        if row["share_low"] == row["share_low"]:
            share += f" [{row['share_low']:.2f}, {row['share_high']:.2f}]"
        cells.append([SOURCES_SAID.get(row["source"], row["source"]), str(row["runs"]), std, share])
    sources = rows[~rows["source"].isin(["all", "test set"])]
    caption = ("each source varied alone by the seed, the others fixed; all: every source with the seed. std over "
               "the seeds [95 % chi-square interval]; share: its variance over all's [95 % F interval, "
               "conservative]; the "
               f"sources' shares sum to {sources['share'].sum():.2f} (1 where they add up independently)")
    if (rows["source"] == "test set").any():
        caption += ("; test set: the variance of each run's accuracy resampled over its test images (a bootstrap: "
                    "p (1 − p) / n), the runs' mean; its ratio to all's variance is not a share of it (every run is "
                    "scored on the same images): the sampling error of a test set this size")
    title = f"{study}: noise by source of test {heading(known) if known else metric}"
    return title, ["source", "runs", "std", "share of all's variance"], cells, caption


def variance_table(noise: pd.DataFrame, study: str) -> Table:
    title, header, cells, caption = variance_rows(noise, study)
    table = Table(title=title, caption=caption, box=box.SIMPLE_HEAD)
    for column in header:
        table.add_column(column, justify="left" if column == "source" else "right", no_wrap=True)
    for row in cells:
        table.add_row(*row)
    return table


def design_table(design) -> Table:
    """`--dry-run` of a component study: each variant's components, on (+) or off (−), and the
    design's aliases."""
    caption = f"{len(design.rows)} variants; " + ", ".join(f"{c.name}: {c.off!r} (−) / {c.on!r} (+)"
                                                        for c in design.components)
    if design.generators:
        caption += (f"\nresolution {design.resolution}; generators "
                    + ", ".join(f"{a} = {'' if s > 0 else '−'}{'×'.join(b)}" for a, b, s in design.generators)
                    + "; aliased two-factor interactions: "
                    + ("; ".join(design.said(p, c) for p, c in design.interactions() if c) or "none"))
    table = Table(title=f"the {design.kind} design of {len(design.names)} components", caption=caption,
                  box=box.SIMPLE_HEAD)
    table.add_column("variant", no_wrap=True)
    for name in design.names:
        table.add_column(name, justify="center", no_wrap=True)
    for variant, row in design.row_of().items():
        table.add_row(variant, *("+" if x else "−" for x in row))
    return table


def holm_said(record) -> str:
    """How a --seeds auto study's comparisons share the error rate, where its record says Holm."""
    if "Holm" not in record.method:  # a file of an earlier version: each comparison at alpha
        return ""
    return (f", family-wise over the study's {len(record.variants) - 1} comparisons: each spends alpha / r, r those "
            "not yet decided different (Holm's step-down)")


def _duration(seconds: float) -> str:
    minutes, seconds = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m" if hours else f"{minutes}m {seconds:02d}s" if minutes else f"{seconds}s"


def dry_run_table(rows: list[dict], study: str, out, auto: str | None = None, start: float = 0.0) -> Table:
    """`--dry-run`: the run matrix, what the results file holds, and the time it would take;
    under --seeds `auto` (its spec), the fewest and the most runs (pairs of them)."""
    def total(key: str):
        values = [r[key] if isinstance(r[key], tuple) else (r[key], r[key]) for r in rows]
        return tuple(sum(v[i] for v in values) for i in (0, 1))

    def span(value, shown=_cell) -> str:
        if not isinstance(value, tuple):
            return shown(value)
        least, most = map(shown, value)
        return least if least == most else f"{least} to {most}"

    done, left, seconds = sum(r["done"] for r in rows), total("left"), total("seconds")
    seconds = tuple(s + start for s in seconds)  # the command's start: imports, the data, the checks
    if auto is None:
        title = f"{study}: {done + left[0]} runs planned, {done} already in {out}, {left[0]} to train"
    else:
        title = (f"{study}: --seeds {auto} trains {span(left)} more runs ({done} already in {out}): the next "
                 "round at least, every undecided variant up to MAX at most")
    table = Table(title=title, caption=f"estimated time: {span(seconds, _duration)} on this device, "
                                       f"{_duration(start)} of it to start (from two short epochs of each kind of "
                                       "run, timed here); no run was saved, nothing was written",
                  box=box.SIMPLE_HEAD)
    for column in rows[0]:
        table.add_column(column, justify="left" if column == "variant" else "right", no_wrap=True)
    factors = [c for c in rows[0] if c not in ("variant", "seeds", "params", "flops", "epochs", "images", "done",
                                               "left", "packing", "seconds")]
    table.drop_order = ("images", "done", "flops", "params", "epochs", "packing", *factors)
    for row in rows:
        table.add_row(*(span(v, _duration) if k == "seconds" else human(v) if k == "flops" else span(v)
                        for k, v in row.items()))
    return table
