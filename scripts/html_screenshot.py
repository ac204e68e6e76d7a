"""Regenerate docs/html-report.png from a real study: `ablate linearity` on Fashion-MNIST (3
epochs, 12,000 images, 3 seeds), its `ablate report --html` page, and a headless Chromium
screenshot of it (`apt-get install chromium`). Also writes the page at other widths for a look
(`--widths 400,1200,2400` into --shots), and fails on any console message of the page.

    .venv/bin/python scripts/html_screenshot.py [--widths 1200] [--shots DIR] [--keep DIR]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STUDY = ["linearity", "--dataset", "fashion-mnist", "--epochs", "3", "--seeds", "3", "--limit-train", "12000"]


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return name
    raise SystemExit("no Chromium: apt-get install chromium")


def shoot(page: Path, png: Path, width: int, height: int = 2400) -> list[str]:
    """A full-width screenshot of `page`; the page's console messages (none expected)."""
    done = subprocess.run([chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                           "--enable-logging=stderr", "--v=0", f"--window-size={width},{height}",
                           f"--screenshot={png}", page.as_uri()], capture_output=True, text=True, timeout=120)
    if done.returncode != 0 or not png.exists():
        raise SystemExit(f"chromium failed:\n{done.stderr}")
    return [line for line in done.stderr.splitlines() if "CONSOLE" in line or "Uncaught" in line]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--widths", default="1200", help="comma-separated; the first one is the docs' screenshot")
    parser.add_argument("--shots", type=Path, help="also keep a screenshot per width here (page-WIDTH.png)")
    parser.add_argument("--keep", type=Path, help="keep the study and the page in this folder")
    options = parser.parse_args()
    folder = options.keep or Path(tempfile.mkdtemp(prefix="ablate-page-"))
    folder.mkdir(parents=True, exist_ok=True)
    out, page = folder / "linearity.parquet", folder / "page.html"
    ablate = [sys.executable, "-m", "ablate"]
    if not out.exists():
        subprocess.run([*ablate, *STUDY, "--out", str(out)], check=True, cwd=folder)
    subprocess.run([*ablate, "report", str(out), "--html", str(page)], check=True, cwd=folder)
    widths = [int(w) for w in options.widths.split(",")]
    for i, width in enumerate(widths):
        png = ROOT / "docs" / "html-report.png" if i == 0 else (options.shots or folder) / f"page-{width}.png"
        said = shoot(page, png, width)
        if options.shots is not None and i == 0:
            shutil.copy(png, options.shots / f"page-{width}.png")
        if said:
            raise SystemExit("the page wrote to the console:\n" + "\n".join(said))
        print(f"{png} ({width} px wide)")
    if options.keep is None:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
