"""The reference studies' figures, drawn headless with matplotlib from study files."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: no display is needed or wanted
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from ablate import metrics as task_metrics  # noqa: E402
from ablate import schema  # noqa: E402
from ablate.errors import UsageError  # noqa: E402
from ablate.reporting.compare import finished_runs, last_epochs  # noqa: E402
from ablate.results.files import (  # noqa: E402
    FIGURE_SUFFIXES, per_class_path, read_metadata, study_metadata, read_per_class, read_results, separate_configurations,
)

KINDS = ("curves", "sweep", "classes", "variants", "effects", "cost", "reconstructions", "interpolation")
COSTS = ("flops", "seconds")  # --kind cost's x axis: training FLOPs, or training wall time
FORMATS = FIGURE_SUFFIXES  # .png, .svg, .pdf


def _title(frame: pd.DataFrame) -> str:
    seeds = frame["seed"].nunique()
    dataset = ", ".join(map(str, frame["dataset"].dropna().unique())) if "dataset" in frame else ""
    where = f" on {dataset}" if dataset else ""
    return f"{', '.join(map(str, frame['study'].unique()))}{where} ({seeds} seed{'s' if seeds > 1 else ''})"


def _colors(variants: list[str]) -> dict[str, str]:
    palette = plt.get_cmap("tab10" if len(variants) <= 10 else "tab20").colors
    return {v: palette[i % len(palette)] for i, v in enumerate(variants)}


def curves(frame: pd.DataFrame, path: Path) -> None:
    """The loss and each of the task's metrics per epoch; train dashed, test solid; mean over
    seeds, band = ± std."""
    variants = list(dict.fromkeys(frame["variant"]))
    colors = _colors(variants)
    measured = task_metrics.present(frame)
    tasks = list(frame["task"].dropna().unique()) if "task" in frame else []
    losses = {"classify": "cross-entropy loss", "reconstruct": "reconstruction loss (MSE)"}  # ablate's own tasks
    panels = [("loss", 1, losses.get(tasks[0], "loss") if len(tasks) == 1 else "loss")]
    panels += [(m.name, m.scale, task_metrics.heading(m)) for m in measured]
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels) + 0.5, 4.2), constrained_layout=True,
                             squeeze=False)
    axes = axes[0]
    stats = frame.groupby(["variant", "split", "epoch"])[[name for name, _, _ in panels]].agg(["mean", "std"])
    for ax, (metric, scale, label) in zip(axes, panels):
        for variant in variants:
            for split, style in (("train", "--"), ("test", "-")):
                if (variant, split) not in stats.index.droplevel(2):
                    continue
                s = stats.loc[(variant, split)]
                mean, std = scale * s[(metric, "mean")], scale * s[(metric, "std")].fillna(0)
                ax.plot(s.index, mean, style, color=colors[variant], lw=1.8,
                        marker="o" if len(s) <= 12 else None, ms=3)
                ax.fill_between(s.index, mean - std, mean + std, color=colors[variant], alpha=0.15, lw=0)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    handles = [Line2D([], [], color=colors[v], lw=2, label=v) for v in variants]
    handles += [Line2D([], [], color="0.3", ls="--", label="train"), Line2D([], [], color="0.3", label="test")]
    axes[-1].legend(handles=handles, loc="lower right" if len(axes) > 1 else "upper right", fontsize=8)
    fig.suptitle(_title(frame) + ": mean over seeds, band ± 1 std")
    fig.savefig(path)
    plt.close(fig)


def numeric_factor(frame: pd.DataFrame, factors: tuple[str, ...]) -> str:
    for factor in factors:
        if factor in frame and pd.api.types.is_numeric_dtype(frame[factor]) \
                and not pd.api.types.is_bool_dtype(frame[factor]) and frame[factor].nunique() > 1:
            return factor
    raise UsageError("no numeric factor varies across this file's variants: use --kind curves "
                     "or name one with --factor")


def sweep(frame: pd.DataFrame, factor: str, path: Path, metric: str = "loss") -> None:
    """A final metric (train and test) against a numeric factor, error bars = ± std over seeds."""
    if factor not in frame:
        raise UsageError(f"no column {factor!r} in this file to sweep over")
    if not pd.api.types.is_numeric_dtype(frame[factor]) or pd.api.types.is_bool_dtype(frame[factor]):
        raise UsageError(f"--factor {factor}: a sweep needs a numeric column; use --kind curves for the others")
    if metric not in frame or not pd.api.types.is_numeric_dtype(frame[metric]) or frame[metric].isna().all():
        known = ["loss", *task_metrics.METRICS, "latent_corr"]
        held = [m for m in known if m in frame and frame[m].notna().any()]
        raise UsageError(f"--metric {metric}: this file has no values of it; it has "
                         f"{', '.join(held) if held else 'no values of ' + ', '.join(known)}")
    final = last_epochs(frame)
    splits = (("train", "o--", "tab:blue"), ("test", "s-", "tab:orange"))
    if metric == "latent_corr":  # measured once per run, on train images
        splits = (("test", "s-", "tab:purple"),)
    fig, ax = plt.subplots(figsize=(7, 4.5), constrained_layout=True)
    scale = task_metrics.METRICS.get(metric).scale if metric in task_metrics.METRICS else 1.0  # accuracy in %
    for split, style, color in splits:
        s = (scale * final[final.split == split].groupby(factor)[metric].agg(["mean", "std"])).sort_index()
        ax.errorbar(s.index, s["mean"], yerr=s["std"].fillna(0), fmt=style, color=color, capsize=3,
                    label=metric.replace("_", " ") if metric == "latent_corr" else f"{split} {metric}")
        if split == "test" and metric == "loss" and s["mean"].notna().any():
            best = s["mean"].idxmin()
            ax.plot([best], [s["mean"][best]], "o", ms=12, mfc="none", mec="tab:red")
            ax.annotate(f"lowest test loss: {best}", (best, s["mean"][best]), textcoords="offset points",
                        xytext=(0, 14), ha="center", fontsize=9, color="tab:red")
    ax.set_xlabel(factor.replace("_", " "))
    values = final[factor].dropna()
    if len(values) and values.min() > 0 and values.max() / values.min() >= 100:
        ax.set_xscale("log")  # learning rates, batch sizes: decades apart
    labels = {"loss": "final loss", "latent_corr": "mean |Pearson r| between latent coordinates",
              **{name: f"final {task_metrics.heading(m)}" for name, m in task_metrics.METRICS.items()}}
    ax.set_ylabel(labels.get(metric, metric))
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title(_title(frame) + ": mean ± 1 std")
    fig.savefig(path)
    plt.close(fig)


def variants(frame: pd.DataFrame, path: Path) -> None:
    """The task's first metric on the test split at the last epoch (accuracy, PSNR) per variant,
    in the study's order, mean over seeds with its 95 % t-interval and each seed's value: a
    ladder of steps reads left to right."""
    from ablate.reporting.compare import interval

    final = last_epochs(frame)
    final = final[final.split == "test"]
    metric = task_metrics.deciding(final)
    if metric is task_metrics.LOSS:
        raise UsageError("--kind variants draws the final test value of the task's metric (accuracy, PSNR), and "
                         "these runs have none (a task that reports only its loss, or no test rows): use --kind "
                         "curves, or --kind sweep --metric loss")
    names = list(dict.fromkeys(final["variant"]))
    fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(names)), 4.5), constrained_layout=True)
    for i, name in enumerate(names):
        values = metric.scale * final[final.variant == name][metric.name]
        low, high = interval(values)
        ax.bar(i, values.mean(), 0.6, color="tab:blue", alpha=0.35)
        if low == low:  # more than one seed
            ax.errorbar(i, values.mean(), yerr=[[values.mean() - low], [high - values.mean()]], color="k", capsize=4)
        ax.plot([i] * len(values), values, "o", color="tab:blue", ms=4)
        ax.annotate(f"{values.mean():.1f}", (i, values.mean()), textcoords="offset points", xytext=(12, 0),
                    fontsize=8, va="center")
    ax.set_xticks(range(len(names)), names, rotation=20 if max(map(len, names)) > 8 else 0, ha="right"
                  if max(map(len, names)) > 8 else "center")
    ax.set_ylabel(f"final test {task_metrics.heading(metric)}")
    ax.grid(axis="y", alpha=0.3)
    ax.set_title(_title(frame) + ": mean, 95 % t-interval, seeds as dots")
    fig.savefig(path)
    plt.close(fig)


def effects(frame: pd.DataFrame, study_path: Path, path: Path) -> None:
    """A component study's effects on the task's metric (ablate.reporting.effects): each main
    effect, interaction, Shapley share and ladder gain (or leave-one-out drop, add-one-in gain)
    with its 95 % interval over the seeds, a line at 0."""
    from ablate.reporting import compare
    from ablate.reporting import effects as effects_of
    from ablate.reporting.report import EFFECT_KINDS

    designs = compare.component_designs([study_path])
    if not designs:
        raise UsageError(f"--kind effects draws a component study's effects (`ablate components`), and "
                         f"{str(study_path)!r} is not one: use --kind variants or curves")
    table, _ = effects_of.effects(compare.pick_epochs(frame), designs)
    table = table[table["decides"]]
    if table.empty:
        raise UsageError(f"--kind effects: {str(study_path)!r} has no run of some variant of its design")
    metric = task_metrics.of_name(table["metric"].iloc[0].removeprefix("test_"))
    colors = dict(zip(effects_of.KINDS, plt.get_cmap("tab10").colors))
    labels = [EFFECT_KINDS[k] + ("" if k == "total" else f": {a if k == 'interaction' and a else t}")
              for k, t, a in zip(table["kind"], table["term"], table["aliases"])]  # an interaction: its alias chain
    fig, ax = plt.subplots(figsize=(5 + 0.07 * max(map(len, labels)), 1.2 + 0.32 * len(table)),
                           constrained_layout=True)
    for y, (_, row) in enumerate(table.iterrows()):
        color = colors[row["kind"]]
        if row["ci_low"] == row["ci_low"]:
            ax.plot([row["ci_low"], row["ci_high"]], [y, y], color=color, lw=2)
        ax.plot(row["estimate"], y, "o", color=color)
    ax.set_yticks(range(len(table)), labels, fontsize=8)
    ax.invert_yaxis()
    ax.axvline(0, color="k", lw=0.8)
    ax.grid(axis="x", alpha=0.3)
    ax.set_xlabel(f"effect on final test {task_metrics.heading(metric, delta=True)}")
    ax.set_title(_title(frame) + ": estimate and 95 % t-interval over seeds", fontsize=10)
    fig.savefig(path)
    plt.close(fig)


def run_costs(frame: pd.DataFrame) -> pd.DataFrame:
    """Per run: its variant, the deciding metric at its last epoch (shown units), and what its
    training cost: `train_flops` up to that epoch, and `seconds`, its epochs' training time (a
    pack's time shared among the seeds trained in it)."""
    final = last_epochs(frame)
    test = final[final["split"] == "test"]
    metric = task_metrics.deciding(test)
    train = frame[(frame["split"] == "train") & (frame["epoch"] > 0)]
    packed = train["packed"].fillna(1).clip(lower=1) if "packed" in train else 1
    seconds = (train["seconds"] / packed).groupby(train["run_id"]).sum()
    runs = test.set_index("run_id")
    return pd.DataFrame({"variant": runs["variant"], "value": metric.scale * runs[metric.name],
                         "flops": runs["train_flops"] if "train_flops" in runs else float("nan"),
                         "seconds": seconds.reindex(runs.index)})


