"""The README and docs/*.md: every `ablate ...` command they show names a subcommand and options
that exist, and every relative link points to a file (and heading) that exists.

Commands are read from fenced code blocks, indented code blocks and inline code spans (table
cells too) and checked against the click command Typer builds from `ablate.cli.app`; nothing
here imports torch.
"""

from __future__ import annotations

import enum
import re
import shlex
from pathlib import Path

import pytest
import typer

import ablate.cli

ROOT = Path(__file__).parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

# A command starts a line of an indented or ```bash code block (or follows `$ `, `&&` or `;`
# there), or a `# ...: ` comment of any code block, or is an inline code span; `ablate` may be
# `.venv/bin/ablate`. The untagged fenced blocks are printed output: "ablate loop  13,488" in a
# benchmark's table is no command.
COMMAND = re.compile(r"(?:^|&&\s*|;\s*|^\$\s+|^#[^:]*:\s+)((?:\S*/)?ablate\s+\S.*)")
COMMENT = re.compile(r"^#[^:]*:\s+((?:\S*/)?ablate\s+\S.*)")
SHELLS = {"bash", "sh", "shell", "console", "zsh"}
SPAN = re.compile(r"(`+)(.+?)\1", re.S)
OPTION = re.compile(r"--[A-Za-z0-9][A-Za-z0-9-]*")
BAD_INPUT = ("<!-- bad-input-table -->", "<!-- end -->")
# Rows of the bad-input table that show ablate refusing a made-up command or option on purpose.
DELIBERATE = re.compile(r"no such (option|command)", re.I)


def split_blocks(text: str):
    """(code lines, prose) of a markdown page: fenced and indented code blocks apart from the
    rest; each code line as (line, shell), shell meaning an indented block or a ```bash one."""
    code, prose = [], []
    fenced = indented = False
    shell = True
    previous_blank = True
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            fenced, indented = not fenced, False
            shell = line.strip().strip("`").strip() in SHELLS
            prose.append("")
        elif fenced:
            code.append((line, shell))
        elif line.startswith("    ") and (previous_blank or indented):
            indented = True
            code.append((line[4:], True))
        else:
            indented = indented and not line.strip()
            prose.append(line)
        previous_blank = not line.strip()
    return code, "\n".join(prose)


def code_commands(code: list[tuple[str, bool]]) -> list[str]:
    """Commands on code lines, with `\\` continuations and usage lines that go on as `[--opt ...]`.
    In a block of printed output, TOML or Python only a `# ...: ablate ...` comment and an
    inline code span are commands."""
    lines = [line for line, _ in code]
    commands = []
    for index, (line, shell) in enumerate(code):
        for span in SPAN.finditer(line):
            if re.match(r"(\S*/)?ablate\s", span.group(2)):
                commands.append(span.group(2))
        match = (COMMAND if shell else COMMENT).search(line)
        if not match:
            continue
        command = match.group(1)
        for following in lines[index + 1:]:
            if command.rstrip().endswith("\\"):
                command = command.rstrip()[:-1].rstrip() + " " + following.strip()
            elif following.startswith(" ") and following.strip().startswith(("[", "--")):
                command += " " + following.strip()
            else:
                break
        commands.append(command)
    return commands


def prose_commands(prose: str) -> list[str]:
    """Inline code spans that start with `ablate `, a span may run over a line break."""
    commands = []
    for paragraph in re.split(r"\n\s*\n", prose):
        for span in SPAN.finditer(paragraph):
            text = " ".join(span.group(2).split())
            if re.match(r"(\S*/)?ablate\s", text):
                commands.append(text)
    return commands


def shown_commands() -> list[tuple[str, str, bool]]:
    """(page, command, deliberate) for every ablate command shown. deliberate: a row of the
    bad-input table, whose topic or command may be wrong on purpose (its options are checked,
    unless the row shows ablate refusing an unknown option or command)."""
    found = []
    for page in PAGES:
        text = page.read_text()
        bad_rows = set()
        if BAD_INPUT[0] in text:
            table = text.split(BAD_INPUT[0])[1].split(BAD_INPUT[1])[0]
            bad_rows = {line for line in table.splitlines() if line.startswith("| `")}
        code, prose = split_blocks(text)
        found += [(page.name, command, False) for command in code_commands(code)]
        lines = []
        for line in prose.splitlines():
            if line in bad_rows:
                command, message = line.strip("|").split("` |", 1)
                if not DELIBERATE.search(message):
                    found.append((page.name, command.strip().strip("`"), True))
                line = message  # its message may show a command too
            lines.append(line)
        found += [(page.name, command, False) for command in prose_commands("\n".join(lines))]
    return found


