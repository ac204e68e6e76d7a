"""The reference studies' figures, drawn headless with matplotlib from study files."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: no display is needed or wanted
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from ablate.errors import UsageError  # noqa: E402
from ablate.results import read_metadata, read_per_class, read_results, separate_configurations  # noqa: E402

KINDS = ("curves", "sweep", "classes", "variants")
FORMATS = (".png", ".svg", ".pdf")


def _title(frame: pd.DataFrame) -> str:
    seeds = frame["seed"].nunique()
    dataset = ", ".join(frame["dataset"].unique()) if "dataset" in frame else ""
    return f"{', '.join(frame['study'].unique())} on {dataset} ({seeds} seed{'s' if seeds > 1 else ''})"


def _colors(variants: list[str]) -> dict[str, str]:
    palette = plt.get_cmap("tab10" if len(variants) <= 10 else "tab20").colors
    return {v: palette[i % len(palette)] for i, v in enumerate(variants)}


def curves(frame: pd.DataFrame, path: Path) -> None:
    """Loss and accuracy per epoch; train dashed, test solid; mean over seeds, band = ± std."""
    variants = list(dict.fromkeys(frame["variant"]))
    colors = _colors(variants)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), constrained_layout=True)
    stats = frame.groupby(["variant", "split", "epoch"])[["loss", "accuracy"]].agg(["mean", "std"])
    for ax, metric, scale, label in ((axes[0], "loss", 1, "cross-entropy loss"),
                                     (axes[1], "accuracy", 100, "accuracy (%)")):
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
    axes[1].legend(handles=handles, loc="lower right", fontsize=8)
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


def sweep(frame: pd.DataFrame, factor: str, path: Path) -> None:
    """Final train and test loss against a numeric factor, error bars = ± std over seeds."""
    if factor not in frame:
        raise UsageError(f"no column {factor!r} in this file to sweep over")
    if not pd.api.types.is_numeric_dtype(frame[factor]) or pd.api.types.is_bool_dtype(frame[factor]):
        raise UsageError(f"--factor {factor}: a sweep needs a numeric column; use --kind curves for the others")
    final = frame[frame["epoch"] == frame.groupby("run_id")["epoch"].transform("max")]
    fig, ax = plt.subplots(figsize=(7, 4.5), constrained_layout=True)
    for split, style, color in (("train", "o--", "tab:blue"), ("test", "s-", "tab:orange")):
        s = final[final.split == split].groupby(factor)["loss"].agg(["mean", "std"]).sort_index()
        ax.errorbar(s.index, s["mean"], yerr=s["std"].fillna(0), fmt=style, color=color, capsize=3,
                    label=f"{split} loss")
        if split == "test":
            best = s["mean"].idxmin()
            ax.plot([best], [s["mean"][best]], "o", ms=12, mfc="none", mec="tab:red")
            ax.annotate(f"lowest test loss: {best}", (best, s["mean"][best]), textcoords="offset points",
                        xytext=(0, 14), ha="center", fontsize=9, color="tab:red")
    ax.set_xlabel(factor.replace("_", " "))
    values = final[factor].dropna()
    if len(values) and values.min() > 0 and values.max() / values.min() >= 100:
        ax.set_xscale("log")  # learning rates, batch sizes: decades apart
    ax.set_ylabel("final cross-entropy loss")
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title(_title(frame) + ": mean ± 1 std")
    fig.savefig(path)
    plt.close(fig)


def variants(frame: pd.DataFrame, path: Path) -> None:
    """Final test accuracy per variant, in the study's order, mean over seeds with its 95 %
    t-interval and each seed's value: a ladder of steps reads left to right."""
    from ablate.compare import interval

    final = frame[(frame.split == "test") & (frame["epoch"] == frame.groupby("run_id")["epoch"].transform("max"))]
    names = list(dict.fromkeys(frame["variant"]))
    fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(names)), 4.5), constrained_layout=True)
    for i, name in enumerate(names):
        values = 100 * final[final.variant == name]["accuracy"]
        low, high = interval(values)
        ax.bar(i, values.mean(), 0.6, color="tab:blue", alpha=0.35)
        if low == low:  # more than one seed
            ax.errorbar(i, values.mean(), yerr=[[values.mean() - low], [high - values.mean()]], color="k", capsize=4)
        ax.plot([i] * len(values), values, "o", color="tab:blue", ms=4)
        ax.annotate(f"{values.mean():.1f}", (i, values.mean()), textcoords="offset points", xytext=(12, 0),
                    fontsize=8, va="center")
    ax.set_xticks(range(len(names)), names, rotation=20 if max(map(len, names)) > 8 else 0, ha="right"
                  if max(map(len, names)) > 8 else "center")
    ax.set_ylabel("final test accuracy (%)")
    ax.grid(axis="y", alpha=0.3)
    ax.set_title(_title(frame) + ": mean, 95 % t-interval, seeds as dots")
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


def draw(path: Path, out: Path, kind: str | None = None, factor: str | None = None, run_ids=None) -> list[str]:
    """Draw the figure `kind` (default: the study's natural one, from the file's metadata) of
    the study file `path`, limited to `run_ids` when given. Returns notes for the user."""
    frame = read_results(path)
    if run_ids is not None:
        frame = frame[frame["run_id"].isin(run_ids)]
    frame, notes = separate_configurations(frame)
    study = read_metadata(path).get("study", {})
    kind = kind or study.get("plot", "curves")
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    if kind == "curves":
        curves(frame, out)
    elif kind == "sweep":
        sweep(frame, factor or numeric_factor(frame, tuple(study.get("factors", frame.columns))), out)
    elif kind == "variants":
        variants(frame, out)
    else:
        rows = read_per_class(path)
        if rows.empty:
            raise UsageError(f"--kind classes needs the per-class rows written beside {str(path)!r}")
        labels = frame.drop_duplicates("run_id").set_index("run_id")["variant"]
        rows = rows[rows["run_id"].isin(labels.index)].assign(variant=lambda r: r["run_id"].map(labels))
        classes(rows, out)
    return notes