def pareto(points: dict[str, tuple[float, float]], higher: bool = True) -> set[str]:
    """The variants that no other beats on both: a cost no higher and a value no worse, one of
    them strictly (`points`: variant -> (cost, value); `higher`: a higher value is better)."""
    def better(a, b):  # a beats b
        (ca, va), (cb, vb) = a, b
        va, vb = (va, vb) if higher else (-va, -vb)
        return ca <= cb and va >= vb and (ca < cb or va > vb)

    return {v for v, p in points.items() if not any(better(q, p) for w, q in points.items() if w != v)}


def cost(frame: pd.DataFrame, path: Path, by: str = "flops") -> None:
    """The task's final test metric against each variant's training cost (`by`: FLOPs or
    seconds), mean with 95 % t-intervals on both axes; the variants no other beats on both
    (lower cost and better metric) are marked and joined: the Pareto front."""
    from ablate.reporting.compare import interval

    if by not in COSTS:
        raise UsageError(f"--cost {by!r}: give {' or '.join(COSTS)}")
    runs = run_costs(frame)
    if runs[by].isna().all():
        why = ("(a file of an earlier ablate, or a model whose backward cannot be counted): use --cost seconds"
               if by == "flops" else "(no training epoch)")
        raise UsageError(f"--kind cost --cost {by}: the runs have no {'train_flops' if by == 'flops' else 'seconds'} "
                         f"{why}")
    metric = task_metrics.deciding(last_epochs(frame)[lambda f: f["split"] == "test"])
    names = list(dict.fromkeys(runs["variant"]))
    colors = _colors(names)
    points = {}
    fig, ax = plt.subplots(figsize=(7.5, 5), constrained_layout=True)
    for name in names:
        rows = runs[runs["variant"] == name].dropna(subset=[by, "value"])
        if rows.empty:
            continue
        x, y = rows[by].mean(), rows["value"].mean()
        points[name] = (x, y)
        (xl, xh), (yl, yh) = interval(rows[by]), interval(rows["value"])
        ax.errorbar(x, y, xerr=None if xl != xl else [[x - xl], [xh - x]],
                    yerr=None if yl != yl else [[y - yl], [yh - y]], fmt="o", color=colors[name], capsize=3,
                    label=name)
    front = pareto(points, metric.higher_is_better)
    line = sorted(points[v] for v in front)
    ax.plot([p[0] for p in line], [p[1] for p in line], "--", color="k", lw=0.8, label="Pareto front")
    for name in front:
        ax.annotate(name, points[name], textcoords="offset points", xytext=(6, 4), fontsize=8)
    spread = [p[0] for p in points.values() if p[0] > 0]
    if spread and max(spread) > 10 * min(spread):  # costs over orders of magnitude: a log axis
        ax.set_xscale("log")
    ax.set_xlabel("training FLOPs per run (forward and backward, from the counter)" if by == "flops"
                  else "training seconds per run")
    ax.set_ylabel(f"final test {task_metrics.heading(metric)}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2 if len(names) > 8 else 1)
    ax.set_title(_title(frame) + ": mean and 95 % t-intervals; the front is unbeaten on both", fontsize=10)
    fig.savefig(path)
    plt.close(fig)


def classes(per_class: pd.DataFrame, path: Path) -> None:
    """Per-class test accuracy as grouped bars: one group per class, one bar per variant."""
    variants = list(dict.fromkeys(per_class["variant"]))
    colors = _colors(variants)
    names = list(dict.fromkeys(per_class.sort_values("class_index")["class_name"]))
    stats = per_class.groupby(["variant", "class_name"])["accuracy"].agg(["mean", "std"])
    width = 0.8 / len(variants)
    fig, ax = plt.subplots(figsize=(max(8, 0.9 * len(names) * max(1, len(variants) / 3)), 4.5),
                           constrained_layout=True)
    for i, variant in enumerate(variants):
        s = stats.loc[variant].reindex(names)
        positions = [c + (i - (len(variants) - 1) / 2) * width for c in range(len(names))]
        ax.bar(positions, 100 * s["mean"], width, yerr=100 * s["std"].fillna(0), capsize=2,
               color=colors[variant], label=variant, error_kw={"ecolor": "0.35", "lw": 0.8})
    ax.set_xticks(range(len(names)), names, rotation=30 if max(map(len, names)) > 6 else 0, ha="right"
                  if max(map(len, names)) > 6 else "center")
    ax.set_ylabel("test accuracy (%)")
    ax.set_ylim(0, 100)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    seeds = per_class["seed"].nunique()
    ax.set_title(f"per-class test accuracy, {', '.join(per_class['study'].unique())} "
                 f"({seeds} seed{'s' if seeds > 1 else ''}, mean ± 1 std)")
    fig.savefig(path)
    plt.close(fig)


def _images(batch) -> list:
    """Images (C x H x W tensors) as arrays matplotlib shows: gray or RGB, values in [0, 1]."""
    shown = []
    for image in batch:
        image = image.detach().float()
        if image.min() < 0 or image.max() > 1:  # a normalised space: stretched for the eye
            image = (image - image.min()) / (image.max() - image.min() + 1e-12)
        shown.append(image[0].numpy() if image.shape[0] == 1 else image.permute(1, 2, 0).numpy())
    return shown


def _grid(rows: list[tuple[str, list]], title: str, path: Path, columns: list[str] | None = None) -> None:
    """Rows of images, each row labelled on its left."""
    width = max(len(images) for _, images in rows)
    fig, axes = plt.subplots(len(rows), width, figsize=(1.2 * width + 1.2, 1.25 * len(rows) + 0.6),
                             squeeze=False, constrained_layout=True)
    for r, (label, images) in enumerate(rows):
        for c in range(width):
            ax = axes[r][c]
            ax.set_xticks([])
            ax.set_yticks([])
            if c < len(images):
                ax.imshow(images[c], cmap="gray" if images[c].ndim == 2 else None, vmin=0, vmax=1)
            else:
                ax.axis("off")
            if c == 0:
                ax.set_ylabel(label, rotation=0, ha="right", va="center", fontsize=9)
            if r == 0 and columns:
                ax.set_title(columns[c], fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.savefig(path)
    plt.close(fig)


def _saved_models(path: Path, frame: pd.DataFrame, data_dir):
    """The test images (normalised as the runs saw them) and, per variant, the saved model of
    its lowest seed."""
    import torch

    from ablate import transforms
    from ablate.data.datasets import load_dataset
    from ablate.results import saved

    first = frame.sort_values("seed").drop_duplicates("variant")
    row = first.iloc[0]
    config = saved.config_from_row(row)
    data = load_dataset(config.dataset, data_dir, config.limit_train, config.limit_test, config.image_size,
                        config.test_fraction or 0.2)
    normalize = transforms.normalizer(config.normalization, data.train_x)
    models = [(r["variant"], saved.load_run_model(path, r, data)) for _, r in first.iterrows()]
    return data, lambda x: normalize(x.float() / 255), models, torch


def reconstructions(path: Path, frame: pd.DataFrame, out: Path, data_dir=None) -> None:
    """A test image of each class and, under it, its reconstruction by each variant."""
    data, prepare, models, torch = _saved_models(path, frame, data_dir)
    picks = [int((data.test_y == c).nonzero()[0]) for c in range(len(data.classes)) if (data.test_y == c).any()]
    x = prepare(data.test_x[picks])
    rows = [("test images", _images(x))]
    with torch.no_grad():
        for variant, model in models:
            rows.append((variant, _images(model(x))))
    _grid(rows, _title(frame) + ": reconstructions of test images (lowest seed)", out,
          [data.classes[data.test_y[i]] for i in picks])


def interpolation(path: Path, frame: pd.DataFrame, out: Path, pair: tuple[int, int] = (8, 4), data_dir=None) -> None:
    """Decode (1 - a) z1 + a z2 between the codes of two test images of classes `pair`, for
    a = 0, 0.2, ..., 1: one row per variant (report 001's figure)."""
    data, prepare, models, torch = _saved_models(path, frame, data_dir)
    for c in pair:
        if not 0 <= c < len(data.classes) or not (data.test_y == c).any():
            raise UsageError(f"--pair {pair[0]},{pair[1]}: class {c} has no test image; classes are 0 to "
                             f"{len(data.classes) - 1} ({', '.join(data.classes)})")
    x = prepare(data.test_x[[int((data.test_y == c).nonzero()[0]) for c in pair]])
    steps = [i / 5 for i in range(6)]
    rows = []
    with torch.no_grad():
        for variant, model in models:
            if not (hasattr(model, "encode") and hasattr(model, "decode")):
                raise UsageError(f"--kind interpolation needs a model with encode() and decode(); "
                                 f"{variant!r} has not")
            z = model.encode(x)
            rows.append((variant, _images(model.decode(torch.stack([(1 - a) * z[0] + a * z[1] for a in steps])))))
    names = [data.classes[c] for c in pair]
    _grid(rows, _title(frame) + f": from a {names[0]} to a {names[1]} in the latent space (lowest seed)", out,
          [f"a = {a:.1f}" for a in steps])


def draw(path: Path, out: Path, kind: str | None = None, factor: str | None = None, run_ids=None,
         metric: str = "loss", pair: tuple[int, int] = (8, 4), data_dir=None, by: str = "flops") -> list[str]:
    """Draw the figure `kind` (default: the study's natural one, from the file's metadata) of
    the study file `path`, limited to `run_ids` when given. Returns notes for the user. A
    usage error leaves no file or folder behind."""
    frame = read_results(path)
    if run_ids is not None:
        frame = frame[frame["run_id"].isin(run_ids)]
    done = finished_runs(frame, repr(str(path)), "draw")
    failed = frame.loc[frame["status"] == "failed", "run_id"].nunique()
    frame, notes = separate_configurations(done)
    if failed:
        notes.insert(0, f"{failed} failed run{'s are' if failed > 1 else ' is'} left out (no epoch to draw); "
                        "--resume trains failed runs again")
    try:
        study = study_metadata(read_metadata(path))
    except ValueError:  # metadata that is not ablate's JSON: as if there were none
        study = study_metadata({})
    if kind is None:
        kind = study["plot"]  # one ablate does not draw is refused below, naming it
        if kind not in KINDS:
            raise UsageError(f"{str(path)!r} names its figure {kind!r}, which ablate does not draw: give "
                             f"--kind ({', '.join(KINDS)})")
    factors = study["factors"]
    if factors is None:  # no metadata: any setting, never a seed, an epoch or a result
        factors = [c for c in frame.columns if c not in schema.outcome_names() | {"study", "variant"}]
    factors = tuple(map(str, factors))
    rows = None
    if kind == "classes":  # read before anything is drawn or made
        rows = read_per_class(path)
        if rows.empty:
            raise UsageError(f"--kind classes needs the per-class rows written beside {str(path)!r}")
        labels = frame.drop_duplicates("run_id").set_index("run_id")["variant"]
        rows = rows[rows["run_id"].isin(labels.index)].assign(variant=lambda r: r["run_id"].map(labels))
        if rows.empty:
            raise UsageError(f"--kind classes: the per-class rows beside {str(path)!r} are of none of its "
                             f"finished runs ({str(per_class_path(path))!r} holds other run_ids)")
    folder = Path(out).parent
    made = [folder, *folder.parents]
    made = made[:next(i for i, f in enumerate(made) if f.exists())]  # the folders this would create
    folder.mkdir(parents=True, exist_ok=True)
    try:
        if kind == "curves":
            curves(frame, out)
        elif kind == "sweep":
            sweep(frame, factor or numeric_factor(frame, factors), out, metric)
        elif kind == "variants":
            variants(frame, out)
        elif kind == "effects":
            effects(frame, Path(path), out)
        elif kind == "cost":
            cost(frame, out, by)
        elif kind == "reconstructions":
            reconstructions(Path(path), frame, out, data_dir)
        elif kind == "interpolation":
            interpolation(Path(path), frame, out, pair, data_dir)
        else:
            classes(rows, out)
    except UsageError:
        for created in made:  # innermost first; only if still empty
            try:
                created.rmdir()
            except OSError:
                break
        raise
    return notes
