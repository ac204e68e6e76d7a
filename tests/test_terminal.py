"""Tables that fit the terminal: at 80, 100 and 200 columns the summary, the report, the dry
run and `ablate params` fit, dropping columns in their stated order with one line naming
them; --wide and output that is not a terminal keep every column. --help is in panels and
fits 80 columns."""

import io
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console

from ablate import count
from ablate.reporting import compare, report
from ablate.arch import load_model

WIDTHS = (80, 100, 200)


def printed(table, width: int, terminal: bool = True, wide: bool = False) -> str:
    console = Console(file=io.StringIO(), width=width, force_terminal=terminal, color_system=None)
    report.print_wide(console, table, wide)
    return console.file.getvalue()


def lines_fit(text: str, width: int) -> bool:
    return all(len(line) <= width for line in text.splitlines())


@pytest.fixture
def summary(fake_study, tmp_path):
    path = fake_study(tmp_path / "s.parquet", variants=("relu", "a-long-variant-name-of-a-sweep", "linear-wide"))
    return compare.compare_studies([path])


def tables(summary):
    frame = summary.frame
    counts = count.count_meta(lambda: load_model("resnet18")[0], (3, 224, 224))
    dry = [{"variant": v, "seeds": 3, "activation": "relu", "params": 62006, "flops": 1_300_000, "epochs": 10,
            "images": 50000, "done": 0, "left": 3, "packing": "one by one (one run)", "seconds": 120.0}
           for v in ("relu", "linear", "linear-wide")]
    return {
        "report": lambda: report.comparison_table(summary.summary, "linearity", summary.label),
        "summary": lambda: report.study_summary(frame, ("activation", "fc1_features")),
        "params": lambda: report.params_table(counts, "resnet18"),
        "dry run": lambda: report.dry_run_table(dry, "linearity", "results/linearity.parquet"),
    }


@pytest.mark.parametrize("width", WIDTHS)
def test_every_table_fits_the_terminal_and_says_what_it_hid(summary, width):
    for name, make in tables(summary).items():
        full = make()
        headers = [str(c.header) for c in full.columns]
        text = printed(make(), width)
        assert lines_fit(text, width), (name, width, text)
        said = re.search(r"hidden to fit (\d+) columns: (.*?); --wide shows every column", " ".join(text.split()))
        natural = printed(make(), 10_000, terminal=False)
        if max(map(len, natural.splitlines())) <= width:
            assert said is None and text == printed(make(), width, terminal=False), name
            continue
        hidden = said[2].split(", ") if said else []
        assert said is None or int(said[1]) == width
        order = [h for h in full.drop_order if h in headers]  # those the table has
        assert hidden == order[:len(hidden)], (name, hidden)  # in the stated order, least important first
        for header in headers:  # what is not hidden is shown, perhaps shortened
            if header not in hidden:
                assert report._short(header) in text or header in text, (name, header)
        for cell in ("relu", "linear-wide", "a-long-variant"):
            if name in ("report", "summary"):
                assert cell in text, (name, cell)


def test_wide_and_output_that_is_not_a_terminal_keep_every_column(summary):
    for name, make in tables(summary).items():
        headers = [str(c.header) for c in make().columns]
        for text in (printed(make(), 80, wide=True), printed(make(), 80, terminal=False)):
            assert "hidden to fit" not in text and all(h in text for h in headers), name


def test_the_most_important_columns_stay(summary):
    text = printed(report.comparison_table(summary.summary, "linearity", summary.label), 80)
    assert "acc (%)" in text and "Δ acc (pt)" in text
    assert "a-long-variant-name-of-a" in text and "-sweep" in text  # a long name folds, whole
    params = printed(tables(summary)["params"](), 80)
    assert all(column in params for column in ("layer", "params", "flops"))


def _in_a_terminal(args: list[str], columns: int, cwd: Path) -> str:
    """`ablate ARGS` in a pseudo-terminal `columns` wide: what a user sees."""
    import fcntl
    import pty
    import struct
    import termios

    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 50, columns, 0, 0))
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    process = subprocess.Popen([sys.executable, "-m", "ablate", *args], stdin=follower, stdout=follower,
                               stderr=follower, cwd=cwd, env={**env, "TERM": "xterm"}, close_fds=True)
    os.close(follower)
    out = b""
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # the terminal closed: the process ended
            break
        if not chunk:
            break
        out += chunk
    process.wait(timeout=60)
    os.close(leader)
    return re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", out.decode()).replace("\r", "")


@pytest.mark.skipif(os.name != "posix", reason="a pseudo-terminal")
def test_a_real_terminal_of_100_columns_and_a_pipe(fake_study, tmp_path):
    path = fake_study(tmp_path / "s.parquet")
    seen = _in_a_terminal(["report", str(path)], 100, tmp_path)
    assert lines_fit(seen, 100) and "hidden to fit 100 columns" in seen, seen
    piped = subprocess.run([sys.executable, "-m", "ablate", "report", str(path)], capture_output=True, text=True,
                           cwd=tmp_path, env={**os.environ, "COLUMNS": "100"})
    assert "seeds needed" in piped.stdout and "hidden" not in piped.stdout
    help_text = _in_a_terminal(["sweep", "--help"], 80, tmp_path)
    assert lines_fit(help_text, 80)
    for panel in ("Study", "Data", "Model", "Training", "Seeds", "Output", "Cluster"):
        assert re.search(rf"╭─ {panel} ─", help_text), panel
    assert len(help_text.splitlines()) < 200
