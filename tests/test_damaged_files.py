"""Files someone else touched: metadata edited by hand reads as absent, a page draws only the
figures its study has, and every reader says one line or works."""

import json

import pyarrow.parquet as pq
import pytest

TINY = ["--dataset", "synthetic", "--limit-train", "120", "--limit-test", "60", "--epochs", "1",
        "--batch-size", "60", "--device", "cpu", "--seeds", "2"]


def _damage(path, **keys):
    """The file's ablate metadata with `keys` replaced (`ablate=...`: the whole of it)."""
    table = pq.read_table(path)
    meta = dict(table.schema.metadata)
    held = json.loads(meta[b"ablate"])
    value = keys.pop("ablate") if "ablate" in keys else {**held, **keys}
    meta[b"ablate"] = json.dumps(value).encode()
    pq.write_table(table.replace_schema_metadata(meta), path)


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    from typer.testing import CliRunner

    from ablate.cli import app

    folder = tmp_path_factory.mktemp("damaged")
    result = CliRunner().invoke(app, ["linearity", *TINY, "--out", str(folder / "clean.parquet"), "--save-models"])
    assert result.exit_code == 0, result.output
    return folder / "clean.parquet"


@pytest.mark.parametrize("damage", [
    {"ablate": None}, {"ablate": [1, 2]}, {"ablate": "text"}, {"study": [1]}, {"study": {"factors": "x", "plot": 5,
                                                                                          "per_class": "yes"}},
    {"packing": ["a"]}, {"packing": {"relu": 5}}, {"weights": [1]}, {"command": 5}, {"auto_seeds": {"seeds": 3}},
    {"packing": {"relu": {"packed": True, "size": "big", "ratio": "fast"}}}, {"packs": 5}, {"packs": [[1, 2], "x"]},
])
def test_hand_edited_metadata_reads_as_absent(tmp_path, ablate, study, damage):
    import shutil

    path = tmp_path / "d.parquet"
    shutil.copy(study, path)
    shutil.copytree(study.parent / "_per_class", tmp_path / "_per_class")
    (tmp_path / "_per_class" / "clean.parquet").rename(tmp_path / "_per_class" / "d.parquet")
    _damage(path, **damage)
    for args in (["report", path], ["report", path, "--html", tmp_path / "p.html"], ["plot", path, "-o",
                                                                                        tmp_path / "f.png"],
                 ["linearity", *TINY, "--out", path, "--resume"]):
        result = ablate(args)
        assert result.exit_code == 0, (args, result.output)
        assert "Traceback" not in result.output


def test_a_classifiers_page_with_saved_models_draws_no_autoencoder_figures(tmp_path, ablate, study):
    result = ablate(["report", study, "--html", tmp_path / "page.html"])
    assert result.exit_code == 0, result.output
    page = (tmp_path / "page.html").read_text()
    assert "reconstructions" not in page and "interpolation" not in page and page.count("<svg") >= 1


def test_a_files_hand_edited_packs_keep_only_lists_of_run_ids(tmp_path, study):
    """--resume carries the file's `packs` on: what is not a list of run_ids is dropped."""
    from types import SimpleNamespace

    from ablate.execution import runner

    import shutil

    path = tmp_path / "d.parquet"
    shutil.copy(study, path)
    _damage(path, packs=[[1, 2], ["a1", "b2"], "x", [], ["c3", 4]])
    assert runner.held_packs(SimpleNamespace(resume=True, out=path)) == [["a1", "b2"]]
    assert runner.held_packs(SimpleNamespace(resume=False, out=path)) == []
