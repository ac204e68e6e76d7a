"""`ablate report --html`: one self-contained page per set of study files, whose tables hold the
numbers `ablate report --format csv` gives, whose figures are embedded, and which loads nothing
from outside."""

import io
from html.parser import HTMLParser

import pandas as pd
import pytest


class Page(HTMLParser):
    """The page's table cells (per table), its tags, and every attribute that could load
    something (src, href, srcset, data, poster; url(...) in style)."""

    def __init__(self, text):
        super().__init__()
        self.tables, self.tags, self.loads, self.cell, self.kinds = [], [], [], None, []
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        if tag == "table":
            self.tables.append([])
            self.kinds.append(dict(attrs).get("class", ""))
        elif tag == "tr" and self.tables:
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self.cell = ""
        for name, value in attrs:
            if name in ("src", "href", "xlink:href", "srcset", "data", "poster", "action") and value \
                    and not value.startswith("#"):
                self.loads.append((tag, name, value))

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self.cell is not None:
            self.tables[-1][-1].append(self.cell.strip())
            self.cell = None

    def handle_data(self, data):
        if self.cell is not None:
            self.cell += data


@pytest.fixture
def studied(tmp_path, ablate, tiny, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = ablate(["linearity", *tiny, "--seeds", "3", "--out", "lin.parquet"])
    assert result.exit_code == 0, result.output
    return tmp_path / "lin.parquet"


@pytest.mark.parametrize("options", [[], ["--epoch", "1"], ["--best"], ["--baseline", "linear"]])
def test_the_pages_numbers_are_the_csv_reports(studied, ablate, options):
    result = ablate(["report", studied, *options, "--html", "page.html"])
    assert result.exit_code == 0, result.output
    page = Page((studied.parent / "page.html").read_text())
    csv = pd.read_csv(io.StringIO(ablate(["report", studied, *options, "--format", "csv"]).stdout))
    summary = next(t for t in page.tables if t[0][:4] == ["variant", "metric", "seeds", "mean"])
    cells = {(row[0], row[1]): row for row in summary[1:]}
    assert len(cells) == len(csv)
    for _, r in csv.iterrows():
        percent = r["metric"] == "test_accuracy"  # the CSV is in the page's units: % and points
        digits = 2 if percent else 4
        assert r["unit"] == ("%" if percent else "") or (not percent and pd.isna(r["unit"]))

        def mark(name):  # † where the interval is clipped to the metric's range
            return "†" if (r[f"{name}_low"], r[f"{name}_high"]) != (r[f"{name}_low_raw"], r[f"{name}_high_raw"]) else ""

        row = cells[(r["variant"], "accuracy (%)" if percent else "loss")]
        assert row[2] == str(r["seeds"]) and row[3] == f"{r['mean']:.{digits}f}"
        assert row[4] == f"{r['std']:.{digits}f}"  # every cell, not only the mean
        assert row[5] == f"[{r['ci_low']:.{digits}f}, {r['ci_high']:.{digits}f}]" + mark("ci")
        if r["variant"] == r["baseline"]:
            assert row[6] == "—" and row[7] == "—" and row[9] == "—" and row[10] == "—" and row[11] == "—"
        else:
            assert row[6] == f"{r['diff']:+.{digits}f}"
            assert row[7] == f"[{r['diff_ci_low']:+.{digits}f}, {r['diff_ci_high']:+.{digits}f}]" + mark("diff_ci")
            assert row[8] == ("*" if r["significant"] else "")
            assert row[9] == ("not resolvable" if pd.isna(r["seeds_needed"]) else f"{int(r['seeds_needed']):,}")
            assert row[10] == ("not resolvable" if pd.isna(r["seeds_power"]) else f"{int(r['seeds_power']):,}")
            assert row[11] == f"±{r['resolvable_diff']:.{digits}f}"


def test_the_page_embeds_its_figures_and_loads_nothing(studied, ablate):
    assert ablate(["report", studied, "--html", "out/page.html"]).exit_code == 0
    text = (studied.parent / "out" / "page.html").read_text()
    page = Page(text)
    assert page.tags.count("svg") >= 1 and page.tags.count("figure") == page.tags.count("svg")
    assert page.loads == [] and "<script" not in text and "<link" not in text and "@import" not in text
    assert "url(" not in text.split("<body")[0]  # no font or image fetched by the style
    assert "prefers-color-scheme: dark" in text and "@media print" in text and "name='viewport'" in text
    for expected in ("What was compared", "relu", "linear-wide", "ablate linearity", "--resume", "torch"):
        assert expected in text, expected


def test_a_page_that_cannot_be_written_is_one_line(studied, ablate):
    result = ablate(["report", studied, "--html", "page.txt"])
    assert result.exit_code == 2 and "must end in .html or .htm" in result.output
    assert not (studied.parent / "page.txt").exists()


def test_the_page_lists_failed_and_diverged_runs_with_their_first_error_line(tmp_path, ablate, fake_study):
    path = fake_study(tmp_path / "s.parquet", variants=("alpha", "beta", "gamma"))
    frame = pd.read_parquet(path)
    one = lambda variant, seed: (frame["variant"] == variant) & (frame["seed"] == seed)  # noqa: E731
    failed = frame[one("beta", 2)].drop_duplicates("run_id").assign(
        epoch=None, split=None, loss=None, accuracy=None, status="failed", error="RuntimeError: boom\nsecond line")
    diverged = frame[one("gamma", 1)].assign(status="diverged", loss=float("nan"))
    frame = pd.concat([frame[~one("beta", 2) & ~one("gamma", 1)], failed, diverged], ignore_index=True)
    frame.to_parquet(path)
    result = ablate(["report", path, "--html", tmp_path / "page.html"])
    assert result.exit_code == 0, result.output
    page = Page((tmp_path / "page.html").read_text())
    problems = next(t for t in page.tables if t[0] == ["variant", "seed", "status", "first line of the error"])
    assert sorted(problems[1:]) == [["beta", "2", "failed", "RuntimeError: boom"],
                                    ["gamma", "1", "diverged", "its loss became NaN or infinite"]]
    summary = next(t for t in page.tables if t[0][:4] == ["variant", "metric", "seeds", "mean"])
    seeds = {(row[0], row[1]): row[2] for row in summary[1:]}
    assert seeds[("alpha", "accuracy (%)")] == "3" and seeds[("beta", "accuracy (%)")] == "2"


def test_a_page_of_runs_that_all_finished_says_so(studied, ablate):
    assert ablate(["report", studied, "--html", "page.html"]).exit_code == 0
    page = Page((studied.parent / "page.html").read_text())
    assert not any(t[0] == ["variant", "seed", "status", "first line of the error"] for t in page.tables)
    assert "every run finished" in (studied.parent / "page.html").read_text()


def test_text_with_markup_characters_reads_back_exactly_and_adds_no_element(tmp_path, ablate, fake_study):
    name = '<i>x</i> & "y" <script>'
    path = fake_study(tmp_path / "r.parquet", variants=("plain", name))
    result = ablate(["report", path, "--html", tmp_path / "page.html"])
    assert result.exit_code == 0, result.output
    text = (tmp_path / "page.html").read_text()
    page = Page(text)
    assert any(name in row for table in page.tables for row in table)  # the name, exactly, as a cell's text
    plain = fake_study(tmp_path / "p.parquet", variants=("plain", "other"))
    assert ablate(["report", plain, "--html", tmp_path / "plain.html"]).exit_code == 0
    import re

    def tags(html):  # the page's own elements; a figure draws its text as glyphs, as many as it has letters
        return sorted(Page(re.sub(r"<svg.*?</svg>", "", html, flags=re.S)).tags)

    assert tags(text) == tags((tmp_path / "plain.html").read_text())  # the name added no element


def test_the_page_reads_at_any_width_and_suggests_more_seeds_than_it_has(studied, ablate):
    """What keeps the page readable from a phone to a wide screen (checked by eye in headless
    Chromium at 400, 1200 and 2400 px: scripts/html_screenshot.py): long provenance values wrap,
    the packing note is a table of its own, a wide table keeps its variant column in view."""
    import re
    import shlex

    assert ablate(["report", studied, "--html", "page.html"]).exit_code == 0
    text = (studied.parent / "page.html").read_text()
    page = Page(text)
    facts = page.tables[page.kinds.index("facts")]
    assert [row[0] for row in facts] == ["command", "ablate", "torch", "torchvision", "device", "started", "file"]
    packing = next(t for t in page.tables if t and t[0] == ["variant", "runs", "packed speed", "why"])
    assert [row[0] for row in packing[1:]] == ["relu", "linear", "linear-wide"]
    summary = page.tables.index(next(t for t in page.tables if t[0][:4] == ["variant", "metric", "seeds", "mean"]))
    assert page.kinds[summary] == "sticky"
    for rule in ("table.facts td { text-align: left; white-space: normal; overflow-wrap: anywhere; }",
                 "table.sticky th:first-child, table.sticky td:first-child { position: sticky; left: 0;",
                 "th { white-space: normal;", "figure svg { width: 100%; min-width: 40rem;"):
        assert rule in text, rule
    more = shlex.split(re.search(r"the same command with more <code>--seeds</code> and <code>--resume</code>: "
                                 r"<code>(.*?)</code>", text)[1].replace("&#x27;", "'"))
    assert more.count("--seeds") == 1 and more[-1] == "--resume" and int(more[more.index("--seeds") + 1]) > 3


@pytest.mark.parametrize("command, seeds, needed, more", [
    ("ablate linearity --seeds 3", 3, [7, 6], "ablate linearity --seeds 6 --resume"),  # the closest undecided
    ("ablate linearity --seeds=2 --force", 2, [], "ablate linearity --seeds=4 --resume"),  # two more: none known
    ("ablate linearity", 1, [500], "ablate linearity --seeds 100 --resume"),  # at most 100
    ("ablate linearity --seeds auto:6", 6, [9], "ablate linearity --seeds auto:6 --resume"),
])
def test_the_suggestion_to_add_seeds_names_more_than_the_study_has(command, seeds, needed, more):
    from ablate.reporting import html_report

    summary = pd.DataFrame({"decides": [True] * len(needed), "seeds_needed": needed})
    assert html_report._more_seeds(command, seeds, summary) == more
