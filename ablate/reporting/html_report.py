"""`ablate report FILE... --html PAGE`: the studies of the files as one self-contained page to
share: what was compared, the summary with its intervals, the figures (inline SVG) and where
the numbers came from. Nothing on the page is fetched: no script, font or image from outside.
"""

from __future__ import annotations

import html
import math
import os
import tempfile
from pathlib import Path

import pandas as pd

from ablate import metrics
from ablate.errors import EnvironmentFailure, UsageError
from ablate.reporting import report
from ablate.results import files as results
from ablate.study import sequential

STYLE = """
:root { color-scheme: light dark; --fg: #1d1f23; --bg: #fff; --muted: #5f6670; --line: #d8dce1; --mark: #b3261e; }
@media (prefers-color-scheme: dark) { :root { --fg: #e6e8eb; --bg: #15171a; --muted: #a0a7b0; --line: #353a40;
  --mark: #ff8a80; } svg { background: #fff; border-radius: 4px; } }
body { font: 16px/1.5 system-ui, -apple-system, "Segoe UI", sans-serif; color: var(--fg); background: var(--bg);
  margin: 0 auto; padding: 1rem; max-width: 70rem; }
h1 { font-size: 1.6rem; } h2 { font-size: 1.3rem; border-top: 1px solid var(--line); padding-top: 1rem; }
.muted, .caption { color: var(--muted); font-size: 0.9rem; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; margin: 0.5rem 0 1rem; font-variant-numeric: tabular-nums; }
th, td { padding: 0.3rem 0.6rem; border-bottom: 1px solid var(--line); text-align: right; white-space: nowrap; }
th { white-space: normal; vertical-align: bottom; }  /* a long header wraps: the numbers set the width */
th:first-child, td:first-child { text-align: left; }
.caption { margin: -0.5rem 0 1rem; }
.significant { color: var(--mark); font-weight: 600; }
/* the variant stays in view while a wide table scrolls */
table.sticky th:first-child, table.sticky td:first-child { position: sticky; left: 0; background: var(--bg); }
/* provenance: long values (the command, a path) wrap instead of pushing the page wide */
table.facts td { text-align: left; white-space: normal; overflow-wrap: anywhere; }
table.facts td:first-child { white-space: nowrap; color: var(--muted); }
/* a figure keeps a legible size on a phone, and scrolls sideways there */
figure { margin: 1rem 0; overflow-x: auto; } figure svg { width: 100%; min-width: 40rem; height: auto; }
code { font-size: 0.9em; overflow-wrap: anywhere; }
@media print { body { max-width: none; } h2 { break-before: page; } figure { break-inside: avoid; } }
"""


def _e(value) -> str:
    return html.escape(str(value))


def _cell(value: str, kind: str = "") -> str:
    return f'<td class="{kind}">{_e(value)}</td>' if kind else f"<td>{_e(value)}</td>"


def _table(header: list[str], rows: list[list[str]], caption: str = "", classes: list[list[str]] | None = None,
           kind: str = "") -> str:
    """A table of text cells; `classes`: a CSS class per cell ("" for none); `kind`: the table's
    own class (sticky: its first column stays in view; facts: label and long value)."""
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(_cell(v, c) for v, c in zip(row, classes[i] if classes else [""] * len(row)))
                   + "</tr>" for i, row in enumerate(rows))
    cap = f"<p class='caption'>{_e(caption)}</p>" if caption else ""  # below, at the page's width
    table = f'<table class="{kind}">' if kind else "<table>"
    thead = f"<thead><tr>{head}</tr></thead>" if any(header) else ""
    return f'<div class="scroll">{table}{thead}<tbody>{body}</tbody></table></div>{cap}'


def _number(value: float, scale: float, digits: int) -> str:
    return "—" if value is None or value != value else f"{scale * value:.{digits}f}"


def _clipped(row, name: str) -> str:
    raw = (row[f"{name}_low_raw"], row[f"{name}_high_raw"])
    return report.CLIPPED if (row[f"{name}_low"], row[f"{name}_high"]) != raw else ""


