"""Start-up: help and listings import no torch, pandas, pyarrow, matplotlib or scipy (they take
seconds); what the help names without importing them is checked against the real registries."""

import subprocess
import sys

from ablate import config, transforms
from ablate.cli import SHARED_OPTIONS
from ablate.data import datasets as data
from ablate.study import studies

HEAVY = ("torch", "torchvision", "pandas", "pyarrow", "matplotlib", "scipy")

HELP_AND_LISTINGS = f"""
import sys
from typer.main import get_command
from typer.testing import CliRunner
from ablate.cli import app

def heavy():
    return [m for m in {HEAVY!r} if m in sys.modules]

assert not heavy(), f"import ablate.cli imported {{heavy()}}"
commands = [["--help"], ["list"], ["list", "studies", "--json"], ["list", "schedulers"], ["list", "optimizers"]]
commands += [[name, "--help"] for name in get_command(app).commands]
for args in commands:
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, (args, result.output)
    assert not heavy(), f"ablate {{' '.join(args)}} imported {{heavy()}}"
print(len(commands), "commands")
"""


def python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)


def test_help_and_listings_import_nothing_heavy():
    result = python(HELP_AND_LISTINGS)
    assert result.returncode == 0, result.stderr
    assert "commands" in result.stdout  # every command's --help ran


def test_provenance_reads_versions_without_importing_torch():
    result = python("import sys\nfrom ablate.results import files as results\nresults.provenance([])\n"
                    "print(sorted(m for m in ('torch', 'torchvision') if m in sys.modules))")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_what_the_help_names_by_hand_is_the_registries():
    dataset_help = SHARED_OPTIONS["dataset"][2].help
    assert dataset_help.split(", or folder:PATH")[0].split(", ") == list(data.DATASETS)
    assert list(config.AUGMENTATION_NAMES) == list(transforms.AUGMENTATIONS)
    assert studies.linearity() == studies.linearity(config.RunConfig.model)  # built through arch


def test_the_run_help_shows_its_toml_tables(ablate):
    said = " ".join(ablate(["run", "--help"]).stdout.split())
    assert "[base], and [variants.NAME] tables or a [vary] or [grid] table" in said  # not eaten as markup
