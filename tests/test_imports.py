"""The import contract, pyproject.toml's [tool.importlinter]: the stages of ablate/ import
downward only (`stages`, a layers contract: cli, then execution and reporting, study, results,
training, models, data, the counter, ..., errors at the bottom) and no modules or folders import
each other around a circle (`no-circles`), lazy imports inside functions included. import-linter
(grimp) checks it; the other tests check that it would catch a lazy backward import and a circle
inside a folder, so that a contract which checks nothing cannot pass."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parent.parent

# `lint-imports` in a fresh interpreter whose first path is the tree checked (`-c` puts the working
# folder first), which reads its pyproject.toml; no cache folder is left behind.
LINT = """
import sys
from importlinter.cli import lint_imports_command
lint_imports_command(["--no-cache", "--no-logo", *(a for c in sys.argv[1:] for a in ("--contract", c))])
"""


def lint(root: Path, *contracts: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", LINT, *contracts], cwd=root, capture_output=True, text=True,
                          timeout=300)


def test_the_stages_import_downward_only_and_in_no_circle():
    result = lint(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr


def copy(tmp_path: Path) -> Path:
    shutil.copytree(ROOT / "ablate", tmp_path / "ablate", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    return tmp_path


def test_a_lazy_import_back_up_a_stage_breaks_it(tmp_path):
    root = copy(tmp_path)
    with open(root / "ablate" / "errors.py", "a") as errors:
        errors.write("\n\ndef _backward():\n    from ablate.cli import app\n\n    return app\n")
    result = lint(root, "stages")
    assert result.returncode == 1, result.stdout
    assert "ablate.errors -> ablate.cli" in result.stdout
    assert lint(root, "no-circles").returncode == 1  # cli imports errors: a circle too


def test_a_circle_inside_a_folder_breaks_it(tmp_path):
    root = copy(tmp_path)
    folder = root / "ablate" / "reporting"
    (folder / "_one.py").write_text("from ablate.reporting import _two\n")
    (folder / "_two.py").write_text("def later():\n    from ablate.reporting import _one\n\n    return _one\n")
    assert lint(root, "stages").returncode == 0  # one stage: the layers allow it
    result = lint(root, "no-circles")
    assert result.returncode == 1, result.stdout
    assert "_one" in result.stdout and "_two" in result.stdout
