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
        self.tables, self.tags, self.loads, self.cell = [], [], [], None
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        if tag == "table":
            self.tables.append([])
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
        percent = r["metric"] == "test_accuracy"
        scale, digits = (100, 2) if percent else (1, 4)
        row = cells[(r["variant"], "test accuracy (%)" if percent else "test loss")]
        assert row[2] == str(r["seeds"]) and row[3] == f"{scale * r['mean']:.{digits}f}"
        assert row[5] == f"[{scale * r['ci_low']:.{digits}f}, {scale * r['ci_high']:.{digits}f}]"
        if r["variant"] == r["baseline"]:
            assert row[6] == "—"
        else:
            assert row[6] == f"{scale * r['diff']:+.{digits}f}"
            assert row[8] == ("*" if r["significant"] else "")


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