def _summary(rows: pd.DataFrame, auto: bool = False) -> str:
    """The comparison of one study: per variant and metric, mean ± std [95 % interval] and the
    paired difference to the baseline with its interval; * where the interval excludes 0
    (`auto`: under seeds --seeds auto chose, which these plain intervals do not allow for)."""
    effect = rows["seeds_for_effect"].notna().any()
    header = ["variant", "metric", "seeds", "mean", "std", "95 % interval", "Δ to baseline", "Δ 95 % interval", "",
              "seeds needed", "seeds for 80 % power", *(["seeds for --effect"] if effect else []), "resolvable Δ"]
    body, marks = [], []
    for _, r in rows.iterrows():
        name = r["metric"].removeprefix("test_")
        known = metrics.METRICS.get(name) if name in metrics.METRICS else None
        digits = 2 if known else 4
        label = metrics.heading(known) if known else name  # the heading says: test metrics
        interval = "—" if r["ci_low"] != r["ci_low"] else \
            f"[{_number(r['ci_low'], 1, digits)}, {_number(r['ci_high'], 1, digits)}]" + _clipped(r, "ci")
        diff_interval = "—" if r["diff_ci_low"] != r["diff_ci_low"] else \
            f"[{r['diff_ci_low']:+.{digits}f}, {r['diff_ci_high']:+.{digits}f}]" + _clipped(r, "diff_ci")  # signed
        diff = "—" if r["diff"] != r["diff"] else f"{r['diff']:+.{digits}f}"
        significant = bool(r["significant"]) and r["diff"] == r["diff"]
        body.append([r["variant"], label, str(int(r["seeds"])), _number(r["mean"], 1, digits),
                     _number(r["std"], 1, digits), interval, diff, diff_interval, "*" if significant else "",
                     *(c for c, what in zip(report.needed_cells(r, digits), report.NEEDED)
                       if effect or what != "for Δ effect")])
        marks.append([""] * 6 + ["significant" if significant else ""] * 3 + [""] * (4 if effect else 3))
    base = rows["baseline"].iloc[0]
    note = report.clipped_note(rows)
    return _table(header, body, (f"{note}; " if note else "") +
                  f"mean and std over seeds, Student t 95 % intervals; Δ: the paired difference to "
                                f"the baseline {base!r} over the seeds both have, {report.significance_said(rows)}; "
                                "seeds needed: the seeds at which that interval would exclude 0 at the spread "
                                "seen so far; seeds for 80 % power: those at which a paired t-test finds that "
                                "difference 4 times in 5; resolvable Δ: the smallest difference the seeds it has "
                                "resolve"
                                + ("; the seeds were chosen by --seeds auto, which stops early: these plain "
                                   "intervals do not allow for that, the table below does" if auto else ""),
                  marks, kind="sticky")


def _compared(frame: pd.DataFrame, study: dict) -> str:
    """What was compared: each variant's factors, its seeds, and the settings every run shares."""
    factors = [f for f in study["factors"] or [] if f in frame]
    variants = []
    for variant, rows in frame.groupby("variant", sort=False):
        first = rows.iloc[0]
        seeds = ", ".join(str(s) for s in sorted(rows["seed"].dropna().unique()))
        variants.append([variant, *(_e_value(first[f]) for f in factors), seeds])
    shared = [c for c in ("task", "dataset", "model", "epochs", "batch_size", "base_lr", "optimizer", "scheduler",
                          "limit_train", "limit_test", "augment", "normalization") if c in frame and c not in factors
              and frame[c].astype(str).nunique() == 1]
    said = ", ".join(f"{c} {_e_value(frame[c].iloc[0])}" for c in shared)
    return _table(["variant", *factors, "seeds"], variants, kind="sticky") + f"<p class='muted'>every run: {_e(said)}</p>"