def words(command: str) -> list[str]:
    command = re.sub(r"^(\S*/)?ablate\s+", "", command.strip())
    try:
        return shlex.split(command, comments=True)
    except ValueError:  # an unclosed quote in a usage line
        return command.split()


def options_of(command) -> set[str]:
    context = command.context_class(command)
    return {opt for param in command.get_params(context) for opt in (*param.opts, *param.secondary_opts)}


GROUP = typer.main.get_command(ablate.cli.app)
COMMANDS = {name: GROUP.commands[name] for name in GROUP.commands}
TRAINING = [name for name, command in COMMANDS.items() if "--epochs" in options_of(command)]


def topics(command) -> set[str] | None:
    """The values of a command's first argument, where it takes an Enum."""
    for param in command.params:
        if param.param_type_name == "argument":
            annotation = getattr(getattr(param, "type_descriptor", None), "annotation", None)
            if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
                return {member.value for member in annotation}
            return None
    return None


def problems(command: str, deliberate: bool = False) -> list[str]:
    """What is wrong with one command line shown in the docs: an unknown subcommand, option or topic."""
    tokens = words(command)
    if not tokens:
        return []
    if tokens[0].startswith("-"):
        allowed, name, subcommand = options_of(GROUP), "ablate", None
        tokens = ["", *tokens]
    elif tokens[0].isupper() or tokens[0].strip("[]").isupper():  # a placeholder: ablate STUDY ..., ablate COMMAND ...
        kind = TRAINING if tokens[0].strip("[]") == "STUDY" else list(COMMANDS)
        allowed = set.intersection(*(options_of(COMMANDS[n]) for n in kind))
        name, subcommand = tokens[0], None
    elif tokens[0] not in COMMANDS:
        return [] if deliberate else [f"no command {tokens[0]!r}"]
    else:
        name, subcommand = tokens[0], COMMANDS[tokens[0]]
        allowed = options_of(subcommand)
    allowed = allowed | {"--plugin"}  # taken before or after any command: read off the line before parsing
    found = []
    for token in tokens[1:]:
        bare = token.lstrip("[(")
        options = OPTION.findall(bare) if bare.startswith("--") else re.findall(r"^-[A-Za-z]\b", bare)
        found += [f"{name} has no option {option}" for option in options if option not in allowed]
    if subcommand is not None and not deliberate:
        values = topics(subcommand)
        positional = next((t for t in tokens[1:] if not t.lstrip("[").startswith("-")), None)
        if values is not None and positional is not None and not positional.strip("[]").isupper():
            for value in positional.strip("[]").split("|"):
                if value not in values:
                    found.append(f"{name}: {value!r} is not one of {sorted(values)}")
    return found


SAMPLE = """\
Run `ablate linearity
--epochs 2` or see the table:

| command | meaning |
|---|---|
| `ablate report PATH --best` | a cell |

    bash scripts/setup && .venv/bin/ablate conv1 --seeds 2
    ablate sweep --vary lr=0.1 \\
        --image-size 64
    ablate params MODEL [--input CxHxW]
                        [--out FILE]
    dask worker tcp://HEAD:8786 --nthreads 1

```toml
# study.toml: ablate run study.toml [--epochs 5]
```

```
pipeline        images/s
ablate loop       13,488
whole process: `ablate lr --values 0.1`
```
"""


def test_commands_are_read_from_spans_cells_and_code_blocks_but_not_from_output():
    code, prose = split_blocks(SAMPLE)
    assert sorted(code_commands(code) + prose_commands(prose)) == sorted([
        "ablate linearity --epochs 2",
        "ablate report PATH --best",
        ".venv/bin/ablate conv1 --seeds 2",
        "ablate sweep --vary lr=0.1 --image-size 64",
        "ablate params MODEL [--input CxHxW] [--out FILE]",
        "ablate run study.toml [--epochs 5]",
        "ablate lr --values 0.1",
    ])


