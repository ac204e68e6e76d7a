"""Plugins: a module of the user's registers a study, a model, a task and a dataset through
ablate's public API, found by --plugin, $ABLATE_PLUGINS or an installed entry point. Each test
runs ablate in its own process: a plugin's registrations are process-wide."""

import io
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

PLUGINS = Path(__file__).parent / "plugins"
DATA = ["--dataset", "stripes", "--epochs", "1", "--device", "cpu"]


def ablate(args, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    environment = {**os.environ, "PYTHONPATH": str(PLUGINS), **(env or {})}
    environment.pop("ABLATE_PLUGINS", None) if env is None or "ABLATE_PLUGINS" not in env else None
    return subprocess.run([sys.executable, "-m", "ablate", *map(str, args)], cwd=cwd, env=environment,
                          capture_output=True, text=True, timeout=300)


def test_a_plugins_study_model_and_dataset_train_through_the_command_line(tmp_path):
    out = tmp_path / "k.parquet"
    result = ablate(["kernel", "--plugin", "ablate_example_plugin", *DATA, "--sizes", "3,5", "--out", out], tmp_path)
    assert result.returncode == 0, result.stderr
    frame = pd.read_parquet(out)
    assert sorted(frame["kernel_size"].unique()) == [3, 5] and set(frame["dataset"]) == {"stripes"}
    assert len(pd.read_parquet(tmp_path / "_per_class" / "k.parquet")) == 2 * 2  # two classes, two runs
    sweep = ablate(["sweep", *DATA, "--model", "widenet", "--vary", "width=2,8", "--out", tmp_path / "w.parquet",
                    "--plugin=ablate_example_plugin"], tmp_path)  # the option anywhere, in either spelling
    assert sweep.returncode == 0, sweep.stderr
    assert sorted(pd.read_parquet(tmp_path / "w.parquet")["width"].unique()) == [2, 8]


def test_a_plugins_task_is_used_by_a_study_file(tmp_path):
    (tmp_path / "s.toml").write_text('[base]\ntask = "smooth-classify"\n[vary]\nlr = [0.01, 0.1]\n')
    result = ablate(["run", "s.toml", "--plugin", "ablate_example_plugin", *DATA, "--out", "s.parquet"], tmp_path)
    assert result.returncode == 0, result.stderr
    assert set(pd.read_parquet(tmp_path / "s.parquet")["task"]) == {"smooth-classify"}


def test_list_plugins_says_who_added_what(tmp_path):
    result = ablate(["list", "plugins", "--json"], tmp_path, {"ABLATE_PLUGINS": "ablate_example_plugin"})
    assert result.returncode == 0, result.stderr
    added = {(r["kind"], r["name"]) for r in json.loads(result.stdout) if r["plugin"] == "ablate_example_plugin"}
    assert added == {("study", "kernel"), ("model", "widenet"), ("task", "smooth-classify"), ("task", "denoise"),
                     ("dataset", "stripes"), ("executor", "process-pool")}
    assert all(r["source"] == "ABLATE_PLUGINS" for r in json.loads(result.stdout))


def test_an_installed_plugin_is_found_by_its_entry_point(tmp_path):
    dist = tmp_path / "site" / "ablate_example_plugin-0.1.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: ablate-example-plugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[ablate.plugins]\nexample = ablate_example_plugin\n")
    result = ablate(["list", "plugins", "--json"], tmp_path,
                    {"PYTHONPATH": os.pathsep.join([str(tmp_path / "site"), str(PLUGINS)])})
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    assert {r["plugin"] for r in rows} == {"example"} and {r["source"] for r in rows} == {"entry point"}
    assert ("study", "kernel") in {(r["kind"], r["name"]) for r in rows}


BROKEN = {
    "halfway": "import ablate\n\n@ablate.register_study('halfway-study')\ndef s():\n    pass\n\nraise RuntimeError('half written')\n",
    "clashing": "import ablate\n\n@ablate.register_study('conv1')\ndef s():\n    pass\n",
    "syntax": "def broken(:\n",
}


@pytest.mark.parametrize("name,message", [
    ("halfway", "RuntimeError: half written (at halfway.py, line 7)"),
    ("clashing", "study 'conv1' is already registered (by ablate's own)"),
    ("syntax", "SyntaxError"),
    ("nosuchmodule", "No module named 'nosuchmodule'"),
])
def test_a_plugin_that_fails_is_one_warning_and_everything_else_works(tmp_path, name, message):
    if name in BROKEN:
        (tmp_path / f"{name}.py").write_text(BROKEN[name])
    result = ablate(["list", "studies", "--json"], tmp_path, {"ABLATE_PLUGINS": name})
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip().splitlines() == [
        f"warning: plugin {name!r} (ABLATE_PLUGINS) did not load: " + result.stderr.split("did not load: ")[1].strip()]
    assert message in result.stderr
    studies = [r["name"] for r in json.loads(result.stdout)]
    assert "halfway-study" not in studies and "conv1" in studies  # what it registered is taken back