def _e_value(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return f"{value:g}" if isinstance(value, float) else str(value)


def _problems(frame: pd.DataFrame) -> str:
    """Failed and diverged runs, each with the first line of its error."""
    runs = frame.drop_duplicates("run_id")
    bad = runs[runs["status"].isin(["failed", "diverged"])]
    if bad.empty:
        return "<p class='muted'>every run finished (status ok)</p>"
    rows = [[r["variant"], str(r["seed"]), r["status"],
             (r["error"].strip().splitlines() or [""])[0] if isinstance(r.get("error"), str)
             else "its loss became NaN or infinite"]
            for _, r in bad.iterrows()]
    return _table(["variant", "seed", "status", "first line of the error"], rows,
                  "failed runs are left out of every number above; --resume trains them again")


def _figures(path: Path, study: dict) -> str:
    """The study's natural figure, its learning curves, its per-class accuracy where the study
    shows it, and an autoencoder's reconstructions and interpolation where its weights were
    saved, as inline SVG; a figure that cannot be drawn says why instead."""
    from ablate.reporting import plot

    kinds = [study["plot"], "curves", *(["classes"] if study["per_class"] else [])]
    rows = results.read_results(path)
    rebuilds = "task" in rows and (rows["task"] == "reconstruct").any()  # an autoencoder's figures: its own
    if rebuilds and results.models_path(path).is_dir() and any(results.models_path(path).glob("*.safetensors")):
        kinds += ["reconstructions", "interpolation"]
    out = []
    for kind in dict.fromkeys(kinds):
        with tempfile.TemporaryDirectory() as folder:
            svg = Path(folder) / f"{kind}.svg"
            try:
                plot.draw(path, svg, kind)
            except UsageError as error:
                out.append(f"<p class='muted'>figure {_e(kind)}: {_e(error)}</p>")
                continue
            text = svg.read_text()
        text = text[text.index("<svg"):]  # the XML prologue and DOCTYPE go: the page is HTML
        out.append(f"<figure>{text}<figcaption class='muted'>{_e(kind)}</figcaption></figure>")
    return "".join(out)


def _auto(record: sequential.AutoRecord | None) -> str:
    """--seeds auto: how many seeds each variant got and why (the metadata `auto_seeds`)."""
    if record is None:
        return ""
    rows = record.rows(2 if record.metric in metrics.METRICS else 4)
    return "<h3>How many seeds</h3>" + _table(
        ["variant", "seeds", "stopped", "at seeds", "interval that decided"], rows,
        f"--seeds {record.seeds}: trained in rounds, each variant stopped once its paired difference to "
        f"{record.baseline!r} on test {record.metric} was decided at resolution ±{record.resolution:g}; "
        f"alpha {record.alpha:g} spent over the looks after {', '.join(map(str, record.looks))} seeds"
        f"{report.holm_said(record)}, so that the intervals stay valid however the study stopped (docs/seeds.md)")


def _more_seeds(command: str, seeds: int, summary: pd.DataFrame) -> str:
    """The command with more seeds: as many as its closest undecided comparison needs (the
    report's seeds needed), at least two more than it has, at most 100."""
    import re
    import shlex

    needed = pd.to_numeric(summary.loc[summary["decides"], "seeds_needed"], errors="coerce").dropna()
    bigger = [int(n) for n in needed if n > seeds]
    more = min(100, max(seeds + 2, min(bigger))) if bigger else seeds + 2
    words = shlex.split(command)
    for i, word in enumerate(words):
        if word == "--seeds" and i + 1 < len(words):
            if words[i + 1].startswith("auto"):
                return shlex.join([*words, "--resume"])  # auto: --resume goes on to MAX, or a larger auto:MAX
            words[i + 1] = str(more)
            break
        if re.fullmatch(r"--seeds=\S+", word):
            if word.startswith("--seeds=auto"):
                return shlex.join([*words, "--resume"])
            words[i] = f"--seeds={more}"
            break
    else:
        words += ["--seeds", str(more)]
    return shlex.join([*(w for w in words if w not in ("--resume", "--force")), "--resume"])


def _packing(meta: dict) -> str:
    """How each variant's runs trained (the file's `packing`), as a table of its own."""
    packing = {v: c for v, c in (results.metadata_value(meta, "packing", dict) or {}).items() if isinstance(c, dict)}
    if not packing:
        return ""
    rows = [[v, _packed(c), f"{c['ratio']:.2f} x" if isinstance(c.get("ratio"), (int, float)) else "—",
             str(c.get("why", ""))] for v, c in packing.items()]
    return "<h4>How the runs trained</h4>" + _table(["variant", "runs", "packed speed", "why"], rows, kind="sticky")


def _packed(choice: dict) -> str:
    """"packed by 8" (runs of this variant and of others that share its network), "packed",
    or "one by one"."""
    if not choice.get("packed"):
        return "one by one"
    size = choice.get("size")
    return f"packed by {size}" if isinstance(size, int) and not isinstance(size, bool) else "packed"


def _provenance(meta: dict, path: Path, seeds: int, summary: pd.DataFrame) -> str:
    said = {key: results.metadata_value(meta, key, str, "") for key in
            ("command", "ablate_version", "torch_version", "torchvision_version", "device", "created")}
    command = said["command"]
    rows = [["command", command], ["ablate", said["ablate_version"]], ["torch", said["torch_version"]],
            ["torchvision", said["torchvision_version"]], ["device", said["device"]], ["started", said["created"]],
            ["file", str(path)]]
    body = _table(["", ""], [[k, v] for k, v in rows if v], kind="facts")
    if command:
        body += (f"<p>To reproduce it: <code>{_e(command)}</code>; to add seeds to it, the same command with more "
                 f"<code>--seeds</code> and <code>--resume</code>: <code>{_e(_more_seeds(command, seeds, summary))}"
                 "</code></p>")
    return body + _packing(meta)


def _effects(effects: pd.DataFrame | None, designs: dict | None, name: str) -> str:
    """A component study's effects table (ablate.reporting.effects), as the terminal shows it."""
    if effects is None or not designs or name not in designs or name not in set(effects["study"]):
        return ""
    title, header, rows, caption = report.effects_rows(effects, name, designs[name])
    return f"<h3>What each component contributes</h3><p>{_e(title)}</p>" + _table(header, rows, caption, kind="sticky")


def _variance(noise: pd.DataFrame | None, name: str) -> str:
    """A noise-by-source table (ablate.reporting.variance), as the terminal shows it."""
    if noise is None or name not in set(noise["study"]):
        return ""
    title, header, rows, caption = report.variance_rows(noise, name)
    return f"<h3>Noise by source</h3><p>{_e(title)}</p>" + _table(header, rows, caption, kind="sticky")


def page(paths: list[Path], frame: pd.DataFrame, summary: pd.DataFrame, label: str,
         effects: pd.DataFrame | None = None, designs: dict | None = None, noise: pd.DataFrame | None = None) -> str:
    """The HTML of the report of the studies in `paths` (`frame`: their rows, configurations
    separated; `summary`: compare.summarize of the chosen epochs; `label`: which epoch;
    `effects` and `designs`: the component studies' effects, compare.Compared's)."""
    sections = []
    for path in paths:
        meta = {}
        try:
            meta = results.read_metadata(path)
        except (ValueError, OSError):
            pass
        study = results.study_metadata(meta)
        names = list(dict.fromkeys(results.read_results(path)["study"]))
        for name in names:
            rows = summary[summary["study"] == name]
            if rows.empty:
                continue
            runs = frame[frame["study"] == name]
            seeds = runs["seed"].nunique()
            auto = sequential.AutoRecord.from_metadata(meta.get("auto_seeds"))
            sections.append(
                f"<section><h2>{_e(name)}</h2><p>{_e(study['description'])}</p>"
                f"<h3>What was compared</h3>{_compared(runs, study)}"
                f"<h3>Test metrics at {_e(label)}</h3>{_summary(rows, auto is not None)}{_auto(auto)}"
                f"{_effects(effects, designs, name)}{_variance(noise, name)}"
                f"<h3>Runs that did not finish well</h3>{_problems(runs)}"
                f"<h3>Figures</h3>{_figures(path, study)}"
                f"<h3>Where the numbers came from</h3>{_provenance(meta, path, seeds, rows)}</section>")
    title = "ablate report: " + ", ".join(dict.fromkeys(summary["study"]))
    return (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
            f"<meta name='viewport' content='width=device-width, initial-scale=1'><title>{_e(title)}</title>"
            f"<style>{STYLE}</style></head><body><h1>{_e(title)}</h1>{''.join(sections)}</body></html>\n")


def write(paths: list[Path], frame: pd.DataFrame, summary: pd.DataFrame, label: str, out: Path,
          effects: pd.DataFrame | None = None, designs: dict | None = None, noise: pd.DataFrame | None = None) -> None:
    """The page, written atomically to `out` (.html)."""
    out = Path(out)
    results.check_writable(out, (".html", ".htm"))
    text = page(paths, frame, summary, label, effects, designs, noise)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            file.write(text)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # as readable as any other page
        os.replace(tmp, out)
    except OSError as error:
        raise EnvironmentFailure(f"{results.failure_reason(error)} while writing {str(out)!r}") from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
