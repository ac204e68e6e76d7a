"""`ablate export`: TensorBoard and MLflow, each read back with the tracker's own reader and
every number compared with the Parquet; exporting again adds nothing; names from a file stay
inside the export folder; a missing package is one line."""

import sys

import pandas as pd
import pytest

from ablate import metrics as task_metrics

TINY = ["--dataset", "synthetic", "--limit-train", "120", "--limit-test", "60", "--epochs", "2", "--batch-size", "30",
        "--device", "cpu", "--seeds", "2"]


def command(args, cwd=None):
    from typer.testing import CliRunner

    from ablate.cli import app

    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    out = tmp_path_factory.mktemp("export") / "results" / "linearity.parquet"
    result = command(["linearity", *TINY, "--out", out])
    assert result.exit_code == 0, result.output
    return out


def expected(study) -> dict:
    """(run_id) -> {(name, split, epoch): value} of every number the file holds."""
    frame = pd.read_parquet(study)
    metrics = ["loss", *(m.name for m in task_metrics.present(frame))]
    numbers = {}
    for run_id, rows in frame.groupby("run_id"):
        said = numbers.setdefault(run_id, {})
        for _, row in rows.iterrows():
            for name in metrics:
                said[(name, row["split"], int(row["epoch"]))] = float(row[name])
            if row["split"] == "train" and row["epoch"] >= 1:
                said[("lr", "train", int(row["epoch"]))] = float(row["lr"])
    return numbers


def test_tensorboard_holds_every_number_of_every_run(study, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    result = command(["export", study, tmp_path / "runs", "--to", "tensorboard"])
    assert result.exit_code == 0, result.output
    assert result.stderr.strip() == f"exported 6 runs to tensorboard at {tmp_path / 'runs'}"
    frame = pd.read_parquet(study)
    want = expected(study)
    for run_id, rows in frame.groupby("run_id"):
        first = rows.iloc[0]
        folder = tmp_path / "runs" / "linearity" / first["variant"] / f"seed-{first['seed']}"
        events = EventAccumulator(str(folder), size_guidance={"scalars": 0, "tensors": 0}).Reload()
        got = {}
        for tag in events.Tags()["scalars"]:
            if tag.startswith("final/"):
                continue
            name, split = tag.split("/")
            got.update({(name, split, e.step): e.value for e in events.Scalars(tag)})
        assert got.keys() == want[run_id].keys()
        for key, value in want[run_id].items():
            assert got[key] == pytest.approx(value, rel=1e-6), key  # event files hold float32
        session = plugin_data_pb2.HParamsPluginData.FromString(  # the settings, for the HParams tab
            events.PluginTagToContent("hparams")["_hparams_/session_start_info"]).session_start_info.hparams
        assert session["base_lr"].number_value == first["base_lr"] and session["activation"].string_value == \
            first["activation"] and session["fc1_features"].number_value == first["fc1_features"]
        assert "momentum" in session and "lr_gamma" not in session  # a setting the run did not use is left out
    again = command(["export", study, tmp_path / "runs", "--to", "tensorboard"])
    assert again.stderr.strip().endswith("exported 0 runs to tensorboard at " + str(tmp_path / "runs")
                                         + "; 6 were there already")
    assert len(list((tmp_path / "runs").rglob("events.out.tfevents.*"))) == 6  # one a run: no more


def test_mlflow_holds_every_number_param_and_tag(study, tmp_path, monkeypatch):
    import mlflow
    from mlflow.tracking import MlflowClient

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3's folder store, which the export uses
    result = command(["export", study, "--to", "mlflow"])  # the default: ./mlruns
    assert result.exit_code == 0, result.output
    uri = (tmp_path / "mlruns").as_uri()
    assert result.stderr.strip() == f"exported 6 runs to mlflow at {uri}"
    mlflow.set_tracking_uri(uri)
    found = mlflow.search_runs(experiment_names=["linearity"])
    frame = pd.read_parquet(study)
    assert len(found) == 6 and set(found["tags.ablate.run_id"]) == set(frame["run_id"])
    client = MlflowClient(tracking_uri=uri)
    want = expected(study)
    for _, run in found.iterrows():
        rows = frame[frame["run_id"] == run["tags.ablate.run_id"]]
        first = rows.iloc[0]
        assert run["tags.mlflow.runName"] == f"{first['variant']} seed {first['seed']}"
        assert (run["tags.ablate.variant"], run["tags.ablate.seed"]) == (first["variant"], str(first["seed"]))
        assert run["params.base_lr"] == str(first["base_lr"]) and run["params.activation"] == first["activation"]
        assert run["params.fc1_features"] == str(first["fc1_features"]) and "params.momentum" in run
        got = {}
        for key in client.get_run(run["run_id"]).data.metrics:
            split, _, name = key.rpartition("_") if key != "lr" else ("train", "", "lr")
            got.update({(name, split, m.step): m.value for m in client.get_metric_history(run["run_id"], key)})
        assert got == want[run["tags.ablate.run_id"]]  # every number, exactly (MLflow keeps doubles)
        assert run["status"] == "FINISHED"
    again = command(["export", study, "--to", "mlflow"])
    assert again.stderr.strip().endswith("; 6 were there already")
    assert len(mlflow.search_runs(experiment_names=["linearity"])) == 6


def test_names_from_a_file_never_leave_the_export_folder(fake_study, tmp_path):
    path = fake_study(tmp_path / "f.parquet", variants=("../../escape", "a/b"), study="linearity")
    result = command(["export", path, tmp_path / "runs", "--to", "tensorboard"])
    assert result.exit_code == 0, result.output
    written = [p for p in tmp_path.rglob("events.out.tfevents.*")]
    assert written and all((tmp_path / "runs") in p.parents for p in written)
    assert sorted(p.name for p in (tmp_path / "runs" / "linearity").iterdir()) == ["_.._escape", "a_b"]


def test_a_tracker_not_installed_or_a_destination_that_is_a_file_is_one_line(study, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "mlflow", None)  # as if not installed
    result = command(["export", study, tmp_path / "m", "--to", "mlflow"])
    assert result.exit_code == 2
    assert result.stderr.strip() == ("ablate export: error: --to mlflow needs the mlflow-skinny package: "
                                     "pip install 'ablate[mlflow]'")
    (tmp_path / "file").write_text("x")
    result = command(["export", study, tmp_path / "file", "--to", "tensorboard"])
    assert result.exit_code == 2 and "is not a folder" in result.stderr
    result = command(["export", study, "--to", "wandb"])
    assert result.exit_code == 2 and "'wandb' is not one of 'tensorboard', 'mlflow'" in result.stderr


def test_a_tracker_that_fails_is_one_line(study, tmp_path, monkeypatch):
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    def refused(self, name):
        raise MlflowException("API request to http://127.0.0.1:9/api/2.0/mlflow/experiments/get-by-name failed\n"
                               "with exception ... Connection refused")

    monkeypatch.setattr(MlflowClient, "get_experiment_by_name", refused)
    result = command(["export", study, "http://127.0.0.1:9", "--to", "mlflow"])
    assert result.exit_code == 1 and len(result.stderr.strip().splitlines()) == 1, result.output
    assert "exporting to mlflow failed: MlflowException: API request to http://127.0.0.1:9" in result.stderr
    assert "exporting again adds the rest" in result.stderr