def test_a_worker_that_cannot_load_a_plugin_says_which(monkeypatch):
    from ablate import plugins
    from ablate.errors import EnvironmentFailure

    monkeypatch.setattr(plugins, "LOADED", {})
    with pytest.raises(EnvironmentFailure, match="plugin 'lab_datasets' did not load here: ModuleNotFoundError"):
        plugins.load_named(["lab_datasets"])


def test_a_local_cluster_loads_the_plugins_on_every_worker(tmp_path):
    out = tmp_path / "c.parquet"
    result = ablate(["sweep", "--plugin", "ablate_example_plugin", *DATA, "--model", "widenet", "--vary",
                     "width=2,4", "--workers", "2", "--threads", "1", "--out", out, "--name", "w"], tmp_path)
    assert result.returncode == 0, result.stderr
    alone = ablate(["sweep", "--plugin", "ablate_example_plugin", *DATA, "--model", "widenet", "--vary",
                    "width=2,4", "--threads", "1", "--out", tmp_path / "alone.parquet", "--name", "w"], tmp_path)
    assert alone.returncode == 0, alone.stderr
    numbers = ["variant", "seed", "epoch", "split", "loss", "accuracy", "run_id"]
    assert pd.read_parquet(out)[numbers].equals(pd.read_parquet(tmp_path / "alone.parquet")[numbers])