def test_the_docs_show_ablate_commands():
    shown = {command for _, command, _ in shown_commands()}
    assert len(shown) > 100
    assert ".venv/bin/ablate linearity --epochs 10 --dataset fashion-mnist" in shown  # the README's main job


def test_every_command_in_the_docs_names_real_subcommands_and_options():
    wrong = [f"{page}: `{command}`: {problem}" for page, command, deliberate in shown_commands()
             for problem in problems(command, deliberate)]
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize("command, problem", [
    ("ablate linearity --epochs 3 --made-up-option 1", "linearity has no option --made-up-option"),
    ("ablate frobnicate --epochs 3", "no command 'frobnicate'"),
    ("ablate list studies [--jsn]", "list has no option --jsn"),
    ("ablate list modles", "list: 'modles' is not one of"),
    ("ablate list [studies|things] [--json]", "list: 'things' is not one of"),
    ("ablate STUDY --dataset x --channels 4", "STUDY has no option --channels"),
    ("ablate --verbose", "ablate has no option --verbose"),
    ("ablate plot PATH -x FILE", "plot has no option -x"),
])
def test_a_made_up_command_option_or_topic_is_caught(command, problem):
    assert any(p.startswith(problem) for p in problems(command)), problems(command)


@pytest.mark.parametrize("command", [
    "ablate conv1 --channels 4,8 --pack",
    "ablate linearity --no-pack --dry-run",
    "ablate plot PATH -o FILE [--kind KIND] [--metric loss|accuracy|latent_corr]",
    "ablate list [studies|models|datasets] [--json]",
    "ablate STUDY --dataset fashion-mnist --seeds 3",
    "ablate COMMAND --help",
    "ablate --help",
    'ablate sweep --vary "hidden=(256,),(512, 256)" --grid  # comment --not-an-option',
])
def test_real_commands_pass(command):
    assert problems(command) == []


# ---------------------------------------------------------------- links

LINK = re.compile(r"!?\[[^\]\n]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")


def anchors(page: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens."""
    _, prose = split_blocks(page.read_text())
    headings = (line.lstrip("#").strip().lower() for line in prose.splitlines() if re.match(r"#{1,6} ", line))
    return {re.sub(r"[^\w\- ]", "", heading).replace(" ", "-") for heading in headings}


def relative_links() -> list[tuple[Path, str]]:
    links = []
    for page in PAGES:
        _, prose = split_blocks(page.read_text())
        prose = re.sub(r"`[^`\n]*`", "", prose)
        for target in LINK.findall(prose):
            if not re.match(r"[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
                links.append((page, target))
    return links


def test_every_relative_link_points_to_an_existing_file():
    links = relative_links()
    assert len(links) > 20
    wrong = []
    for page, target in links:
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.exists():
            wrong.append(f"{page.relative_to(ROOT)}: {target}: no such file")
        elif ROOT.resolve() not in file.parents and file != ROOT.resolve():
            wrong.append(f"{page.relative_to(ROOT)}: {target}: outside the repository")
        elif anchor and file.suffix == ".md" and anchor not in anchors(file):
            wrong.append(f"{page.relative_to(ROOT)}: {target}: no heading #{anchor}")
    assert not wrong, "\n".join(wrong)


def test_every_docs_page_is_reachable_from_the_readme():
    linked = {(page.parent / target.partition("#")[0]).resolve() for page, target in relative_links()
              if page.name == "README.md"}
    pages = {page.resolve() for page in PAGES if page.parent.name == "docs"}
    assert pages <= linked, sorted(p.name for p in pages - linked)


def test_setup_says_what_it_does(tmp_path):
    """scripts/setup, on an up-to-date .venv (as after the README's commands): a line per step."""
    import hashlib
    import subprocess

    root = Path(__file__).parent.parent
    want = hashlib.sha1((root / "pyproject.toml").read_bytes() + (root / "scripts" / "setup").read_bytes()).hexdigest()
    stamp = root / ".venv" / ".ablate-setup"
    if not stamp.exists() or stamp.read_text().strip() != want:
        pytest.skip("the .venv is not the one scripts/setup made for this checkout: running it would install")
    done = subprocess.run(["bash", str(root / "scripts" / "setup")], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    lines = done.stderr.strip().splitlines()
    assert lines[0] == "setup: .venv is up to date (delete .venv/.ablate-setup to install again)"
    assert all(line.startswith("setup: ") for line in lines) and lines[-1].startswith("setup: done in ")
