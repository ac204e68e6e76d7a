"""docs/extending.md's source map (the indented block under "## Layout"): every path it names
exists, and every module of ablate/ has its line (a folder's __init__.py, one docstring line
saying what the stage holds, excepted)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).parent.parent
PAGE = ROOT / "docs" / "extending.md"


def layout() -> list[str]:
    """The lines of the map: the indented lines of the "## Layout" section."""
    text = PAGE.read_text(encoding="utf-8")
    assert "\n## Layout\n" in text, f"{PAGE.name} has no '## Layout' section"
    section = text.split("\n## Layout\n", 1)[1].split("\n## ", 1)[0]
    return [line for line in section.splitlines() if line.startswith("    ")]


def entries() -> list[str]:
    """The path each line of the map begins with."""
    return [m.group(1) for line in layout() if (m := re.match(r"    (\S+\.py)\s", line + " "))]


def test_every_path_in_the_map_exists():
    named = [p for line in layout() for p in re.findall(r"(?<![\w./])((?:ablate|benchmarks)/[\w/]+\.py)\b", line)]
    assert named, "the map names no file"
    missing = [p for p in named if not (ROOT / p).is_file()]
    assert not missing, f"{PAGE.name}'s map names files that do not exist: {missing}"


def test_every_module_has_its_line():
    listed = entries()
    modules = sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "ablate").rglob("*.py")
                     if "__pycache__" not in p.parts and not (p.name == "__init__.py" and p.parent.name != "ablate"))
    unlisted = [m for m in modules if m not in listed]
    assert not unlisted, f"{PAGE.name}'s map has no line for {unlisted}"
    assert len(listed) == len(set(listed)), f"a file has two lines in the map: {listed}"