def test_the_public_api_imports_no_torch():
    code = textwrap.dedent("""
        import sys, ablate
        ablate.register_study, ablate.Study, ablate.UsageError
        assert "torch" not in sys.modules, "import ablate imported torch"
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


BAD_DATASETS = '''
import torch
import ablate


@ablate.register_dataset("floats", ["a", "b"])
def floats(folders):
    return torch.rand(10, 3, 8, 8), torch.arange(10) % 2


@ablate.register_dataset("onelabel", ["a", "b"])
def onelabel(folders):
    return torch.zeros(10, 3, 8, 8, dtype=torch.uint8), torch.zeros(10, dtype=torch.long)


@ablate.register_dataset("outofrange", ["a", "b"])
def outofrange(folders):
    return torch.zeros(10, 3, 8, 8, dtype=torch.uint8), torch.arange(10) % 3
'''


@pytest.mark.parametrize("name,message", [
    ("floats", "dataset 'floats' gave images as a torch.float32 tensor of 4 dims; it must give a uint8"),
    ("onelabel", "dataset 'onelabel' gave fewer than 2 classes"),
    ("outofrange", "dataset 'outofrange' gave labels from 0 to 2; they index its 2 classes"),
])
def test_a_plugins_dataset_is_checked_like_the_built_ins(tmp_path, name, message):
    (tmp_path / "baddata.py").write_text(BAD_DATASETS)
    result = ablate(["linearity", "--plugin", "baddata", "--dataset", name, "--epochs", "1", "--dry-run"], tmp_path)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines() == [f"ablate linearity: error: {result.stderr.split('error: ')[1].strip()}"]
    assert message in result.stderr


def test_a_plugins_executor_shows_progress_and_gives_the_in_process_table(tmp_path):
    study = ["linearity", "--plugin", "ablate_example_plugin", "--dataset", "synthetic", "--limit-train", "300",
             "--limit-test", "100", "--epochs", "2", "--batch-size", "50", "--threads", "1", "--seeds", "2",
             "--device", "cpu"]
    pooled = ablate([*study, "--executor", "process-pool", "--out", "pool.parquet"], tmp_path)
    assert pooled.returncode == 0, pooled.stderr
    alone = ablate([*study, "--out", "alone.parquet"], tmp_path)
    assert alone.returncode == 0, alone.stderr
    numbers = ["study", "variant", "seed", "epoch", "split", "loss", "accuracy", "lr", "status", "run_id"]
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "pool.parquet")[numbers],
                                  pd.read_parquet(tmp_path / "alone.parquet")[numbers], check_exact=True)
    assert "img/s" in pooled.stderr and "linearity" in pooled.stderr  # the same display, from its events
    listed = ablate(["list", "executors", "--json", "--plugin", "ablate_example_plugin"], tmp_path)
    assert {"name": "process-pool", "description": "a concurrent.futures process pool of 2 processes on this "
            "machine", "source": "ablate_example_plugin"} in json.loads(listed.stdout)


def test_a_plugins_denoise_task_sees_noisy_inputs_from_the_runs_own_stream(tmp_path):
    study = ["sweep", "--plugin", "ablate_example_plugin", "--task", "denoise", "--model", "autoencoder",
             "--dataset", "synthetic", "--limit-train", "200", "--limit-test", "50", "--epochs", "2", "--vary",
             "latent_dim=4,8", "--seeds", "2", "--device", "cpu"]
    first = ablate([*study, "--out", "a.parquet"], tmp_path)
    assert first.returncode == 0, first.stderr
    again = ablate([*study, "--out", "b.parquet"], tmp_path)
    assert again.returncode == 0, again.stderr
    a, b = pd.read_parquet(tmp_path / "a.parquet"), pd.read_parquet(tmp_path / "b.parquet")
    numbers = ["variant", "seed", "epoch", "split", "loss"]
    pd.testing.assert_frame_equal(a[numbers], b[numbers], check_exact=True)  # the noise is the run's own
    assert set(a["task"]) == {"denoise"} and a["accuracy"].isna().all() and (a["status"] == "ok").all()
    losses = a[a["split"] == "test"].pivot_table(index=["variant", "seed"], columns="epoch", values="loss")
    assert (losses[2] < losses[0]).all()  # it learns to denoise
    # PSNR (peak 1) of the mean squared error per pixel: the loss, every image being of one size
    assert np.allclose(a["psnr"], -10 * np.log10(a["loss"]), rtol=1e-5) and a["psnr"].notna().all()
    assert "test PSNR" in first.stdout and "Δ test PSNR" in first.stdout
    report = ablate(["report", "a.parquet", "--plugin", "ablate_example_plugin"], tmp_path)
    assert report.returncode == 0 and "test PSNR (dB)" in report.stdout and "Δ PSNR (dB)" in report.stdout
    csv = ablate(["report", "a.parquet", "--format", "csv"], tmp_path)
    summary = pd.read_csv(io.StringIO(csv.stdout))
    assert set(summary["metric"]) == {"test_loss", "test_psnr"}
    final = a[(a["split"] == "test") & (a["epoch"] == 2)].groupby("variant", sort=False)["psnr"].mean()
    assert summary[summary.metric == "test_psnr"]["mean"].tolist() == pytest.approx(final.tolist())


def test_plugin_without_a_module_is_a_usage_error(tmp_path):
    result = ablate(["linearity", "--plugin"], tmp_path)
    assert result.returncode == 2 and result.stderr.strip() == (
        "ablate linearity: error: --plugin takes a MODULE, importable from the current directory: --plugin mymod")


BROKEN_STUDIES = '''
import ablate


@ablate.register_study("raises")
def raises() -> ablate.Study:
    raise ValueError("oops")


@ablate.register_study("as-dict")
def as_dict():
    return {"name": "as-dict"}


@ablate.register_study("empty")
def empty():
    return ablate.Study("empty", "", variants={}, factors=())


@ablate.register_study("unknown-option", width="help")
def unknown_option():
    return ablate.Study("unknown-option", "", variants={"a": {}}, factors=())


@ablate.register_study("fine")
def fine():
    return ablate.Study("fine", "sound", variants={"a": {"lr": 0.1}, "b": {"lr": 0.2}}, factors=("base_lr",))
'''
BROKEN_STUDY_LINES = {
    "raises": "study 'raises' of plugin 'brokenstudies' failed to build: ValueError: oops",
    "as-dict": "study 'as-dict' of plugin 'brokenstudies' returned dict, not an ablate.Study",
    "empty": "plugin 'brokenstudies': study 'empty' must have variants",
    "unknown-option": "plugin 'brokenstudies': study 'unknown-option' names option 'width', which its function "
                      "does not take",
}


def test_a_broken_plugin_study_spoils_only_itself(tmp_path):
    (tmp_path / "brokenstudies.py").write_text(BROKEN_STUDIES)
    env = {"ABLATE_PLUGINS": "brokenstudies"}
    result = ablate(["linearity", "--dataset", "synthetic", "--epochs", "1", "--dry-run"], tmp_path, env)
    assert result.returncode == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == len(BROKEN_STUDY_LINES)  # one line each, naming the plugin and the entry
    for name, said in BROKEN_STUDY_LINES.items():
        assert any(said in line for line in warnings), (name, warnings)
        own = ablate([name, "--epochs", "1"], tmp_path, env)
        assert own.returncode == 2 and "Traceback" not in own.stderr
        assert own.stderr.splitlines()[-1] == f"ablate {name}: error: " + next(
            line for line in warnings if said in line).removeprefix("warning: ").removesuffix(
            "; every other command works")
    listed = ablate(["list", "--json"], tmp_path, env)
    assert listed.returncode == 0, listed.stderr
    rows = {row["name"]: row for row in json.loads(listed.stdout)}
    assert rows["fine"]["variants"] == "a, b" and rows["raises"]["description"].startswith("broken: ")
    assert ablate(["fine", "--dataset", "synthetic", "--epochs", "1", "--dry-run"], tmp_path, env).returncode == 0


@pytest.mark.parametrize("code, said", [
    ("ablate.register_model('m', 32, 'a net')(lambda: None)", "model 'm': input_shape must be (channels, height"),
    ("ablate.register_task('classify-again')", "register_task takes an ablate.Task, got str"),
    ("ablate.register_executor('e', 'an executor', options=[5])(lambda options: None)",
     "executor 'e': register_executor takes a description"),
])
def test_a_broken_registration_is_one_line_naming_it(tmp_path, code, said):
    (tmp_path / "badentry.py").write_text(f"import ablate\n\n{code}\n")
    result = ablate(["linearity", "--dataset", "synthetic", "--epochs", "1", "--dry-run"], tmp_path,
                    {"ABLATE_PLUGINS": "badentry"})
    assert result.returncode == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "plugin 'badentry'" in warnings[0] and said in warnings[0], warnings
